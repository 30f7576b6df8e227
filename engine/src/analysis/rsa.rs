//! Representational similarity analysis (PAPER.md analyses 1 and 2).
//!
//! **Similarity matrix.** For one layer's embeddings `X` (`n × dim`), each
//! feature is standardised across the `n` prompts (`Z = zscore(X)`, ddof 0,
//! see [`stats::zscore_features`]), then
//! `S_ij = ⟨z_i, z_j⟩ / (‖z_i‖ ‖z_j‖)` (cosine similarity; 0 where a row is
//! zero). `Z Zᵀ` is one faer matrix product in `f64` (only its lower triangle
//! is computed), 1.3 GFLOP for `n = 400`, `dim = 8192` (≈ 35 ms on one
//! core here); it runs on the calling thread, so parallelise over layers.
//!
//! **Hypothesis matrices.** `H_ij` says how alike prompts `i` and `j` should
//! be: [`same_label`] (1 if same label, else 0) or [`graded`] (`−|v_i − v_j|`).
//!
//! **Alignment.** A [`Comparator`] (Spearman by default; Kendall τ-a;
//! Pearson) between the strict upper triangles (`i < j`, `n(n−1)/2` pairs) of
//! `S` and `H`. The diagonal never enters.
//!
//! **Prompt-level alignment.** For prompt `i`, the comparator between row `i`
//! of `S` and row `i` of `H`, both without entry `i` (`n − 1` values). It is
//! NaN when row `i` of `H` (or of `S`) is constant: e.g. for a same-label
//! hypothesis where prompt `i` is the only one of its label, or all prompts
//! share it.
//!
//! Significance and intervals for the alignment are in
//! [`super::rsa_permutation`] and [`super::rsa_bootstrap`].

use faer::linalg::matmul::triangular::{matmul, BlockStructure};
use faer::{Accum, Mat, MatRef, Par};
use serde::{Deserialize, Serialize};

use super::stats::{self, kendall_tau_a, pearson, spearman};
use super::{AnalysisError, Embeddings, SquareMatrix};

/// How an alignment compares two sets of values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparator {
    /// Spearman's rank correlation (the default).
    #[default]
    Spearman,
    /// Kendall's τ-a (ties count as neither concordant nor discordant).
    KendallTauA,
    /// Pearson's correlation of the raw values.
    Pearson,
}

impl Comparator {
    /// The comparator's coefficient between `x` and `y` (same length).
    pub fn apply(self, x: &[f64], y: &[f64]) -> f64 {
        match self {
            Comparator::Spearman => spearman(x, y),
            Comparator::KendallTauA => kendall_tau_a(x, y),
            Comparator::Pearson => pearson(x, y),
        }
    }
}

/// `Z Zᵀ` for the feature-standardised embeddings `Z` (`n × n`, `f64`): the
/// quantity both the similarity matrix and the probes are built from.
pub fn standardized_gram(x: Embeddings<'_>) -> Result<SquareMatrix, AnalysisError> {
    let z = stats::zscore_features(x)?;
    Ok(gram_of_rows(&z, x.n(), x.dim()))
}

/// `A Aᵀ` for row-major `a` (`n × dim`), computing the lower triangle only.
///
/// Single-threaded on purpose: on this project's 2-core machine faer's
/// parallel product of this shape (400 × 8192 × 400) ran 2.5× slower than
/// the sequential one (87 ms against 34 ms); callers parallelise across
/// layers instead.
pub(crate) fn gram_of_rows(a: &[f64], n: usize, dim: usize) -> SquareMatrix {
    let rows = MatRef::from_row_major_slice(a, n, dim);
    let mut g = Mat::<f64>::zeros(n, n);
    matmul(
        g.as_mut(),
        BlockStructure::TriangularLower,
        Accum::Replace,
        rows,
        BlockStructure::Rectangular,
        rows.transpose(),
        BlockStructure::Rectangular,
        1.0,
        Par::Seq,
    );
    SquareMatrix::from_fn(n, |i, j| if i >= j { g[(i, j)] } else { g[(j, i)] })
}

