//! A container's state on disk — the only state there is, so a restarted daemon re-adopts
//! every container by reading it: `pid` (init's host PID and its start time, which tells a
//! recycled PID apart), `started`, and `exit` (written by skiff-init when the workload ends).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How a container's workload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code (0 when killed by a signal).
    pub code: i32,
    /// The signal that killed it, or 0.
    pub signal: i32,
    /// Nanoseconds since the epoch.
    pub finished_ns: u128,
}

impl ExitStatus {
    /// The shell's convention: the code, or 128 + signal.
    pub fn shell_code(&self) -> i32 {
        if self.signal != 0 {
            128 + self.signal
        } else {
            self.code
        }
    }

    /// Parses skiff-init's `exit` record (`code=…\nsignal=…\nfinished=…`).
    pub fn parse(text: &str) -> Option<ExitStatus> {
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        };
        Some(ExitStatus {
            code: field("code")?.trim().parse().ok()?,
            signal: field("signal")?.trim().parse().ok()?,
            finished_ns: field("finished")?.trim().parse().ok()?,
        })
    }

    pub fn render(&self) -> String {
        format!(
            "code={}\nsignal={}\nfinished={}\n",
            self.code, self.signal, self.finished_ns
        )
    }
}

/// The process that is a container's PID 1, identified beyond its PID number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitProcess {
    pub pid: i32,
    /// Field 22 of /proc/PID/stat, in clock ticks since boot.
    pub start_time: u64,
}

impl InitProcess {
    pub fn parse(text: &str) -> Option<InitProcess> {
        let mut parts = text.split_whitespace();
        Some(InitProcess {
            pid: parts.next()?.parse().ok()?,
            start_time: parts.next()?.parse().ok()?,
        })
    }

    pub fn render(&self) -> String {
        format!("{} {}\n", self.pid, self.start_time)
    }

    /// Reads the start time of a live process.
    pub fn of(pid: i32) -> Option<InitProcess> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(InitProcess {
            pid,
            start_time: parse_start_time(&stat)?,
        })
    }

    /// Whether this very process (not a later one with the same PID) is still there and not a
    /// zombie.
    pub fn is_alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        parse_start_time(&stat) == Some(self.start_time) && process_state(&stat) != Some('Z')
    }
}

/// `pid (comm) S …`: comm may hold spaces and parentheses, so fields count from the last `)`.
fn after_comm(stat: &str) -> Option<&str> {
    stat.rfind(')').map(|i| &stat[i + 1..])
}

fn process_state(stat: &str) -> Option<char> {
    after_comm(stat)?.split_whitespace().next()?.chars().next()
}

pub fn parse_start_time(stat: &str) -> Option<u64> {
    // Field 22 overall = the 20th after the comm field.
    after_comm(stat)?.split_whitespace().nth(19)?.parse().ok()
}

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_nanos()
}

/// Writes a small state file atomically (temp name, then rename).
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_round_trip() {
        let e = ExitStatus {
            code: 3,
            signal: 0,
            finished_ns: 1_700_000_000_123_456_789,
        };
        assert_eq!(ExitStatus::parse(&e.render()), Some(e));
        assert_eq!(e.shell_code(), 3);
        let killed = ExitStatus::parse("code=0\nsignal=9\nfinished=5\n").unwrap();
        assert_eq!(killed.shell_code(), 137);
        assert_eq!(ExitStatus::parse("code=x"), None);
    }

    #[test]
    fn start_time_skips_tricky_comm_fields() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 200";
        assert_eq!(parse_start_time(stat), Some(98765));
        assert_eq!(process_state(stat), Some('S'));
        assert_eq!(
            InitProcess::parse("12 345\n"),
            Some(InitProcess {
                pid: 12,
                start_time: 345
            })
        );
    }

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = InitProcess::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        assert!(
            !InitProcess {
                start_time: me.start_time + 1,
                ..me
            }
            .is_alive()
        );
    }
}
