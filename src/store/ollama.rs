//! An Ollama model store, read as it is and never written: manifests under
//! `manifests/<registry>/<namespace>/<model>/<tag>` (OCI image manifests
//! whose layers name blobs by digest) and blobs under
//! `blobs/sha256-<hex>`. A model's name is Ollama's: `model:tag` in the
//! default registry's `library` namespace, `namespace/model:tag` in another
//! namespace, `host/namespace/model:tag` in another registry.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::Value;

const DEFAULT_REGISTRY: &str = "registry.ollama.ai";
const MODEL_LAYER: &str = "application/vnd.ollama.image.model";
const SYSTEM_LAYER: &str = "application/vnd.ollama.image.system";
const PARAMS_LAYER: &str = "application/vnd.ollama.image.params";

pub struct OllamaStore {
    root: PathBuf,
}

/// What an Ollama manifest says of a model.
pub struct OllamaModel {
    pub name: String,
    pub file: PathBuf,
    pub sha256: String,
    /// The Modelfile's SYSTEM, and its PARAMETERs as request options.
    pub system: Option<String>,
    pub params: Option<Value>,
}

impl OllamaStore {
    pub fn new(root: PathBuf) -> OllamaStore {
        OllamaStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The manifest file of a name, if the name can be one.
    fn manifest_path(&self, name: &str) -> Option<PathBuf> {
        let (path, tag) = name.rsplit_once(':').filter(|(_, t)| !t.contains('/')).unwrap_or((name, "latest"));
        let parts: Vec<&str> = path.split('/').collect();
        let ok = |s: &str| !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !parts.iter().chain([&tag]).all(|p| ok(p)) {
            return None;
        }
        let full: Vec<&str> = match parts.as_slice() {
            [model] => vec![DEFAULT_REGISTRY, "library", model],
            [namespace, model] => vec![DEFAULT_REGISTRY, namespace, model],
            [host, namespace, model] => vec![host, namespace, model],
            _ => return None,
        };
        Some(full.iter().fold(self.root.join("manifests"), |p, s| p.join(s)).join(tag))
    }

    /// The model of that name, if this store has it.
    pub fn find(&self, name: &str) -> Result<Option<OllamaModel>> {
        match self.manifest_path(name) {
            Some(path) if path.is_file() => self.read(name, &path).map(Some),
            _ => Ok(None),
        }
    }

    /// Every model, by name.
    pub fn list(&self) -> Result<Vec<OllamaModel>> {
        let mut out = Vec::new();
        let manifests = self.root.join("manifests");
        let Ok(hosts) = std::fs::read_dir(&manifests) else { return Ok(out) };
        for host in hosts.flatten() {
            for namespace in std::fs::read_dir(host.path()).into_iter().flatten().flatten() {
                for model in std::fs::read_dir(namespace.path()).into_iter().flatten().flatten() {
                    for tag in std::fs::read_dir(model.path()).into_iter().flatten().flatten() {
                        let [h, n, m, t] = [&host, &namespace, &model, &tag].map(|e| e.file_name().to_string_lossy().into_owned());
                        let name = match (h.as_str(), n.as_str()) {
                            (DEFAULT_REGISTRY, "library") => format!("{m}:{t}"),
                            (DEFAULT_REGISTRY, _) => format!("{n}/{m}:{t}"),
                            _ => format!("{h}/{n}/{m}:{t}"),
                        };
                        out.push(self.read(&name, &tag.path())?);
                    }
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn blob(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest.strip_prefix("sha256:").filter(|h| h.len() == 64).ok_or_else(|| anyhow!("bad layer digest {digest:?}"))?;
        Ok(self.root.join("blobs").join(format!("sha256-{hex}")))
    }

    fn read(&self, name: &str, path: &Path) -> Result<OllamaModel> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
        let manifest: Value = serde_json::from_str(&text).with_context(|| format!("{}: not a manifest", path.display()))?;
        let layers = manifest["layers"].as_array().ok_or_else(|| anyhow!("{}: a manifest without layers", path.display()))?;
        let layer = |kind: &str| layers.iter().find(|l| l["mediaType"] == kind).and_then(|l| l["digest"].as_str());
        let digest = layer(MODEL_LAYER).ok_or_else(|| anyhow!("{}: no model layer", path.display()))?;
        let read_text = |digest: &str| -> Result<String> {
            let blob = self.blob(digest)?;
            std::fs::read_to_string(&blob).with_context(|| format!("{}", blob.display()))
        };
        let system = layer(SYSTEM_LAYER).map(read_text).transpose()?;
        let params = match layer(PARAMS_LAYER).map(read_text).transpose()? {
            Some(text) => Some(serde_json::from_str(&text).with_context(|| format!("{name}: its params layer is not JSON"))?),
            None => None,
        };
        Ok(OllamaModel { name: name.to_string(), file: self.blob(digest)?, sha256: digest["sha256:".len()..].to_string(), system, params })
    }
}
