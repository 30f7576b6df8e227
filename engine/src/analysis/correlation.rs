//! Behaviour ↔ representation (PAPER.md analysis 5): per layer, the
//! correlation across target instances between the behaviour improvement
//! from 0-shot to k-shot and the change of a representation measure
//! (prompt-level hypothesis alignment, attention ratio, probe confidence).
//!
//! Inputs: `delta_behavior[t]` for each target instance `t` (error reduction
//! or correctness gain) and `delta_measure_per_layer[ℓ][t]` (k-shot minus
//! 0-shot of the measure). For each layer the pairs where either value is
//! not finite (NaN: an undefined prompt-level alignment, an infinite
//! attention ratio) are skipped and `n` says how many were used. Pearson's
//! `r` and Spearman's `ρ` with scipy's two-sided p-values (t distribution,
//! `n − 2` degrees of freedom; see [`super::stats`]). With `n < 3` every
//! number is NaN.

use serde::Serialize;

use super::stats::{correlation_p_value, pearson, spearman};
use super::AnalysisError;

/// The behaviour ↔ measure correlation of one layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LayerCorrelation {
    pub pearson_r: f64,
    pub pearson_p: f64,
    pub spearman_rho: f64,
    pub spearman_p: f64,
    /// Target instances with both values finite.
    pub n: usize,
}

/// One [`LayerCorrelation`] per layer of `delta_measure_per_layer`.
pub fn behavior_representation_correlation(
    delta_behavior: &[f64],
    delta_measure_per_layer: &[Vec<f64>],
) -> Result<Vec<LayerCorrelation>, AnalysisError> {
    delta_measure_per_layer
        .iter()
        .map(|measure| {
            AnalysisError::check_len(
                "measure change (one per target instance)",
                delta_behavior.len(),
                measure.len(),
            )?;
            let (x, y): (Vec<f64>, Vec<f64>) = delta_behavior
                .iter()
                .zip(measure)
                .filter(|(b, m)| b.is_finite() && m.is_finite())
                .map(|(&b, &m)| (b, m))
                .unzip();
            let n = x.len();
            if n < 3 {
                return Ok(LayerCorrelation {
                    pearson_r: f64::NAN,
                    pearson_p: f64::NAN,
                    spearman_rho: f64::NAN,
                    spearman_p: f64::NAN,
                    n,
                });
            }
            let (r, rho) = (pearson(&x, &y), spearman(&x, &y));
            Ok(LayerCorrelation {
                pearson_r: r,
                pearson_p: correlation_p_value(r, n),
                spearman_rho: rho,
                spearman_p: correlation_p_value(rho, n),
                n,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_pairs_are_skipped_per_layer() {
        let behavior = [1.0, 2.0, 3.0, f64::NAN, 5.0];
        let layers = vec![
            vec![2.0, 4.0, 6.0, 8.0, 10.0],
            vec![1.0, f64::NAN, 2.0, 3.0, 4.0],
        ];
        let c = behavior_representation_correlation(&behavior, &layers).expect("same lengths");
        assert_eq!(c[0].n, 4);
        assert!((c[0].pearson_r - 1.0).abs() < 1e-12);
        assert_eq!(c[1].n, 3);
    }

    #[test]
    fn too_few_pairs_give_nan() {
        let c = behavior_representation_correlation(&[1.0, 2.0], &[vec![1.0, 2.0]])
            .expect("same lengths");
        assert!(c[0].pearson_r.is_nan() && c[0].spearman_p.is_nan());
    }
}
