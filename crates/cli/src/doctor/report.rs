//! What `sprout doctor` found, as the types its JSON is made of, and rendered for a person.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use super::cpu;

/// Everything the doctor found.
#[derive(Debug, Serialize)]
pub(super) struct Report {
    /// Whether `sprout serve` can start (perhaps after pulling what is missing).
    pub(super) serve_ok: bool,
    pub(super) cpu: cpu::CpuReport,
    pub(super) kernels: Kernels,
    pub(super) threads: Threads,
    pub(super) memory: Memory,
    pub(super) data_dir: DataDir,
    pub(super) models: Vec<ModelLine>,
    pub(super) catalogs: Vec<CatalogLine>,
    /// Every problem with the command that fixes it.
    pub(super) problems: Vec<Problem>,
}

/// The kernels the engine picks on this CPU.
#[derive(Debug, Serialize)]
pub(super) struct Kernels {
    /// The instruction set the kernels run on.
    pub(super) isa: &'static str,
    /// Weight types of the chat model and the kernel each gets (empty without the model).
    pub(super) chat_model: Vec<KernelUse>,
}

/// One weight type of the chat model: how many matrices, multiplied by which kernel.
#[derive(Debug, Serialize)]
pub(super) struct KernelUse {
    pub(super) weight_type: &'static str,
    pub(super) matrices: usize,
    pub(super) kernel: &'static str,
}

/// Kernel threads: what the machine has and what `sprout serve` takes.
#[derive(Debug, Serialize)]
pub(super) struct Threads {
    pub(super) available: usize,
    pub(super) serve: usize,
    pub(super) from: &'static str,
}

/// Memory now, and what the chat model and its KV cache would take.
#[derive(Debug, Serialize)]
pub(super) struct Memory {
    pub(super) total_bytes: Option<u64>,
    pub(super) available_bytes: Option<u64>,
    /// Bytes of the chat model's weights on disk.
    pub(super) model_bytes: Option<u64>,
    pub(super) kv: Option<KvBudget>,
}

/// The KV cache `sprout serve` would reserve for the chat model, and the rule behind it.
#[derive(Debug, Serialize)]
pub(super) struct KvBudget {
    pub(super) tokens: usize,
    pub(super) bytes: u64,
    pub(super) bytes_per_token: usize,
    pub(super) context_tokens: usize,
    pub(super) max_concurrent: usize,
    pub(super) from: &'static str,
}

/// The data directory models and catalogs live in, and where its path came from.
#[derive(Debug, Serialize)]
pub(super) struct DataDir {
    pub(super) path: PathBuf,
    pub(super) from: &'static str,
    pub(super) exists: bool,
    pub(super) writable: bool,
}

/// One model: its role for serve, its check, and the command that fixes it.
#[derive(Debug, Serialize)]
pub(super) struct ModelLine {
    pub(super) name: String,
    /// chat, embedder, or other (pulled but not used by serve as configured).
    pub(super) role: &'static str,
    pub(super) path: PathBuf,
    /// ok, missing, incomplete, mismatch, or unchecked (a path, not a registry model).
    pub(super) status: &'static str,
    pub(super) bytes: Option<u64>,
    pub(super) checked: Option<&'static str>,
    pub(super) detail: Option<String>,
    pub(super) fix: Option<String>,
}

/// One catalog: where it comes from, whether it reads, which indexes are on disk.
#[derive(Debug, Serialize)]
pub(super) struct CatalogLine {
    pub(super) name: String,
    pub(super) origin: String,
    pub(super) items: Option<usize>,
    pub(super) lexical_index: bool,
    pub(super) dense_index: bool,
    pub(super) status: &'static str,
    pub(super) detail: Option<String>,
    pub(super) fix: Option<String>,
}

/// Something to fix, with the command or step that fixes it.
#[derive(Debug, Serialize)]
pub(super) struct Problem {
    pub(super) what: String,
    pub(super) fix: String,
    /// True when `sprout serve` would fail until it is fixed.
    pub(super) blocks_serve: bool,
}

/// Bytes in MiB.
pub(super) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 20) as f64
}

