//! Test support: `FakeIo`, a recording `CgroupIo` over a temp dir that mimics cgroupfs
//! (mkdir fills in interface files, procs/kill/signals move pids), and sample host trees.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::io::CgroupIo;
use super::layout::Layout;

/// `/proc/self/mountinfo` cgroup lines of the build machine (hybrid).
pub(crate) const HYBRID_MOUNTINFO: &str = "\
23 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

/// `/proc/self/cgroup` of the build machine.
pub(crate) const HYBRID_PROC_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/96b46cdde82b2eb5d51f636b999f9baa
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

/// The memory cgroup of the build machine's sample.
pub(crate) const HYBRID_MEMORY_OWN: &str = "process_api/96b46cdde82b2eb5d51f636b999f9baa";

/// A recorded effect, paths relative to the fake root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Write(String, String),
    Mkdir(String),
    Rmdir(String),
    Kill(u32),
}

/// A cgroupfs imitation in a temp dir that records every effect.
#[derive(Debug)]
pub(crate) struct FakeIo {
    root: PathBuf,
    ops: Mutex<Vec<Op>>,
}

fn errno(e: i32) -> io::Error {
    io::Error::from_raw_os_error(e)
}

impl FakeIo {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            ops: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    pub(crate) fn clear_ops(&self) {
        self.ops.lock().unwrap().clear();
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    /// Removes `pid` from every cgroup.procs below `dir`, updating `populated`.
    fn drop_pid(&self, dir: &Path, pid: Option<u32>) {
        let procs = dir.join("cgroup.procs");
        if let Ok(text) = fs::read_to_string(&procs) {
            let keep: Vec<&str> = text
                .lines()
                .filter(|l| pid.is_some_and(|p| l.trim() != p.to_string()))
                .collect();
            fs::write(
                &procs,
                keep.iter().map(|l| format!("{l}\n")).collect::<String>(),
            )
            .unwrap();
            set_populated(dir, !keep.is_empty());
        }
        for sub in self.subdirs(dir).unwrap_or_default() {
            self.drop_pid(&sub, pid);
        }
    }

    /// The v1 rule `memory.limit_in_bytes <= memory.memsw.limit_in_bytes`.
    fn memsw_violation(&self, path: &Path, value: &str) -> bool {
        let read = |f: &str| -> Option<i128> {
            fs::read_to_string(path.with_file_name(f))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let v: i128 = value.parse().unwrap_or(-1);
        let v = if v < 0 { i128::MAX } else { v };
        let norm = |x: i128| if x < 0 { i128::MAX } else { x };
        match path.file_name().and_then(|n| n.to_str()) {
            Some("memory.limit_in_bytes") => {
                read("memory.memsw.limit_in_bytes").is_some_and(|m| v > norm(m))
            }
            Some("memory.memsw.limit_in_bytes") => {
                read("memory.limit_in_bytes").is_some_and(|l| v < norm(l))
            }
            _ => false,
        }
    }
}

fn set_populated(dir: &Path, populated: bool) {
    let events = dir.join("cgroup.events");
    if events.exists() {
        fs::write(
            events,
            format!("populated {}\nfrozen 0\n", u8::from(populated)),
        )
        .unwrap();
    }
}

/// The content a new child's copy of interface file `name` starts with.
fn fresh_content(name: &str, parent_content: String) -> String {
    match name {
        "cgroup.procs" | "cgroup.subtree_control" | "cgroup.kill" => String::new(),
        "cgroup.events" => "populated 0\nfrozen 0\n".to_string(),
        "cgroup.freeze" => "0\n".to_string(),
        "memory.events" => "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n".to_string(),
        "memory.oom_control" => "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n".to_string(),
        _ => parent_content,
    }
}

impl CgroupIo for FakeIo {
    fn read(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        if !path.is_file() {
            return Err(errno(libc::ENOENT));
        }
        if self.memsw_violation(path, value) {
            return Err(errno(libc::EINVAL));
        }
        self.record(Op::Write(self.rel(path), value.to_string()));
        let dir = path.parent().unwrap();
        match path.file_name().and_then(|n| n.to_str()) {
            Some("cgroup.procs") => {
                let mut text = fs::read_to_string(path)?;
                text.push_str(&format!("{value}\n"));
                fs::write(path, text)?;
                set_populated(dir, true);
            }
            Some("cgroup.kill") if value == "1" => self.drop_pid(dir, None),
            Some("cgroup.subtree_control") => {
                let mut set: Vec<String> = fs::read_to_string(path)?
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                for tok in value.split_whitespace() {
                    let (on, name) = tok.split_at(1);
                    set.retain(|c| c != name);
                    if on == "+" {
                        set.push(name.to_string());
                    }
                }
                fs::write(path, set.join(" "))?;
            }
            _ => fs::write(path, value)?,
        }
        Ok(())
    }

