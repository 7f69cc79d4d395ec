//! `caravan serve` on loopback, driven by the official `ollama` and
//! `openai` Python packages and by raw HTTP (tests/python/test_server.py).
//! Three servers: one with the defaults (and --max-batch-items 16, a 2 MiB
//! body limit and test faults on), a tight one (one sequence at a time, a
//! queue of one) for backpressure, and one with an API key and CORS.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use caravan::store::Store;

struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(store: &Path, log: &Path, extra: &[&str]) -> Server {
        Server::start_with(store, log, extra, &[])
    }

    fn start_with(store: &Path, log: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_caravan"))
            .args(["serve", "--host", &format!("127.0.0.1:{port}"), "--kv-memory", "256MiB"])
            .args(extra)
            .env("CARAVAN_MODELS", store)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("caravan serve starts");
        let server = Server { child, url };
        let deadline = Instant::now() + Duration::from_secs(60);
        while ureq::get(&format!("{}/health", server.url)).call().is_err() {
            assert!(Instant::now() < deadline, "the server did not become healthy: {}", std::fs::read_to_string(log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A store under `dir` holding the default model alone.
fn store_with_default_model(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("models");
    Store::new(store.clone()).pull(common::model_path().to_str().unwrap(), Some("smollm2:135m")).unwrap();
    store
}

/// Runs `tests/python/SCRIPT` with the clients' Python and `env`; fails
/// with its output and `log` (the server's) unless it succeeds; the
/// servers stop first, so that their logs are whole.
fn run_python<Servers>(script: &str, env: &[(&str, &str)], log: &Path, servers: Servers) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(script);
    let out = Command::new(common::python_with_clients()).arg(&script).envs(env.iter().copied()).output().expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    drop(servers);
    assert!(
        out.status.success(),
        "{} failed:\n{text}\nserver log:\n{}",
        script.display(),
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// A script that starts its own servers (tests/python/servers.py) on a
/// store holding the default model.
fn run_python_starting_servers(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_default_model(dir.path());
    let env = [
        ("CARAVAN_BIN", env!("CARGO_BIN_EXE_caravan")),
        ("CARAVAN_MODELS", store.to_str().unwrap()),
        ("CARAVAN_TEST_DIR", dir.path().to_str().unwrap()),
    ];
    run_python(script, &env, &dir.path().join("servers.log"), ());
}

#[test]
fn official_clients_batch_api_errors_backpressure_and_disconnects() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models");
    let model = common::model_path();
    // The default model, and the same file under a second name for the
    // model-switching test.
    for name in ["smollm2:135m", "smol-copy:latest"] {
        Store::new(store.clone()).pull(model.to_str().unwrap(), Some(name)).unwrap();
    }
    let main = Server::start_with(
        &store,
        &dir.path().join("main.log"),
        &["--max-batch-items", "16", "--max-body", "2MiB"],
        &[("CARAVAN_TEST_FAULTS", "1")],
    );
    let tight = Server::start(&store, &dir.path().join("tight.log"), &["--max-seqs", "1", "--max-queue", "1"]);
    let secure = Server::start(&store, &dir.path().join("secure.log"), &["--api-key", "s3cret", "--cors-origin", "http://app.example"]);
    let env = [("CARAVAN_URL", main.url.clone()), ("CARAVAN_TIGHT_URL", tight.url.clone()), ("CARAVAN_SECURE_URL", secure.url.clone())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_python("test_server.py", &env, &dir.path().join("main.log"), (main, tight, secure));
}

/// Structured output and tool calls through the official clients
/// (tests/python/test_structured.py): the default model, and Qwen 2.5,
/// whose template takes tools.
#[test]
fn structured_output_and_tool_calls_through_the_official_clients() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models");
    for name in ["smollm2:135m", "qwen2.5-coder:0.5b"] {
        let path = Store::from_env().resolve(name).unwrap_or_else(|e| panic!("{name} installs: {e:#}"));
        Store::new(store.clone()).pull(path.to_str().unwrap(), Some(name)).unwrap();
    }
    let log = dir.path().join("server.log");
    let server = Server::start(&store, &log, &["--max-batch-items", "64", "--max-loaded-models", "2"]);
    let url = server.url.clone();
    run_python("test_structured.py", &[("CARAVAN_URL", &url)], &log, server);
}

/// An embedding model beside a chat model through the official clients
/// (tests/python/test_embeddings.py): llama.cpp's vectors, concurrent
/// inputs, truncation, and the refusal to generate.
#[test]
fn an_embedding_model_through_the_official_clients() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("models");
    for name in ["smollm2:135m", "all-minilm"] {
        let path = Store::from_env().resolve(name).unwrap_or_else(|e| panic!("{name} installs: {e:#}"));
        Store::new(store.clone()).pull(path.to_str().unwrap(), Some(name)).unwrap();
    }
    let log = dir.path().join("server.log");
    let server = Server::start(&store, &log, &["--max-loaded-models", "2"]);
    let url = server.url.clone();
    run_python("test_embeddings.py", &[("CARAVAN_URL", &url)], &log, server);
}

/// Log-probabilities on every API through the official clients
/// (tests/python/test_logprobs.py), in ggml's order of arithmetic, so that
/// they equal llama.cpp's own on the same file.
#[test]
fn log_probabilities_through_the_official_clients_equal_llama_cpp_s() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_default_model(dir.path());
    let log = dir.path().join("server.log");
    let server = Server::start(&store, &log, &["--arithmetic", "ggml"]);
    let url = server.url.clone();
    run_python("test_logprobs.py", &[("CARAVAN_URL", &url)], &log, server);
}

/// OpenAI's Batch API through the official client
/// (tests/python/test_batch_jobs.py), which starts its own servers on the
/// store here, so that it can SIGKILL one mid-job and start it again.
#[test]
fn batch_jobs_run_durably_through_the_official_client() {
    run_python_starting_servers("test_batch_jobs.py");
}

/// KV-cache events read with pyzmq and msgpack as a prefix-aware router
/// reads them, and two replicas whose events predict which holds a prefix
/// (tests/python/test_kv_events.py, which starts its own servers).
#[test]
fn kv_events_announce_the_prefix_cache_to_a_router() {
    run_python_starting_servers("test_kv_events.py");
}

/// Models pulled, uploaded, created, copied and deleted over HTTP with the
/// official client, and an Ollama store served as it is
/// (tests/python/test_manage.py).
#[test]
fn models_are_managed_over_http_by_the_official_client() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_default_model(dir.path());
    // The upload's source, apart from the store the server manages.
    let file = dir.path().join("upload.gguf");
    std::fs::copy(common::model_path(), &file).unwrap();
    let ollama = dir.path().join("ollama");
    std::fs::create_dir(&ollama).unwrap();
    let log = dir.path().join("server.log");
    let server = Server::start(&store, &log, &["--ollama-models", ollama.to_str().unwrap()]);
    let url = server.url.clone();
    let env = [
        ("CARAVAN_URL", url.as_str()),
        ("CARAVAN_MODEL_FILE", file.to_str().unwrap()),
        ("CARAVAN_OLLAMA_MODELS", ollama.to_str().unwrap()),
    ];
    run_python("test_manage.py", &env, &log, server);
}

/// Property-based tests of /openapi.json (tests/python/test_openapi.py):
/// no generated request gets a 5xx, a status the description does not
/// list, or an answer off its schema.
#[test]
fn generated_requests_get_no_server_error_and_answers_on_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_default_model(dir.path());
    let log = dir.path().join("server.log");
    let server = Server::start(&store, &log, &[]);
    let url = server.url.clone();
    run_python("test_openapi.py", &[("CARAVAN_URL", &url)], &log, server);
}

