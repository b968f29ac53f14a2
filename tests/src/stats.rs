//! The statistics of the lab's distribution checks: does traffic to a
//! Service spread uniformly over its backends?
//!
//! Pearson's chi-square goodness-of-fit test against a uniform spread, with
//! the exact critical value for the degrees of freedom (categories − 1).
//! The samples must be independent: one request per new flow (a fresh
//! socket with a source port not used before in the run, which
//! `weir-probe` guarantees), never several requests over one 5-tuple that
//! conntrack pins to one backend.
//!
//! Choose the significance `p` as the chance that a correct (uniform)
//! datapath fails the check; with several checks in one run, split it over
//! them. A broken datapath is far from the critical value: 300 requests
//! all on one of three backends give chi² = 600, one backend never chosen
//! 150, a 2:1:1 split about 37.

/// Pearson's chi-square statistic of `counts` against a uniform spread
/// (0 for no samples).
pub fn chi_square_uniform(counts: &[usize]) -> f64 {
    let n: usize = counts.iter().sum();
    if n == 0 || counts.is_empty() {
        return 0.0;
    }
    let expected = n as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

/// P(X ≥ x) for X chi-square distributed with `df` ≥ 1 degrees of freedom
/// (closed forms: a finite series for even `df`, erfc plus a series for
/// odd `df`).
pub fn chi_square_survival(x: f64, df: u32) -> f64 {
    if x <= 0.0 || df == 0 {
        return 1.0;
    }
    let half = x / 2.0;
    if df.is_multiple_of(2) {
        // exp(-x/2) · Σ_{i < df/2} (x/2)^i / i!
        let mut term = 1.0;
        let mut sum = 1.0;
        for i in 1..df / 2 {
            term *= half / f64::from(i);
            sum += term;
        }
        (-half).exp() * sum
    } else {
        // erfc(√(x/2)) + √(2x/π) · exp(-x/2) · Σ_{j=1}^{(df-1)/2} x^(j-1) / (1·3···(2j-1))
        let mut term = 1.0;
        let mut sum = 0.0;
        for j in 1..=(df - 1) / 2 {
            if j > 1 {
                term *= x / f64::from(2 * j - 1);
            }
            sum += term;
        }
        erfc(half.sqrt()) + (2.0 * x / std::f64::consts::PI).sqrt() * (-half).exp() * sum
    }
}

/// The critical value c with P(X ≥ c) = `p` for X chi-square distributed
/// with `df` ≥ 1 degrees of freedom (`p` in (0, 1)).
pub fn chi_square_critical(df: u32, p: f64) -> f64 {
    if df == 2 {
        // The survival function is exactly exp(-x/2).
        return -2.0 * p.ln();
    }
    // The survival function falls monotonically: bisect.
    let (mut lo, mut hi) = (0.0f64, f64::from(df.max(1)) + 10.0);
    while chi_square_survival(hi, df) > p {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if chi_square_survival(mid, df) > p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// The complementary error function, after W. J. Cody's rational
/// Chebyshev approximation as given in Numerical Recipes (`erfcc`):
/// fractional error below 1.2e-7 everywhere.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The outcome of a uniformity check over some categories (backends).
#[derive(Debug, Clone, PartialEq)]
pub struct Uniformity {
    /// Samples per category, in the caller's order.
    pub counts: Vec<usize>,
    /// Pearson's chi-square against a uniform spread.
    pub chi2: f64,
    /// Degrees of freedom: categories − 1.
    pub df: u32,
    /// The significance the check was made at.
    pub p: f64,
    /// The critical value at `p` for `df`.
    pub critical: f64,
}

impl Uniformity {
    /// Tests `counts` (two or more categories) against a uniform spread at
    /// significance `p`: a uniform spread fails with probability `p`.
    pub fn check(counts: &[usize], p: f64) -> Uniformity {
        let df = u32::try_from(counts.len().saturating_sub(1))
            .unwrap_or(u32::MAX)
            .max(1);
        Uniformity {
            counts: counts.to_vec(),
            chi2: chi_square_uniform(counts),
            df,
            p,
            critical: chi_square_critical(df, p),
        }
    }

    /// Whether the spread passes: chi² below the critical value, and some
    /// samples at all.
    pub fn uniform(&self) -> bool {
        self.counts.iter().sum::<usize>() > 0 && self.chi2 < self.critical
    }

    /// `chi² = 1.23 (df 2, critical 27.63 at p = 1.0e-6)`.
    pub fn summary(&self) -> String {
        format!(
            "chi² = {:.2} (df {}, critical {:.2} at p = {:.1e})",
            self.chi2, self.df, self.critical, self.p
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn statistic() {
        assert_eq!(chi_square_uniform(&[100, 100, 100]), 0.0);
        // 150/75/75 of 300: (50² + 25² + 25²) / 100 = 37.5
        assert!(close(chi_square_uniform(&[150, 75, 75]), 37.5, 1e-9));
        assert_eq!(chi_square_uniform(&[300, 0, 0]), 600.0);
        assert_eq!(chi_square_uniform(&[0, 0, 0]), 0.0);
        assert_eq!(chi_square_uniform(&[]), 0.0);
    }

    #[test]
    fn critical_values_match_the_tables() {
        // Standard chi-square table values.
        for (df, p, want) in [
            (1, 0.05, 3.841),
            (1, 0.001, 10.828),
            (2, 0.05, 5.991),
            (2, 0.001, 13.816),
            (3, 0.001, 16.266),
            (4, 0.001, 18.467),
            (5, 0.01, 15.086),
            (9, 0.001, 27.877),
            (10, 0.05, 18.307),
            (2, 1e-6, 27.631),
        ] {
            let got = chi_square_critical(df, p);
            assert!(close(got, want, 2e-3), "df {df}, p {p}: {got} ≠ {want}");
            assert!(close(chi_square_survival(got, df), p, p * 1e-4));
        }
    }

    #[test]
    fn survival_is_a_probability() {
        for df in 1..12 {
            assert_eq!(chi_square_survival(0.0, df), 1.0);
            let mut last = 1.0;
            for k in 1..200 {
                let s = chi_square_survival(f64::from(k) * 0.5, df);
                assert!(
                    (0.0..=last).contains(&s),
                    "df {df} at {k}: {s} after {last}"
                );
                last = s;
            }
        }
    }

    #[test]
    fn uniformity_catches_a_broken_spread_only() {
        let fair = Uniformity::check(&[104, 99, 97], 1e-6);
        assert!(fair.uniform(), "{}", fair.summary());
        assert_eq!(fair.df, 2);
        for broken in [[300, 0, 0], [150, 150, 0], [150, 75, 75]] {
            let check = Uniformity::check(&broken, 1e-6);
            assert!(!check.uniform(), "{broken:?}: {}", check.summary());
        }
        assert!(!Uniformity::check(&[0, 0, 0], 1e-6).uniform());
        assert_eq!(Uniformity::check(&[60, 40], 0.001).df, 1);
    }
}
