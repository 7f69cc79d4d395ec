//! Shared by the model-level tests: the default model, loaded once per test
//! binary (pulled into the store first if missing).

#![allow(dead_code)]

pub mod blocks;
pub mod faithful;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use caravan::kernels::Arithmetic;
use caravan::loaded::LoadedModel;
use caravan::store::{Store, DEFAULT_MODEL};

pub fn model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| Store::from_env().resolve(DEFAULT_MODEL).expect("the default model installs")).clone()
}

/// The official clients the server tests drive, at the versions tested,
/// the validator their structured outputs are checked with, what a router
/// reads KV-cache events with, and the Kubernetes manifests' validator.
const PYTHON_CLIENTS: [&str; 7] = [
    "ollama==0.6.3",
    "openai==3.57.0",
    "jsonschema==4.26.0",
    "schemathesis==4.32.5",
    "pyzmq==27.3.0",
    "msgpack==1.2.4",
    "kubernetes-validate==1.37.0",
];

/// A Python with the official clients installed: a virtual environment
/// under the target directory, made on first use (then reused while its
/// pinned versions stay the same).
pub fn python_with_clients() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-clients");
            let python = dir.join("bin/python");
            let stamp = dir.join("installed.txt");
            let wanted = PYTHON_CLIENTS.join("\n");
            if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
                return python;
            }
            let _ = std::fs::remove_dir_all(&dir);
            let run = |cmd: &mut Command, what: &str| {
                let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
                assert!(
                    out.status.success(),
                    "{what} failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(Command::new("python3").args(["-m", "venv"]).arg(&dir), "python3 -m venv (Python 3 with its venv module is needed)");
            run(
                Command::new(&python).args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]).args(PYTHON_CLIENTS),
                "installing the official clients",
            );
            std::fs::write(&stamp, wanted).unwrap();
            python
        })
        .clone()
}

/// The default model in ggml's order of arithmetic (llama.cpp's bits).
pub fn model() -> &'static LoadedModel {
    static MODEL: OnceLock<LoadedModel> = OnceLock::new();
    MODEL.get_or_init(|| LoadedModel::open(&model_path(), 2, Arithmetic::Ggml).expect("the default model loads"))
}

/// The default model in the fast order (the default).
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

/// The default model's reference rows.
pub fn golden() -> Vec<GoldenRow> {
    golden_rows(include_str!("../data/smollm2-greedy.jsonl"))
}

/// A catalog model, pulled if missing and loaded once per order.
pub struct CatalogModel {
    name: &'static str,
    path: OnceLock<PathBuf>,
    models: [OnceLock<LoadedModel>; 2],
}

impl CatalogModel {
    pub const fn new(name: &'static str) -> CatalogModel {
        CatalogModel { name, path: OnceLock::new(), models: [OnceLock::new(), OnceLock::new()] }
    }

    pub fn get(&'static self, order: Arithmetic) -> &'static LoadedModel {
        let path = self.path();
        self.models[order as usize]
            .get_or_init(|| LoadedModel::open(path, 2, order).unwrap_or_else(|e| panic!("{} loads: {e:#}", self.name)))
    }

    /// The installed GGUF.
    pub fn path(&'static self) -> &'static Path {
        self.path.get_or_init(|| Store::from_env().resolve(self.name).unwrap_or_else(|e| panic!("{} installs: {e:#}", self.name)))
    }
}

/// Qwen2.5-Coder-0.5B-Instruct (`qwen2.5-coder:0.5b`), pulled if missing.
pub fn qwen(order: Arithmetic) -> &'static LoadedModel {
    static MODEL: CatalogModel = CatalogModel::new("qwen2.5-coder:0.5b");
    MODEL.get(order)
}

/// llama.cpp's outputs on `qwen2.5-coder:0.5b`.
pub fn qwen_golden() -> Vec<GoldenRow> {
    golden_rows(include_str!("../data/qwen2.5-coder-0.5b-greedy.jsonl"))
}

/// Gemma 3 270M (`gemma3:270m`), pulled if missing.
pub fn gemma(order: Arithmetic) -> &'static LoadedModel {
    static MODEL: CatalogModel = CatalogModel::new("gemma3:270m");
    MODEL.get(order)
}

/// llama.cpp's outputs on `gemma3:270m`.
pub fn gemma_golden() -> Vec<GoldenRow> {
    golden_rows(include_str!("../data/gemma3-270m-greedy.jsonl"))
}

/// Reference rows from a JSONL file's text (see ../data).
pub fn golden_rows(text: &str) -> Vec<GoldenRow> {
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
                    .map(|pos| {
                        pos.as_array().unwrap().iter().map(|c| (c["id"].as_u64().unwrap() as u32, c["logprob"].as_f64().unwrap())).collect()
                    })
                    .collect(),
            }
        })
        .collect()
}
