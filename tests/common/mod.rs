//! Shared by the model-level tests: the default model, loaded once per test
//! binary (pulled into the store first if missing).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use caravan::kernels::Arithmetic;
use caravan::loaded::LoadedModel;
use caravan::store::{Store, DEFAULT_MODEL};

pub fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| Store::from_env().resolve(DEFAULT_MODEL).expect("the default model installs")).clone()
}

/// The default model in ggml's order of arithmetic (the default).
pub fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| LoadedModel::open(&model_path(), 2, Arithmetic::Ggml).expect("the default model loads"))
}

/// The default model in the fast order.
pub fn fast_model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| LoadedModel::open(&model_path(), 2, Arithmetic::Fast).expect("the default model loads"))
}

pub struct GoldenRow {
    pub id: u64,
    pub kind: String,
    pub prompt: String,
    pub messages: Vec<(String, String)>,
    pub prompt_tokens: Vec<u32>,
    pub completion_tokens: Vec<u32>,
    /// Per generated position: (token, logprob) best first.
    pub top_logprobs: Vec<Vec<(u32, f64)>>,
}

pub fn golden() -> Vec<GoldenRow> {
    let text = include_str!("../data/smollm2-greedy.jsonl");
    let ids = |v: &serde_json::Value| -> Vec<u32> { v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect() };
    text.lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            GoldenRow {
                id: v["id"].as_u64().unwrap(),
                kind: v["kind"].as_str().unwrap().to_string(),
                prompt: v["prompt"].as_str().unwrap().to_string(),
                messages: v["messages"]
                    .as_array()
                    .map(|a| a.iter().map(|m| (m["role"].as_str().unwrap().into(), m["content"].as_str().unwrap().into())).collect())
                    .unwrap_or_default(),
                prompt_tokens: ids(&v["prompt_tokens"]),
                completion_tokens: ids(&v["completion_tokens"]),
                top_logprobs: v["top_logprobs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|pos| pos.as_array().unwrap().iter().map(|c| (c["id"].as_u64().unwrap() as u32, c["logprob"].as_f64().unwrap())).collect())
                    .collect(),
            }
        })
        .collect()
}
