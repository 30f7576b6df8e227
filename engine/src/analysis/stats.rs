//! Elementary statistics shared by the analyses (PAPER.md analyses 1, 2, 5).
//!
//! - [`average_ranks`]: ranks `1..=n`, ties get the mean of the ranks they
//!   span (scipy `rankdata(method="average")`).
//! - [`pearson`]: `r = Σ(x−x̄)(y−ȳ) / √(Σ(x−x̄)² Σ(y−ȳ)²)`, two-pass in `f64`.
//! - [`spearman`]: Pearson of average ranks (scipy `spearmanr`).
//! - [`kendall_tau_a`]: `τ_a = (C − D) / (n(n−1)/2)`; a pair tied in `x` or
//!   `y` is neither concordant nor discordant. Knight's O(n log n) algorithm
//!   (sort by `(x, y)`, count discordant pairs as merge-sort inversions of
//!   `y`), the same counting scipy uses for τ-b; only the denominator
//!   differs. Counts are exact integers (`u64`).
//! - [`correlation_p_value`]: two-sided p-value of a Pearson or Spearman
//!   coefficient under the t distribution with `n − 2` degrees of freedom, as
//!   scipy's `pearsonr` and `spearmanr` compute it. Written as the
//!   regularised incomplete beta `I_{1−r²}((n−2)/2, 1/2)`, which equals
//!   `2·sf_t(|t|)` with `t = r √((n−2)/(1−r²))` and needs no infinite `t`
//!   at `|r| = 1`.
//! - [`benjamini_hochberg`]: adjusted p-values (scipy
//!   `false_discovery_control(method="bh")`, statsmodels `fdr_bh`).
//! - [`zscore_features`]: each feature standardised across prompts,
//!   population standard deviation (ddof = 0).
//! - [`percentile_interval`]: numpy's default ("linear") percentiles.
//!
//! Inputs to the correlation functions must be finite: NaN has no rank.
//! Callers that may hold NaN ([`super::correlation`]) drop those pairs first.

use statrs::function::beta::beta_reg;

use super::{AnalysisError, Embeddings};

/// Average ranks (1-based) of `x`; tied values share the mean of their ranks.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_unstable_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        // Positions start..end hold ranks start+1..=end; their mean:
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Pearson's correlation coefficient; NaN when `n < 2` or either input is
/// constant.
///
/// # Panics
/// When `x` and `y` differ in length.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "pearson: inputs differ in length");
    let ones = Unweighted;
    weighted_pearson_impl(x, y, &ones)
}

/// Pearson's correlation with non-negative weights per observation (an
/// observation of weight `w` counts as `w` copies). NaN when the weighted
/// variance of either input is zero.
///
/// # Panics
/// When the three inputs differ in length.
pub fn weighted_pearson(x: &[f64], y: &[f64], w: &[f64]) -> f64 {
    assert_eq!(
        x.len(),
        y.len(),
        "weighted_pearson: inputs differ in length"
    );
    assert_eq!(
        x.len(),
        w.len(),
        "weighted_pearson: weights differ in length"
    );
    weighted_pearson_impl(x, y, &Weighted(w))
}

/// The weights of [`weighted_pearson_impl`]: all ones, or a slice.
trait Weights {
    fn at(&self, i: usize) -> f64;
}
struct Unweighted;
impl Weights for Unweighted {
    #[inline]
    fn at(&self, _: usize) -> f64 {
        1.0
    }
}
struct Weighted<'a>(&'a [f64]);
impl Weights for Weighted<'_> {
    #[inline]
    fn at(&self, i: usize) -> f64 {
        self.0[i]
    }
}

