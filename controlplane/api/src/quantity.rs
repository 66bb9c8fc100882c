//! Kubernetes resource quantities (`128Mi`, `1.5G`, `500m`, `2`, `1e3`) as exact rationals,
//! and the two readings the kubelet needs: bytes and millicores, both rounded up as the
//! API server does.

/// A non-negative quantity as `numerator / denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    numerator: u128,
    denominator: u128,
}

impl Quantity {
    /// Parses the canonical forms: a decimal number, then a binary (`Ki`…`Ei`) or decimal
    /// (`m`, `k`, `M`…`E`) suffix, or an exponent (`e3`, `E-2`). Negative values are refused.
    pub fn parse(text: &str) -> Result<Quantity, String> {
        let bad = || format!("{text:?} is not a quantity");
        let s = text.trim();
        let s = s.strip_prefix('+').unwrap_or(s);
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (number, suffix) = s.split_at(split);
        let (int, frac) = number.split_once('.').unwrap_or((number, ""));
        if int.is_empty() && frac.is_empty() || frac.len() > 18 || int.len() > 24 {
            return Err(bad());
        }
        let digits = format!("{int}{frac}");
        let mut q = Quantity {
            numerator: digits.parse().map_err(|_| bad())?,
            denominator: 10u128.pow(frac.len() as u32),
        };
        let (mul, div): (u128, u128) = match suffix {
            "" => (1, 1),
            "Ki" => (1 << 10, 1),
            "Mi" => (1 << 20, 1),
            "Gi" => (1 << 30, 1),
            "Ti" => (1 << 40, 1),
            "Pi" => (1 << 50, 1),
            "Ei" => (1 << 60, 1),
            "n" => (1, 1_000_000_000),
            "u" => (1, 1_000_000),
            "m" => (1, 1000),
            "k" => (1000, 1),
            "M" => (1_000_000, 1),
            "G" => (1_000_000_000, 1),
            "T" => (10u128.pow(12), 1),
            "P" => (10u128.pow(15), 1),
            "E" => (10u128.pow(18), 1),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| bad())?;
                if e.abs() > 18 {
                    return Err(bad());
                }
                let p = 10u128.pow(e.unsigned_abs());
                if e >= 0 { (p, 1) } else { (1, p) }
            }
            _ => return Err(bad()),
        };
        q.numerator = q.numerator.checked_mul(mul).ok_or_else(bad)?;
        q.denominator *= div;
        Ok(q)
    }

    /// The value rounded up to a whole number (bytes).
    pub fn ceil(&self) -> u64 {
        u64::try_from(self.numerator.div_ceil(self.denominator)).unwrap_or(u64::MAX)
    }

    /// The value in thousandths, rounded up (millicores).
    pub fn ceil_milli(&self) -> u64 {
        let milli = self
            .numerator
            .saturating_mul(1000)
            .div_ceil(self.denominator);
        u64::try_from(milli).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_and_millicores() {
        let bytes = [
            ("128Mi", 128 << 20),
            ("1Gi", 1 << 30),
            ("1.5Gi", 3 << 29),
            ("1G", 1_000_000_000),
            ("100k", 100_000),
            ("1e3", 1000),
            ("12345", 12345),
            ("500m", 1),
            ("0", 0),
        ];
        for (text, want) in bytes {
            assert_eq!(Quantity::parse(text).unwrap().ceil(), want, "{text}");
        }
        let milli = [
            ("500m", 500),
            ("1", 1000),
            ("0.25", 250),
            ("2", 2000),
            ("1.0001", 1001),
        ];
        for (text, want) in milli {
            assert_eq!(Quantity::parse(text).unwrap().ceil_milli(), want, "{text}");
        }
        for bad in ["", "Mi", "-1", "1x", "1.2.3", "1e99", "one"] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }
}
