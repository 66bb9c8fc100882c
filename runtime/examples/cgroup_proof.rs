//! Proves the pod cgroup controller paths of `skiff_runtime::cgroup` on a real kernel, one line
//! per check (`check NAME ok|FAIL detail`), exit status 1 if any check fails:
//!
//! - `memory`: `memory.max` 32 MiB, a child touching 128 MiB is SIGKILLed, `oom_kills() >= 1`;
//! - `pids`: `pids.max` 8, a shell fork loop hits the limit (forks fail), never more than 8;
//! - `cpu`: `cpu.max` "10000 100000", a 1 s busy loop is throttled (`nr_throttled > 0`);
//! - `kill`: `kill()` (`cgroup.kill` on v2) empties a cgroup holding a shell and 3 sleeps.
//!
//! Made for the full cgroup v2 QEMU guest (`vagrant/qemu/run.sh`, `tests/vm_cgroup2.rs`):
//!
//! ```text
//! vagrant/qemu/run.sh -b target/debug/examples/cgroup_proof -- cgroup_proof --require-v2
//! ```
//!
//! On other layouts it runs the same checks through whatever the cgroup layer places the
//! controllers on (v1 on a hybrid host; needs root); `--require-v2` refuses instead. Pod cgroups
//! go below this process's own cgroup, never above it. On v2 the process first moves itself
//! into the leaf `<own>/proof` (`isolate_self`: v2's no-internal-processes rule). Needs `sh`
//! and `sleep` on `PATH` (busybox in the guest).

use std::io::{BufRead, Read, Write as _};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use skiff_runtime::cgroup::{
    Cgroup, CgroupFs, Controller, CpuMax, LayoutKind, Limit, Parent, Resources, Version,
};