/// Cosine similarities from a Gram matrix: `G_ij / √(G_ii G_jj)`, 0 where
/// either diagonal entry is 0 (a zero row), clamped to `[−1, 1]`.
pub fn cosine_from_gram(g: &SquareMatrix) -> SquareMatrix {
    let inverse_norm: Vec<f64> = (0..g.n())
        .map(|i| {
            let norm = g.get(i, i).max(0.0).sqrt();
            if norm > 0.0 {
                1.0 / norm
            } else {
                0.0
            }
        })
        .collect();
    SquareMatrix::from_fn(g.n(), |i, j| {
        (g.get(i, j) * inverse_norm[i] * inverse_norm[j]).clamp(-1.0, 1.0)
    })
}

/// The representational similarity matrix of one layer: cosine similarity
/// between feature-standardised prompt embeddings (`n × n`).
pub fn similarity_matrix(x: Embeddings<'_>) -> Result<SquareMatrix, AnalysisError> {
    Ok(cosine_from_gram(&standardized_gram(x)?))
}

/// Hypothesis "same label": `H_ij = 1` if `labels[i] == labels[j]`, else 0.
pub fn same_label(labels: &[usize]) -> SquareMatrix {
    SquareMatrix::from_fn(labels.len(), |i, j| {
        f64::from(u8::from(labels[i] == labels[j]))
    })
}

/// Graded hypothesis: `H_ij = −|v_i − v_j|` (closer values, more similar).
pub fn graded(values: &[f64]) -> SquareMatrix {
    SquareMatrix::from_fn(values.len(), |i, j| -(values[i] - values[j]).abs())
}

/// Checks that `s` and `h` are the same size with at least `needed` prompts.
pub(crate) fn check_pair(
    s: &SquareMatrix,
    h: &SquareMatrix,
    needed: usize,
) -> Result<(), AnalysisError> {
    s.check_same_size(h, "hypothesis matrix (prompts)")?;
    if s.n() < needed {
        return Err(AnalysisError::TooFew {
            what: "prompts for an alignment",
            needed,
            got: s.n(),
        });
    }
    Ok(())
}

/// Hypothesis alignment: the comparator between the strict upper triangles
/// of `s` and `h`. NaN when either triangle is constant.
pub fn alignment(
    s: &SquareMatrix,
    h: &SquareMatrix,
    comparator: Comparator,
) -> Result<f64, AnalysisError> {
    check_pair(s, h, 3)?;
    Ok(comparator.apply(&s.upper_triangle(), &h.upper_triangle()))
}

/// Prompt-level alignment: for each prompt `i`, the comparator between row
/// `i` of `s` and of `h`, each without entry `i`. NaN for a prompt whose
/// hypothesis row (or similarity row) is constant.
pub fn prompt_level_alignment(
    s: &SquareMatrix,
    h: &SquareMatrix,
    comparator: Comparator,
) -> Result<Vec<f64>, AnalysisError> {
    check_pair(s, h, 3)?;
    Ok((0..s.n())
        .map(|i| comparator.apply(&s.row_without_diagonal(i), &h.row_without_diagonal(i)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_of_a_zero_row_is_zero() {
        // Prompt 1 equals the feature means everywhere, so its z-scored row is 0.
        let data = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0];
        let x = Embeddings::new(&data, 3, 2).expect("valid shape");
        let s = similarity_matrix(x).expect("finite data");
        assert_eq!(s.row(1), &[0.0, 0.0, 0.0]);
        assert!((s.get(0, 2) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn prompt_level_alignment_is_nan_for_a_constant_hypothesis_row() {
        let s = SquareMatrix::from_fn(4, |i, j| -((i as f64) - (j as f64)).abs());
        let h = same_label(&[0, 0, 1, 2]);
        let per_prompt = prompt_level_alignment(&s, &h, Comparator::Spearman).expect("same size");
        assert!(per_prompt[0].is_finite());
        assert!(per_prompt[2].is_nan() && per_prompt[3].is_nan());
    }

    #[test]
    fn comparator_names_are_snake_case() {
        let json = serde_json::to_string(&Comparator::KendallTauA).expect("serialisable");
        assert_eq!(json, "\"kendall_tau_a\"");
    }
}
