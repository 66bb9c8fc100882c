//! Order statistics for benchmark samples.

use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// Nearest-rank percentiles of `samples` (any unit).
pub fn summarize(samples: &[f64]) -> Summary {
    let mut sorted: Vec<f64> = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pick = |q: f64| -> f64 {
        if sorted.is_empty() {
            return f64::NAN;
        }
        let rank = (q * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    };
    Summary {
        n: sorted.len(),
        min: sorted.first().copied().unwrap_or(f64::NAN),
        p50: pick(0.50),
        p90: pick(0.90),
        p99: pick(0.99),
        max: sorted.last().copied().unwrap_or(f64::NAN),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = summarize(&samples);
        assert_eq!(
            (s.n, s.min, s.p50, s.p90, s.p99, s.max),
            (100, 1.0, 50.0, 90.0, 99.0, 100.0)
        );
        let one = summarize(&[7.0]);
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
        assert!(summarize(&[]).p50.is_nan());
    }
}