const MIB: u64 = 1 << 20;
const MEMORY_MAX: u64 = 32 * MIB;
const ALLOCATE_MIB: u64 = 128;
const PIDS_MAX: u64 = 8;
const FORKS: u32 = 50;
const CPU_QUOTA_US: u64 = 10_000;
const CPU_PERIOD_US: u64 = 100_000;
const SPIN: Duration = Duration::from_secs(1);
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["child-allocate", mib] => child_allocate(mib),
        ["child-spin", ms] => child_spin(ms),
        [] => prove(false),
        ["--require-v2"] => prove(true),
        _ => {
            eprintln!("usage: cgroup_proof [--require-v2]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cgroup_proof: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A check: runs in a fresh pod cgroup.
type Check = fn(&Cgroup) -> Result<Outcome>;

/// The outcome of one check.
struct Outcome {
    ok: bool,
    detail: String,
}

fn prove(require_v2: bool) -> Result<ExitCode> {
    let cgfs = CgroupFs::detect().context("detect the cgroup layout")?;
    let layout = cgfs.layout();
    let placement: Vec<String> = Controller::ALL
        .iter()
        .map(|c| {
            let at = match cgfs.placement(*c) {
                Some(Version::V2) => "v2",
                Some(Version::V1) => "v1",
                None => "none",
            };
            format!("{}={at}", c.name())
        })
        .collect();
    let own = layout
        .unified
        .as_ref()
        .map(|h| h.own.display().to_string())
        .unwrap_or_else(|| "-".to_string());
    println!(
        "layout {:?} v2-own={own} placement {}",
        layout.kind,
        placement.join(" ")
    );
    let all_v2 = Controller::ALL
        .iter()
        .all(|c| cgfs.placement(*c) == Some(Version::V2));
    if require_v2 && (layout.kind != LayoutKind::Unified || !all_v2) {
        eprintln!(
            "cgroup_proof: refusing: --require-v2 needs a pure cgroup v2 host with cpu, memory \
             and pids on v2, but this host's layout is {:?} ({}). Run it in the QEMU guest: \
             vagrant/qemu/run.sh -b target/debug/examples/cgroup_proof -- cgroup_proof --require-v2",
            layout.kind,
            placement.join(" ")
        );
        return Ok(ExitCode::from(2));
    }
    cgfs.isolate_self("proof")
        .context("move this process into the leaf <own>/proof")?;

    let checks: [(&str, Check); 4] = [
        ("memory", check_memory),
        ("pids", check_pids),
        ("cpu", check_cpu),
        ("kill", check_kill),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        let start = Instant::now();
        let outcome = run_check(&cgfs, name, check);
        let ms = start.elapsed().as_millis();
        let (ok, detail) = match outcome {
            Ok(o) => (o.ok, o.detail),
            Err(e) => (false, format!("error: {e:#}")),
        };
        failed += usize::from(!ok);
        println!(
            "check {name} {} {detail} ({ms} ms)",
            if ok { "ok" } else { "FAIL" }
        );
    }
    println!("summary {} ok, {failed} failed", checks.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs `check` in a fresh pod cgroup below our own, then kills and removes the cgroup.
fn run_check(cgfs: &CgroupFs, name: &str, check: Check) -> Result<Outcome> {
    let cg_name = format!("skiff-proof-{name}-{}", std::process::id());
    let cg = cgfs
        .create(&Parent::Own, &cg_name)
        .with_context(|| format!("create pod cgroup {cg_name}"))?;
    let outcome = check(&cg);
    let cleanup = cg.kill().and_then(|()| cg.remove());
    let outcome = outcome?;
    cleanup.with_context(|| format!("clean up {cg_name}"))?;
    Ok(outcome)
}

/// (a) memory.max: a child touching far more than the limit is OOM-killed, and counted.
fn check_memory(cg: &Cgroup) -> Result<Outcome> {
    cg.apply(&Resources {
        memory_max: Some(Limit::Value(MEMORY_MAX)),
        memory_swap_max: Some(Limit::Value(0)),
        ..Default::default()
    })?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["child-allocate", &ALLOCATE_MIB.to_string()]);
    let child = spawn_in(cg, cmd)?;
    let (status, _) = wait(child, CHILD_TIMEOUT)?;
    let oom_kills = cg.oom_kills()?;
    let ok = status.signal() == Some(libc::SIGKILL) && oom_kills >= 1;
    Ok(Outcome {
        ok,
        detail: format!(
            "limit={}MiB child touching {ALLOCATE_MIB}MiB: {} oom_kill={oom_kills}",
            MEMORY_MAX / MIB,
            describe(status)
        ),
    })
}

/// (b) pids.max: a shell loop starting sleeps runs into the limit; the count never exceeds it.
fn check_pids(cg: &Cgroup) -> Result<Outcome> {
    cg.apply(&Resources {
        pids_max: Some(Limit::Value(PIDS_MAX)),
        ..Default::default()
    })?;
    let script = format!(
        "i=0; while [ $i -lt {FORKS} ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); echo started $i; done"
    );
    let mut child = spawn_in(cg, shell(&script))?;
    // Sample the count while the loop runs.
    let mut peak = 0u64;
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        let current: u64 = cg.read_file(Controller::Pids, "pids.current")?.parse()?;
        peak = peak.max(current);
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            bail!("the fork loop neither finished nor failed in {CHILD_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let (stdout, stderr) = read_output(&mut child);
    let started = stdout.lines().filter(|l| l.starts_with("started")).count();
    let left = cg.pids()?.len() as u64;
    let events = cg.read_file(Controller::Pids, "pids.events")?;
    let refused = keyed(&events, "max").unwrap_or(0);
    let fork_errors = stderr.lines().filter(|l| l.contains("fork")).count();
    let ok = refused >= 1 && started < FORKS as usize && peak <= PIDS_MAX && left <= PIDS_MAX;
    Ok(Outcome {
        ok,
        detail: format!(
            "limit={PIDS_MAX} loop of {FORKS} forks: started={started} shell {} \
             fork-errors={fork_errors} pids.events max={refused} peak-sampled={peak} left={left}",
            describe(status)
        ),
    })
}

/// (c) cpu.max: a busy loop for about a second is throttled.
fn check_cpu(cg: &Cgroup) -> Result<Outcome> {
    cg.apply(&Resources {
        cpu_max: Some(CpuMax {
            quota: Limit::Value(CPU_QUOTA_US),
            period_us: CPU_PERIOD_US,
        }),
        ..Default::default()
    })?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["child-spin", &SPIN.as_millis().to_string()]);
    let start = Instant::now();
    let child = spawn_in(cg, cmd)?;
    let (status, _) = wait(child, CHILD_TIMEOUT)?;
    let wall_us = start.elapsed().as_micros() as u64;
    let stat = cg.read_file(Controller::Cpu, "cpu.stat")?;
    // v2 names; v1's cpu.stat has nr_throttled and throttled_time (ns), cpuacct the usage.
    let throttled = keyed(&stat, "nr_throttled").unwrap_or(0);
    let periods = keyed(&stat, "nr_periods").unwrap_or(0);
    let usage_us = keyed(&stat, "usage_usec");
    let usage = usage_us.map_or("?".to_string(), |u| format!("{}ms", u / 1000));
    // At 10% quota the child gets about a tenth of the wall time; allow ample slack.
    let bounded = usage_us.is_none_or(|u| u < wall_us / 2);
    let ok = status.success() && throttled > 0 && bounded;
    Ok(Outcome {
        ok,
        detail: format!(
            "cpu.max={CPU_QUOTA_US} {CPU_PERIOD_US} spin {}ms: {} nr_periods={periods} \
             nr_throttled={throttled} usage={usage} wall={}ms",
            SPIN.as_millis(),
            describe(status),
            wall_us / 1000
        ),
    })
}

/// (d) kill: a populated cgroup (a shell and its 3 sleeps) is emptied by `Cgroup::kill`.
fn check_kill(cg: &Cgroup) -> Result<Outcome> {
    let mut child = spawn_in(cg, shell("sleep 300 & sleep 300 & sleep 300 & wait"))?;
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut before = cg.pids()?.len();
    while before < 4 {
        if Instant::now() > deadline {
            bail!("only {before} of 4 processes appeared in the cgroup");
        }
        std::thread::sleep(Duration::from_millis(5));
        before = cg.pids()?.len();
    }
    let populated_before = cg.is_populated()?;
    let start = Instant::now();
    cg.kill()?;
    let kill_ms = start.elapsed().as_millis();
    let after = cg.pids()?.len();
    let populated_after = cg.is_populated()?;
    let status = child.wait()?;
    let ok = populated_before
        && !populated_after
        && after == 0
        && status.signal() == Some(libc::SIGKILL);
    let via = match cg.nodes().first() {
        Some(n) if n.version == Version::V2 && n.dir.join("cgroup.kill").exists() => "cgroup.kill",
        _ => "freeze+SIGKILL",
    };
    Ok(Outcome {
        ok,
        detail: format!(
            "{before} processes, populated={populated_before}; kill() via {via} in {kill_ms}ms: \
             {after} left, populated={populated_after}, shell {}",
            describe(status)
        ),
    })
}

/// `sh -c SCRIPT`, gated: the script starts once a line arrives on stdin (see [`spawn_in`]).
fn shell(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!("read _go; {script}"));
    cmd
}

/// Spawns `cmd`, moves it into `cg`, then opens its gate: every child we start reads a line
/// from stdin before doing anything, so all its work happens inside the cgroup.
fn spawn_in(cg: &Cgroup, mut cmd: Command) -> Result<Child> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {:?}", cmd.get_program()))?;
    if let Err(e) = cg.add_pid(child.id()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e).context("move the child into the pod cgroup");
    }
    let mut stdin = child.stdin.take().context("child stdin")?;
    stdin.write_all(b"go\n")?;
    Ok(child)
}

