//! Training-fold kernels for the probes (PAPER.md analysis 3), built from
//! one layer's Gram matrix `G = Z Zᵀ` of the standardised embeddings.
//!
//! With `dim ≫ n`, every L2-penalised linear model with an unpenalised
//! intercept is solved exactly in the span of the training rows centred on
//! their mean `x̄` (representer theorem; the intercept absorbs the centring).
//! All that is needed is the centred kernel
//! `K_ab = (x_a − x̄)·(x_t − x̄) = G_at − ḡ_a − ḡ_t + ḡ`, where
//! `ḡ_a = mean_{t∈train} G_at` and `ḡ = mean_{t∈train} ḡ_t`, for training
//! rows (`m × m`) and for test rows against training rows (`t × m`). The
//! probes therefore cost O(n³) per fold whatever `dim` is.
//!
//! [`FoldKernel::eigen_features`] turns the kernel into explicit features:
//! `K = V Λ Vᵀ`, training features `F = V Λ^{1/2}` (so `F Fᵀ = K`, columns
//! orthogonal with squared norms `λ`), test features `K_test V Λ^{−1/2}`
//! (the coordinates of the centred test rows projected on the training
//! span, which is all a model in that span sees). Directions with
//! `λ ≤ EIGEN_CUTOFF · λ_max` are rounding noise (the centred kernel has
//! rank ≤ m − 1) and are dropped.
//!
//! Factorisations run on the calling thread (`Par::Seq`): the probes are
//! parallel over folds and layers already, and faer's default (its global
//! rayon parallelism) was slower for these 300-row matrices on 2 cores.

use faer::diag::Diag;
use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::cholesky::llt;
use faer::linalg::evd::{self, ComputeEigenvectors};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

use super::{AnalysisError, SquareMatrix};

/// Eigenvalues below this fraction of the largest are treated as zero: the
/// rounding noise of an `f64` Gram matrix of `n ≤ 10⁴` rows is ~10⁻¹³ of its
/// largest eigenvalue, real directions in the probes' data lie far above.
const EIGEN_CUTOFF: f64 = 1e-10;

/// Centred kernels of one training / test split.
#[derive(Debug)]
pub(crate) struct FoldKernel {
    /// `m × m`, training rows against training rows.
    pub train: Mat<f64>,
    /// `t × m`, test rows against training rows.
    pub cross: Mat<f64>,
}

/// Explicit features of a split in the training span (see module docs).
#[derive(Debug)]
pub(crate) struct FoldFeatures {
    /// `m × rank`.
    pub train: Mat<f64>,
    /// `t × rank`.
    pub test: Mat<f64>,
}

impl FoldKernel {
    /// The centred kernels of `train` and `test` (indices into `g`).
    pub fn new(g: &SquareMatrix, train: &[usize], test: &[usize]) -> Self {
        let m = train.len() as f64;
        let row_mean = |a: usize| train.iter().map(|&t| g.get(a, t)).sum::<f64>() / m;
        let train_means: Vec<f64> = train.iter().map(|&a| row_mean(a)).collect();
        let test_means: Vec<f64> = test.iter().map(|&a| row_mean(a)).collect();
        let grand_mean = train_means.iter().sum::<f64>() / m;
        let centred = |a: usize, a_mean: f64, t: usize| {
            g.get(a, train[t]) - a_mean - train_means[t] + grand_mean
        };
        FoldKernel {
            train: Mat::from_fn(train.len(), train.len(), |i, t| {
                centred(train[i], train_means[i], t)
            }),
            cross: Mat::from_fn(test.len(), train.len(), |i, t| {
                centred(test[i], test_means[i], t)
            }),
        }
    }

