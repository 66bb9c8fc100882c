//! Unit tests of the namespace layer over `FakeSys`: the order of effects, rollback, and
//! removal that tolerates pins already gone. No root needed.

use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::fake::{FakeSys, NsOp};
use super::*;

fn pin() -> PathBuf {
    PathBuf::from("/state/pods/p1/net")
}

#[test]
fn create_unshares_runs_setup_then_pins() {
    let sys = FakeSys::default();
    let mut ran = false;
    let ns = PinnedNs::create_with(&sys, NsKind::Net, &pin(), || {
        ran = true;
        Ok(())
    })
    .unwrap();
    assert!(ran);
    assert_eq!(ns.path(), pin());
    assert_eq!(
        sys.ops(),
        vec![
            NsOp::Unshare(NsKind::Net),
            NsOp::CreateFile(pin()),
            NsOp::Bind(PathBuf::from("/proc/thread-self/ns/net"), pin(), false),
        ]
    );
    assert_eq!(sys.mounts(), vec![pin()]);
}

#[test]
fn setup_failure_creates_nothing() {
    let sys = FakeSys::default();
    let err = PinnedNs::create_with(&sys, NsKind::Uts, &pin(), || {
        Err(io::Error::from_raw_os_error(libc::EPERM))
    })
    .unwrap_err();
    assert!(
        matches!(
            err,
            NsError::Setup {
                kind: NsKind::Uts,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("setup of new uts namespace"),
        "{err}"
    );
    assert!(sys.files().is_empty());
    assert!(sys.mounts().is_empty());
}

#[test]
fn bind_failure_removes_the_pin_file() {
    let sys = FakeSys::default();
    sys.fail("bind_mount", libc::EPERM);
    let err = PinnedNs::create_with(&sys, NsKind::Ipc, &pin(), || Ok(())).unwrap_err();
    assert!(err.is_errno(libc::EPERM), "{err}");
    assert!(
        err.to_string()
            .starts_with("bind mount namespace onto /state/pods/p1/net")
    );
    assert!(sys.files().is_empty());
    assert!(sys.mounts().is_empty());
    assert_eq!(sys.ops().last(), Some(&NsOp::RemoveFile(pin())));
}

#[test]
fn unshare_failure_names_the_call() {
    let sys = FakeSys::default();
    sys.fail("unshare", libc::EPERM);
    let err = PinnedNs::create_with(&sys, NsKind::Net, &pin(), || Ok(())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "unshare net namespace: Operation not permitted (os error 1)"
    );
    assert!(sys.ops().is_empty());
}

#[test]
fn existing_pin_is_refused_and_left_alone() {
    let sys = FakeSys::default();
    PinnedNs::create_with(&sys, NsKind::Net, &pin(), || Ok(())).unwrap();
    let err = PinnedNs::create_with(&sys, NsKind::Net, &pin(), || Ok(())).unwrap_err();
    assert!(matches!(err, NsError::Exists { .. }), "{err}");
    assert_eq!(sys.mounts(), vec![pin()]);
    assert_eq!(sys.files(), vec![pin()]);
}

#[test]
fn open_checks_something_is_mounted() {
    let sys = FakeSys::default();
    assert!(open_with(&sys, &pin()).unwrap_err().is_errno(libc::ENOENT));
    sys.create_file(&pin()).unwrap();
    assert!(matches!(
        open_with(&sys, &pin()).unwrap_err(),
        NsError::NotPinned { .. }
    ));
    sys.bind_mount(Path::new("/proc/thread-self/ns/net"), &pin(), false)
        .unwrap();
    assert!(open_with(&sys, &pin()).is_ok());
}

#[test]
fn remove_unmounts_all_then_unlinks_and_tolerates_gone() {
    let sys = FakeSys::default();
    PinnedNs::create_with(&sys, NsKind::Net, &pin(), || Ok(())).unwrap();
    sys.bind_mount(Path::new("/x"), &pin(), false).unwrap(); // stacked by accident
    remove_with(&sys, &pin()).unwrap();
    assert!(sys.mounts().is_empty());
    assert!(sys.files().is_empty());
    // Again: nothing there, still fine.
    remove_with(&sys, &pin()).unwrap();
    // A real unmount error is reported.
    sys.create_file(&pin()).unwrap();
    sys.fail("unmount_detach", libc::EBUSY);
    let err = remove_with(&sys, &pin()).unwrap_err();
    assert!(
        err.to_string().starts_with("unmount /state/pods/p1/net"),
        "{err}"
    );
}

#[test]
fn in_ns_joins_on_a_helper_thread() {
    let sys = FakeSys::default();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let me = std::thread::current().id();
    let other = in_ns_with(&sys, devnull.as_fd(), NsKind::Net, || {
        std::thread::current().id()
    })
    .unwrap();
    assert_ne!(me, other);
    assert_eq!(sys.ops(), vec![NsOp::Setns(NsKind::Net)]);
    sys.fail("setns", libc::EINVAL);
    let err = in_ns_with(&sys, devnull.as_fd(), NsKind::Uts, || ()).unwrap_err();
    assert!(err.to_string().starts_with("setns uts namespace"), "{err}");
}

#[test]
fn state_dir_is_made_a_private_self_bind_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap().join("state");
    let sys = FakeSys::default();
    sys.set_mountinfo("22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n");
    assert_eq!(prepare_state_dir_with(&sys, &dir).unwrap(), dir);
    assert_eq!(
        sys.ops(),
        vec![
            NsOp::Bind(dir.clone(), dir.clone(), true),
            NsOp::MakePrivate(dir.clone())
        ]
    );
    // Already a private mount point: nothing to do.
    let sys = FakeSys::default();
    sys.set_mountinfo(&format!(
        "22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n90 22 8:1 /x {} rw - ext4 /dev/sda1 rw\n",
        dir.display()
    ));
    prepare_state_dir_with(&sys, &dir).unwrap();
    assert!(sys.ops().is_empty());
    // A shared mount point (e.g. `ip netns` style): only made private.
    let sys = FakeSys::default();
    sys.set_mountinfo(&format!(
        "22 1 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\n90 22 8:1 /x {} rw shared:5 - ext4 /dev/sda1 rw\n",
        dir.display()
    ));
    prepare_state_dir_with(&sys, &dir).unwrap();
    assert_eq!(sys.ops(), vec![NsOp::MakePrivate(dir.clone())]);
    // make-private fails after our self-bind: the self-bind is undone.
    let sys = FakeSys::default();
    sys.fail("make_private", libc::EPERM);
    assert!(prepare_state_dir_with(&sys, &dir).is_err());
    assert!(sys.mounts().is_empty());
}

#[test]
fn kind_names_and_paths() {
    assert_eq!(
        NsKind::Net.thread_self_path(),
        Path::new("/proc/thread-self/ns/net")
    );
    assert_eq!(NsKind::Ipc.to_string(), "ipc");
    assert_eq!(NsKind::Uts.proc_name(), "uts");
}

#[test]
fn create_all_unshares_every_kind_on_one_thread_then_pins_each() {
    let sys = FakeSys::default();
    let dir = PathBuf::from("/state/pods/p1");
    let pins = vec![
        (NsKind::Net, dir.join("net")),
        (NsKind::Ipc, dir.join("ipc")),
        (NsKind::Uts, dir.join("uts")),
    ];
    let made = PinnedNs::create_all_with(&sys, &pins, || Ok(())).unwrap();
    assert_eq!(
        made.iter().map(|p| p.kind()).collect::<Vec<_>>(),
        [NsKind::Net, NsKind::Ipc, NsKind::Uts]
    );
    assert_eq!(
        sys.ops()[..3],
        [
            NsOp::Unshare(NsKind::Net),
            NsOp::Unshare(NsKind::Ipc),
            NsOp::Unshare(NsKind::Uts)
        ]
    );
    assert_eq!(
        sys.mounts(),
        [dir.join("net"), dir.join("ipc"), dir.join("uts")]
    );
}

#[test]
fn create_all_undoes_the_pins_it_made_when_a_later_one_fails() {
    let sys = FakeSys::default();
    let dir = PathBuf::from("/state/pods/p1");
    sys.create_file(&dir.join("uts")).unwrap(); // someone else's pin
    let pins = vec![
        (NsKind::Net, dir.join("net")),
        (NsKind::Ipc, dir.join("ipc")),
        (NsKind::Uts, dir.join("uts")),
    ];
    let err = PinnedNs::create_all_with(&sys, &pins, || Ok(())).unwrap_err();
    assert!(
        matches!(
            err,
            NsError::Exists {
                kind: NsKind::Uts,
                ..
            }
        ),
        "{err}"
    );
    assert!(sys.mounts().is_empty());
    assert_eq!(
        sys.files(),
        [dir.join("uts")],
        "only the pin that was there before"
    );
}
