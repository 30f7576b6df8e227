//! Multinomial logistic regression with an L2 penalty, the solver behind the
//! categorical probe (PAPER.md analysis 3).
//!
//! Objective (scikit-learn's convention, `C` the inverse regularisation):
//! `f(W, b) = C · Σ_i [log Σ_k exp(s_ik) − s_{i,y_i}] + ½ ‖W‖²`,
//! `s_i = W f_i + b`, with `W` (`K × r`) penalised and the intercepts `b`
//! not. Gradient: `∇_W = C (P − Y)ᵀ F + W`, `∇_b = C Σ_i (p_i − y_i)`.
//!
//! Solver: L-BFGS (20 pairs) with a diagonal initial inverse Hessian and
//! Armijo backtracking, run until the gradient's largest entry is below
//! [`RELATIVE_GRADIENT_TOLERANCE`] times the gradient's scale
//! `1 + C · max(m, max_j Σ_i |f_ij|)` (the size of its terms; rounding
//! noise is ~10⁻¹⁵ of it), or until no step makes progress at `f64`
//! precision. Near the optimum `f` stops changing (its decrease falls below
//! its own rounding) before the gradient is small; there a step is taken
//! if it shrinks the gradient by at least 1% (at most
//! [`MAX_FLAT_STEPS`] of them). The diagonal is the exact Hessian diagonal at the current
//! point, `1 + C Σ_i p_ik (1 − p_ik) f_ij²`; with the features of
//! [`super::kernel::FoldKernel::eigen_features`] (orthogonal columns) it is
//! close to the whole Hessian, so a few dozen iterations suffice even when
//! `C · λ_max` is 10⁶. Log-sum-exp is shifted by the row maximum.
//!
//! Every class index in `labels` must lie in `0..K` and appear at least
//! once: an absent class has no finite optimum (its intercept runs to −∞);
//! the probe drops absent classes before calling this.

use std::collections::VecDeque;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};

/// Stop when every gradient entry is below this fraction of the gradient's
/// scale (module docs): 10³ times its rounding noise, and tight enough that
/// probabilities agree with scikit-learn's tightly converged fits to ~10⁻⁸.
const RELATIVE_GRADIENT_TOLERANCE: f64 = 1e-12;

/// Iteration cap; well-conditioned problems stop after tens of iterations.
const MAX_ITERATIONS: usize = 10_000;

/// L-BFGS memory.
const MEMORY: usize = 20;

/// Steps accepted on a shrinking gradient alone (f flat at rounding level).
const MAX_FLAT_STEPS: usize = 50;

/// Backtracking gives up below this step length (33 halvings).
const MIN_STEP: f64 = 1e-10;

/// Armijo sufficient-decrease constant.
const ARMIJO: f64 = 1e-4;

/// A fitted model: `weights` is `K × r` row-major, `intercepts` has `K`.
#[derive(Debug, Clone)]
pub(crate) struct MultinomialFit {
    pub weights: Vec<f64>,
    pub intercepts: Vec<f64>,
}

/// The training problem: `features` `m × r`, `labels` in `0..classes`.
pub(crate) struct Problem<'a> {
    features: MatRef<'a, f64>,
    /// `f_ij²`, for the Hessian diagonal.
    squared: Mat<f64>,
    labels: &'a [usize],
    classes: usize,
    c: f64,
}

impl<'a> Problem<'a> {
    pub fn new(features: MatRef<'a, f64>, labels: &'a [usize], classes: usize, c: f64) -> Self {
        let squared = Mat::from_fn(features.nrows(), features.ncols(), |i, j| {
            features[(i, j)] * features[(i, j)]
        });
        Problem {
            features,
            squared,
            labels,
            classes,
            c,
        }
    }

    fn rows(&self) -> usize {
        self.labels.len()
    }

    fn rank(&self) -> usize {
        self.features.ncols()
    }

    fn n_params(&self) -> usize {
        self.classes * (self.rank() + 1)
    }

    /// Objective at `theta = [W (row-major), b]`; writes the gradient and the
    /// class probabilities (`m × K`, row-major). Scores and gradient are
    /// faer products (`F Wᵀ`, `Dᵀ F`), the softmax a loop over rows.
    fn evaluate(&self, theta: &[f64], gradient: &mut [f64], probs: &mut [f64]) -> f64 {
        let (k, r) = (self.classes, self.rank());
        let (weights, intercepts) = theta.split_at(k * r);
        let weights = MatRef::from_row_major_slice(weights, k, r);
        scores_into(self.features, weights, intercepts, probs);
        let mut loss = 0.0;
        for (p, &label) in probs.chunks_mut(k).zip(self.labels) {
            loss += softmax_in_place(p, label);
        }
        // D = C (P − Y); ∇_W = W + Dᵀ F, ∇_b = column sums of D.
        let residual: Vec<f64> = probs
            .chunks(k)
            .zip(self.labels)
            .flat_map(|(p, &label)| {
                (0..k).map(move |class| self.c * (p[class] - f64::from(u8::from(class == label))))
            })
            .collect();
        let residual = MatRef::from_row_major_slice(&residual, self.rows(), k);
        let (gradient_w, gradient_b) = gradient.split_at_mut(k * r);
        let mut gradient_w = MatMut::from_row_major_slice_mut(gradient_w, k, r);
        gradient_w.copy_from(weights);
        matmul(
            gradient_w,
            Accum::Add,
            residual.transpose(),
            self.features,
            1.0,
            Par::Seq,
        );
        for (class, g) in gradient_b.iter_mut().enumerate() {
            *g = residual.col(class).iter().sum();
        }
        let penalty: f64 = theta[..k * r].iter().map(|w| w * w).sum::<f64>() / 2.0;
        self.c * loss + penalty
    }

