//! Unit tests of `CgroupFs` and `Cgroup` over fake cgroup trees in temp dirs (no root).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::fake::{self, FakeIo, HYBRID_MEMORY_OWN, Op};
use super::*;

fn read(root: &Path, rel: &str) -> String {
    fs::read_to_string(root.join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .trim()
        .to_string()
}

fn setup(tree: fn(&Path) -> Layout) -> (tempfile::TempDir, Arc<FakeIo>, CgroupFs) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tree(tmp.path());
    let io = Arc::new(FakeIo::new(tmp.path()));
    let fs = CgroupFs::new(layout, io.clone()).unwrap();
    (tmp, io, fs)
}

fn full() -> Resources {
    Resources {
        cpu_weight: Some(100),
        cpu_max: Some(CpuMax {
            quota: Limit::Value(250_000),
            period_us: 100_000,
        }),
        memory_max: Some(Limit::Value(64 << 20)),
        memory_swap_max: Some(Limit::Value(0)),
        pids_max: Some(Limit::Value(5)),
    }
}

#[test]
fn hybrid_create_apply_remove() {
    let (tmp, io, cgfs) = setup(fake::hybrid);
    assert_eq!(cgfs.placement(Controller::Memory), Some(Version::V1));
    let cg = cgfs.create(&Parent::Own, "pod-a").unwrap();
    let mem = format!("memory/{HYBRID_MEMORY_OWN}/pod-a");
    assert_eq!(
        io.ops(),
        vec![
            Op::Mkdir("unified/pod-a".into()),
            Op::Mkdir("cpu/pod-a".into()),
            Op::Mkdir(mem.clone()),
            Op::Mkdir("pids/pod-a".into()),
        ]
    );
    io.clear_ops();
    cg.apply(&full()).unwrap();
    assert_eq!(read(tmp.path(), "cpu/pod-a/cpu.shares"), "1024");
    assert_eq!(read(tmp.path(), "cpu/pod-a/cpu.cfs_period_us"), "100000");
    assert_eq!(read(tmp.path(), "cpu/pod-a/cpu.cfs_quota_us"), "250000");
    assert_eq!(
        read(tmp.path(), &format!("{mem}/memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(
        read(tmp.path(), &format!("{mem}/memory.memsw.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(read(tmp.path(), "pids/pod-a/pids.max"), "5");
    // Nothing outside the pod cgroup was written.
    for op in io.ops() {
        let Op::Write(path, _) = op else {
            panic!("{op:?}")
        };
        assert!(path.contains("/pod-a/"), "{path}");
    }
    assert_eq!(
        cg.read_file(Controller::Memory, "memory.limit_in_bytes")
            .unwrap(),
        "67108864"
    );
    cg.remove().unwrap();
    for dir in ["unified/pod-a", "cpu/pod-a", &mem, "pids/pod-a"] {
        assert!(!tmp.path().join(dir).exists(), "{dir}");
    }
    cg.remove().unwrap(); // ENOENT is fine
}

#[test]
fn apply_retries_einval_for_memsw_ordering() {
    let (tmp, _io, cgfs) = setup(fake::hybrid);
    let cg = cgfs.create(&Parent::Own, "pod-b").unwrap();
    cg.apply(&full()).unwrap();
    // Raising memory above the current memsw (64 MiB) must write memsw first.
    let mut res = full();
    res.memory_max = Some(Limit::Value(128 << 20));
    cg.apply(&res).unwrap();
    let mem = format!("memory/{HYBRID_MEMORY_OWN}/pod-b");
    assert_eq!(
        read(tmp.path(), &format!("{mem}/memory.limit_in_bytes")),
        "134217728"
    );
    assert_eq!(
        read(tmp.path(), &format!("{mem}/memory.memsw.limit_in_bytes")),
        "134217728"
    );
    // And lowering again works in the plan order.
    cg.apply(&full()).unwrap();
    assert_eq!(
        read(tmp.path(), &format!("{mem}/memory.limit_in_bytes")),
        "67108864"
    );
}

#[test]
fn optional_memsw_is_skipped_when_absent() {
    let (tmp, _io, cgfs) = setup(fake::hybrid);
    fs::remove_file(
        tmp.path()
            .join("memory")
            .join(HYBRID_MEMORY_OWN)
            .join("memory.memsw.limit_in_bytes"),
    )
    .unwrap();
    let cg = cgfs.create(&Parent::Own, "pod-c").unwrap();
    cg.apply(&full()).unwrap();
}

#[test]
fn unified_enables_controllers_and_writes_v2_files() {
    let (tmp, io, cgfs) = setup(fake::unified);
    assert_eq!(cgfs.layout().kind, LayoutKind::Unified);
    let cg = cgfs
        .create(&Parent::Below("skiff-pods".into()), "pod-a")
        .unwrap();
    let own = "system.slice/skiff.service";
    assert_eq!(
        io.ops(),
        vec![
            Op::Write(
                format!("{own}/cgroup.subtree_control"),
                "+cpu +memory +pids".into()
            ),
            Op::Mkdir(format!("{own}/skiff-pods")),
            Op::Write(
                format!("{own}/skiff-pods/cgroup.subtree_control"),
                "+cpu +memory +pids".into()
            ),
            Op::Mkdir(format!("{own}/skiff-pods/pod-a")),
        ]
    );
    assert_eq!(cg.nodes().len(), 1);
    cg.apply(&full()).unwrap();
    let pod = format!("{own}/skiff-pods/pod-a");
    for (file, want) in [
        ("cpu.weight", "100"),
        ("cpu.max", "250000 100000"),
        ("memory.max", "67108864"),
        ("memory.swap.max", "0"),
        ("pids.max", "5"),
    ] {
        assert_eq!(read(tmp.path(), &format!("{pod}/{file}")), want, "{file}");
    }
    // A second pod reuses the parent and enables nothing again.
    io.clear_ops();
    cgfs.create(&Parent::Below("skiff-pods".into()), "pod-b")
        .unwrap();
    assert_eq!(io.ops(), vec![Op::Mkdir(format!("{own}/skiff-pods/pod-b"))]);
}

#[test]
fn procs_kill_and_oom_on_v2() {
    let (tmp, io, cgfs) = setup(fake::unified);
    let cg = cgfs.create(&Parent::Own, "pod-a").unwrap();
    assert!(!cg.is_populated().unwrap());
    cg.add_pid(4242).unwrap();
    cg.add_pid(4243).unwrap();
    assert_eq!(cg.pids().unwrap(), vec![4242, 4243]);
    assert!(cg.is_populated().unwrap());
    assert!(matches!(
        cg.remove().unwrap_err(),
        CgroupError::Io { op: "rmdir", .. }
    ));
    io.clear_ops();
    cg.kill().unwrap();
    assert_eq!(
        io.ops(),
        vec![Op::Write(
            "system.slice/skiff.service/pod-a/cgroup.kill".into(),
            "1".into()
        )]
    );
    assert!(!cg.is_populated().unwrap());
    let events = tmp
        .path()
        .join("system.slice/skiff.service/pod-a/memory.events");
    assert_eq!(cg.oom_kills().unwrap(), 0);
    fs::write(&events, "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\n").unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 2);
    cg.remove().unwrap();
}

#[test]
fn legacy_kill_freezes_and_signals_each() {
    let (tmp, io, cgfs) = setup(fake::legacy);
    assert_eq!(cgfs.layout().kind, LayoutKind::Legacy);
    let cg = cgfs.create(&Parent::Own, "pod-a").unwrap();
    let dirs: Vec<_> = cg.nodes().iter().map(|n| n.dir.clone()).collect();
    assert_eq!(
        dirs.len(),
        4,
        "cpu,cpuacct + memory + pids + freezer: {dirs:?}"
    );
    cg.add_pid(11).unwrap();
    cg.add_pid(12).unwrap();
    assert!(cg.is_populated().unwrap());
    io.clear_ops();
    cg.kill_timeout(Duration::from_secs(1)).unwrap();
    let ops = io.ops();
    assert_eq!(
        ops[0],
        Op::Write("freezer/pod-a/freezer.state".into(), "FROZEN".into())
    );
    assert_eq!(&ops[1..3], &[Op::Kill(11), Op::Kill(12)]);
    assert_eq!(
        ops[3],
        Op::Write("freezer/pod-a/freezer.state".into(), "THAWED".into())
    );
    assert!(!cg.is_populated().unwrap());
    fs::write(
        tmp.path().join("memory/pod-a/memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n",
    )
    .unwrap();
    assert_eq!(cg.oom_kills().unwrap(), 5);
    cg.remove().unwrap();
}

#[test]
fn remove_takes_child_cgroups_deepest_first() {
    let (_tmp, io, cgfs) = setup(fake::unified);
    let cg = cgfs.create(&Parent::Own, "pod-a").unwrap();
    let child = cg.nodes()[0].dir.join("ctr-1");
    io.mkdir(&child).unwrap();
    io.mkdir(&child.join("nested")).unwrap();
    io.clear_ops();
    cg.remove().unwrap();
    let own = "system.slice/skiff.service";
    assert_eq!(
        io.ops(),
        vec![
            Op::Rmdir(format!("{own}/pod-a/ctr-1/nested")),
            Op::Rmdir(format!("{own}/pod-a/ctr-1")),
            Op::Rmdir(format!("{own}/pod-a")),
        ]
    );
}

#[test]
fn parent_above_or_beside_own_is_refused() {
    let (_tmp, io, cgfs) = setup(fake::hybrid);
    // The memory cgroup is /process_api/<id>: its parent and siblings are off limits.
    for parent in ["/process_api", "/", "/process_api/other", "/elsewhere"] {
        let err = cgfs.create(&Parent::At(parent.into()), "pod").unwrap_err();
        match &err {
            CgroupError::ParentOutsideOwn { hierarchy, .. } => assert_eq!(hierarchy, "memory"),
            _ => panic!("{parent}: {err}"),
        }
        assert!(err.to_string().contains("refusing"), "{err}");
    }
    for parent in [Parent::Below("../x".into()), Parent::Below("/abs".into())] {
        let err = cgfs.create(&parent, "pod").unwrap_err();
        assert!(matches!(err, CgroupError::InvalidParent { .. }), "{err}");
    }
    let err = cgfs
        .create(&Parent::At("/process_api/../x".into()), "pod")
        .unwrap_err();
    assert!(matches!(err, CgroupError::InvalidParent { .. }), "{err}");
    assert!(io.ops().is_empty(), "nothing created: {:?}", io.ops());
    // At or below the own cgroup in every hierarchy is accepted.
    let at = format!("/{HYBRID_MEMORY_OWN}/skiff");
    let cg = cgfs.create(&Parent::At(at.clone().into()), "pod").unwrap();
    assert!(
        cg.nodes()
            .iter()
            .all(|n| n.dir.ends_with(format!("{}/pod", &at[1..])))
    );
}

#[test]
fn unified_parent_check() {
    let (_tmp, _io, cgfs) = setup(fake::unified);
    let err = cgfs
        .create(&Parent::At("/system.slice".into()), "pod")
        .unwrap_err();
    assert!(matches!(err, CgroupError::ParentOutsideOwn { .. }), "{err}");
    cgfs.create(&Parent::At("/system.slice/skiff.service".into()), "pod")
        .unwrap();
}

#[test]
fn open_re_adopts_and_reports_missing() {
    let (_tmp, _io, cgfs) = setup(fake::hybrid);
    let parent = Parent::from_config("pods");
    assert_eq!(parent, Parent::Below("pods".into()));
    let created = cgfs.create(&parent, "pod-a").unwrap();
    created.add_pid(77).unwrap();
    let opened = cgfs.open(&parent, "pod-a").unwrap();
    assert_eq!(opened.nodes(), created.nodes());
    assert_eq!(opened.pids().unwrap(), vec![77]);
    let err = cgfs.open(&parent, "pod-missing").unwrap_err();
    assert!(matches!(err, CgroupError::NotFound { .. }), "{err}");
    let err = cgfs.create(&parent, "pod-a").unwrap_err();
    assert!(err.is_errno(libc::EEXIST), "{err}");
}

#[test]
fn bad_names_are_refused() {
    let (_tmp, io, cgfs) = setup(fake::hybrid);
    for name in [
        "",
        ".",
        "..",
        "a/b",
        "cgroup.procs",
        "memory.max",
        &"x".repeat(256),
    ] {
        let err = cgfs.create(&Parent::Own, name).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidName { .. }),
            "{name}: {err}"
        );
    }
    assert!(io.ops().is_empty());
    cgfs.create(&Parent::Own, "pod-1.2").unwrap();
}

#[test]
fn isolate_self_only_where_v2_needs_it() {
    let (_tmp, io, cgfs) = setup(fake::unified);
    cgfs.isolate_self("skiff-daemon").unwrap();
    let own = "system.slice/skiff.service";
    assert_eq!(
        io.ops(),
        vec![
            Op::Mkdir(format!("{own}/skiff-daemon")),
            Op::Write(
                format!("{own}/skiff-daemon/cgroup.procs"),
                std::process::id().to_string()
            ),
        ]
    );
    // Pods still go under the original own cgroup.
    let cg = cgfs.create(&Parent::Own, "pod-a").unwrap();
    assert!(cg.nodes()[0].dir.ends_with(format!("{own}/pod-a")));
    // Hybrid: v2 has no resource controller here and the own v2 cgroup is the root.
    let (_tmp, io, cgfs) = setup(fake::hybrid);
    cgfs.isolate_self("skiff-daemon").unwrap();
    assert!(io.ops().is_empty());
}
