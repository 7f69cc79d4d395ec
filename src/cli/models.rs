//! `pull`, `list` and `rm`.

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

pub fn rm(name: &str) -> Result<()> {
    Store::from_env().remove(name)?;
    println!("deleted {name}");
    Ok(())
}
