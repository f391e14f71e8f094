//! AMX as the CPU and the kernel offer it, probed for `sprout doctor` and never executed: the
//! engine has no AMX kernels, and a CPU whose cpuid lists AMX may still die with SIGILL on the
//! first tile instruction unless Linux granted the tile state (`arch_prctl`). The two probes are
//! here, beside the kernels, because they need `unsafe`.

/// (AMX-TILE, AMX-INT8, AMX-BF16) as cpuid leaf 7 subleaf 0 lists them (EDX bits 24, 25, 22).
#[cfg(target_arch = "x86_64")]
pub fn amx_in_cpuid() -> (bool, bool, bool) {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // The intrinsics became safe in newer Rust; `unsafe` keeps older compilers happy.
    #[allow(unused_unsafe)]
    // SAFETY: cpuid exists on every x86_64 CPU; leaf 7 is read only when leaf 0 says it exists.
    let edx = unsafe {
        if __cpuid(0).eax < 7 {
            return (false, false, false);
        }
        __cpuid_count(7, 0).edx
    };
    let bit = |n: u32| edx & (1 << n) != 0;
    (bit(24), bit(25), bit(22))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn amx_in_cpuid() -> (bool, bool, bool) {
    (false, false, false)
}

/// Asks Linux for permission to use the AMX tile data state (what a process must do before its
/// first AMX instruction); Some(true) when granted. Nothing is executed on the tiles.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub fn request_amx_permission() -> Option<bool> {
    // From arch/x86/include/uapi/asm/prctl.h and the xstate numbering.
    const ARCH_GET_XCOMP_SUPP: libc::c_long = 0x1021;
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    let mut supported: u64 = 0;
    // SAFETY: ARCH_GET_XCOMP_SUPP writes one u64 through the pointer, which points at a live
    // local of that type; the call has no other effect.
    let got = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_SUPP,
            &mut supported as *mut u64,
        )
    };
    if got != 0 {
        // Kernels before 5.16 know no dynamic xstate: they cannot grant AMX.
        return Some(false);
    }
    if supported & (1 << XFEATURE_XTILEDATA) == 0 {
        return Some(false);
    }
    // SAFETY: ARCH_REQ_XCOMP_PERM takes a feature number and reads no memory; it only records
    // the permission (and a larger signal frame) for this short-lived process.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    Some(granted == 0)
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub fn request_amx_permission() -> Option<bool> {
    None
}