/// Bytes in GiB.
fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// The report for a person.
pub(super) fn text(r: &Report) -> String {
    let mut out = String::new();
    let yes = |b: bool| if b { "yes" } else { "no" };
    let _ = writeln!(
        out,
        "cpu       {} ({})",
        r.cpu.model.as_deref().unwrap_or("unknown model"),
        r.cpu.arch
    );
    if !r.cpu.features.is_empty() {
        let features: Vec<String> = r
            .cpu
            .features
            .iter()
            .map(|f| format!("{} {}", f.name, yes(f.present)))
            .collect();
        let _ = writeln!(out, "          {}", features.join(", "));
    }
    let amx = &r.cpu.amx;
    let _ = writeln!(
        out,
        "          amx: cpuid tile {}, int8 {}, bf16 {}; kernel lists it {}; granted {} \
         (the engine has no AMX kernels)",
        yes(amx.tile_in_cpuid),
        yes(amx.int8_in_cpuid),
        yes(amx.bf16_in_cpuid),
        amx.kernel_lists_tile.map_or("unknown", yes),
        amx.granted.map_or("not asked", yes),
    );
    let _ = writeln!(out, "kernels   {}", r.kernels.isa);
    for k in &r.kernels.chat_model {
        let _ = writeln!(
            out,
            "          {:<6} {:>4} matrices: {}",
            k.weight_type, k.matrices, k.kernel
        );
    }
    let _ = writeln!(
        out,
        "threads   {} available; serve uses {} ({})",
        r.threads.available, r.threads.serve, r.threads.from
    );
    let m = &r.memory;
    let _ = writeln!(
        out,
        "memory    {} total, {} available{}",
        m.total_bytes
            .map_or("?".into(), |b| format!("{:.1} GiB", gib(b))),
        m.available_bytes
            .map_or("?".into(), |b| format!("{:.1} GiB", gib(b))),
        m.model_bytes
            .map_or(String::new(), |b| format!("; chat model {:.0} MiB", mib(b)))
    );
    match &m.kv {
        Some(kv) => {
            let _ = writeln!(
                out,
                "          KV cache: {} tokens = {:.0} MiB ({} bytes/token, context {}, {} concurrent; {})",
                kv.tokens,
                mib(kv.bytes),
                kv.bytes_per_token,
                kv.context_tokens,
                kv.max_concurrent,
                kv.from
            );
        }
        None => {
            let _ = writeln!(
                out,
                "          KV cache: unknown until the chat model is on disk"
            );
        }
    }
    let d = &r.data_dir;
    let _ = writeln!(
        out,
        "data dir  {}: {}, {}; from {}",
        d.path.display(),
        if d.exists {
            "exists"
        } else {
            "not created yet"
        },
        if d.writable {
            "writable"
        } else {
            "NOT writable"
        },
        d.from,
    );
    let _ = writeln!(out, "models");
    for line in &r.models {
        let size = line
            .bytes
            .map_or(String::new(), |b| format!(", {:.1} MB", b as f64 / 1e6));
        let checked = match line.checked {
            Some(c) if line.status != "missing" => format!(", {c} checked"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:<10} {} ({}{size}{checked})",
            line.status, line.name, line.role
        );
        if let Some(detail) = &line.detail {
            let _ = writeln!(out, "             {detail}");
        }
    }
    let _ = writeln!(out, "catalogs");
    for c in &r.catalogs {
        let items = c.items.map_or("?".into(), |n| n.to_string());
        let index = match (c.lexical_index, c.dense_index) {
            (true, true) => "lexical and dense indexes on disk",
            (true, false) => "lexical index on disk",
            (false, true) => "dense index on disk",
            (false, false) => "indexes built on first serve",
        };
        let _ = writeln!(
            out,
            "  {:<10} {} ({}, {items} items, {index})",
            c.status, c.name, c.origin
        );
    }
    if r.problems.is_empty() {
        let _ = writeln!(out, "\nall good: `sprout serve` is ready");
        return out;
    }
    let _ = writeln!(out, "\nto do:");
    for p in &r.problems {
        let mark = if p.blocks_serve {
            " [blocks serve]"
        } else {
            ""
        };
        let _ = writeln!(out, "  - {}{mark}\n      {}", p.what, p.fix);
    }
    if r.serve_ok {
        let _ = writeln!(
            out,
            "\n`sprout serve` can start (it pulls missing models first)"
        );
    }
    out
}
