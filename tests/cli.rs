//! The `caravan` binary as a user runs it: generation, model store commands
//! (local file and resumable URL pulls), and one-line errors with non-zero
//! exits for bad input.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

fn caravan(models: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_caravan")).env("CARAVAN_MODELS", models).args(args).output().unwrap()
}

/// The store the tests' default model lives in.
fn default_store() -> std::path::PathBuf {
    common::model_path().parent().unwrap().parent().unwrap().to_path_buf()
}

fn stderr_line(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).trim().to_string();
    assert_eq!(e.lines().count(), 1, "one line: {e:?}");
    e
}

#[test]
fn run_streams_the_greedy_answer() {
    let golden = &common::golden()[0];
    let want = common::model().tokenizer.decode(&golden.completion_tokens[..8]);
    // llama.cpp's arithmetic: its greedy tokens are the reference's.
    let o = caravan(
        &default_store(),
        &["run", "--arithmetic", "ggml", "--temperature", "0", "--repeat-penalty", "1", "--num-predict", "8", "--raw", &golden.prompt],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), format!("{want}\n"));
}

#[test]
fn run_reads_stdin_applies_the_template_and_reports_speed() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .env("CARAVAN_MODELS", default_store())
        .args(["run", "--temperature", "0", "--num-predict", "4", "--verbose", "--system", "Answer briefly."])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"What is 2+2?").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success());
    let err = String::from_utf8(o.stderr).unwrap();
    // System (3 tokens) + template: the prompt is more than the question alone.
    assert!(err.contains("prompt eval count:") && err.contains("eval count:           4 token(s)"), "{err}");
    assert!(err.contains("threads, fast arithmetic)"), "the fast order is the default: {err}");
    assert!(!String::from_utf8(o.stdout).unwrap().trim().is_empty());
}

