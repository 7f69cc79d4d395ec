//! `caravan serve` on loopback, driven by the official `ollama` and
//! `openai` Python packages and by raw HTTP (tests/python/test_server.py).
//! Two servers: one with the defaults (and --max-batch-items 16), and a
//! tight one (one sequence at a time, a queue of one) for backpressure.

mod common;

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
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_caravan"))
            .args(["serve", "--host", &format!("127.0.0.1:{port}"), "--kv-memory", "256MiB"])
            .args(extra)
            .env("CARAVAN_MODELS", store)
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
    let main = Server::start(&store, &dir.path().join("main.log"), &["--max-batch-items", "16"]);
    let tight = Server::start(&store, &dir.path().join("tight.log"), &["--max-seqs", "1", "--max-queue", "1"]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_server.py");
    let out = Command::new("python3").arg(&script).env("CARAVAN_URL", &main.url).env("CARAVAN_TIGHT_URL", &tight.url).output().expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    drop((main, tight));
    assert!(out.status.success(), "the Python client tests failed:\n{text}\nserver log:\n{}", std::fs::read_to_string(dir.path().join("main.log")).unwrap_or_default());
}
