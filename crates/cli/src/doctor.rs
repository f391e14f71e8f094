//! `sprout doctor`: what this machine offers sprout and what is missing: CPU features, the kernels
//! the engine picks, threads, memory and the KV budget `sprout serve` would take, the data
//! directory, the models (checked against the registry's sha256) and catalogs, and for every
//! problem the command that fixes it. Exits non-zero only when `sprout serve` would fail.

mod cpu;
mod models;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use sprout_engine::engine::EngineConfig;
use sprout_engine::kv::KvPool;
use sprout_engine::model::config::ModelConfig;
use sprout_engine::quant::matmul;
use sprout_engine::registry::{self, ModelEntry, ModelFormat};
use sprout_recommend::Catalog;
use sprout_server::catalogs::layout::{self, BUILT_IN};
use sprout_server::ServerConfig;

use models::{ModelCheck, ModelState};
use report::{
    mib, text, CatalogLine, DataDir, KernelUse, Kernels, KvBudget, Memory, ModelLine, Problem,
    Report, Threads,
};

/// `sprout doctor [--home DIR] [--json]`.
#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// sprout's data directory (as for `sprout serve`).
    #[arg(long, env = "SPROUT_HOME")]
    pub home: Option<PathBuf>,
    /// The chat model `sprout serve` would load.
    #[arg(long, short = 'm', env = "SPROUT_MODEL", default_value = "default")]
    pub model: String,
    /// The embedder `sprout serve` would load.
    #[arg(long, env = "SPROUT_EMBEDDER", default_value = "embeddinggemma")]
    pub embedder: String,
    /// Check as for `sprout serve --no-embedder`.
    #[arg(long)]
    pub no_embedder: bool,
    /// Kernel threads serve would use (default: all cores).
    #[arg(long, short = 't', env = "SPROUT_THREADS")]
    pub threads: Option<usize>,
    /// KV cache tokens serve would reserve (default: a share of available memory).
    #[arg(long, env = "SPROUT_KV_TOKENS")]
    pub kv_tokens: Option<usize>,
    /// Requests generating at once in serve (sizes the KV cap).
    #[arg(long, env = "SPROUT_MAX_CONCURRENT")]
    pub max_concurrent: Option<usize>,
    /// Compare file sizes only, without hashing the models.
    #[arg(long)]
    pub no_hash: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs the checks and prints the report.