    /// The size of the gradient's terms: `1 + C · max(m, max_j Σ_i |f_ij|)`.
    fn gradient_scale(&self) -> f64 {
        let largest = (0..self.rank())
            .map(|j| self.features.col(j).iter().map(|f| f.abs()).sum::<f64>())
            .fold(self.rows() as f64, f64::max);
        1.0 + self.c * largest
    }

    /// The Hessian's diagonal at the probabilities `probs`:
    /// `1 + C Σ_i p_ik (1 − p_ik) f_ij²` for `W`, `C Σ_i p_ik (1 − p_ik)` for `b`.
    fn hessian_diagonal(&self, probs: &[f64], out: &mut [f64]) {
        let (k, r) = (self.classes, self.rank());
        let curvature: Vec<f64> = probs.iter().map(|p| self.c * p * (1.0 - p)).collect();
        let curvature = MatRef::from_row_major_slice(&curvature, self.rows(), k);
        let (diagonal_w, diagonal_b) = out.split_at_mut(k * r);
        diagonal_w.fill(1.0);
        let diagonal_w = MatMut::from_row_major_slice_mut(diagonal_w, k, r);
        matmul(
            diagonal_w,
            Accum::Add,
            curvature.transpose(),
            self.squared.as_ref(),
            1.0,
            Par::Seq,
        );
        // A saturated intercept has ~0 curvature; keep its step finite.
        let floor = 1e-8 * (1.0 + self.c * self.rows() as f64);
        for (class, d) in diagonal_b.iter_mut().enumerate() {
            *d = curvature.col(class).iter().sum::<f64>().max(floor);
        }
    }

    /// Minimises the objective from `start` (zeros when `None`).
    pub fn fit(&self, start: Option<&MultinomialFit>) -> MultinomialFit {
        let (k, r, size) = (self.classes, self.rank(), self.n_params());
        let mut theta = vec![0.0; size];
        if let Some(s) = start {
            theta[..k * r].copy_from_slice(&s.weights);
            theta[k * r..].copy_from_slice(&s.intercepts);
        }
        let mut gradient = vec![0.0; size];
        let mut probs = vec![0.0; self.rows() * k];
        let mut value = self.evaluate(&theta, &mut gradient, &mut probs);
        let (mut trial, mut trial_gradient, mut trial_probs) =
            (vec![0.0; size], vec![0.0; size], vec![0.0; probs.len()]);
        let mut diagonal = vec![0.0; size];
        let mut history: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::new();
        let mut flat_steps = 0;
        let tolerance = RELATIVE_GRADIENT_TOLERANCE * self.gradient_scale();
        for _ in 0..MAX_ITERATIONS {
            if gradient.iter().all(|g| g.abs() <= tolerance) {
                break;
            }
            self.hessian_diagonal(&probs, &mut diagonal);
            let mut direction = two_loop(&gradient, &history, &diagonal);
            let mut slope = dot(&gradient, &direction);
            if slope >= 0.0 {
                // Not a descent direction (rounding): restart from the diagonal.
                history.clear();
                direction = two_loop(&gradient, &history, &diagonal);
                slope = dot(&gradient, &direction);
            }
            let gradient_norm = dot(&gradient, &gradient);
            let flat_band = 8.0 * f64::EPSILON * value.abs();
            let mut step = 1.0;
            let accepted = loop {
                for ((t, x), d) in trial.iter_mut().zip(&theta).zip(&direction) {
                    *t = x + step * d;
                }
                let trial_value = self.evaluate(&trial, &mut trial_gradient, &mut trial_probs);
                if trial_value < value && trial_value <= value + ARMIJO * step * slope {
                    break Some((trial_value, false));
                }
                let flat = (trial_value - value).abs() <= flat_band;
                if flat && dot(&trial_gradient, &trial_gradient) < 0.98 * gradient_norm {
                    break Some((trial_value, true));
                }
                step *= 0.5;
                if step < MIN_STEP {
                    break None;
                }
            };
            let Some((trial_value, on_flat)) = accepted else {
                break; // no progress left at f64 precision
            };
            if on_flat {
                flat_steps += 1;
                if flat_steps > MAX_FLAT_STEPS {
                    break;
                }
            }
            let s: Vec<f64> = trial.iter().zip(&theta).map(|(a, b)| a - b).collect();
            let y: Vec<f64> = trial_gradient
                .iter()
                .zip(&gradient)
                .map(|(a, b)| a - b)
                .collect();
            let sy = dot(&s, &y);
            if sy > 1e-300 {
                if history.len() == MEMORY {
                    history.pop_front();
                }
                history.push_back((s, y, 1.0 / sy));
            }
            std::mem::swap(&mut theta, &mut trial);
            std::mem::swap(&mut gradient, &mut trial_gradient);
            std::mem::swap(&mut probs, &mut trial_probs);
            value = trial_value;
        }
        MultinomialFit {
            weights: theta[..k * r].to_vec(),
            intercepts: theta[k * r..].to_vec(),
        }
    }
}

