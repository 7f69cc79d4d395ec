//! Gemma 3 270M (gemma3: embeddings times sqrt(d), Q/K head norms, norms
//! after attention and the feed-forward, GELU gating, sliding-window layers
//! with their own RoPE base; Q5_0, Q8_0, Q4_K and Q6_K weights) against
//! llama.cpp's outputs on the same file.

mod common;

use caravan::kernels::Arithmetic;
use common::faithful::{agreeing_rows, assert_alone_equals_together, assert_prompts_match, log_probability_differences, run_all_together};
use common::{gemma, gemma_golden};

#[test]
fn prompts_tokenize_as_the_reference() {
    assert_eq!(assert_prompts_match(gemma(Arithmetic::Ggml), &gemma_golden()), 0);
}

/// In both orders: every first token whose reference top two are 0.3 or
/// more apart is the reference's, and the rest among its top two. Not
/// bit for bit: llama.cpp multiplies its K-quant matrices (Q4_K, Q6_K:
/// attention's output and the down projections) against activations in
/// blocks of 256, Caravan in blocks of 32, and Gemma's hidden states
/// (embeddings times sqrt(640)) carry that difference further than Qwen's.
/// (With every matrix requantized to Q8_0, llama.cpp's and Caravan's
/// log-probabilities in ggml's order agree within 3e-4.) Measured: 11
/// (ggml's order) and 13 (fast) of the 29 rows keep their first 16
/// tokens, log-probabilities 0.102 and 0.104 off on average (0.81 and 0.90
/// at most); the bounds leave that spread and little more.
#[test]
fn greedy_tokens_and_log_probabilities_stay_close_to_the_reference_and_batch_invariant() {
    let rows = gemma_golden();
    for order in [Arithmetic::Ggml, Arithmetic::Fast] {
        let m = gemma(order);
        let together = run_all_together(m, &rows);
        let prefix16 = agreeing_rows(&rows, &together, 0.3);
        let differences = log_probability_differences(m, &rows);
        let mean = differences.iter().sum::<f64>() / differences.len() as f64;
        let worst = differences.iter().cloned().fold(0f64, f64::max);
        println!("{order}: {prefix16}/{} rows, log-probabilities {mean:.4} off on average, {worst:.4} at most", rows.len());
        assert!(prefix16 >= 9, "{order}: only {prefix16} of {} rows keep their first 16 tokens", rows.len());
        assert!(mean < 0.13 && worst < 1.2, "{order}: log-probabilities {mean:.4} off on average, {worst:.4} at most");
        assert_alone_equals_together(m, &rows, &together, &[0, 10, 28]);
    }
}

/// A base model has no chat template: generate takes the prompt as it is
/// (Ollama's `{{ .Prompt }}`), chat is a 400 in each API's error shape
/// that says so, and the server goes on serving.
#[test]
fn chat_on_a_model_without_a_template_is_a_400_and_generate_works() {
    let m = gemma(Arithmetic::Fast);
    assert!(m.template.is_none());
    assert_eq!(m.prompt_tokens(None, "The capital of France is").unwrap(), gemma_golden()[0].prompt_tokens);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_caravan"))
        .args(["serve", "--host", &format!("127.0.0.1:{port}"), "--kv-memory", "64MiB"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("caravan serve starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while ureq::get(&format!("{url}/health")).call().is_err() {
        assert!(std::time::Instant::now() < deadline, "the server did not become healthy");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let post = |path: &str, body: serde_json::Value| {
        let sent = ureq::post(&format!("{url}{path}")).set("Content-Type", "application/json").send_string(&body.to_string());
        let (status, r) = match sent {
            Ok(r) => (r.status(), r),
            Err(ureq::Error::Status(code, r)) => (code, r),
            Err(e) => panic!("{path}: {e}"),
        };
        (status, serde_json::from_str::<serde_json::Value>(&r.into_string().unwrap()).unwrap())
    };
    let messages = serde_json::json!([{"role": "user", "content": "Hi"}]);
    let (status, body) = post("/api/chat", serde_json::json!({"model": "gemma3:270m", "messages": messages, "stream": false}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("no chat template"), "{body}");
    let (status, body) = post("/v1/chat/completions", serde_json::json!({"model": "gemma3:270m", "messages": messages}));
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("no chat template"), "{body}");
    let (status, body) = post(
        "/api/generate",
        serde_json::json!({"model": "gemma3:270m", "prompt": "The capital of France is", "stream": false, "options": {"temperature": 0, "num_predict": 4}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["prompt_eval_count"], 6, "{body}");
    assert_eq!(body["eval_count"], 4, "{body}");
    let (status, body) =
        post("/api/generate", serde_json::json!({"model": "gemma3:270m", "prompt": "Hi", "system": "Be brief.", "stream": false}));
    assert_eq!(status, 400, "{body}");
    let _ = child.kill();
    let _ = child.wait();
}
