//! all-MiniLM-L6-v2 (`all-minilm`, BERT, converted at pull time) against
//! llama.cpp's own embeddings of the same GGUF (`llama-embedding`, written
//! by tools/embed_golden.py), in both orders of arithmetic.

mod common;

use caravan::api::embed_tokens;
use caravan::gguf::GgufFile;
use caravan::kernels::{Arithmetic, Isa};
use caravan::loaded::LoadedModel;
use caravan::model::Model;
use common::CatalogModel;
use serde_json::Value;

static MINILM: CatalogModel = CatalogModel::new("all-minilm");

fn minilm(order: Arithmetic) -> &'static LoadedModel {
    MINILM.get(order)
}

fn reference() -> Vec<(String, Vec<f32>)> {
    let file: Value = serde_json::from_str(include_str!("data/all-minilm-embeddings.json")).unwrap();
    let rows = file["rows"].as_array().unwrap();
    rows.iter()
        .map(|r| {
            let v = r["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            (r["text"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(&p, &q)| p as f64 * q as f64).sum::<f64>();
    1.0 - dot(a, b) / (dot(a, a) * dot(b, b)).sqrt()
}

/// Every sentence embedded together in one pass, each within `tolerance`
/// cosine distance of llama.cpp's; and each alone bit for bit what it is in
/// the batch (its attention sees only its own tokens, every matmul row is
/// its own). Returns the largest distance.
fn worst_distance(order: Arithmetic) -> f64 {
    let m = minilm(order);
    let encoder = m.model.encoder.as_ref().expect("an encoder");
    let rows = reference();
    let tokens: Vec<Vec<u32>> = rows.iter().map(|(text, _)| embed_tokens(m, text, false).unwrap()).collect();
    let inputs: Vec<&[u32]> = tokens.iter().map(|t| &t[..]).collect();
    let together = m.model.encode(encoder, &inputs);
    for (i, input) in inputs.iter().enumerate() {
        assert_eq!(m.model.encode(encoder, &[input]), vec![together[i].clone()], "row {i} alone");
    }
    let distances: Vec<f64> = rows.iter().zip(&together).map(|((_, want), got)| cosine_distance(want, got)).collect();
    eprintln!("{order:?} cosine distances: {distances:?}");
    distances.into_iter().fold(0f64, f64::max)
}

/// Measured: 2e-7 at most (floats all through, as llama.cpp's F16 path).
#[test]
fn embeddings_in_ggml_order_match_llama_cpp() {
    let worst = worst_distance(Arithmetic::Ggml);
    assert!(worst < 1e-4, "largest cosine distance {worst}");
}

/// Measured: 1.2e-6 at most (the F16 matrices as 14-bit codes, the
/// activations as 13-bit ones).
#[test]
fn embeddings_in_the_fast_order_match_llama_cpp() {
    let worst = worst_distance(Arithmetic::Fast);
    assert!(worst < 1e-4, "largest cosine distance {worst}");
}

/// Each instruction set's own path (the portable one, AVX2, AVX-512: their
/// attention sums differ in order) within the same tolerance, in both
/// orders. Measured: 1.2e-6 at most.
#[test]
fn every_isa_embeds_within_tolerance_of_llama_cpp() {
    let file = GgufFile::open(MINILM.path()).unwrap();
    let rows = reference();
    let m = minilm(Arithmetic::Fast);
    let tokens: Vec<Vec<u32>> = rows.iter().map(|(text, _)| embed_tokens(m, text, false).unwrap()).collect();
    let inputs: Vec<&[u32]> = tokens.iter().map(|t| &t[..]).collect();
    for order in [Arithmetic::Ggml, Arithmetic::Fast] {
        for isa in Isa::available() {
            let model = Model::load(&file, isa, order, 2).unwrap();
            let got = model.encode(model.encoder.as_ref().expect("an encoder"), &inputs);
            let worst = rows.iter().zip(&got).map(|((_, want), got)| cosine_distance(want, got)).fold(0f64, f64::max);
            assert!(worst < 1e-4, "{order} {isa}: largest cosine distance {worst}");
        }
    }
}

#[test]
fn an_embedding_model_has_no_chat_or_generation() {
    let m = minilm(Arithmetic::Fast);
    let e = m.prompt_tokens(None, "hello").unwrap_err().to_string();
    assert!(e.contains("only embeds"), "{e}");
}