#[test]
fn a_missing_default_model_is_pulled_first_saying_so() {
    let store = tempfile::tempdir().unwrap();
    let o = caravan(store.path(), &["run", "--temperature", "0", "--num-predict", "2", "Hi"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("model smollm2:135m is not installed; pulling it first"));
    assert!(String::from_utf8(caravan(store.path(), &["list"]).stdout).unwrap().contains("smollm2:135m"));
}

#[test]
fn bad_arguments_fail_with_one_line() {
    let store = default_store();
    let o = caravan(&store, &["run", "--temperature", "abc", "hi"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("--temperature"));
    let o = caravan(&store, &["run", "--top-p", "5", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_line(&o).contains("--top-p must be in (0, 1]"));
    let o = caravan(&store, &["run", "no-such-model", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_line(&o).contains("model \"no-such-model\" not found"));
    let o = caravan(&store, &["run", "--num-predict", "-5", "hi"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_line(&o).contains("--num-predict"));
    let o = caravan(&store, &["run", "--arithmetic", "exact", "hi"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_line(&o).contains("unknown arithmetic \"exact\" (ggml or fast)"));
}

#[test]
fn run_takes_ggml_s_arithmetic_from_the_environment() {
    let o = Command::new(env!("CARGO_BIN_EXE_caravan"))
        .env("CARAVAN_MODELS", default_store())
        .env("CARAVAN_ARITHMETIC", "ggml")
        .args(["run", "--temperature", "0", "--num-predict", "4", "--verbose", "What is 2+2?"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("threads, ggml arithmetic)") && err.contains("eval count:           4 token(s)"), "{err}");
}

#[test]
fn pull_list_and_rm_a_local_file() {
    let store = tempfile::tempdir().unwrap();
    let src = common::model_path();
    let o = caravan(store.path(), &["pull", src.to_str().unwrap(), "--name", "mine:v1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = caravan(store.path(), &["list"]);
    let listing = String::from_utf8(o.stdout).unwrap();
    let row = listing.lines().find(|l| l.starts_with("mine:v1")).unwrap_or_else(|| panic!("{listing}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols, ["mine:v1", "93.8", "MiB", "llama", "134.5M", "Q4_1", "8192"]);
    assert!(caravan(store.path(), &["rm", "mine:v1"]).status.success());
    assert!(!String::from_utf8(caravan(store.path(), &["list"]).stdout).unwrap().contains("mine:v1"));
    let o = caravan(store.path(), &["rm", "mine:v1"]);
    assert!(stderr_line(&o).contains("not found"));
}

#[test]
fn pulling_a_damaged_file_is_refused_with_its_reason() {
    let store = tempfile::tempdir().unwrap();
    let bad = store.path().join("half.gguf");
    let real = std::fs::read(common::model_path()).unwrap();
    std::fs::write(&bad, &real[..real.len() / 3]).unwrap();
    let o = caravan(store.path(), &["pull", bad.to_str().unwrap(), "--name", "half"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_line(&o).contains("points past the end of the file"));
    assert!(!String::from_utf8(caravan(store.path(), &["list"]).stdout).unwrap().contains("half"));
}

/// Serves `body` on loopback, honouring `Range: bytes=N-`; records each
/// request's range start. Serves `requests` connections, then stops.
fn serve(body: Vec<u8>, requests: usize) -> (String, Arc<Mutex<Vec<u64>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/model.gguf", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut s = stream.unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
            }
            let req = String::from_utf8_lossy(&req).to_lowercase();
            let start: u64 =
                req.lines().find_map(|l| l.strip_prefix("range: bytes=")).and_then(|r| r.trim_end_matches('-').parse().ok()).unwrap_or(0);
            log.lock().unwrap().push(start);
            let part = &body[start as usize..];
            let head = if start > 0 {
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{}\r\n\r\n",
                    part.len(),
                    body.len() - 1,
                    body.len()
                )
            } else {
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", part.len())
            };
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(part);
        }
    });
    (url, seen)
}

#[test]
fn pull_from_a_url_resumes_a_partial_download() {
    let store = tempfile::tempdir().unwrap();
    let real = std::fs::read(common::model_path()).unwrap();
    // A previous, interrupted pull left the first 40 MB.
    std::fs::create_dir_all(store.path().join("blobs")).unwrap();
    std::fs::write(store.path().join("blobs/.partial-web"), &real[..40_000_000]).unwrap();
    let (url, seen) = serve(real.clone(), 1);
    let o = caravan(store.path(), &["pull", &url, "--name", "web"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(*seen.lock().unwrap(), vec![40_000_000]);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.path().join("manifests/web.json")).unwrap()).unwrap();
    assert_eq!(manifest["sha256"], "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53");
    assert!(!store.path().join("blobs/.partial-web").exists());
}

/// A batch output's lines by `custom_id`, each exactly once.
fn answers_by_id(path: &std::path::Path) -> std::collections::HashMap<String, serde_json::Value> {
    let mut by_id = std::collections::HashMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["custom_id"].as_str().unwrap().to_string();
        assert!(by_id.insert(id.clone(), v).is_none(), "{id} answered twice");
    }
    by_id
}

#[test]
fn batch_answers_every_line_with_errors_in_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/batch.jsonl");
    // llama.cpp's arithmetic: the first answer is the reference's.
    let o = caravan(&default_store(), &["batch", input, "-o", out.to_str().unwrap(), "--kv-memory", "64MiB", "--arithmetic", "ggml"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = String::from_utf8_lossy(&o.stderr);
    assert!(summary.contains("batch: 5 items (1 errors)"), "{summary}");
    let lines = answers_by_id(&out);
    let mut ids: Vec<&str> = lines.keys().map(String::as_str).collect();
    ids.sort();
    assert_eq!(ids, ["broken", "capital", "list", "sky", "three-tries"]);
    // Greedy completion: the reference's own continuation of this prompt.
    let golden = &common::golden()[0];
    let body = &lines["capital"]["response"]["body"];
    assert_eq!(lines["capital"]["response"]["status_code"], 200);
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["choices"][0]["text"], common::model().tokenizer.decode(&golden.completion_tokens[..8]));
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["prompt_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 8);
    assert_eq!(lines["sky"]["response"]["body"]["object"], "chat.completion");
    assert_eq!(lines["sky"]["response"]["body"]["choices"][0]["message"]["role"], "assistant");
    assert_eq!(lines["three-tries"]["response"]["body"]["choices"].as_array().unwrap().len(), 3);
    assert!(lines["broken"]["response"].is_null());
    assert!(lines["broken"]["error"]["message"].as_str().unwrap().contains("messages must not be empty"));
    // Cut at the stop string, which is not included.
    let list = &lines["list"]["response"]["body"]["choices"][0];
    let text = list["text"].as_str().unwrap();
    assert!(!text.contains('\n') && list["finish_reason"] == "stop", "{text:?}");
}

/// A run killed with SIGKILL while it writes answers, then resumed: the
/// output ends with every item answered exactly once, the answers written
/// before the kill kept as they were.
#[test]
fn batch_resumes_a_killed_run_without_repeating_an_item() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in.jsonl"), dir.path().join("out.jsonl"));
    // Answers of different lengths, so that some are written long before the last.
    let lines: Vec<String> = (0..48)
        .map(|i| {
            let body = serde_json::json!({"prompt": format!("Item {i}: the weather today is"), "max_tokens": 8 + (i % 6) * 40, "temperature": 0, "ignore_eos": true});
            serde_json::json!({"custom_id": format!("item-{i}"), "method": "POST", "url": "/v1/completions", "body": body}).to_string()
        })
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let args = ["batch", input.to_str().unwrap(), "-o", out.to_str().unwrap(), "--kv-memory", "64MiB", "--max-seqs", "8"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_caravan")).env("CARAVAN_MODELS", default_store()).args(args).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(&out).map_or(0, |t| t.lines().count()) < 10 {
        assert!(std::time::Instant::now() < deadline, "no answers written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // As a kill in the middle of a write would leave it: a line cut short.
    let mut before = std::fs::read_to_string(&out).unwrap();
    before.truncate(before.rfind('\n').unwrap() + 1);
    let kept = before.lines().count();
    assert!(kept < 48, "the run was meant to be killed before its end");
    std::fs::write(&out, format!("{before}{{\"custom_id\": \"item-4")).unwrap();
    let o = caravan(&default_store(), &[&args[..], &["--resume"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("{kept} answered before")), "{}", String::from_utf8_lossy(&o.stderr));
    let after = std::fs::read_to_string(&out).unwrap();
    assert!(after.starts_with(&before), "the answers written before the kill are kept as they were");
    let answers = answers_by_id(&out);
    assert_eq!(answers.len(), 48);
    for (i, line) in lines.iter().enumerate() {
        let max_tokens = serde_json::from_str::<serde_json::Value>(line).unwrap()["body"]["max_tokens"].clone();
        assert_eq!(answers[&format!("item-{i}")]["response"]["body"]["usage"]["completion_tokens"], max_tokens, "item {i}");
    }
    let refused = caravan(&default_store(), &["batch", input.to_str().unwrap(), "--resume"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr_line(&refused).contains("--resume needs -o OUTPUT"));
}

#[test]
fn batch_takes_plain_prompts_one_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("prompts.txt");
    std::fs::write(&input, "What is 2+2?\n\nName a color.\n").unwrap();
    let o = caravan(&default_store(), &["batch", input.to_str().unwrap(), "--kv-memory", "32MiB", "--max-tokens", "24"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    // Answers are written as they finish, so their order is the engine's; the ids name the lines they answer.
    let mut ids: Vec<&str> = lines.iter().map(|l| l["custom_id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["line-1", "line-3"]);
    assert!(lines.iter().all(|l| l["response"]["status_code"] == 200));
    assert!(lines.iter().all(|l| l["response"]["body"]["usage"]["completion_tokens"].as_u64().unwrap() <= 24));
}

#[test]
fn show_reports_a_model_s_details_and_capabilities() {
    let o = caravan(&default_store(), &["show", "smollm2:135m"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let field = |name: &str| out.lines().find_map(|l| l.trim().strip_prefix(name)).map(str::trim).unwrap_or_default().to_string();
    assert_eq!(field("architecture"), "llama");
    assert_eq!(field("parameters"), "134.5M");
    assert_eq!(field("quantization"), "Q4_1");
    assert_eq!(field("context length"), "8192");
    assert_eq!(field("block_count"), "30");
    // Its template has no tools.
    assert_eq!(field("capabilities"), "completion, chat");
    let o = caravan(&default_store(), &["show", "no-such-model"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_line(&o).contains("model \"no-such-model\" not found"));
}