/// SIGTERM: the server stops accepting, lets a running stream go on for
/// the grace period, then ends it with a final `done` line and exits 0.
#[test]
fn sigterm_ends_streams_with_a_final_message_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_default_model(dir.path());
    let mut server = Server::start(&store, &dir.path().join("server.log"), &["--shutdown-grace", "1"]);
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    let body = r#"{"model": "smollm2:135m", "prompt": "Tell me a very long story.", "options": {"num_predict": 5000, "temperature": 0}}"#;
    write!(stream, "POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut lines = Vec::new();
    // Wait for the stream to run, then ask the server to stop.
    while !lines.iter().any(|l: &String| l.contains("\"response\"")) {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        lines.push(line);
    }
    let asked = Instant::now();
    Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    let last = rest.lines().rfind(|l| l.starts_with('{')).expect("a final line").to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!((v["done"].as_bool(), v["done_reason"].as_str()), (Some(true), Some("length")), "{last}");
    assert!(v["eval_count"].as_u64().unwrap() > 1);
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(asked.elapsed() < Duration::from_secs(15), "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    // The grace period was given, and not much more.
    assert!(asked.elapsed() >= Duration::from_millis(900), "{:?}", asked.elapsed());
    assert!(std::net::TcpStream::connect(&addr).is_err(), "no longer accepting");
}