impl MultinomialFit {
    /// Class probabilities (`rows × K`, row-major) of `features` (`rows × r`).
    pub fn probabilities(&self, features: MatRef<'_, f64>) -> Vec<f64> {
        let k = self.intercepts.len();
        let weights = MatRef::from_row_major_slice(&self.weights, k, features.ncols());
        let mut out = vec![0.0; features.nrows() * k];
        scores_into(features, weights, &self.intercepts, &mut out);
        out.chunks_mut(k).for_each(|p| {
            softmax_in_place(p, 0);
        });
        out
    }
}

/// `F Wᵀ + b` into `out` (`rows × K`, row-major).
fn scores_into(
    features: MatRef<'_, f64>,
    weights: MatRef<'_, f64>,
    intercepts: &[f64],
    out: &mut [f64],
) {
    let k = intercepts.len();
    for row in out.chunks_mut(k) {
        row.copy_from_slice(intercepts);
    }
    let scores = MatMut::from_row_major_slice_mut(out, features.nrows(), k);
    matmul(
        scores,
        Accum::Add,
        features,
        weights.transpose(),
        1.0,
        Par::Seq,
    );
}

/// Turns scores into probabilities (shifted by their maximum) and returns
/// the log loss `log Σ exp(s) − s_label`.
fn softmax_in_place(p: &mut [f64], label: usize) -> f64 {
    let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let label_score = p[label];
    let mut total = 0.0;
    for score in p.iter_mut() {
        *score = (*score - max).exp();
        total += *score;
    }
    p.iter_mut().for_each(|v| *v /= total);
    max + total.ln() - label_score
}

/// L-BFGS two-loop recursion: `−H g` with `H₀ = diag(1 / diagonal)`.
fn two_loop(
    gradient: &[f64],
    history: &VecDeque<(Vec<f64>, Vec<f64>, f64)>,
    diagonal: &[f64],
) -> Vec<f64> {
    let mut q = gradient.to_vec();
    let mut alphas = Vec::with_capacity(history.len());
    for (s, y, rho) in history.iter().rev() {
        let alpha = rho * dot(s, &q);
        q.iter_mut().zip(y).for_each(|(q, y)| *q -= alpha * y);
        alphas.push(alpha);
    }
    q.iter_mut().zip(diagonal).for_each(|(q, d)| *q /= d);
    for ((s, y, rho), alpha) in history.iter().zip(alphas.iter().rev()) {
        let beta = rho * dot(y, &q);
        q.iter_mut()
            .zip(s)
            .for_each(|(q, s)| *q += (alpha - beta) * s);
    }
    q.iter_mut().for_each(|q| *q = -*q);
    q
}

/// Dot product in four independent lanes (a single running sum is bound by
/// the latency of floating-point addition; this runs ~4× faster).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let (xs, ys) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = xs
        .remainder()
        .iter()
        .zip(ys.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut lanes = [0.0f64; 4];
    for (x, y) in xs.zip(ys) {
        for lane in 0..4 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_zeroes_the_gradient() {
        // 3 classes, 9 rows, 2 features, not separable.
        let features = [
            1.0, 0.2, 0.9, -0.1, 1.2, 0.4, -1.0, 0.3, -0.8, 0.1, -1.1, -0.4, 0.1, 1.0, 0.0, 1.2,
            0.95, -0.05,
        ];
        let labels = [0, 0, 0, 1, 1, 1, 2, 2, 0];
        let features = MatRef::from_row_major_slice(&features, 9, 2);
        let problem = Problem::new(features, &labels, 3, 10.0);
        let fit = problem.fit(None);
        let mut theta = fit.weights.clone();
        theta.extend(&fit.intercepts);
        let mut gradient = vec![0.0; theta.len()];
        let mut probs = vec![0.0; 27];
        problem.evaluate(&theta, &mut gradient, &mut probs);
        let tolerance = RELATIVE_GRADIENT_TOLERANCE * problem.gradient_scale();
        assert!(
            gradient.iter().all(|g| g.abs() <= tolerance),
            "{gradient:?}"
        );
        let p = fit.probabilities(features);
        assert!((p[0] + p[1] + p[2] - 1.0).abs() < 1e-12);
    }
}
