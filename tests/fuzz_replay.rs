//! Replays the fuzzers' seed inputs and every input that once crashed one
//! (fuzz/seeds/<target>, fuzz/regressions/<target>) through the same entry
//! points the fuzzers run: none may panic. The fuzzers themselves run with
//! `cargo fuzz` (see README, "Fuzzing").

mod common;

use std::path::Path;

use caravan::fuzz_targets;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else { continue };
        for e in entries {
            out.push(std::fs::read(e.unwrap().path()).unwrap());
        }
    }
    assert!(!out.is_empty(), "no inputs for {target}");
    out
}

#[test]
fn gguf_inputs_never_panic() {
    inputs("gguf").iter().for_each(|d| fuzz_targets::gguf(d));
}

#[test]
fn tokenizer_inputs_never_panic() {
    inputs("tokenizer").iter().for_each(|d| fuzz_targets::tokenizer(common::model(), d));
}

#[test]
fn template_inputs_never_panic() {
    inputs("template").iter().for_each(|d| fuzz_targets::template(common::model(), d));
}

#[test]
fn request_inputs_never_panic() {
    inputs("requests").iter().for_each(|d| fuzz_targets::requests(common::model(), d));
}