fn weighted_pearson_impl(x: &[f64], y: &[f64], w: &impl Weights) -> f64 {
    if x.len() < 2 {
        return f64::NAN;
    }
    let (mut sw, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for i in 0..x.len() {
        let wi = w.at(i);
        sw += wi;
        sx += wi * x[i];
        sy += wi * y[i];
    }
    let (mx, my) = (sx / sw, sy / sw);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..x.len() {
        let wi = w.at(i);
        let (dx, dy) = (x[i] - mx, y[i] - my);
        sxy += wi * dx * dy;
        sxx += wi * dx * dx;
        syy += wi * dy * dy;
    }
    if sxx <= 0.0 || syy <= 0.0 {
        return f64::NAN;
    }
    (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
}

/// Spearman's rank correlation: Pearson of [`average_ranks`].
///
/// # Panics
/// When `x` and `y` differ in length.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "spearman: inputs differ in length");
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Kendall's τ-a: `(concordant − discordant) / (n(n−1)/2)`, ties counting as
/// neither. NaN when `n < 2` or either input is constant (like scipy's
/// `kendalltau`, and like [`pearson`] and [`spearman`], although the formula
/// would give 0). O(n log n).
///
/// # Panics
/// When `x` and `y` differ in length.
pub fn kendall_tau_a(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "kendall_tau_a: inputs differ in length");
    let n = x.len();
    if n < 2 {
        return f64::NAN;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_unstable_by(|&a, &b| x[a].total_cmp(&x[b]).then(y[a].total_cmp(&y[b])));
    let tied_x = tied_pairs(order.iter().map(|&i| x[i]));
    let tied_xy = tied_pairs(order.iter().map(|&i| (x[i], y[i])));
    let mut ys: Vec<f64> = order.iter().map(|&i| y[i]).collect();
    let discordant = sort_counting_inversions(&mut ys);
    let tied_y = tied_pairs(ys.iter().copied());
    let total = (n as u64) * (n as u64 - 1) / 2;
    if tied_x == total || tied_y == total {
        return f64::NAN; // a constant input: no ordering to agree with
    }
    // Pairs tied in neither: total − tied_x − tied_y + tied_xy; of those,
    // `discordant` are discordant and the rest concordant.
    let untied = total + tied_xy - tied_x - tied_y;
    let c_minus_d = untied as f64 - 2.0 * discordant as f64;
    c_minus_d / total as f64
}

/// Number of pairs among runs of equal consecutive values: Σ t(t−1)/2.
fn tied_pairs<T: PartialEq>(sorted: impl Iterator<Item = T>) -> u64 {
    let mut total = 0u64;
    let mut run = 0u64;
    let mut previous: Option<T> = None;
    for value in sorted {
        if previous.as_ref() == Some(&value) {
            run += 1;
        } else {
            total += run * run.saturating_sub(1) / 2;
            run = 1;
        }
        previous = Some(value);
    }
    total + run * run.saturating_sub(1) / 2
}

/// Sorts `v` ascending (bottom-up merge sort) and returns the number of
/// pairs `i < j` with `v[i] > v[j]` strictly in the original order.
fn sort_counting_inversions(v: &mut Vec<f64>) -> u64 {
    let n = v.len();
    let mut buffer = vec![0.0; n];
    let mut inversions = 0u64;
    let mut width = 1;
    while width < n {
        for start in (0..n).step_by(2 * width) {
            let mid = (start + width).min(n);
            let end = (start + 2 * width).min(n);
            let (mut i, mut j, mut k) = (start, mid, start);
            while i < mid && j < end {
                if v[i] <= v[j] {
                    buffer[k] = v[i];
                    i += 1;
                } else {
                    buffer[k] = v[j];
                    inversions += (mid - i) as u64;
                    j += 1;
                }
                k += 1;
            }
            buffer[k..k + mid - i].copy_from_slice(&v[i..mid]);
            k += mid - i;
            buffer[k..k + end - j].copy_from_slice(&v[j..end]);
        }
        std::mem::swap(v, &mut buffer);
        width *= 2;
    }
    inversions
}

/// Two-sided p-value of a Pearson or Spearman coefficient `r` over `n`
/// observations (t distribution, `n − 2` degrees of freedom, as scipy). NaN
/// when `n < 3` or `r` is NaN; 0 when `|r| = 1`.
pub fn correlation_p_value(r: f64, n: usize) -> f64 {
    if n < 3 || r.is_nan() {
        return f64::NAN;
    }
    let x = (1.0 - r * r).clamp(0.0, 1.0);
    if x == 0.0 {
        return 0.0;
    }
    let df = (n - 2) as f64;
    beta_reg(df / 2.0, 0.5, x).clamp(0.0, 1.0)
}

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
