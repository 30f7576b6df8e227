//! Ratio of attention to relevant vs. irrelevant information (PAPER.md
//! analysis 4).
//!
//! Inputs, per prompt: the attention mass from the attending token(s) summed
//! over the relevant span and over the distractor span, for every layer and
//! head (`[layers][heads]`, e.g. from the capture's span sums), and the two
//! spans' lengths in tokens. Demonstration tokens are in neither span.
//!
//! - per head: `A = Σ_{j∈relevant} α(q→j) / Σ_{j∈distractor} α(q→j)`;
//! - length-normalised: `A_len = (relevant / len_rel) / (distractor / len_dis)`,
//!   the ratio of mean attention per token;
//! - per layer, two averages over heads, which differ when heads attend with
//!   different total mass:
//!   - `mean_of_heads`: the arithmetic mean of the per-head ratios (every head
//!     counts equally);
//!   - `ratio_of_sums`: `Σ_h relevant_h / Σ_h distractor_h` (heads count by
//!     their mass; the ratio of the layer's pooled attention).
//!
//! Zero masses follow IEEE division, never a panic: `x / 0 = +∞` for
//! `x > 0` (all attention on the relevant span), `0 / 0 = NaN` (a head that
//! attends to neither span: no information), `0 / x = 0`. `mean_of_heads`
//! skips NaN heads (and is NaN only if all are NaN); a `+∞` head makes it
//! `+∞`. Negative or non-finite masses are invalid input and give NaN for
//! that head. Ratios are skewed (a ratio and its reciprocal are equally far
//! from 1), so compare them on [`log2_ratio`]: `log2(+∞) = +∞`,
//! `log2(0) = −∞`.

use serde::Serialize;

use super::AnalysisError;

/// Attention ratios of one prompt (see module docs for definitions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttentionRatios {
    /// `[layer][head]`: relevant / distractor mass.
    pub per_head: Vec<Vec<f64>>,
    /// `[layer][head]`: mean attention per relevant token / per distractor token.
    pub per_head_length_normalized: Vec<Vec<f64>>,
    /// `[layer]`: arithmetic mean over heads of `per_head` (NaN heads skipped).
    pub mean_of_heads: Vec<f64>,
    /// `[layer]`: mean over heads of `per_head_length_normalized`.
    pub mean_of_heads_length_normalized: Vec<f64>,
    /// `[layer]`: head-summed relevant mass / head-summed distractor mass.
    pub ratio_of_sums: Vec<f64>,
    /// `[layer]`: `ratio_of_sums` × `len_dis / len_rel`.
    pub ratio_of_sums_length_normalized: Vec<f64>,
}

/// `relevant / distractor` with the zero conventions of the module docs.
pub fn ratio(relevant: f64, distractor: f64) -> f64 {
    let valid = |m: f64| m.is_finite() && m >= 0.0;
    if valid(relevant) && valid(distractor) {
        relevant / distractor
    } else {
        f64::NAN
    }
}

/// `log2` of a ratio (`+∞ → +∞`, `0 → −∞`, NaN stays NaN).
pub fn log2_ratio(ratio: f64) -> f64 {
    ratio.log2()
}

/// The ratios of one prompt from its span masses (`[layers][heads]` each,
/// same shape) and the spans' lengths in tokens (both ≥ 1).
pub fn attention_ratios(
    relevant: &[Vec<f64>],
    distractor: &[Vec<f64>],
    relevant_len: usize,
    distractor_len: usize,
) -> Result<AttentionRatios, AnalysisError> {
    AnalysisError::check_len(
        "distractor attention (layers)",
        relevant.len(),
        distractor.len(),
    )?;
    for (rel, dis) in relevant.iter().zip(distractor) {
        AnalysisError::check_len("distractor attention (heads)", rel.len(), dis.len())?;
    }
    if relevant_len == 0 || distractor_len == 0 {
        return Err(AnalysisError::parameter(
            "span length",
            0,
            "the relevant and distractor spans must each hold at least one token",
        ));
    }
    // (r / len_r) / (d / len_d) = (r / d) · (len_d / len_r); IEEE keeps ∞ and NaN.
    let length_factor = distractor_len as f64 / relevant_len as f64;
    let per_head: Vec<Vec<f64>> = relevant
        .iter()
        .zip(distractor)
        .map(|(rel, dis)| rel.iter().zip(dis).map(|(&r, &d)| ratio(r, d)).collect())
        .collect();
    let per_head_length_normalized: Vec<Vec<f64>> = per_head
        .iter()
        .map(|layer| layer.iter().map(|a| a * length_factor).collect())
        .collect();
    let ratio_of_sums: Vec<f64> = relevant
        .iter()
        .zip(distractor)
        .map(|(rel, dis)| {
            let valid = |m: &&f64| m.is_finite() && **m >= 0.0;
            if rel.iter().all(|m| valid(&m)) && dis.iter().all(|m| valid(&m)) {
                ratio(rel.iter().sum(), dis.iter().sum())
            } else {
                f64::NAN
            }
        })
        .collect();
    Ok(AttentionRatios {
        mean_of_heads: per_head.iter().map(|l| mean_skipping_nan(l)).collect(),
        mean_of_heads_length_normalized: per_head_length_normalized
            .iter()
            .map(|l| mean_skipping_nan(l))
            .collect(),
        ratio_of_sums_length_normalized: ratio_of_sums.iter().map(|a| a * length_factor).collect(),
        ratio_of_sums,
        per_head,
        per_head_length_normalized,
    })
}

/// Mean of the non-NaN values (`+∞` propagates); NaN when there are none.
fn mean_skipping_nan(values: &[f64]) -> f64 {
    let kept: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if kept.is_empty() {
        f64::NAN
    } else {
        kept.iter().sum::<f64>() / kept.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_masses_give_infinity_or_nan_without_panicking() {
        assert_eq!(ratio(0.2, 0.0), f64::INFINITY);
        assert!(ratio(0.0, 0.0).is_nan());
        assert_eq!(ratio(0.0, 0.3), 0.0);
        assert!(ratio(-0.1, 0.3).is_nan());
        assert_eq!(log2_ratio(0.0), f64::NEG_INFINITY);
        assert_eq!(log2_ratio(4.0), 2.0);
    }

    #[test]
    fn the_two_head_averages_differ_as_documented() {
        let relevant = vec![vec![0.6, 0.01, 0.0]];
        let distractor = vec![vec![0.2, 0.04, 0.0]];
        let r = attention_ratios(&relevant, &distractor, 4, 8).expect("valid shapes");
        // Head 3 attends to neither span and is skipped by the mean.
        assert!((r.mean_of_heads[0] - (3.0 + 0.25) / 2.0).abs() < 1e-12);
        assert!((r.ratio_of_sums[0] - 0.61 / 0.24).abs() < 1e-12);
        assert!((r.per_head_length_normalized[0][0] - 6.0).abs() < 1e-12);
        assert!((r.ratio_of_sums_length_normalized[0] - 2.0 * 0.61 / 0.24).abs() < 1e-12);
    }

    #[test]
    fn an_empty_span_is_an_error() {
        assert!(attention_ratios(&[vec![0.1]], &[vec![0.1]], 0, 3).is_err());
        assert!(attention_ratios(&[vec![0.1]], &[vec![0.1, 0.2]], 1, 3).is_err());
    }
}
