//! llama.cpp's own tokenizer tests (its `models/ggml-vocab-*` files, from
//! the llama-cpp-python 0.3.36 source package): every `.inp` text, with no
//! special tokens added or parsed, gives the `.out` tokens.

mod common;

use std::path::Path;

use caravan::gguf::write::write_file;
use caravan::gguf::{GgufFile, Value};
use caravan::tokenizer::Tokenizer;

/// The texts of `name.gguf.inp` and llama.cpp's tokens for each.
fn cases(name: &str) -> Vec<(String, Vec<u32>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vocab");
    let inp = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("ggml-vocab-{name}.gguf.out"))).unwrap();
    // As llama.cpp's reader: a separator at the very end starts no text.
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if inp.ends_with("\n__ggml_vocab_test__\n") {
        texts.pop();
    }
    let tokens: Vec<Vec<u32>> = out.lines().map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect()).collect();
    assert_eq!(texts.len(), tokens.len(), "{name}: inputs and outputs differ in number");
    texts.into_iter().map(str::to_string).zip(tokens).collect()
}

fn tokenizer(name: &str) -> Tokenizer {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/vocab/ggml-vocab-{name}.gguf"));
    Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap_or_else(|e| panic!("{name}: {e:#}"))
}

fn check(name: &str) {
    let t = tokenizer(name);
    let mut wrong = Vec::new();
    for (text, want) in cases(name) {
        let got = t.encode(&text, false).unwrap();
        if got != want {
            wrong.push(format!("{text:?}: {got:?}, llama.cpp {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{name}: {} of the inputs differ:\n{}", wrong.len(), wrong.join("\n"));
}

macro_rules! vocab_tests {
    ($($test:ident: $name:literal,)*) => {
        $(#[test] fn $test() { check($name); })*
    };
}

vocab_tests! {
    gpt_2: "gpt-2",
    llama_bpe: "llama-bpe",
    qwen2: "qwen2",
    qwen35: "qwen35",
    phi_3: "phi-3",
    llama_spm: "llama-spm",
    starcoder: "starcoder",
    refact: "refact",
    deepseek_coder: "deepseek-coder",
    deepseek_llm: "deepseek-llm",
    falcon: "falcon",
    mpt: "mpt",
    command_r: "command-r",
    bert_bge: "bert-bge",
    gemma_4: "gemma-4",
}

#[test]
fn an_unknown_pre_tokenizer_is_a_load_error_naming_it() {
    let meta = vec![
        ("tokenizer.ggml.model".to_string(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("no-such-splitter".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(["a", "b", "ab"].map(|t| Value::String(t.into())).to_vec())),
        ("tokenizer.ggml.merges".into(), Value::Array(vec![Value::String("a b".into())])),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vocab.gguf");
    write_file(&path, &meta, &[]).unwrap();
    let err = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).err().expect("an unknown pre-tokenizer is refused");
    assert!(err.to_string().contains("pre-tokenizer \"no-such-splitter\" is not supported"), "{err}");
}
