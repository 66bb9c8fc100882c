//! Linux-level cgroup `Resources` and their plan: the (controller file, value) writes that
//! apply them on cgroup v2 or on v1, as data, so the plan is tested apart from any filesystem.

use serde::{Deserialize, Serialize};

use super::error::CgroupError;
use super::layout::Version;

/// A limit that can also be "no limit" (`max` on v2, `-1` on v1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Limit {
    /// No limit.
    Max,
    /// A limit (bytes, microseconds or a count, depending on the field).
    Value(u64),
}

/// CPU bandwidth: `quota` microseconds of CPU time per `period_us` (v2 `cpu.max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuMax {
    /// Microseconds per period, or `Max` for no limit.
    pub quota: Limit,
    /// The period in microseconds (kernel range 1 ms ..= 1 s; Kubernetes uses 100 ms).
    pub period_us: u64,
}

/// Resource settings of one cgroup in cgroup v2 terms. `None` leaves a setting untouched.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// `cpu.weight`, 1..=10000 (default 100). On v1 converted to `cpu.shares`.
    pub cpu_weight: Option<u64>,
    /// `cpu.max`. On v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`.
    pub cpu_max: Option<CpuMax>,
    /// `memory.max` in bytes. On v1 `memory.limit_in_bytes`.
    pub memory_max: Option<Limit>,
    /// `memory.swap.max` in bytes (swap only, v2 meaning). On v1 becomes
    /// `memory.memsw.limit_in_bytes` = memory + swap, written only if the file exists.
    pub memory_swap_max: Option<Limit>,
    /// `pids.max`.
    pub pids_max: Option<Limit>,
}

/// A controller a write belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Controller {
    /// `cpu`.
    Cpu,
    /// `memory`.
    Memory,
    /// `pids`.
    Pids,
}

impl Controller {
    /// All controllers the resource layer uses.
    pub const ALL: [Controller; 3] = [Controller::Cpu, Controller::Memory, Controller::Pids];

    /// The kernel's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// One write of a plan: `value` into `file` of the cgroup directory holding `controller` in
/// the hierarchy of `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    /// Which hierarchy: v2, or the v1 hierarchy of `controller`.
    pub version: Version,
    /// The controller the file belongs to.
    pub controller: Controller,
    /// The interface file, e.g. `memory.max`.
    pub file: &'static str,
    /// What to write.
    pub value: String,
    /// Skip the write when the file does not exist (v1 `memory.memsw.*` without swap
    /// accounting).
    pub if_present: bool,
}

impl Write {
    fn new(version: Version, controller: Controller, file: &'static str, value: String) -> Self {
        Self {
            version,
            controller,
            file,
            value,
            if_present: false,
        }
    }
}

/// Plans the writes for `res`, each controller on the version `placement` gives for it
/// (`None`: the controller is unavailable, an error only if `res` needs it). Writes are in
/// the order to apply them.
pub fn plan(
    res: &Resources,
    placement: impl Fn(Controller) -> Option<Version>,
) -> Result<Vec<Write>, CgroupError> {
    validate(res)?;
    let mut out = Vec::new();
    for c in Controller::ALL {
        let needed = match c {
            Controller::Cpu => res.cpu_weight.is_some() || res.cpu_max.is_some(),
            Controller::Memory => res.memory_max.is_some() || res.memory_swap_max.is_some(),
            Controller::Pids => res.pids_max.is_some(),
        };
        if !needed {
            continue;
        }
        let version = placement(c).ok_or(CgroupError::ControllerMissing {
            controller: c.name(),
        })?;
        match (c, version) {
            (Controller::Cpu, Version::V2) => out.extend(plan_cpu_v2(res)),
            (Controller::Cpu, Version::V1) => out.extend(plan_cpu_v1(res)),
            (Controller::Memory, Version::V2) => out.extend(plan_memory_v2(res)),
            (Controller::Memory, Version::V1) => out.extend(plan_memory_v1(res)?),
            (Controller::Pids, v) => out.push(Write::new(
                v,
                c,
                "pids.max",
                limit(res.pids_max.unwrap_or(Limit::Max), "max"),
            )),
        }
    }
    Ok(out)
}

fn validate(res: &Resources) -> Result<(), CgroupError> {
    let bad = |field, reason: String| Err(CgroupError::InvalidResource { field, reason });
    if let Some(w) = res.cpu_weight
        && !(1..=10_000).contains(&w)
    {
        return bad("cpu_weight", format!("{w} is outside 1..=10000"));
    }
    if let Some(m) = res.cpu_max {
        if !(1_000..=1_000_000).contains(&m.period_us) {
            return bad(
                "cpu_max",
                format!("period {} µs is outside 1000..=1000000", m.period_us),
            );
        }
        if let Limit::Value(q) = m.quota
            && q < 1_000
        {
            return bad(
                "cpu_max",
                format!("quota {q} µs is below the kernel minimum 1000"),
            );
        }
    }
    Ok(())
}