    /// `(K + αI)⁻¹ rhs` for the training kernel (Cholesky); `None` when
    /// `K + αI` is not numerically positive definite.
    pub fn solve_regularised(&self, alpha: f64, rhs: &Mat<f64>) -> Option<Mat<f64>> {
        let m = self.train.nrows();
        let mut factor = self.train.clone();
        (0..m).for_each(|i| factor[(i, i)] += alpha);
        let scratch =
            llt::factor::cholesky_in_place_scratch::<f64>(m, Par::Seq, Default::default()).or(
                llt::solve::solve_in_place_scratch::<f64>(m, rhs.ncols(), Par::Seq),
            );
        let mut buffer = MemBuffer::new(scratch);
        let stack = MemStack::new(&mut buffer);
        llt::factor::cholesky_in_place(
            factor.as_mut(),
            Default::default(),
            Par::Seq,
            stack,
            Default::default(),
        )
        .ok()?;
        let mut solution = rhs.clone();
        llt::solve::solve_in_place(factor.as_ref(), solution.as_mut(), Par::Seq, stack);
        Some(solution)
    }

    /// Training and test features from the eigendecomposition of the
    /// training kernel.
    pub fn eigen_features(&self) -> Result<FoldFeatures, AnalysisError> {
        let m = self.train.nrows();
        let mut vectors = Mat::<f64>::zeros(m, m);
        let mut diagonal = Diag::<f64>::zeros(m);
        let scratch = evd::self_adjoint_evd_scratch::<f64>(
            m,
            ComputeEigenvectors::Yes,
            Par::Seq,
            Default::default(),
        );
        evd::self_adjoint_evd(
            self.train.as_ref(),
            diagonal.as_mut(),
            Some(vectors.as_mut()),
            Par::Seq,
            MemStack::new(&mut MemBuffer::new(scratch)),
            Default::default(),
        )
        .map_err(|_| {
            AnalysisError::parameter(
                "training kernel",
                format!("{m} × {m}"),
                "its eigendecomposition did not converge (non-finite Gram matrix?)",
            )
        })?;
        let values = diagonal.column_vector();
        let largest = (0..m).map(|j| values[j]).fold(0.0f64, f64::max);
        let kept: Vec<usize> = (0..m)
            .filter(|&j| values[j] > EIGEN_CUTOFF * largest)
            .collect();
        let kept_vectors = Mat::from_fn(m, kept.len(), |i, c| vectors[(i, kept[c])]);
        let train = Mat::from_fn(m, kept.len(), |i, c| {
            kept_vectors[(i, c)] * values[kept[c]].sqrt()
        });
        let mut test = Mat::<f64>::zeros(self.cross.nrows(), kept.len());
        matmul(
            test.as_mut(),
            Accum::Replace,
            self.cross.as_ref(),
            kept_vectors.as_ref(),
            1.0,
            Par::Seq,
        );
        for (c, &j) in kept.iter().enumerate() {
            let scale = 1.0 / values[j].sqrt();
            test.col_mut(c).iter_mut().for_each(|x| *x *= scale);
        }
        Ok(FoldFeatures { train, test })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::rsa::gram_of_rows;

    #[test]
    fn eigen_features_reproduce_the_centred_kernel() {
        // 6 rows in 3 dimensions; train on 4, test on 2.
        let x: Vec<f64> = (0..18).map(|v| ((v * 7 % 11) as f64) - 5.0).collect();
        let g = gram_of_rows(&x, 6, 3);
        let kernel = FoldKernel::new(&g, &[0, 2, 3, 5], &[1, 4]);
        let features = kernel.eigen_features().expect("finite kernel");
        let r = features.train.ncols();
        let dot = |a: faer::RowRef<'_, f64>, b: faer::RowRef<'_, f64>| {
            (0..r).map(|c| a[c] * b[c]).sum::<f64>()
        };
        for i in 0..4 {
            for t in 0..4 {
                let f = dot(features.train.row(i), features.train.row(t));
                assert!((f - kernel.train[(i, t)]).abs() < 1e-9);
            }
            for a in 0..2 {
                // With 4 training rows the span is 3-dimensional, the whole
                // space, so test features reproduce the cross-kernel.
                let f = dot(features.test.row(a), features.train.row(i));
                assert!((f - kernel.cross[(a, i)]).abs() < 1e-9);
            }
        }
    }
}
