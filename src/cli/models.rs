//! `pull`, `list`, `show` and `rm`.

use anyhow::Result;
use caravan::store::{human_bytes, human_count, Store, DEFAULT_MODEL};

#[derive(clap::Args)]
pub struct PullArgs {
    /// A known model name, a path to a .gguf file, or an http(s) URL of one
    #[arg(default_value = DEFAULT_MODEL)]
    source: String,
    /// The name to install a file or URL under
    #[arg(long)]
    name: Option<String>,
}

pub fn pull(a: PullArgs) -> Result<()> {
    let m = Store::from_env().pull(&a.source, a.name.as_deref())?;
    println!("pulled {} ({}, {} {}, sha256 {})", m.name, human_bytes(m.size), m.architecture, m.quantization, &m.sha256[..12]);
    Ok(())
}

pub fn list() -> Result<()> {
    let models = Store::from_env().list()?;
    println!("{:<24} {:>10} {:<8} {:>8} {:<8} {:>8}", "NAME", "SIZE", "ARCH", "PARAMS", "QUANT", "CONTEXT");
    for m in models {
        println!(
            "{:<24} {:>10} {:<8} {:>8} {:<8} {:>8}",
            m.name,
            human_bytes(m.size),
            m.architecture,
            human_count(m.parameters),
            m.quantization,
            m.context_length
        );
    }
    Ok(())
}

/// A model's manifest and what its file says of it, as `ollama show` does.
pub fn show(name: &str) -> Result<()> {
    let store = Store::from_env();
    let m = store.find(name)?.ok_or_else(|| anyhow::anyhow!("model {name:?} not found; `caravan list` shows what is installed"))?;
    let info = store.info(&m)?;
    let mut fields = vec![
        ("architecture".to_string(), m.architecture.clone()),
        ("parameters".into(), human_count(m.parameters)),
        ("quantization".into(), m.quantization.clone()),
        ("context length".into(), m.context_length.to_string()),
    ];
    for (key, value) in &info.hyper_parameters {
        let key = key.split_once('.').map_or(key.as_str(), |(_, k)| k);
        if key != "context_length" {
            fields.push((key.to_string(), value.to_string()));
        }
    }
    fields.push(("capabilities".into(), info.capabilities.join(", ")));
    fields.push(("size".into(), human_bytes(m.size)));
    fields.push(("sha256".into(), m.sha256.clone()));
    fields.push(("source".into(), m.source.clone()));
    for (key, value) in fields {
        println!("  {key:<24} {value}");
    }
    Ok(())
}

pub fn rm(name: &str) -> Result<()> {
    Store::from_env().remove(name)?;
    println!("deleted {name}");
    Ok(())
}
