//! Correlations shared by the engine's analyses and the browser viewer
//! (PAPER.md analyses 2 and 5): one implementation, so that a number the
//! viewer recomputes for a reader's selection is computed exactly as the
//! engine computed the report's.
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
//!
//! - [`wilson_interval`]: the Wilson score interval of a proportion, for
//!   correctness-type behaviour.
//!
//! Inputs must be finite: NaN has no rank. Callers that may hold NaN drop
//! those pairs first. The engine's tests check these against scipy values.

use statrs::function::beta::beta_reg;

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

/// The standard normal quantile of 0.975: a two-sided 95% interval.
pub const Z_95: f64 = 1.959_963_984_540_054;

/// Wilson score interval for a proportion of `successes` out of `n` trials
/// at normal quantile `z` (Wilson 1927): the proportions the two-sided
/// score test does not reject,
/// `(p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`. Unlike the
/// textbook `p̂ ± z√(p̂(1−p̂)/n)` it stays inside 0..1 and is not empty at
/// 0 or n successes, which 0/1 behaviour on a few dozen targets often is.
/// NaN for `n = 0`.
pub fn wilson_interval(successes: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 || successes > n {
        return (f64::NAN, f64::NAN);
    }
    let n_f = n as f64;
    let p = successes as f64 / n_f;
    let z2 = z * z;
    let centre = p + z2 / (2.0 * n_f);
    let spread = z * (p * (1.0 - p) / n_f + z2 / (4.0 * n_f * n_f)).sqrt();
    let scale = 1.0 + z2 / n_f;
    // At 0 or n successes one end is exactly 0 or 1 (the formula gives it
    // up to rounding).
    let low = if successes == 0 {
        0.0
    } else {
        (centre - spread) / scale
    };
    let high = if successes == n {
        1.0
    } else {
        (centre + spread) / scale
    };
    (low.max(0.0), high.min(1.0))
}

/// Correct/wrong behaviour of a group of targets: how many of the finite
/// values are correct (≥ 0.5; values are 1 or 0) and the 95% Wilson
/// interval of that proportion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProportionCorrect {
    pub correct: usize,
    pub n: usize,
    pub proportion: f64,
    pub low: f64,
    pub high: f64,
}

/// The [`ProportionCorrect`] of the finite `values`; `None` without any.
pub fn proportion_correct(values: &[f64]) -> Option<ProportionCorrect> {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return None;
    }
    let correct = finite.iter().filter(|&&v| v >= 0.5).count();
    let (low, high) = wilson_interval(correct, finite.len(), Z_95);
    Some(ProportionCorrect {
        correct,
        n: finite.len(),
        proportion: correct as f64 / finite.len() as f64,
        low,
        high,
    })
}