fn limit(l: Limit, max: &str) -> String {
    match l {
        Limit::Max => max.to_string(),
        Limit::Value(v) => v.to_string(),
    }
}

fn plan_cpu_v2(res: &Resources) -> Vec<Write> {
    let mut out = Vec::new();
    if let Some(w) = res.cpu_weight {
        out.push(Write::new(
            Version::V2,
            Controller::Cpu,
            "cpu.weight",
            w.to_string(),
        ));
    }
    if let Some(m) = res.cpu_max {
        let value = format!("{} {}", limit(m.quota, "max"), m.period_us);
        out.push(Write::new(Version::V2, Controller::Cpu, "cpu.max", value));
    }
    out
}

fn plan_cpu_v1(res: &Resources) -> Vec<Write> {
    let w = |file, value: String| Write::new(Version::V1, Controller::Cpu, file, value);
    let mut out = Vec::new();
    if let Some(weight) = res.cpu_weight {
        out.push(w("cpu.shares", cpu_weight_to_shares(weight).to_string()));
    }
    if let Some(m) = res.cpu_max {
        out.push(w("cpu.cfs_period_us", m.period_us.to_string()));
        out.push(w("cpu.cfs_quota_us", limit(m.quota, "-1")));
    }
    out
}

fn plan_memory_v2(res: &Resources) -> Vec<Write> {
    let w = |file, l| Write::new(Version::V2, Controller::Memory, file, limit(l, "max"));
    res.memory_max
        .map(|l| w("memory.max", l))
        .into_iter()
        .chain(res.memory_swap_max.map(|l| w("memory.swap.max", l)))
        .collect()
}

/// v1 has no swap-only limit: `memory.memsw.limit_in_bytes` caps memory + swap, so it is
/// derived from both fields. `memsw >= limit` must hold after every single write; the
/// executor retries writes refused with EINVAL once, which covers raising and lowering.
fn plan_memory_v1(res: &Resources) -> Result<Vec<Write>, CgroupError> {
    let mut out = Vec::new();
    if let Some(l) = res.memory_max {
        out.push(Write::new(
            Version::V1,
            Controller::Memory,
            "memory.limit_in_bytes",
            limit(l, "-1"),
        ));
    }
    if let Some(swap) = res.memory_swap_max {
        let memsw = match (res.memory_max, swap) {
            (Some(Limit::Value(m)), Limit::Value(s)) => Limit::Value(m.saturating_add(s)),
            (Some(_), _) => Limit::Max,
            (None, _) => {
                return Err(CgroupError::InvalidResource {
                    field: "memory_swap_max",
                    reason: "cgroup v1 can only limit swap together with memory_max".to_string(),
                });
            }
        };
        out.push(Write {
            if_present: true,
            ..Write::new(
                Version::V1,
                Controller::Memory,
                "memory.memsw.limit_in_bytes",
                limit(memsw, "-1"),
            )
        });
    }
    Ok(out)
}

/// v1 `cpu.shares` range.
const SHARES_MIN: u64 = 2;
const SHARES_MAX: u64 = 262_144;

/// runc's conversion (opencontainers/cgroups, runc ≥ 1.3.2, crun ≥ 1.23, Kubernetes ≥ 1.35)
/// from v1 `cpu.shares` [2, 262144] to v2 `cpu.weight` [1, 10000]: a quadratic in log2 that
/// maps 2→1, 1024→100, 262144→10000. 0 stays 0 ("unset").
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    match shares {
        0 => 0,
        s if s <= SHARES_MIN => 1,
        s if s >= SHARES_MAX => 10_000,
        s => {
            let l = (s as f64).log2();
            let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
            (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
        }
    }
}