pub fn run(args: DoctorArgs) -> Result<()> {
    let data_dir = registry::data_dir(args.home.as_deref());
    let home_flag = args
        .home
        .as_ref()
        .map(|h| format!(" --home {}", shell_word(&h.display().to_string())))
        .unwrap_or_default();
    let mut problems = Vec::new();

    let dir = DataDir {
        exists: data_dir.is_dir(),
        writable: writable(&data_dir),
        from: if args.home.is_some() {
            "--home or SPROUT_HOME"
        } else {
            "default ($XDG_DATA_HOME/sprout, else ~/.local/share/sprout)"
        },
        path: data_dir.clone(),
    };

    // The models serve needs, then any other registry model with files on disk.
    let chat_entry = registry::find(&args.model);
    let chat_is_path = chat_entry.is_none() && Path::new(&args.model).exists();
    let embedder_entry = (!args.no_embedder)
        .then(|| registry::find(&args.embedder))
        .flatten();
    let embedder_is_path =
        !args.no_embedder && embedder_entry.is_none() && Path::new(&args.embedder).exists();
    let mut entries: Vec<(&'static ModelEntry, &'static str)> = Vec::new();
    if let Some(e) = chat_entry {
        entries.push((e, "chat"));
    }
    if let Some(e) = embedder_entry.filter(|e| Some(*e) != chat_entry) {
        entries.push((e, "embedder"));
    }
    for e in registry::MODELS {
        if !entries.iter().any(|(x, _)| x.name == e.name) && models::any_on_disk(e, &data_dir) {
            entries.push((e, "other"));
        }
    }
    let list: Vec<&'static ModelEntry> = entries.iter().map(|(e, _)| *e).collect();
    let checks = models::check(&list, &data_dir, !args.no_hash, true);
    let mut model_lines = Vec::new();
    for ((entry, role), check) in entries.iter().zip(&checks) {
        let spec = match *role {
            "chat" => args.model.as_str(),
            "embedder" => args.embedder.as_str(),
            _ => entry.name,
        };
        let line = model_line(entry, role, check, spec, &data_dir, &home_flag);
        if let Some(fix) = &line.fix {
            let needed = *role != "other";
            let blocks = needed && (check.state == ModelState::Mismatch || !dir.writable);
            let what = match check.state {
                ModelState::Missing if needed && !dir.writable => format!(
                    "{role} model {} is missing, and `sprout serve` cannot pull it into a data \
                     directory it cannot write",
                    entry.name
                ),
                ModelState::Missing if needed => format!(
                    "{role} model {} is missing: `sprout serve` would pull it ({:.0} MB) on start",
                    entry.name,
                    entry.total_bytes() as f64 / 1e6
                ),
                ModelState::Missing => format!("{} is missing", entry.name),
                _ => format!(
                    "{} is {}: {}",
                    entry.name,
                    line.status,
                    check.detail.as_deref().unwrap_or("")
                ),
            };
            problems.push(Problem {
                what,
                fix: fix.clone(),
                blocks_serve: blocks,
            });
        }
        model_lines.push(line);
    }
    for (spec, role, is_path) in [
        (&args.model, "chat", chat_is_path),
        (&args.embedder, "embedder", embedder_is_path),
    ] {
        if is_path {
            model_lines.push(ModelLine {
                name: spec.clone(),
                role,
                path: PathBuf::from(spec),
                status: "unchecked",
                bytes: path_bytes(Path::new(spec)),
                checked: None,
                detail: Some("a path, not a registry model: nothing to check it against".into()),
                fix: None,
            });
        }
    }
    if chat_entry.is_none() && !chat_is_path {
        problems.push(unknown_model("--model", &args.model));
    }
    if !args.no_embedder && embedder_entry.is_none() && !embedder_is_path {
        problems.push(unknown_model("--embedder", &args.embedder));
    }
    if !dir.writable {
        problems.push(Problem {
            what: format!("the data directory {} is not writable", data_dir.display()),
            fix: "make it writable, or choose another: `sprout serve --home DIR` (or \
                  SPROUT_HOME=DIR)"
                .into(),
            blocks_serve: false,
        });
    }

    // The chat model's file, when it is a GGUF on disk: kernels and KV budget from its header.
    let chat_path = chat_entry
        .filter(|e| e.format == ModelFormat::Gguf)
        .map(|e| e.path_in(&data_dir))
        .or_else(|| chat_is_path.then(|| PathBuf::from(&args.model)))
        .filter(|p| p.is_file());
    let chat_ok = chat_entry.map_or(chat_is_path, |e| {
        checks
            .iter()
            .any(|c| c.name == e.name && c.state == ModelState::Ok)
    });
    let header = chat_path
        .as_deref()
        .filter(|_| chat_ok)
        .and_then(|p| gguf_header(p).ok());

    let engine_default = EngineConfig::default();
    let threads = Threads {
        available: std::thread::available_parallelism().map_or(1, |n| n.get()),
        serve: args.threads.map_or(engine_default.threads, |t| t.max(1)),
        from: if args.threads.is_some() {
            "--threads or SPROUT_THREADS"
        } else {
            "all cores"
        },
    };
    let max_concurrent = args
        .max_concurrent
        .unwrap_or(ServerConfig::default().max_concurrent);
    let meminfo = meminfo();
    let kv = header.as_ref().map(|h| {
        let bytes_per_token = KvPool::bytes_per_token(h.config.n_layers, h.config.kv_dim());
        let tokens = crate::serve::kv_budget_tokens(
            args.kv_tokens,
            bytes_per_token,
            h.config.context_tokens,
            max_concurrent,
        );
        KvBudget {
            tokens,
            bytes: (tokens * bytes_per_token) as u64,
            bytes_per_token,
            context_tokens: h.config.context_tokens,
            max_concurrent,
            from: if args.kv_tokens.is_some() {
                "--kv-tokens or SPROUT_KV_TOKENS"
            } else {
                "a quarter of available memory, at most every concurrent request's full context"
            },
        }
    });
    let memory = Memory {
        total_bytes: meminfo.get("MemTotal").copied(),
        available_bytes: meminfo.get("MemAvailable").copied(),
        model_bytes: chat_path.as_deref().and_then(path_bytes),
        kv,
    };
    if let (Some(avail), Some(model)) = (memory.available_bytes, memory.model_bytes) {
        let kv_bytes = memory.kv.as_ref().map_or(0, |k| k.bytes);
        if model + kv_bytes > avail {
            problems.push(Problem {
                what: format!(
                    "the chat model ({:.0} MiB) and its KV cache ({:.0} MiB) exceed the {:.0} MiB \
                     of memory available",
                    mib(model),
                    mib(kv_bytes),
                    mib(avail)
                ),
                fix:
                    "free memory, or serve with a smaller cache (`sprout serve --kv-tokens 4096`) \
                      or model (`--model gemma`)"
                        .into(),
                blocks_serve: false,
            });
        }
    }

    let kernels = Kernels {
        isa: matmul::isa_name(),
        chat_model: header.map(|h| h.kernels).unwrap_or_default(),
    };
    if kernels.isa.starts_with("scalar") && cfg!(target_arch = "x86_64") {
        problems.push(Problem {
            what: "this CPU lacks AVX2, FMA or F16C: the engine runs its portable kernels, many \
                   times slower"
                .into(),
            fix: "run sprout on a CPU with AVX2 (x86-64-v3: Intel Haswell, AMD Zen or newer)"
                .into(),
            blocks_serve: false,
        });
    }

    let catalogs = catalog_lines(&data_dir, &home_flag, &mut problems);
    let report = Report {
        serve_ok: !problems.iter().any(|p| p.blocks_serve),
        cpu: cpu::probe(),
        kernels,
        threads,
        memory,
        data_dir: dir,
        models: model_lines,
        catalogs,
        problems,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", text(&report));
    }
    if !report.serve_ok {
        bail!("`sprout serve` would fail: fix the problems marked [blocks serve] above");
    }
    Ok(())
}

