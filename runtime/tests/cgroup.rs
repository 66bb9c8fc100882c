//! Privileged tests of the cgroup layer on the real machine: create pod cgroups below this
//! test process's own cgroups, run real processes in them, limit, kill, detect OOM, remove.
//! Skips without root (fails instead when `CI` is set).

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use skiff_runtime::cgroup::{Cgroup, CgroupFs, Controller, Limit, Parent, Resources, Version};

/// True when the test may run; prints why not otherwise.
fn have_root() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but the cgroup tests are not running as root"
    );
    eprintln!("skipping: needs root");
    false
}

/// A pod cgroup for one test, with the processes it started. Drop kills and removes all.
struct TestCgroup {
    cg: Cgroup,
    children: Vec<Child>,
}

impl TestCgroup {
    fn new(cgfs: &CgroupFs, test: &str) -> Result<Self> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.subsec_nanos();
        let name = format!("skiff-test-{test}-{}-{nanos}", std::process::id());
        let cg = cgfs.create(&Parent::Own, &name)?;
        Ok(Self {
            cg,
            children: Vec::new(),
        })
    }

    /// Spawns `sh -c script` held at a `read` until it is in the cgroup, then releases it.
    fn spawn_inside(&mut self, script: &str) -> Result<u32> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn sh")?;
        let pid = child.id();
        let added = self.cg.add_pid(pid);
        let mut stdin = child.stdin.take().context("stdin")?;
        self.children.push(child);
        added?;
        stdin.write_all(b"go\n")?;
        Ok(pid)
    }

    /// Waits for child `i` and returns its status and stderr.
    fn wait(&mut self, i: usize) -> Result<(std::process::ExitStatus, String)> {
        let child = self.children.remove(i);
        let out = child.wait_with_output()?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = self.cg.kill_timeout(Duration::from_secs(5)) {
            eprintln!("cleanup: kill: {e}");
        }
        for child in &mut self.children {
            let _ = child.kill(); // only our own children, by pid
            let _ = child.wait();
        }
        if let Err(e) = self.cg.remove() {
            eprintln!("cleanup: remove: {e}");
        }
    }
}

fn memory_limit_file(cgfs: &CgroupFs) -> &'static str {
    match cgfs.placement(Controller::Memory) {
        Some(Version::V2) => "memory.max",
        _ => "memory.limit_in_bytes",
    }
}

#[test]
fn lifecycle_pids_limit_kill_remove() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let cgfs = CgroupFs::detect()?;
    eprintln!("layout: {:?}", cgfs.layout().kind);
    let mut t = TestCgroup::new(&cgfs, "life")?;
    let pid = t.spawn_inside("exec sleep 100")?;
    ensure!(
        t.cg.pids()? == vec![pid],
        "pids {:?} != [{pid}]",
        t.cg.pids()?
    );
    ensure!(t.cg.is_populated()?, "populated");

    t.cg.apply(&Resources {
        memory_max: Some(Limit::Value(64 << 20)),
        pids_max: Some(Limit::Value(50)),
        cpu_weight: Some(100),
        ..Default::default()
    })?;
    let limit =
        t.cg.read_file(Controller::Memory, memory_limit_file(&cgfs))?;
    ensure!(limit == "67108864", "memory limit read back as {limit}");
    ensure!(t.cg.read_file(Controller::Pids, "pids.max")? == "50");

    t.cg.kill()?;
    let (status, _) = t.wait(0)?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "sleep ended with {status:?}"
    );
    ensure!(!t.cg.is_populated()?, "still populated after kill");
    ensure!(t.cg.pids()?.is_empty());
    t.cg.remove()?;
    for node in t.cg.nodes() {
        ensure!(!node.dir.exists(), "{} left behind", node.dir.display());
    }
    Ok(())
}

#[test]
fn kill_each_fallback_kills_a_process_tree() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let cgfs = CgroupFs::detect()?;
    let mut t = TestCgroup::new(&cgfs, "killeach")?;
    t.spawn_inside("sleep 100 & sleep 100 & wait")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while t.cg.pids()?.len() < 3 {
        ensure!(
            std::time::Instant::now() < deadline,
            "children never appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t.cg.kill_each(Duration::from_secs(5))?;
    let (status, _) = t.wait(0)?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "sh ended with {status:?}"
    );
    ensure!(!t.cg.is_populated()?);
    Ok(())
}

#[test]
fn oom_kill_is_detected() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let cgfs = CgroupFs::detect()?;
    let mut t = TestCgroup::new(&cgfs, "oom")?;
    t.cg.apply(&Resources {
        memory_max: Some(Limit::Value(32 << 20)),
        memory_swap_max: Some(Limit::Value(0)),
        ..Default::default()
    })?;
    ensure!(t.cg.oom_kills()? == 0);
    // dd allocates one 256 MiB buffer and fills it from /dev/zero: every page is touched.
    t.spawn_inside("exec dd if=/dev/zero of=/dev/null bs=256M count=1")?;
    let (status, stderr) = t.wait(0)?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "dd was not OOM-killed: {status:?}, stderr {stderr:?}"
    );
    let kills = t.cg.oom_kills()?;
    eprintln!("oom_kills = {kills}");
    ensure!(kills >= 1, "oom_kill counter is {kills}");
    Ok(())
}

#[test]
fn pids_max_stops_forks() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let cgfs = CgroupFs::detect()?;
    let mut t = TestCgroup::new(&cgfs, "pids")?;
    t.cg.apply(&Resources {
        pids_max: Some(Limit::Value(5)),
        ..Default::default()
    })?;
    // The shell itself is one pid; at most 4 of the 20 sleeps can start.
    t.spawn_inside(
        "i=0; while [ $i -lt 20 ]; do sleep 30 </dev/null >/dev/null 2>&1 & i=$((i+1)); done; \
         echo spawned-all >&2; wait",
    )?;
    let (status, stderr) = t.wait(0)?;
    let inside = t.cg.pids()?.len();
    eprintln!("shell: {status:?}, stderr {stderr:?}, {inside} processes left in the cgroup");
    ensure!(
        !stderr.contains("spawned-all"),
        "all 20 forks succeeded: {stderr}"
    );
    ensure!(
        stderr.to_lowercase().contains("fork"),
        "no fork failure reported: {stderr}"
    );
    ensure!(
        (1..=4).contains(&inside),
        "{inside} sleeps in a cgroup limited to 5 pids (shell gone)"
    );
    if cgfs.placement(Controller::Pids) == Some(Version::V1) {
        let events = t.cg.read_file(Controller::Pids, "pids.events")?;
        eprintln!("pids.events: {events}");
        ensure!(
            events != "max 0",
            "pids.events shows no refused fork: {events}"
        );
    }
    Ok(())
}

#[test]
fn parent_above_own_cgroup_is_refused() -> Result<()> {
    if !have_root() {
        return Ok(());
    }
    let cgfs = CgroupFs::detect()?;
    let layout = cgfs.layout();
    let Some(h) = layout
        .unified
        .iter()
        .chain(&layout.v1)
        .find(|h| h.own.parent().is_some())
    else {
        eprintln!("skipping: this process sits at the root of every hierarchy");
        return Ok(());
    };
    let above = h.own.parent().context("own has a parent")?.to_path_buf();
    let name = format!("skiff-test-refuse-{}", std::process::id());
    let err = cgfs
        .create(&Parent::At(above.clone()), &name)
        .err()
        .context("creating above the own cgroup succeeded")?;
    eprintln!("refused as expected: {err}");
    ensure!(!h.dir_of(&above.join(&name)).context("dir")?.exists());
    Ok(())
}
