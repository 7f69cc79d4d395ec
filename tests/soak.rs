//! The soak test's short version, in a test binary of its own so that it
//! does not share the CPU with the other server tests.

mod common;

use std::path::Path;
use std::process::Command;

/// bench/soak.py, short: every route, streams that leave, prompts up to
/// 1,200 words in a pool small enough to preempt, then overload; no request
/// lost, no block leaked, memory flat.
#[test]
fn short_soak_leaks_nothing() {
    common::model_path();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/soak.py");
    let out = Command::new("python3")
        .arg(&script)
        // A small pool: the warm-up touches all of it, and sequences preempt.
        .args(["--requests", "60", "--short", "--kv-memory", "64MiB", "--bin", env!("CARGO_BIN_EXE_caravan")])
        .output()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "the soak failed:\n{text}");
    let report: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    assert_eq!(report["kv_blocks_used_after"], 0.0);
    assert!(report["outcomes"]["ok"].as_u64().unwrap() > 30, "{report}");
    assert!(report["overload"]["rejected"].as_u64().unwrap() > 0, "{report}");
}