/// Waits for `child` up to `timeout` (then kills it); returns its status and stdout.
fn wait(mut child: Child, timeout: Duration) -> Result<(ExitStatus, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            let (stdout, _) = read_output(&mut child);
            return Ok((status, stdout));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("child still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The stdout and stderr of an exited child (whatever its descendants wrote before closing).
fn read_output(child: &mut Child) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    (out, err)
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit={code}"),
        (_, Some(libc::SIGKILL)) => "SIGKILL".to_string(),
        (_, Some(sig)) => format!("signal={sig}"),
        _ => format!("{status}"),
    }
}

/// The value of `key` in a flat-keyed file (`max 3`).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
}

/// Waits for the gate line, then allocates `mib` MiB and touches every page.
fn child_allocate(mib: &str) -> Result<ExitCode> {
    let mib: usize = mib.parse().context("MiB")?;
    gate()?;
    let mut buf = vec![0u8; mib << 20];
    for i in (0..buf.len()).step_by(4096) {
        buf[i] = 1;
    }
    std::hint::black_box(&buf);
    Ok(ExitCode::SUCCESS)
}

/// Waits for the gate line, then spins for `ms` milliseconds of wall time.
fn child_spin(ms: &str) -> Result<ExitCode> {
    let d = Duration::from_millis(ms.parse().context("milliseconds")?);
    gate()?;
    let start = Instant::now();
    let mut x = 1u64;
    while start.elapsed() < d {
        for _ in 0..1000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn gate() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(())
}
