//! Elementary statistics shared by the analyses (PAPER.md analyses 1, 2, 5).
//!
//! - [`average_ranks`], [`pearson`], [`weighted_pearson`], [`spearman`],
//!   [`kendall_tau_a`], [`correlation_p_value`]: defined in
//!   [`viewer::stats`] (formulas there), so that the browser viewer
//!   recomputes a reader's selection with the very same code; re-exported
//!   here and tested against scipy below.
//! - [`benjamini_hochberg`]: adjusted p-values (scipy
//!   `false_discovery_control(method="bh")`, statsmodels `fdr_bh`).
//! - [`zscore_features`]: each feature standardised across prompts,
//!   population standard deviation (ddof = 0).
//! - [`percentile_interval`]: numpy's default ("linear") percentiles.
//!
//! Inputs to the correlation functions must be finite: NaN has no rank.
//! Callers that may hold NaN ([`super::correlation`]) drop those pairs first.

pub use viewer::stats::{
    average_ranks, correlation_p_value, kendall_tau_a, pearson, spearman, weighted_pearson,
    wilson_interval, Z_95,
};

use super::{AnalysisError, Embeddings};

/// Benjamini–Hochberg adjusted p-values, in the input order:
/// `q_(k) = min_{j ≥ k} min(1, p_(j) · m / j)` over the sorted p-values.
/// Non-finite entries stay NaN and are not counted in `m`.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| p[i].is_finite()).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let m = order.len() as f64;
    let mut adjusted = vec![f64::NAN; p.len()];
    let mut running_min = 1.0f64;
    for (k, &i) in order.iter().enumerate().rev() {
        running_min = running_min.min(p[i] * m / (k + 1) as f64);
        adjusted[i] = running_min;
    }
    adjusted
}

/// The embeddings with every feature standardised across prompts:
/// `z = (x − mean) / std`, population std (ddof = 0), accumulated in `f64`.
/// A feature with zero variance becomes all zeros. Returns row-major
/// `n × dim` values, the input's layout.
pub fn zscore_features(x: Embeddings<'_>) -> Result<Vec<f64>, AnalysisError> {
    let (n, dim) = (x.n(), x.dim());
    if let Some(index) = x.data().iter().position(|v| !v.is_finite()) {
        return Err(AnalysisError::NonFinite {
            what: "embeddings",
            index,
        });
    }
    // Two passes over rows (sequential memory access): means, then variances
    // of the deviations, which is stable where E[x²] − E[x]² is not.
    let mut mean = vec![0.0f64; dim];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(x.row(i)) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut scale = vec![0.0f64; dim];
    for i in 0..n {
        for ((s, &m), &v) in scale.iter_mut().zip(&mean).zip(x.row(i)) {
            let d = f64::from(v) - m;
            *s += d * d;
        }
    }
    // Identical f32 values give exactly zero deviations in f64 (their sum and
    // mean are exact), so zero variance is detected exactly.
    for s in scale.iter_mut() {
        let std = (*s / n as f64).sqrt();
        *s = if std > 0.0 { 1.0 / std } else { 0.0 };
    }
    let mut z = Vec::with_capacity(n * dim);
    for i in 0..n {
        z.extend(
            x.row(i)
                .iter()
                .zip(&mean)
                .zip(&scale)
                .map(|((&v, &m), &s)| (f64::from(v) - m) * s),
        );
    }
    Ok(z)
}

/// The `q`-quantile (`0 ≤ q ≤ 1`) of ascending `sorted` values with linear
/// interpolation between order statistics (numpy's default method).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let low = position.floor() as usize;
    let high = (low + 1).min(sorted.len() - 1);
    let fraction = position - low as f64;
    sorted[low] + fraction * (sorted[high] - sorted[low])
}

/// The central percentile interval holding `level` (e.g. 0.95 → the 2.5th
/// and 97.5th percentiles) of the finite `values`; `(NaN, NaN)` when there
/// are none.
pub fn percentile_interval(values: &[f64], level: f64) -> (f64, f64) {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let tail = (1.0 - level) / 2.0;
    (
        quantile_sorted(&sorted, tail),
        quantile_sorted(&sorted, 1.0 - tail),
    )
}

