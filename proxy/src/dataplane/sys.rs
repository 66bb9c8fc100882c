//! The one place the proxy calls bpf(2) itself: batched map updates and deletes
//! (`BPF_MAP_UPDATE_BATCH`, `BPF_MAP_DELETE_BATCH`, Linux 5.6+), which aya 0.14 lacks.
//! Programming 10,000 Services × 10 endpoints is 110,000 writes; one syscall per write is
//! most of the time it takes, one per batch is not.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `union bpf_attr`'s `batch` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A batch call that stopped early: how many elements it did, and why it stopped.
#[derive(Debug)]
pub struct BatchError {
    pub call: &'static str,
    pub done: usize,
    pub error: std::io::Error,
}

/// Updates (inserts or replaces) `keys[i]` → `values[i]` for every i, in order.
pub fn update_batch<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> Result<(), BatchError> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    batch(
        map,
        BPF_MAP_UPDATE_BATCH,
        "BPF_MAP_UPDATE_BATCH",
        keys,
        Some(values),
    )
}

/// Deletes every key, in order; fails with ENOENT at the first absent one.
pub fn delete_batch<K: Copy>(map: BorrowedFd<'_>, keys: &[K]) -> Result<(), BatchError> {
    batch::<K, u8>(
        map,
        BPF_MAP_DELETE_BATCH,
        "BPF_MAP_DELETE_BATCH",
        keys,
        None,
    )
}

fn batch<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    cmd: libc::c_long,
    call: &'static str,
    keys: &[K],
    values: Option<&[V]>,
) -> Result<(), BatchError> {
    let mut done = 0;
    while done < keys.len() {
        let count = u32::try_from(keys.len() - done).unwrap_or(u32::MAX);
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values.map_or(0, |v| v[done..].as_ptr() as u64),
            count,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr is a valid `bpf_attr.batch` whose keys (and values) point at `count`
        // initialised elements of the map's key (value) size — the caller's slices of the
        // #[repr(C)] map types, whose sizes tests/layout.rs checks against the object's BTF —
        // that outlive the call; the kernel only reads them and writes `attr.count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        if rc < 0 {
            return Err(BatchError {
                call,
                done: done + attr.count as usize,
                error: std::io::Error::last_os_error(),
            });
        }
        done += attr.count as usize;
        if attr.count == 0 {
            break; // nothing done and no error: do not spin
        }
    }
    Ok(())
}
