//! The pure state machine of one probe: results in, verdict and next due time out. Times are
//! offsets from container start, so it needs no clock and its tests no sleeping.

use std::time::{Duration, Instant};

use super::config::{ProbeKind, ProbeTiming};

/// What one run of a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeResult {
    /// The container answered as healthy.
    Success,
    /// It did not; the message says why (as Kubernetes words it, where it has a wording).
    Failure(String),
}

/// What a probe currently says about its container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Startup probes only: not succeeded yet and not failed either. The container is not
    /// started (liveness and readiness wait) and must not be restarted.
    Pending,
    /// Readiness: ready. Liveness: alive. Startup: started (the probe stops running).
    Success,
    /// Readiness: not ready. Liveness and startup: the container must be restarted (the probe
    /// holds until a new prober is made for the new container).
    Failure,
}

impl Verdict {
    /// A probe's verdict before its first result: readiness starts not ready, liveness alive,
    /// startup pending.
    pub fn initial(kind: ProbeKind) -> Verdict {
        match kind {
            ProbeKind::Readiness => Verdict::Failure,
            ProbeKind::Liveness => Verdict::Success,
            ProbeKind::Startup => Verdict::Pending,
        }
    }
}

/// Counts of results, for events and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Successful runs.
    pub successes: u64,
    /// Failed runs.
    pub failures: u64,
    /// The message of the latest failed run.
    pub last_failure: Option<String>,
}

/// One probe's results so far.
#[derive(Clone, Debug)]
pub struct ProbeState {
    kind: ProbeKind,
    timing: ProbeTiming,
    verdict: Verdict,
    /// The latest result's kind and how many times in a row it came.
    run: Option<(bool, u32)>,
    /// When the latest run started, since container start.
    last_run: Option<Duration>,
    stats: ProbeStats,
}

impl ProbeState {
    /// A probe that has not run yet.
    pub fn new(kind: ProbeKind, timing: ProbeTiming) -> ProbeState {
        ProbeState {
            kind,
            timing,
            verdict: Verdict::initial(kind),
            run: None,
            last_run: None,
            stats: ProbeStats::default(),
        }
    }

    /// Which probe this is.
    pub fn kind(&self) -> ProbeKind {
        self.kind
    }

    /// Its timings.
    pub fn timing(&self) -> &ProbeTiming {
        &self.timing
    }

    /// The current verdict.
    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Counts of results so far.
    pub fn stats(&self) -> &ProbeStats {
        &self.stats
    }

    /// Whether the probe stops running: a startup probe that succeeded, or a liveness or
    /// startup probe that failed (the container is to be restarted; its next instance gets a
    /// new prober).
    pub fn is_done(&self) -> bool {
        match self.kind {
            ProbeKind::Readiness => false,
            ProbeKind::Liveness => self.verdict == Verdict::Failure,
            ProbeKind::Startup => self.verdict != Verdict::Pending,
        }
    }

    /// Takes the result of a run that started `at` after container start. Returns the new
    /// verdict if it changed. Results after [`is_done`](Self::is_done) are ignored.
    pub fn record(&mut self, at: Duration, result: &ProbeResult) -> Option<Verdict> {
        if self.is_done() {
            return None;
        }
        self.last_run = Some(at);
        let ok = match result {
            ProbeResult::Success => {
                self.stats.successes += 1;
                true
            }
            ProbeResult::Failure(message) => {
                self.stats.failures += 1;
                self.stats.last_failure = Some(message.clone());
                false
            }
        };
        let times = match self.run {
            Some((last, n)) if last == ok => n.saturating_add(1),
            _ => 1,
        };
        self.run = Some((ok, times));
        let (threshold, verdict) = if ok {
            (self.timing.success_threshold, Verdict::Success)
        } else {
            (self.timing.failure_threshold, Verdict::Failure)
        };
        if times < threshold || self.verdict == verdict {
            return None;
        }
        self.verdict = verdict;
        Some(verdict)
    }

    /// When the next run is due, since container start: the initial delay before the first
    /// run, then one period after the latest run started. `None`: the probe is done.
    pub fn next_due(&self) -> Option<Duration> {
        if self.is_done() {
            return None;
        }
        Some(match self.last_run {
            None => self.timing.initial_delay,
            Some(last) => last.saturating_add(self.timing.period),
        })
    }