/// The inverse of [`cpu_shares_to_weight`], for v1 hosts: the shares value that converts back
/// to `weight` (100→1024, 1→2, 10000→262144). 0 stays 0.
pub fn cpu_weight_to_shares(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    let weight = weight.clamp(1, 10_000);
    // Solve (l² + 125 l)/612 − 7/34 = log10(weight) for l = log2(shares).
    let c = 612.0 * ((weight as f64).log10() + 7.0 / 34.0);
    let l = (-125.0 + (125.0f64 * 125.0 + 4.0 * c).sqrt()) / 2.0;
    let exact = 2f64.powf(l);
    let rounded = (exact.round() as u64).clamp(SHARES_MIN, SHARES_MAX);
    if cpu_shares_to_weight(rounded) == weight {
        rounded
    } else {
        (exact.floor() as u64).clamp(SHARES_MIN, SHARES_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> Resources {
        Resources {
            cpu_weight: Some(100),
            cpu_max: Some(CpuMax {
                quota: Limit::Value(50_000),
                period_us: 100_000,
            }),
            memory_max: Some(Limit::Value(256 << 20)),
            memory_swap_max: Some(Limit::Value(0)),
            pids_max: Some(Limit::Value(100)),
        }
    }

    fn files(plan: &[Write]) -> Vec<(Version, &str, &str)> {
        plan.iter()
            .map(|w| (w.version, w.file, w.value.as_str()))
            .collect()
    }

    #[test]
    fn plan_v2() {
        let p = plan(&full(), |_| Some(Version::V2)).unwrap();
        assert_eq!(
            files(&p),
            vec![
                (Version::V2, "cpu.weight", "100"),
                (Version::V2, "cpu.max", "50000 100000"),
                (Version::V2, "memory.max", "268435456"),
                (Version::V2, "memory.swap.max", "0"),
                (Version::V2, "pids.max", "100"),
            ]
        );
        assert!(p.iter().all(|w| !w.if_present));
    }

    #[test]
    fn plan_v1() {
        let p = plan(&full(), |_| Some(Version::V1)).unwrap();
        assert_eq!(
            files(&p),
            vec![
                (Version::V1, "cpu.shares", "1024"),
                (Version::V1, "cpu.cfs_period_us", "100000"),
                (Version::V1, "cpu.cfs_quota_us", "50000"),
                (Version::V1, "memory.limit_in_bytes", "268435456"),
                (Version::V1, "memory.memsw.limit_in_bytes", "268435456"),
                (Version::V1, "pids.max", "100"),
            ]
        );
        assert!(
            p.iter()
                .find(|w| w.file.contains("memsw"))
                .unwrap()
                .if_present
        );
    }

    #[test]
    fn plan_mixed_as_on_the_hybrid_host() {
        // Hybrid: no resource controller on v2, so everything lands on v1.
        let p = plan(&full(), |c| match c {
            Controller::Pids => Some(Version::V2),
            _ => Some(Version::V1),
        })
        .unwrap();
        assert_eq!(p.last().unwrap().version, Version::V2);
        assert_eq!(p[0].file, "cpu.shares");
    }

    #[test]
    fn unlimited_values() {
        let res = Resources {
            cpu_max: Some(CpuMax {
                quota: Limit::Max,
                period_us: 100_000,
            }),
            memory_max: Some(Limit::Max),
            memory_swap_max: Some(Limit::Value(1 << 30)),
            pids_max: Some(Limit::Max),
            ..Default::default()
        };
        let table: [(Version, &[&str]); 2] = [
            (Version::V2, &["max 100000", "max", "1073741824", "max"]),
            (Version::V1, &["100000", "-1", "-1", "-1", "max"]),
        ];
        for (v, want) in table {
            let p = plan(&res, |_| Some(v)).unwrap();
            let got: Vec<&str> = p.iter().map(|w| w.value.as_str()).collect();
            assert_eq!(got, want, "{v:?}");
        }
    }

    #[test]
    fn empty_resources_plan_nothing_even_without_controllers() {
        assert!(plan(&Resources::default(), |_| None).unwrap().is_empty());
    }

    #[test]
    fn errors() {
        let missing = plan(&full(), |c| {
            (c != Controller::Memory).then_some(Version::V2)
        });
        assert!(matches!(
            missing,
            Err(CgroupError::ControllerMissing {
                controller: "memory"
            })
        ));
        let cases = [
            Resources {
                cpu_weight: Some(0),
                ..Default::default()
            },
            Resources {
                cpu_weight: Some(10_001),
                ..Default::default()
            },
            Resources {
                cpu_max: Some(CpuMax {
                    quota: Limit::Value(500),
                    period_us: 100_000,
                }),
                ..Default::default()
            },
            Resources {
                cpu_max: Some(CpuMax {
                    quota: Limit::Max,
                    period_us: 10,
                }),
                ..Default::default()
            },
        ];
        for res in cases {
            let err = plan(&res, |_| Some(Version::V2)).unwrap_err();
            assert!(matches!(err, CgroupError::InvalidResource { .. }), "{err}");
        }
        let swap_only = Resources {
            memory_swap_max: Some(Limit::Value(1)),
            ..Default::default()
        };
        assert!(plan(&swap_only, |_| Some(Version::V2)).is_ok());
        assert!(plan(&swap_only, |_| Some(Version::V1)).is_err());
    }

    #[test]
    fn shares_to_weight_matches_runc() {
        let table = [
            (0, 0),
            (1, 1),
            (2, 1),
            (1024, 100),
            (2000, 170),
            (262_144, 10_000),
        ];
        for (shares, weight) in table {
            assert_eq!(cpu_shares_to_weight(shares), weight, "shares {shares}");
        }
        assert_eq!(cpu_shares_to_weight(1_000_000), 10_000);
    }

    #[test]
    fn weight_to_shares_inverts() {
        let table = [(0, 0), (1, 2), (100, 1024), (10_000, 262_144)];
        for (weight, shares) in table {
            assert_eq!(cpu_weight_to_shares(weight), shares, "weight {weight}");
        }
        for w in 1..=10_000 {
            assert_eq!(
                cpu_shares_to_weight(cpu_weight_to_shares(w)),
                w,
                "weight {w}"
            );
        }
    }
}
