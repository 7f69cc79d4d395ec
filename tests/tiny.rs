//! Architectures with no small real model to be had, on tiny random-weight
//! files with real vocabularies (tools/tiny_gguf.py), against llama.cpp's
//! outputs on the same files (tools/golden.py; ggml's order of arithmetic).

mod common;

use std::path::Path;

use caravan::gguf::write::write_file;
use caravan::gguf::{GgufFile, Value};
use caravan::kernels::ops::{Rope, RopeStyle};
use caravan::kernels::Arithmetic;
use caravan::loaded::LoadedModel;
use caravan::model::ModelConfig;
use common::faithful::{agreeing_rows, log_probability_differences, run_all_together};
use common::{golden_rows, GoldenRow};

fn tiny(name: &str) -> LoadedModel {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/tiny/{name}.gguf"));
    LoadedModel::open(&path, 2, Arithmetic::Ggml).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

/// Tokenization on every row, the first 16 greedy tokens on every row, and
/// the largest teacher-forced log-probability difference.
fn worst_difference(m: &LoadedModel, rows: &[GoldenRow]) -> f64 {
    for row in rows {
        assert_eq!(m.raw_tokens(&row.prompt).unwrap(), row.prompt_tokens, "row {}", row.id);
    }
    assert_eq!(agreeing_rows(rows, &run_all_together(m, rows), 0.1), rows.len());
    log_probability_differences(m, rows).into_iter().fold(0f64, f64::max)
}

/// Llama 3's RoPE: each pair's angle divided by its factor from
/// `rope_freqs.weight`; V and the up projection are Q4_1 where Q, K and
/// the gate are Q8_0, so those are multiplied apart, not fused. Measured:
/// 1.3e-4 at most (the reference rounds to 1e-4); with the factors ignored
/// the same file is 0.1 or more off.
#[test]
fn llama3_rope_frequency_factors_match_llama_cpp() {
    let rows = golden_rows(include_str!("data/tiny/llama3-greedy.jsonl"));
    let mut m = tiny("llama3");
    let worst = worst_difference(&m, &rows);
    assert!(worst < 1e-3, "largest log-probability difference {worst}");
    let c = &m.model.config;
    m.model.rope = Rope::new(c.rope_dims, c.rope_base, RopeStyle::Normal);
    let without = log_probability_differences(&m, &rows).into_iter().fold(0f64, f64::max);
    assert!(without > 0.1, "the factors make no difference ({without}): the test cannot see them");
}

/// A model's metadata alone, with `extra` keys and `arch` for architecture.
fn config_error(arch: &str, extra: &[(&str, Value)]) -> String {
    let key = |k: &str| format!("{arch}.{k}");
    let mut meta = vec![
        ("general.architecture".to_string(), Value::String(arch.into())),
        (key("embedding_length"), Value::U32(32)),
        (key("attention.head_count"), Value::U32(2)),
        (key("block_count"), Value::U32(1)),
        (key("feed_forward_length"), Value::U32(64)),
        (key("context_length"), Value::U32(64)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (key("vocab_size"), Value::U32(256)),
    ];
    meta.extend(extra.iter().map(|(k, v)| (key(k), v.clone())));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    write_file(&path, &meta, &[]).unwrap();
    ModelConfig::from_gguf(&GgufFile::open(&path).unwrap()).expect_err("refused").to_string()
}

#[test]
fn what_is_not_supported_is_a_load_error_naming_it() {
    let e = config_error("mamba", &[]);
    assert!(
        e.contains("architecture \"mamba\" is not supported (supported: llama, mistral, qwen2, qwen3, phi3, gemma2, gemma3, bert)"),
        "{e}"
    );
    let e = config_error("llama", &[("rope.scaling.type", Value::String("yarn".into()))]);
    assert!(e.contains("RoPE scaling \"yarn\" is not supported (supported: none, linear)"), "{e}");
}

/// Qwen 3: each query and key head RMS-normed before RoPE (NeoX pairs),
/// four heads of 16 over an embedding of 32 (`attention.key_length`).
/// Measured: 1.6e-4 at most.
#[test]
fn qwen3_head_norms_and_wide_heads_match_llama_cpp() {
    let rows = golden_rows(include_str!("data/tiny/qwen3-greedy.jsonl"));
    let worst = worst_difference(&tiny("qwen3"), &rows);
    assert!(worst < 1e-3, "largest log-probability difference {worst}");
}

/// Gemma 2: embeddings times sqrt(d), norms after attention and the
/// feed-forward, GELU gating, attention scores soft-capped at 5 and logits
/// at 3, and layer 0 attending only to the last 8 positions (most prompts
/// are longer). With the window ignored the same file is 9e-3 off.
#[test]
fn gemma2_soft_caps_and_sliding_window_match_llama_cpp() {
    let rows = golden_rows(include_str!("data/tiny/gemma2-greedy.jsonl"));
    let mut m = tiny("gemma2");
    let worst = worst_difference(&m, &rows);
    assert!(worst < 1e-3, "largest log-probability difference {worst}");
    m.model.config.sliding_window.as_mut().expect("a windowed file").window = usize::MAX;
    let without = log_probability_differences(&m, &rows).into_iter().fold(0f64, f64::max);
    assert!(without > 5e-3, "the window makes no difference ({without}): the test cannot see it");
}

/// The Gemma 2 file requantized to Q5_1 by llama.cpp's `llama-quantize`
/// (every matrix but the Q8_0 embeddings): its five-bit codes and block
/// minimums as llama.cpp multiplies them. Measured: 5e-5 at most (the
/// reference's rounding).
#[test]
fn q5_1_matches_llama_cpp() {
    let rows = golden_rows(include_str!("data/tiny/gemma2-q5_1-greedy.jsonl"));
    let worst = worst_difference(&tiny("gemma2-q5_1"), &rows);
    assert!(worst < 1e-3, "largest log-probability difference {worst}");
}

/// Phi-3: Q, K and V in one tensor, gate and up in one, RoPE's short
/// factors and attention factor; sequences held to the original context
/// (1,024: the reference ran llama.cpp at that context, where it takes the
/// short factors too).
#[test]
fn phi3_fused_tensors_and_rope_factors_match_llama_cpp() {
    let rows = golden_rows(include_str!("data/tiny/phi3-greedy.jsonl"));
    let m = tiny("phi3");
    assert_eq!(m.model.config.context_length, 1024);
    let worst = worst_difference(&m, &rows);
    assert!(worst < 1e-3, "largest log-probability difference {worst}");
}
