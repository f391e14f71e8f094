//! What the CPU offers, detected at run time: the SIMD features the kernels care about, and AMX
//! as cpuid lists it and as the Linux kernel grants it (probed, never executed).

use serde::Serialize;
use sprout_engine::quant::amx;

/// The CPU as `sprout doctor` reports it.
#[derive(Debug, Serialize)]
pub struct CpuReport {
    /// `model name` from /proc/cpuinfo.
    pub model: Option<String>,
    /// The architecture this binary was built for.
    pub arch: &'static str,
    /// Run-time detected features, in a fixed order.
    pub features: Vec<Feature>,
    /// AMX: listed, enabled by the kernel, grantable to this process.
    pub amx: AmxReport,
}

/// One detected feature.
#[derive(Debug, Serialize)]
pub struct Feature {
    /// Name as `is_x86_feature_detected!` spells it.
    pub name: &'static str,
    /// Whether this CPU (and OS) supports it.
    pub present: bool,
}

/// AMX support, layer by layer: the engine has no AMX kernels, so this is information only.
#[derive(Debug, Serialize)]
pub struct AmxReport {
    /// cpuid leaf 7 lists AMX-TILE.
    pub tile_in_cpuid: bool,
    /// cpuid lists AMX-INT8.
    pub int8_in_cpuid: bool,
    /// cpuid lists AMX-BF16.
    pub bf16_in_cpuid: bool,
    /// The kernel lists `amx_tile` in /proc/cpuinfo (it does only when it manages the tile
    /// state); None when /proc/cpuinfo is unreadable.
    pub kernel_lists_tile: Option<bool>,
    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA)` succeeded for this process; None when not
    /// asked (no AMX in cpuid, or not Linux on x86_64).
    pub granted: Option<bool>,
    /// Whether the engine uses AMX (it has no AMX kernels).
    pub used_by_engine: bool,
}

/// Probes the CPU this process runs on.
pub fn probe() -> CpuReport {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok();
    let model = cpuinfo.as_deref().and_then(|info| {
        info.lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    });
    let flags: Option<Vec<&str>> = cpuinfo.as_deref().map(|info| {
        info.lines()
            .find(|l| l.starts_with("flags"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(Vec::new, |(_, v)| v.split_whitespace().collect())
    });
    let (tile, int8, bf16) = amx::amx_in_cpuid();
    CpuReport {
        model,
        arch: std::env::consts::ARCH,
        features: features(),
        amx: AmxReport {
            tile_in_cpuid: tile,
            int8_in_cpuid: int8,
            bf16_in_cpuid: bf16,
            kernel_lists_tile: flags.map(|f| f.contains(&"amx_tile")),
            granted: tile.then(amx::request_amx_permission).flatten(),
            used_by_engine: false,
        },
    }
}

#[cfg(target_arch = "x86_64")]
fn features() -> Vec<Feature> {
    macro_rules! detect {
        ($($name:tt),*) => {
            vec![$(Feature { name: $name, present: is_x86_feature_detected!($name) }),*]
        };
    }
    detect!(
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vnni",
        "avx512bf16"
    )
}

#[cfg(not(target_arch = "x86_64"))]
fn features() -> Vec<Feature> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_names_the_kernel_features_and_agrees_with_the_engine() {
        let cpu = probe();
        if cfg!(target_arch = "x86_64") {
            let names: Vec<_> = cpu.features.iter().map(|f| f.name).collect();
            assert_eq!(
                names,
                [
                    "avx2",
                    "fma",
                    "f16c",
                    "avx512f",
                    "avx512bw",
                    "avx512vnni",
                    "avx512bf16"
                ]
            );
            let has = |n: &str| cpu.features.iter().any(|f| f.name == n && f.present);
            let simd = has("avx2") && has("fma") && has("f16c");
            assert_eq!(
                sprout_engine::quant::matmul::isa_name() == "avx2+fma+f16c",
                simd
            );
        }
        assert!(!cpu.amx.used_by_engine);
        // Permission is asked only of a CPU that lists AMX.
        if !cpu.amx.tile_in_cpuid {
            assert_eq!(cpu.amx.granted, None);
        }
    }
}