    /// [`next_due`](Self::next_due) as an instant, for a container that started at `started_at`.
    pub fn next_due_at(&self, started_at: Instant) -> Option<Instant> {
        self.next_due().and_then(|d| started_at.checked_add(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn timing(success: u32, failure: u32) -> ProbeTiming {
        ProbeTiming {
            initial_delay: 5 * S,
            period: 10 * S,
            timeout: S,
            success_threshold: success,
            failure_threshold: failure,
        }
    }

    fn fail() -> ProbeResult {
        ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
    }

    /// Feeds results one period apart (the fake clock) and returns the verdict after each.
    fn feed(state: &mut ProbeState, results: &[ProbeResult]) -> Vec<Verdict> {
        results
            .iter()
            .map(|r| {
                let at = state.next_due().unwrap_or_default();
                state.record(at, r);
                state.verdict()
            })
            .collect()
    }

    #[test]
    fn readiness_starts_not_ready_and_needs_success_threshold_in_a_row() {
        let mut s = ProbeState::new(ProbeKind::Readiness, timing(3, 3));
        assert_eq!(s.verdict(), Verdict::Failure);
        use ProbeResult::Success as Ok;
        let v = feed(&mut s, &[Ok, Ok, fail(), Ok, Ok, Ok, Ok]);
        use Verdict::{Failure as F, Success as T};
        assert_eq!(v, [F, F, F, F, F, T, T]);
    }

    #[test]
    fn readiness_goes_false_after_failure_threshold_in_a_row() {
        let mut s = ProbeState::new(ProbeKind::Readiness, timing(1, 3));
        use ProbeResult::Success as Ok;
        let v = feed(
            &mut s,
            &[Ok, fail(), fail(), Ok, fail(), fail(), fail(), Ok],
        );
        use Verdict::{Failure as F, Success as T};
        assert_eq!(v, [T, T, T, T, T, T, F, T]);
        assert!(!s.is_done(), "readiness never stops");
    }

    #[test]
    fn record_reports_only_changes() {
        let mut s = ProbeState::new(ProbeKind::Readiness, timing(1, 1));
        assert_eq!(s.record(S, &ProbeResult::Success), Some(Verdict::Success));
        assert_eq!(s.record(2 * S, &ProbeResult::Success), None);
        assert_eq!(s.record(3 * S, &fail()), Some(Verdict::Failure));
        assert_eq!(s.record(4 * S, &fail()), None);
    }

    #[test]
    fn liveness_starts_alive_and_fails_after_threshold_then_holds() {
        let mut s = ProbeState::new(ProbeKind::Liveness, timing(1, 3));
        assert_eq!(s.verdict(), Verdict::Success);
        use ProbeResult::Success as Ok;
        let v = feed(&mut s, &[fail(), fail(), Ok, fail(), fail()]);
        assert!(v.iter().all(|v| *v == Verdict::Success), "{v:?}");
        assert_eq!(s.record(60 * S, &fail()), Some(Verdict::Failure));
        assert!(s.is_done());
        assert_eq!(s.next_due(), None);
        assert_eq!(
            s.record(70 * S, &ProbeResult::Success),
            None,
            "held after failing"
        );
        assert_eq!(s.verdict(), Verdict::Failure);
    }

    #[test]
    fn startup_is_pending_until_first_success_then_stops() {
        let mut s = ProbeState::new(ProbeKind::Startup, timing(1, 3));
        assert_eq!(s.verdict(), Verdict::Pending);
        let v = feed(&mut s, &[fail(), fail()]);
        assert_eq!(v, [Verdict::Pending, Verdict::Pending]);
        assert_eq!(
            s.record(30 * S, &ProbeResult::Success),
            Some(Verdict::Success)
        );
        assert!(s.is_done());
        assert_eq!(s.next_due(), None);
        assert_eq!(s.record(40 * S, &fail()), None);
    }

    #[test]
    fn startup_fails_after_threshold() {
        let mut s = ProbeState::new(ProbeKind::Startup, timing(1, 2));
        let v = feed(&mut s, &[fail(), fail()]);
        assert_eq!(v, [Verdict::Pending, Verdict::Failure]);
        assert!(s.is_done());
    }

    #[test]
    fn counts_results_and_keeps_last_failure() {
        let mut s = ProbeState::new(ProbeKind::Readiness, timing(1, 3));
        feed(
            &mut s,
            &[
                ProbeResult::Failure("first".into()),
                ProbeResult::Success,
                ProbeResult::Failure("second".into()),
                ProbeResult::Success,
            ],
        );
        let stats = s.stats();
        assert_eq!((stats.successes, stats.failures), (2, 2));
        assert_eq!(stats.last_failure.as_deref(), Some("second"));
    }

    #[test]
    fn next_due_is_initial_delay_then_period_after_last_run() {
        let mut s = ProbeState::new(ProbeKind::Readiness, timing(1, 3));
        assert_eq!(s.next_due(), Some(5 * S));
        s.record(5 * S, &ProbeResult::Success);
        assert_eq!(s.next_due(), Some(15 * S));
        // A late run (the previous one took long) moves the schedule.
        s.record(27 * S, &ProbeResult::Success);
        assert_eq!(s.next_due(), Some(37 * S));
        let start = Instant::now();
        assert_eq!(s.next_due_at(start), Some(start + 37 * S));
    }

    #[test]
    fn initial_verdicts() {
        assert_eq!(Verdict::initial(ProbeKind::Readiness), Verdict::Failure);
        assert_eq!(Verdict::initial(ProbeKind::Liveness), Verdict::Success);
        assert_eq!(Verdict::initial(ProbeKind::Startup), Verdict::Pending);
    }
}
