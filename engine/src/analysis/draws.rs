//! How a finding varies between draws of demonstrations (the `[robustness]`
//! section): one value per draw in, their mean, range, between-draw
//! interval and sign consistency out; and the paired bootstrap interval of
//! a change from two states' bootstrap replicates.

use statrs::distribution::{ContinuousCDF, StudentsT};

use super::stats::percentile_interval;

/// One finding across draws of demonstrations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawSpread {
    /// Draws with a finite value.
    pub n: usize,
    /// Mean of the finite values (NaN without any).
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Student-t interval of the mean over draws at the confidence level:
    /// mean ± t(n−1) · sd / √n (NaN for fewer than two finite draws).
    pub low: f64,
    pub high: f64,
    /// Every draw has a finite value and all of them have one sign
    /// (strictly positive, or strictly negative).
    pub sign_kept: bool,
}

/// The spread of `values` (one per draw) at confidence `level` (e.g. 0.95).
/// Draws are exchangeable samples of "which demonstrations a reader might
/// have drawn", so the between-draw interval is the t interval of their
/// mean; with three draws it is wide, as it should be.
pub fn between_draw_spread(values: &[f64], level: f64) -> DrawSpread {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len();
    let nan = f64::NAN;
    if n == 0 {
        return DrawSpread {
            n,
            mean: nan,
            min: nan,
            max: nan,
            low: nan,
            high: nan,
            sign_kept: false,
        };
    }
    let mean = finite.iter().sum::<f64>() / n as f64;
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (low, high) = if n < 2 {
        (nan, nan)
    } else {
        let variance = finite.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
            .map(|d| d.inverse_cdf(0.5 + level / 2.0))
            .unwrap_or(nan);
        let half = t * (variance / n as f64).sqrt();
        (mean - half, mean + half)
    };
    let sign_kept = n == values.len() && (min > 0.0 || max < 0.0);
    DrawSpread {
        n,
        mean,
        min,
        max,
        low,
        high,
        sign_kept,
    }
}

/// Percentile interval (`level`) of a change from `before` to `after`,
/// given each state's bootstrap replicates drawn with the same resamples of
/// targets (replicate `b` of both states used the same targets), so that
/// the differences are paired. Replicates undefined in either state are
/// left out.
pub fn paired_change_interval(before: &[f64], after: &[f64], level: f64) -> (f64, f64) {
    let changes: Vec<f64> = before.iter().zip(after).map(|(b, a)| a - b).collect();
    percentile_interval(&changes, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Student-t quantiles from printed tables (e.g. NIST/SEMATECH e-Handbook
    /// 1.3.6.7.2), to the digits they print.
    const T_TABLE_TOLERANCE: f64 = 5e-4;

    #[test]
    fn three_draws_give_the_t_interval_of_their_mean() {
        let s = between_draw_spread(&[0.1, 0.2, 0.6], 0.95);
        assert_eq!(s.n, 3);
        assert!((s.mean - 0.3).abs() < 1e-15);
        assert_eq!((s.min, s.max), (0.1, 0.6));
        // sd = sqrt(((0.2)^2 + (0.1)^2 + (0.3)^2) / 2) = sqrt(0.07); t(2, .975) = 4.303.
        let half = 4.303 * (0.07f64 / 3.0).sqrt();
        assert!((s.high - s.mean - half).abs() < T_TABLE_TOLERANCE, "{s:?}");
        assert!((s.mean - s.low - half).abs() < T_TABLE_TOLERANCE, "{s:?}");
        assert!(s.sign_kept);
    }

    #[test]
    fn a_sign_change_or_a_missing_draw_breaks_consistency() {
        assert!(!between_draw_spread(&[0.1, -0.2, 0.6], 0.95).sign_kept);
        assert!(!between_draw_spread(&[0.1, f64::NAN, 0.6], 0.95).sign_kept);
        assert!(!between_draw_spread(&[0.0, 0.2], 0.95).sign_kept);
        assert!(between_draw_spread(&[-0.1, -0.2], 0.95).sign_kept);
    }

    #[test]
    fn one_draw_has_no_between_draw_interval() {
        let s = between_draw_spread(&[0.25], 0.95);
        assert_eq!((s.n, s.mean, s.min, s.max), (1, 0.25, 0.25, 0.25));
        assert!(s.low.is_nan() && s.high.is_nan());
        assert!(between_draw_spread(&[], 0.95).mean.is_nan());
    }

    #[test]
    fn ninety_percent_uses_its_own_quantile() {
        // t(4, .95) = 2.132.
        let values = [1.0, 2.0, 3.0, 4.0, 5.0];
        let s = between_draw_spread(&values, 0.90);
        let half = 2.132 * (2.5f64 / 5.0).sqrt();
        assert!((s.high - 3.0 - half).abs() < T_TABLE_TOLERANCE, "{s:?}");
    }

    #[test]
    fn paired_changes_use_replicate_by_replicate_differences() {
        // Differences 1..=5 (one undefined replicate left out): numpy's
        // percentile(linear) of [1, 2, 3, 4, 5] at 2.5 and 97.5 is 1.1, 4.9.
        let before = [0.0, 1.0, 2.0, f64::NAN, 3.0, 4.0];
        let after = [1.0, 3.0, 5.0, 9.0, 7.0, 9.0];
        let (low, high) = paired_change_interval(&before, &after, 0.95);
        assert!((low - 1.1).abs() < 1e-12 && (high - 4.9).abs() < 1e-12);
    }
}
