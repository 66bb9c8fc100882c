//! seccomp `RuntimeDefault`: a filter that makes the system calls a container has no business
//! making fail with EPERM — kernel modules and keyrings, mounting and namespace changes,
//! tracing other processes, clock and swap changes, kexec and reboot, BPF, perf — and allows
//! the rest (the same deny list as Docker's and containerd's default profiles, written out).

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
use serde::{Deserialize, Serialize};

/// The seccomp profile of a container process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Seccomp {
    /// The deny list below.
    #[default]
    RuntimeDefault,
    /// No filter (Kubernetes `Unconfined`, and the default for privileged containers).
    Unconfined,
}

/// System calls `RuntimeDefault` refuses, by name and x86_64 number.
pub const DENIED: &[(&str, libc::c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("create_module", 174), // removed from the kernel; libc no longer names it
    ("delete_module", libc::SYS_delete_module),
    ("finit_module", libc::SYS_finit_module),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fsopen", libc::SYS_fsopen),
    ("fspick", libc::SYS_fspick),
    ("get_kernel_syms", 177),
    ("init_module", libc::SYS_init_module),
    ("ioperm", libc::SYS_ioperm),
    ("iopl", libc::SYS_iopl),
    ("kcmp", libc::SYS_kcmp),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("mount", libc::SYS_mount),
    ("move_mount", libc::SYS_move_mount),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("nfsservctl", libc::SYS_nfsservctl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pivot_root", libc::SYS_pivot_root),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("ptrace", libc::SYS_ptrace),
    ("query_module", 178),
    ("quotactl", libc::SYS_quotactl),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("setns", libc::SYS_setns),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("_sysctl", libc::SYS__sysctl),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    ("uselib", libc::SYS_uselib),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("ustat", libc::SYS_ustat),
];

/// The BPF program of `RuntimeDefault`.
pub fn runtime_default() -> Result<BpfProgram, seccompiler::BackendError> {
    let rules = DENIED.iter().map(|&(_, nr)| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )?;
    filter.try_into()
}

/// Installs the profile on the calling (single-threaded) process; it holds across exec.
pub fn install(profile: Seccomp) -> Result<(), String> {
    match profile {
        Seccomp::Unconfined => Ok(()),
        Seccomp::RuntimeDefault => {
            let program = runtime_default().map_err(|e| format!("seccomp: {e}"))?;
            seccompiler::apply_filter(&program).map_err(|e| format!("seccomp: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_profile_compiles_and_denies_each_listed_call_once() {
        let program = runtime_default().unwrap();
        assert!(
            program.len() > DENIED.len(),
            "one comparison per denied call at least"
        );
        let mut numbers: Vec<_> = DENIED.iter().map(|(_, n)| *n).collect();
        numbers.sort();
        numbers.dedup();
        assert_eq!(numbers.len(), DENIED.len(), "no call listed twice");
        for allowed in [
            libc::SYS_read,
            libc::SYS_execve,
            libc::SYS_clone,
            libc::SYS_openat,
        ] {
            assert!(!numbers.contains(&allowed));
        }
    }
}
