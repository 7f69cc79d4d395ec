//! Qwen2.5-Coder-0.5B-Instruct (qwen2: Q/K/V biases, NeoX RoPE, an untied
//! output; Q5_0, Q8_0, Q4_K and Q6_K weights) against llama.cpp's outputs
//! on the same file.

mod common;

use caravan::kernels::Arithmetic;
use common::faithful::{agreeing_rows, assert_alone_equals_together, assert_prompts_match, log_probability_differences, run_all_together};
use common::{qwen, qwen_golden};

#[test]
fn prompts_and_conversations_tokenize_and_render_as_the_reference() {
    // Its template (tools, a default system prompt) renders byte for byte
    // as Jinja2 did for llama.cpp.
    assert_eq!(assert_prompts_match(qwen(Arithmetic::Ggml), &qwen_golden()), 7);
}

/// In both orders: every first token whose reference top two are 0.1 or
/// more apart is the reference's, and the rest among its top two. The
/// K-quant matrices (Q4_K, Q6_K: a twelfth of the weights) are multiplied
/// against activations in blocks of 32, where llama.cpp uses blocks of
/// 256, so neither order is llama.cpp's bit for bit on this file.
/// Measured: 29 (ggml's order) and 28 (fast) of the 36 rows keep their
/// first 16 tokens, log-probabilities 0.051 and 0.052 off on average (0.38
/// and 0.35 at most); the bounds leave that spread and little more.
#[test]
fn greedy_tokens_and_log_probabilities_stay_close_to_the_reference_and_batch_invariant() {
    let rows = qwen_golden();
    for order in [Arithmetic::Ggml, Arithmetic::Fast] {
        let m = qwen(order);
        let together = run_all_together(m, &rows);
        let prefix16 = agreeing_rows(&rows, &together, 0.1);
        assert!(prefix16 >= 27, "{order}: only {prefix16} of {} rows keep their first 16 tokens", rows.len());
        let differences = log_probability_differences(m, &rows);
        let mean = differences.iter().sum::<f64>() / differences.len() as f64;
        let worst = differences.iter().cloned().fold(0f64, f64::max);
        assert!(mean < 0.07 && worst < 0.5, "{order}: log-probabilities {mean:.4} off on average, {worst:.4} at most");
        // Text and chat rows alone give the tokens they had among all.
        assert_alone_equals_together(m, &rows, &together, &[0, 10, 29, 33]);
    }
}
