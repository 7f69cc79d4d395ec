//! The Kubernetes manifests and the Dockerfile (tests/python/test_deploy.py):
//! valid against the Kubernetes API's and the Gateway API CRDs' schemas, and
//! consistent with each other and with caravan's flags.

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn the_deployment_manifests_validate_and_agree() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/test_deploy.py");
    let out = Command::new(common::python_with_clients()).arg(&script).output().expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} failed:\n{text}", script.display());
}