/// A registry model's line, with the command that fixes it when it is not ok.
fn model_line(
    entry: &ModelEntry,
    role: &'static str,
    check: &ModelCheck,
    spec: &str,
    data_dir: &Path,
    home_flag: &str,
) -> ModelLine {
    let models = registry::models_dir(data_dir);
    // Names the user typed are the ones to show back ("default", "embeddinggemma").
    let pull_name = if registry::find(spec) == Some(entry) {
        spec
    } else {
        entry.name
    };
    let pull = format!("sprout pull {}{home_flag}", shell_word(pull_name));
    let (status, fix) = match check.state {
        ModelState::Ok => ("ok", None),
        ModelState::Missing => ("missing", Some(pull)),
        ModelState::Incomplete | ModelState::Mismatch => {
            let status = if check.state == ModelState::Mismatch {
                "mismatch"
            } else {
                "incomplete"
            };
            let rm: Vec<String> = check
                .remove_first
                .iter()
                .flat_map(|rel| {
                    let path = models.join(rel);
                    let marker = crate::pull::marker_path(&path);
                    [path, marker]
                })
                .map(|p| shell_word(&p.display().to_string()))
                .collect();
            let fix = if rm.is_empty() {
                pull
            } else {
                format!("rm -rf {} && {pull}", rm.join(" "))
            };
            (status, Some(fix))
        }
    };
    ModelLine {
        name: entry.name.to_string(),
        role,
        path: check.path.clone(),
        status,
        bytes: Some(check.bytes),
        checked: Some(check.checked),
        detail: check.detail.clone(),
        fix,
    }
}

fn unknown_model(flag: &str, spec: &str) -> Problem {
    let known: Vec<_> = registry::MODELS.iter().map(|m| m.name).collect();
    Problem {
        what: format!("{flag} {spec} is neither a file nor a registry model"),
        fix: format!(
            "pass a path, or one of {} (see `sprout models`)",
            known.join(", ")
        ),
        blocks_serve: true,
    }
}