/// Percentile bootstrap interval holding `level` of the mean of the finite
/// `values`: `resamples` means of samples drawn with replacement from the
/// stream of `seed`, and their central percentile interval. `(NaN, NaN)`
/// without finite values.
pub fn bootstrap_mean_interval(
    values: &[f64],
    resamples: usize,
    level: f64,
    seed: u64,
) -> (f64, f64) {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = finite.len();
    let means: Vec<f64> = super::resample::bootstrap_samples(n, resamples, seed)
        .iter()
        .map(|sample| sample.iter().map(|&i| finite[i]).sum::<f64>() / n as f64)
        .collect();
    percentile_interval(&means, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute-force τ-a from pair signs, the definition itself (NaN for a
    /// constant input, as documented).
    fn tau_a_by_pairs(x: &[f64], y: &[f64]) -> f64 {
        let n = x.len();
        if x.iter().all(|v| *v == x[0]) || y.iter().all(|v| *v == y[0]) {
            return f64::NAN;
        }
        let mut s = 0.0;
        for i in 0..n {
            for j in i + 1..n {
                let (dx, dy) = (x[i] - x[j], y[i] - y[j]);
                if dx != 0.0 && dy != 0.0 {
                    s += dx.signum() * dy.signum();
                }
            }
        }
        s / (n * (n - 1) / 2) as f64
    }

    #[test]
    fn kendall_tau_a_matches_the_pair_definition_with_ties() {
        let mut rng = super::super::resample::SeededRng::new(11);
        for n in [2, 3, 7, 50, 201] {
            let x: Vec<f64> = (0..n).map(|_| rng.index(5) as f64).collect();
            let y: Vec<f64> = (0..n).map(|_| rng.index(4) as f64).collect();
            let (fast, slow) = (kendall_tau_a(&x, &y), tau_a_by_pairs(&x, &y));
            assert!(
                (fast - slow).abs() < 1e-12 || (fast.is_nan() && slow.is_nan()),
                "n = {n}"
            );
        }
    }

    #[test]
    fn average_ranks_share_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn constant_input_has_no_correlation() {
        assert!(pearson(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).is_nan());
        assert!(spearman(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0]).is_nan());
    }

    #[test]
    fn weighted_pearson_equals_pearson_of_repeated_values() {
        let (x, y, w) = ([1.0, 2.0, 4.0], [0.5, 3.0, 1.0], [2.0, 1.0, 3.0]);
        let repeated_x = [1.0, 1.0, 2.0, 4.0, 4.0, 4.0];
        let repeated_y = [0.5, 0.5, 3.0, 1.0, 1.0, 1.0];
        let expected = pearson(&repeated_x, &repeated_y);
        assert!((weighted_pearson(&x, &y, &w) - expected).abs() < 1e-14);
    }

    #[test]
    fn perfect_correlation_has_p_value_zero() {
        assert_eq!(correlation_p_value(1.0, 10), 0.0);
        assert!(correlation_p_value(0.5, 2).is_nan());
        assert!((correlation_p_value(0.0, 10) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn benjamini_hochberg_keeps_nan_out_of_the_count() {
        let q = benjamini_hochberg(&[0.01, f64::NAN, 0.04]);
        assert!((q[0] - 0.02).abs() < 1e-15);
        assert!(q[1].is_nan());
        assert!((q[2] - 0.04).abs() < 1e-15);
    }

    #[test]
    fn zero_variance_feature_becomes_zeros() {
        let data = [1.0f32, 5.0, 2.0, 5.0, 3.0, 5.0];
        let x = Embeddings::new(&data, 3, 2).expect("valid shape");
        let z = zscore_features(x).expect("finite data");
        assert_eq!([z[1], z[3], z[5]], [0.0, 0.0, 0.0]);
        let expected = 1.0 / (2.0f64 / 3.0).sqrt();
        assert!((z[4] - expected).abs() < 1e-12);
    }

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((quantile_sorted(&v, 0.5) - 2.5).abs() < 1e-15);
        assert!((quantile_sorted(&v, 0.1) - 1.3).abs() < 1e-12);
    }
}
