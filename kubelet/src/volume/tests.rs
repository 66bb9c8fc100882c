//! Volumes on a real tmpfs (root only; CI runs as root and never skips): secrets and memory
//! emptyDirs are mounted, refreshed in place and torn down, and a secret is never written to
//! a disk directory. A guard tears the pod's volumes down even when a test fails.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};

use super::*;
use crate::podspec::{Allocatable, ObjectSource, PlanContext};
use skiff_testsupport::privileged;

/// Unmounts and removes the pod's volumes when dropped, also after a failed assertion.
struct Guard {
    pod_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Guard {
    fn new() -> Guard {
        let tmp = tempfile::tempdir().unwrap();
        Guard {
            pod_dir: tmp.path().join("pod"),
            _tmp: tmp,
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Err(e) = teardown(&self.pod_dir) {
            eprintln!("teardown {}: {e}", self.pod_dir.display());
        }
    }
}

/// One Secret, `tls` in `default`, that a test can change.
struct OneSecret(Mutex<Vec<(String, Vec<u8>)>>);

impl ObjectSource for OneSecret {
    fn config_map(&self, _: &str, _: &str) -> Result<Option<ConfigMap>, String> {
        Ok(None)
    }

    fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        if (namespace, name) != ("default", "tls") {
            return Ok(None);
        }
        let data = self.0.lock().unwrap();
        let data = data
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone())))
            .collect();
        Ok(Some(Secret {
            data: Some(data),
            ..Default::default()
        }))
    }
}

fn ctx(pod_dir: &Path) -> PlanContext {
    PlanContext {
        pod_dir: pod_dir.into(),
        ip: None,
        node_hostname: "node1".into(),
        host_hosts: None,
        host_resolv_conf: None,
        host_ips: vec![],
        allocatable: Allocatable::default(),
    }
}

fn pod() -> Pod {
    crate::podspec::parse(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  securityContext: {fsGroup: 2000}\n  \
         volumes:\n  - {name: tls, secret: {secretName: tls}}\n  \
         - {name: fast, emptyDir: {medium: Memory, sizeLimit: 8Mi}}\n  - {name: disk, emptyDir: {}}\n  \
         containers: [{name: c, image: busybox}]\n",
    )
    .unwrap()
}

const TMPFS_MAGIC: u64 = 0x0102_1994;

fn statfs(dir: &Path) -> rustix::fs::StatFs {
    rustix::fs::statfs(dir).unwrap()
}

#[test]
fn secrets_and_memory_empty_dirs_live_on_tmpfs_and_refresh_in_place() {
    if !privileged() {
        return;
    }
    let guard = Guard::new();
    let ctx = ctx(&guard.pod_dir);
    let secret = OneSecret(Mutex::new(vec![("tls.key".into(), b"KEY1".to_vec())]));
    let plans = prepare(&pod(), &ctx, Some(&secret)).unwrap();
    assert_eq!(plans.len(), 3);
    let vol = |name: &str| guard.pod_dir.join("volumes").join(name);
    for name in ["tls", "fast"] {
        assert_eq!(statfs(&vol(name)).f_type as u64, TMPFS_MAGIC, "{name}");
    }
    assert_ne!(statfs(&vol("disk")).f_type as u64, TMPFS_MAGIC);
    let fast = statfs(&vol("fast"));
    assert_eq!(fast.f_blocks * fast.f_bsize as u64, 8 << 20, "sizeLimit");
    let key = vol("tls").join("tls.key");
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(std::fs::read(&key).unwrap(), b"KEY1");
    assert_eq!(
        (meta.permissions().mode() & 0o777, meta.gid()),
        (0o440, 2000),
        "0400 plus group read for fsGroup"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&vol("fast")), mode(&vol("disk"))), (0o777, 0o777));

    assert!(
        !refresh(&pod(), &ctx, Some(&secret)).unwrap(),
        "nothing changed"
    );
    *secret.0.lock().unwrap() = vec![("tls.crt".into(), b"CRT".to_vec())];
    assert!(refresh(&pod(), &ctx, Some(&secret)).unwrap());
    assert!(!key.exists(), "the removed key's link is gone");
    assert_eq!(std::fs::read(vol("tls").join("tls.crt")).unwrap(), b"CRT");
    assert_eq!(
        statfs(&vol("tls")).f_type as u64,
        TMPFS_MAGIC,
        "still the same tmpfs"
    );

    teardown(&guard.pod_dir).unwrap();
    assert!(!guard.pod_dir.join("volumes").exists());
    assert!(guard.pod_dir.exists(), "only the volumes go");
}

#[test]
fn a_secret_is_never_written_to_an_unmounted_dir() {
    if !privileged() {
        return;
    }
    let guard = Guard::new();
    let ctx = ctx(&guard.pod_dir);
    let secret = OneSecret(Mutex::new(vec![("k".into(), b"v".to_vec())]));
    prepare(&pod(), &ctx, Some(&secret)).unwrap();
    let tls = guard.pod_dir.join("volumes/tls");
    tmpfs::unmount(&tls).unwrap();
    let err = refresh(&pod(), &ctx, Some(&secret)).unwrap_err();
    assert!(matches!(err, VolumeError::NotMounted { .. }), "{err}");
    assert_eq!(
        std::fs::read_dir(&tls).unwrap().count(),
        0,
        "nothing on the disk underneath"
    );
    // Prepared again, the volume is mounted again before anything is written.
    prepare(&pod(), &ctx, Some(&secret)).unwrap();
    assert!(tmpfs::is_mount_point(&tls).unwrap());
}

#[test]
fn teardown_of_a_pod_without_volumes_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    teardown(tmp.path()).unwrap();
    teardown(&tmp.path().join("missing")).unwrap();
}