/// The built-in catalog and every ingested one: readable, indexed.
fn catalog_lines(
    data_dir: &Path,
    home_flag: &str,
    problems: &mut Vec<Problem>,
) -> Vec<CatalogLine> {
    let indexes = |name: &str| {
        let dir = layout::index_dir(data_dir, name);
        (
            dir.join("lexical").join("manifest.json").is_file(),
            dir.join("dense").is_dir(),
        )
    };
    let (lexical, dense) = indexes(BUILT_IN);
    let mut lines = vec![CatalogLine {
        name: BUILT_IN.to_string(),
        origin: "built in".into(),
        items: Some(Catalog::eco().len()),
        lexical_index: lexical,
        dense_index: dense,
        status: "ok",
        detail: None,
        fix: None,
    }];
    let names = match layout::ingested_names(data_dir) {
        Ok(names) => names,
        Err(error) => {
            problems.push(Problem {
                what: format!("cannot list the ingested catalogs: {error}"),
                fix: format!(
                    "check the permissions of {}",
                    layout::catalogs_dir(data_dir).display()
                ),
                blocks_serve: true,
            });
            return lines;
        }
    };
    for name in names {
        let path = layout::items_path(data_dir, &name);
        let source = layout::ingest_record(data_dir, &name).map(|r| r.source);
        let (lexical, dense) = indexes(&name);
        let mut line = CatalogLine {
            origin: source.as_ref().map_or_else(
                || "ingested".into(),
                |s| format!("ingested from {}", s.display()),
            ),
            name: name.clone(),
            items: None,
            lexical_index: lexical,
            dense_index: dense,
            status: "ok",
            detail: None,
            fix: None,
        };
        match layout::read_catalog(&name, &path) {
            Ok(catalog) => line.items = Some(catalog.len()),
            Err(error) => {
                let file =
                    source.map_or_else(|| "FILE".into(), |s| shell_word(&s.display().to_string()));
                let fix = format!("sprout catalog ingest {file} --name {name}{home_flag}");
                line.status = "unreadable";
                line.detail = Some(error.to_string());
                line.fix = Some(fix.clone());
                problems.push(Problem {
                    what: format!("catalog {name} cannot be read ({error})"),
                    fix,
                    blocks_serve: true,
                });
            }
        }
        lines.push(line);
    }
    lines
}

/// What a GGUF header tells without loading the weights.
struct GgufHeader {
    config: ModelConfig,
    kernels: Vec<KernelUse>,
}

fn gguf_header(path: &Path) -> Result<GgufHeader> {
    let source = sprout_engine::gguf::open(path)?;
    let config = ModelConfig::from_source(&source)?;
    let mut by_kernel: BTreeMap<(&'static str, &'static str), usize> = BTreeMap::new();
    for tensor in source.tensors.values().filter(|t| t.dims.len() >= 2) {
        let rows: usize = tensor.dims[1..].iter().product();
        let kernel = matmul::kernel_name(tensor.ty, rows);
        *by_kernel.entry((tensor.ty.name(), kernel)).or_default() += 1;
    }
    let kernels = by_kernel
        .into_iter()
        .map(|((weight_type, kernel), matrices)| KernelUse {
            weight_type,
            matrices,
            kernel,
        })
        .collect();
    Ok(GgufHeader { config, kernels })
}

/// `/proc/meminfo` in bytes, by key (empty off Linux).
fn meminfo() -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((key.to_string(), kb * 1024))
        })
        .collect()
}

/// Whether `dir` (or, while it does not exist, the nearest ancestor it would be created in)
/// takes a new file: a probe file created and removed at once.
fn writable(dir: &Path) -> bool {
    let mut at = dir;
    while !at.exists() {
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    let probe = at.join(format!(".sprout-doctor-{}", std::process::id()));
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .is_ok();
    if created {
        let _ = std::fs::remove_file(&probe);
    }
    created
}

/// Size of a file, or of every file under a directory.
fn path_bytes(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    if meta.is_file() {
        return Some(meta.len());
    }
    let entries = std::fs::read_dir(path).ok()?;
    Some(
        entries
            .flatten()
            .filter_map(|e| path_bytes(&e.path()))
            .sum(),
    )
}

/// `s` quoted for a POSIX shell when it needs to be.
fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/tmp/a-b_c.gguf"), "/tmp/a-b_c.gguf");
        assert_eq!(shell_word("/tmp/my dir"), "'/tmp/my dir'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn a_missing_directory_is_judged_by_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        assert!(writable(&dir.path().join("not/yet/there")));
        assert!(writable(dir.path()));
        // The probe leaves nothing behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
