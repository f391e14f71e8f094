//! The models on disk checked against the registry: every file's size and sha256 (the markers
//! `sprout pull` writes are not trusted here: the point is to catch a file changed since).

use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sprout_engine::registry::{self, ModelEntry};

use crate::progress::Progress;

/// What a model's files add up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelState {
    /// Every file present with its size and hash.
    Ok,
    /// No file of it on disk.
    Missing,
    /// Some files missing or of the wrong size (an interrupted pull).
    Incomplete,
    /// A file of the right size hashes to something else.
    Mismatch,
}

/// One registry model's check.
#[derive(Debug, Serialize)]
pub struct ModelCheck {
    /// Canonical registry name.
    pub name: &'static str,
    /// Where it lives (or would).
    pub path: PathBuf,
    /// The verdict.
    pub state: ModelState,
    /// Bytes it takes once pulled.
    pub bytes: u64,
    /// "sha256" or "size" (with `--no-hash`).
    pub checked: &'static str,
    /// The first file that is not right, and how.
    pub detail: Option<String>,
    /// Files (relative to the models directory) to delete before pulling again: a pull trusts
    /// a right-sized file whose marker matches, so a corrupted one must go first.
    pub remove_first: Vec<PathBuf>,
}

/// One file to check: where, how big, what hash.
struct Expected {
    model: usize,
    path: PathBuf,
    bytes: u64,
    sha256: &'static str,
    /// What to delete to make the pull fetch it again (the file, or an archive's directory).
    owner: PathBuf,
}

/// Whether any file of `entry` is on disk (an unpulled optional model is not worth a line).
pub fn any_on_disk(entry: &ModelEntry, data_dir: &Path) -> bool {
    let models = registry::models_dir(data_dir);
    entry
        .files
        .iter()
        .any(|f| fs::symlink_metadata(models.join(f.path)).is_ok())
}

/// Checks `entries` under `data_dir`, hashing unless `hash` is false, with one bar over every
/// byte hashed.
pub fn check(
    entries: &[&'static ModelEntry],
    data_dir: &Path,
    hash: bool,
    visible: bool,
) -> Vec<ModelCheck> {
    let models = registry::models_dir(data_dir);
    let mut expected = Vec::new();
    for (model, entry) in entries.iter().enumerate() {
        for file in entry.files {
            let path = models.join(file.path);
            match file.archive {
                None => expected.push(Expected {
                    model,
                    path: path.clone(),
                    bytes: file.bytes,
                    sha256: file.sha256,
                    owner: path,
                }),
                // The zip is not kept: its unpacked files are what the loader reads.
                Some(archive) => expected.extend(archive.verify.iter().map(|u| Expected {
                    model,
                    path: path.join(u.path),
                    bytes: u.bytes,
                    sha256: u.sha256,
                    owner: path.clone(),
                })),
            }
        }
    }
    let sizes: Vec<Option<u64>> = expected
        .iter()
        .map(|e| {
            fs::metadata(&e.path)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        })
        .collect();
    let to_hash: u64 = expected
        .iter()
        .zip(&sizes)
        .filter(|(e, size)| hash && **size == Some(e.bytes))
        .map(|(e, _)| e.bytes)
        .sum();
    let bar = Progress::bytes(to_hash, visible && to_hash > 0);
    let mut checks: Vec<ModelCheck> = entries
        .iter()
        .map(|entry| ModelCheck {
            name: entry.name,
            path: entry.path_in(data_dir),
            state: ModelState::Ok,
            bytes: entry.total_bytes(),
            checked: if hash { "sha256" } else { "size" },
            detail: None,
            remove_first: Vec::new(),
        })
        .collect();
    let mut present = vec![0usize; entries.len()];
    // The first missing file of each model, told only when nothing worse is.
    let mut first_missing: Vec<Option<String>> = vec![None; entries.len()];
    let mut total = vec![0usize; entries.len()];
    for (e, size) in expected.iter().zip(&sizes) {
        total[e.model] += 1;
        let check = &mut checks[e.model];
        let shown = e.path.strip_prefix(&models).unwrap_or(&e.path).display();
        match *size {
            None => {
                first_missing[e.model].get_or_insert_with(|| format!("{shown} is missing"));
                continue;
            }
            Some(len) if len != e.bytes => {
                present[e.model] += 1;
                check.state = worse(check.state, ModelState::Incomplete);
                check.detail.get_or_insert_with(|| {
                    format!("{shown} has {len} bytes, expected {}", e.bytes)
                });
                push_once(&mut check.remove_first, &e.owner, &models);
                continue;
            }
            Some(_) => present[e.model] += 1,
        }
        if !hash {
            continue;
        }
        bar.set_message(format!("hashing {}", entries[e.model].name));
        match crate::pull::sha256_file_with(&e.path, bar.bar()) {
            Ok(actual) if actual == e.sha256 => {}
            Ok(actual) => {
                check.state = ModelState::Mismatch;
                check.detail = Some(format!("{shown}: sha256 {actual}, expected {}", e.sha256));
                push_once(&mut check.remove_first, &e.owner, &models);
            }
            Err(error) => {
                check.state = ModelState::Mismatch;
                check.detail = Some(format!("{shown}: {error:#}"));
                push_once(&mut check.remove_first, &e.owner, &models);
            }
        }
    }
    bar.finish();
    for (i, check) in checks.iter_mut().enumerate() {
        if present[i] == 0 {
            check.state = ModelState::Missing;
            check.detail = None;
        } else if present[i] < total[i] {
            check.state = worse(check.state, ModelState::Incomplete);
            if check.detail.is_none() {
                check.detail = first_missing[i].take();
            }
        }
    }
    checks
}

/// The more serious of two states (a mismatch outranks an incomplete pull).
fn worse(a: ModelState, b: ModelState) -> ModelState {
    let rank = |s| match s {
        ModelState::Ok => 0,
        ModelState::Missing => 1,
        ModelState::Incomplete => 2,
        ModelState::Mismatch => 3,
    };
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

fn push_once(list: &mut Vec<PathBuf>, owner: &Path, models: &Path) {
    let rel = owner.strip_prefix(models).unwrap_or(owner).to_path_buf();
    if !list.contains(&rel) {
        list.push(rel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_wrong_size_and_corrupt_files_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let gemma = registry::find("gemma").unwrap();
        let minilm = registry::find("minilm").unwrap();
        let checks = check(&[gemma, minilm], dir.path(), true, false);
        assert_eq!(checks[0].state, ModelState::Missing);
        assert_eq!(checks[1].state, ModelState::Missing);

        // One MiniLM file with the right size but other bytes, the rest absent.
        let models = registry::models_dir(dir.path());
        let small = minilm.files.iter().min_by_key(|f| f.bytes).unwrap();
        let path = models.join(small.path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, vec![b'x'; small.bytes as usize]).unwrap();
        let checks = check(&[minilm], dir.path(), true, false);
        assert_eq!(checks[0].state, ModelState::Mismatch, "{:?}", checks[0]);
        assert!(checks[0].detail.as_deref().unwrap().contains("sha256"));
        assert_eq!(checks[0].remove_first, [PathBuf::from(small.path)]);
        // Sizes alone cannot see it: only incomplete.
        let checks = check(&[minilm], dir.path(), false, false);
        assert_eq!(checks[0].state, ModelState::Incomplete);

        // A truncated file is incomplete, named with its size.
        fs::write(&path, b"x").unwrap();
        let checks = check(&[minilm], dir.path(), true, false);
        assert_eq!(checks[0].state, ModelState::Incomplete);
        assert!(checks[0].detail.as_deref().unwrap().contains("has 1 bytes"));
    }
}
