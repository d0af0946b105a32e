//! The PyTorch side's Python environment: a venv under `target/`, made by the bench
//! itself from the package registry (the CPU build of torch is not on PyPI; the default
//! wheel brings CUDA libraries and runs on CPU).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Pinned so that a later bench compares against the same Python stack.
/// transformers needs gguf and accelerate to load a GGUF file.
const PACKAGES: [&str; 5] = [
    "torch==2.15.0",
    "transformers==5.24.0",
    "gguf==0.19.0",
    "accelerate==1.15.0",
    "numpy==2.4.6",
];

pub fn ensure(root: &Path) -> Result<PathBuf> {
    let dir = root.join("target").join("bench-venv");
    let python = dir.join("bin").join("python");
    if imports_ok(&python) {
        return Ok(python);
    }
    eprintln!("creating {} with {}", dir.display(), PACKAGES.join(" "));
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .context("running python3 -m venv (is Python 3 installed?)")?;
    if !status.success() {
        bail!("python3 -m venv {} failed", dir.display());
    }
    let status = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(PACKAGES)
        .status()
        .context("running pip")?;
    if !status.success() || !imports_ok(&python) {
        bail!(
            "could not install {} into {}",
            PACKAGES.join(" "),
            dir.display()
        );
    }
    Ok(python)
}

fn imports_ok(python: &Path) -> bool {
    python.exists()
        && Command::new(python)
            .args(["-c", "import torch, transformers, gguf, accelerate, numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
}
