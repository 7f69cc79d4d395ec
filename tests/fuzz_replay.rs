//! Replays the fuzzers' seed inputs (fuzz/seeds/<target>; an input that
//! once crashed a target joins its seeds) through the same entry points
//! the fuzzers run: none may panic. The fuzzers themselves run with
//! `cargo fuzz` (docs/testing.md).

mod common;

use std::path::Path;

use caravan::fuzz_targets;

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds").join(target);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        out.push(std::fs::read(e.unwrap().path()).unwrap());
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