    fn mkdir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)?;
        self.record(Op::Mkdir(self.rel(path)));
        for entry in fs::read_dir(path.parent().unwrap())? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let content = fresh_content(&name, fs::read_to_string(entry.path())?);
                fs::write(path.join(&name), content)?;
            }
        }
        Ok(())
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        if !path.is_dir() {
            return Err(errno(libc::ENOENT));
        }
        let procs = fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        if !procs.trim().is_empty() || !self.subdirs(path)?.is_empty() {
            return Err(errno(libc::EBUSY));
        }
        self.record(Op::Rmdir(self.rel(path)));
        fs::remove_dir_all(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn subdirs(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }

    fn sigkill(&self, pid: u32) -> io::Result<()> {
        self.record(Op::Kill(pid));
        self.drop_pid(&self.root, Some(pid));
        Ok(())
    }
}

/// Writes `files` into `dir` (created with parents).
fn populate(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        fs::write(dir.join(name), content).unwrap();
    }
}

const V1_COMMON: &[(&str, &str)] = &[("cgroup.procs", ""), ("notify_on_release", "0")];
const V1_MEMORY: &[(&str, &str)] = &[
    ("memory.limit_in_bytes", "9223372036854771712"),
    ("memory.memsw.limit_in_bytes", "9223372036854771712"),
    (
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
    ),
];
const V1_CPU: &[(&str, &str)] = &[
    ("cpu.shares", "1024"),
    ("cpu.cfs_period_us", "100000"),
    ("cpu.cfs_quota_us", "-1"),
];
const V2_CORE: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("cgroup.subtree_control", ""),
    ("cgroup.events", "populated 1\nfrozen 0\n"),
    ("cgroup.kill", ""),
    ("cgroup.freeze", "0\n"),
];

/// The build machine's hybrid tree under `root`; returns its layout.
pub(crate) fn hybrid(root: &Path) -> Layout {
    for name in ["cpuacct", "cpuset", "devices", "blkio", "systemd"] {
        populate(&root.join(name), V1_COMMON);
    }
    populate(&root.join("cpu"), &[V1_COMMON, V1_CPU].concat());
    populate(
        &root.join("pids"),
        &[V1_COMMON, &[("pids.max", "max")]].concat(),
    );
    populate(
        &root.join("freezer"),
        &[V1_COMMON, &[("freezer.state", "THAWED")]].concat(),
    );
    populate(&root.join("memory"), &[V1_COMMON, V1_MEMORY].concat());
    populate(
        &root.join("memory").join(HYBRID_MEMORY_OWN),
        &[V1_COMMON, V1_MEMORY].concat(),
    );
    populate(
        &root.join("unified"),
        &[V2_CORE, &[("cgroup.controllers", "hugetlb\n")]].concat(),
    );
    let mountinfo = HYBRID_MOUNTINFO.replace("/sys/fs/cgroup", &root.display().to_string());
    Layout::parse(&mountinfo, HYBRID_PROC_CGROUP).unwrap()
}

/// A pure v2 node with the daemon in `/system.slice/skiff.service`; returns its layout.
pub(crate) fn unified(root: &Path) -> Layout {
    let v2_files: Vec<(&str, &str)> = [
        V2_CORE,
        &[
            ("cgroup.controllers", "cpuset cpu io memory pids\n"),
            ("cpu.weight", "100"),
            ("cpu.max", "max 100000"),
            ("memory.max", "max"),
            ("memory.swap.max", "max"),
            ("memory.events", "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n"),
            ("pids.max", "max"),
        ],
    ]
    .concat();
    populate(root, &v2_files);
    populate(&root.join("system.slice/skiff.service"), &v2_files);
    let mountinfo = format!(
        "25 22 0:23 / {} rw,nosuid shared:9 - cgroup2 cgroup2 rw,nsdelegate\n",
        root.display()
    );
    Layout::parse(&mountinfo, "0::/system.slice/skiff.service\n").unwrap()
}

/// A v1-only host (combined cpu,cpuacct; freezer); returns its layout.
pub(crate) fn legacy(root: &Path) -> Layout {
    populate(&root.join("cpu,cpuacct"), &[V1_COMMON, V1_CPU].concat());
    populate(&root.join("memory"), &[V1_COMMON, V1_MEMORY].concat());
    populate(
        &root.join("pids"),
        &[V1_COMMON, &[("pids.max", "max")]].concat(),
    );
    populate(
        &root.join("freezer"),
        &[V1_COMMON, &[("freezer.state", "THAWED")]].concat(),
    );
    let r = root.display();
    let mountinfo = format!(
        "34 30 0:30 / {r}/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
         35 30 0:31 / {r}/memory rw - cgroup cgroup rw,memory\n\
         36 30 0:32 / {r}/pids rw - cgroup cgroup rw,pids\n\
         37 30 0:33 / {r}/freezer rw - cgroup cgroup rw,freezer\n"
    );
    let proc = "6:freezer:/\n5:pids:/\n4:memory:/\n3:cpu,cpuacct:/\n";
    Layout::parse(&mountinfo, proc).unwrap()
}
