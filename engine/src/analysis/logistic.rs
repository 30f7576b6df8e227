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
//! [`GRADIENT_TOLERANCE`] or no step decreases `f` any more (`f64` precision
//! reached). The diagonal is the exact Hessian diagonal at the current
//! point, `1 + C Σ_i p_ik (1 − p_ik) f_ij²`; with the features of
//! [`super::kernel::FoldKernel::eigen_features`] (orthogonal columns) it is
//! close to the whole Hessian, so a few dozen iterations suffice even when
//! `C · λ_max` is 10⁶. Log-sum-exp is shifted by the row maximum.
//!
//! Every class index in `labels` must lie in `0..K` and appear at least
//! once: an absent class has no finite optimum (its intercept runs to −∞);
//! the probe drops absent classes before calling this.

use std::collections::VecDeque;

/// Stop when every gradient entry is this small (the objective's own scale
/// is `C · m`; probabilities then agree with the optimum to ~10⁻⁹).
pub(crate) const GRADIENT_TOLERANCE: f64 = 1e-10;

/// Iteration cap; well-conditioned problems stop after tens of iterations.
const MAX_ITERATIONS: usize = 10_000;

/// L-BFGS memory.
const MEMORY: usize = 20;

/// Steps accepted on a shrinking gradient alone (f flat at rounding level)
/// before giving up.
const MAX_ROUNDING_STEPS: usize = 200;

/// Armijo sufficient-decrease constant.
const ARMIJO: f64 = 1e-4;

/// A fitted model: `weights` is `K × r` row-major, `intercepts` has `K`.
#[derive(Debug, Clone)]
pub(crate) struct MultinomialFit {
    pub weights: Vec<f64>,
    pub intercepts: Vec<f64>,
}

/// The training problem: `features` row-major `m × r`, `labels` in `0..k`.
pub(crate) struct Problem<'a> {
    pub features: &'a [f64],
    pub rank: usize,
    pub labels: &'a [usize],
    pub classes: usize,
    pub c: f64,
}

impl Problem<'_> {
    fn rows(&self) -> usize {
        self.labels.len()
    }

    fn n_params(&self) -> usize {
        self.classes * (self.rank + 1)
    }

    /// Objective at `theta = [W (row-major), b]`; writes the gradient and the
    /// class probabilities (`m × K`).
    fn evaluate(&self, theta: &[f64], gradient: &mut [f64], probs: &mut [f64]) -> f64 {
        let (k, r) = (self.classes, self.rank);
        let (weights, intercepts) = theta.split_at(k * r);
        gradient.fill(0.0);
        let mut loss = 0.0;
        for (i, &label) in self.labels.iter().enumerate() {
            let row = &self.features[i * r..(i + 1) * r];
            let p = &mut probs[i * k..(i + 1) * k];
            softmax_scores(weights, intercepts, row, p, Some(&mut loss), label);
            for class in 0..k {
                let coefficient = self.c * (p[class] - f64::from(u8::from(class == label)));
                let g = &mut gradient[class * r..(class + 1) * r];
                g.iter_mut()
                    .zip(row)
                    .for_each(|(g, f)| *g += coefficient * f);
                gradient[k * r + class] += coefficient;
            }
        }
        let penalty: f64 = weights.iter().map(|w| w * w).sum::<f64>() / 2.0;
        gradient[..k * r]
            .iter_mut()
            .zip(weights)
            .for_each(|(g, w)| *g += w);
        self.c * loss + penalty
    }

    /// The Hessian's diagonal at the probabilities `probs`.
    fn hessian_diagonal(&self, probs: &[f64], out: &mut [f64]) {
        let (k, r) = (self.classes, self.rank);
        out[..k * r].fill(1.0);
        out[k * r..].fill(0.0);
        for i in 0..self.rows() {
            let row = &self.features[i * r..(i + 1) * r];
            for class in 0..k {
                let p = probs[i * k + class];
                let curvature = self.c * p * (1.0 - p);
                let d = &mut out[class * r..(class + 1) * r];
                d.iter_mut()
                    .zip(row)
                    .for_each(|(d, f)| *d += curvature * f * f);
                out[k * r + class] += curvature;
            }
        }
        // A saturated intercept has ~0 curvature; keep its step finite.
        let floor = 1e-8 * (1.0 + self.c * self.rows() as f64);
        out[k * r..].iter_mut().for_each(|d| *d = d.max(floor));
    }

    /// Minimises the objective from `start` (zeros when `None`).
    pub fn fit(&self, start: Option<&MultinomialFit>) -> MultinomialFit {
        let (k, r, size) = (self.classes, self.rank, self.n_params());
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
        let mut rounding_steps = 0;
        for _ in 0..MAX_ITERATIONS {
            if gradient.iter().all(|g| g.abs() <= GRADIENT_TOLERANCE) {
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
            let mut step = 1.0;
            let accepted = loop {
                for ((t, x), d) in trial.iter_mut().zip(&theta).zip(&direction) {
                    *t = x + step * d;
                }
                let trial_value = self.evaluate(&trial, &mut trial_gradient, &mut trial_probs);
                if trial_value <= value + ARMIJO * step * slope {
                    break Some((trial_value, false));
                }
                // Near the optimum f changes below its own rounding (~10⁻¹⁶ |f|)
                // while the gradient is still resolvable: accept a step that
                // keeps f within rounding and shrinks the gradient.
                let within_rounding = trial_value <= value + 1e-14 * value.abs().max(1.0);
                if within_rounding && dot(&trial_gradient, &trial_gradient) < gradient_norm {
                    break Some((trial_value, true));
                }
                step *= 0.5;
                if step < 1e-20 {
                    break None;
                }
            };
            let Some((trial_value, on_rounding)) = accepted else {
                break; // no progress left at f64 precision
            };
            if on_rounding {
                rounding_steps += 1;
                if rounding_steps > MAX_ROUNDING_STEPS {
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
    /// Class probabilities (`rows × K`, row-major) of row-major `features`
    /// (`rows × rank`).
    pub fn probabilities(&self, features: &[f64], rows: usize, rank: usize) -> Vec<f64> {
        let k = self.intercepts.len();
        let mut out = vec![0.0; rows * k];
        for (i, p) in out.chunks_mut(k).enumerate() {
            let row = &features[i * rank..(i + 1) * rank];
            softmax_scores(&self.weights, &self.intercepts, row, p, None, 0);
        }
        out
    }
}

/// Writes `softmax(W f + b)` into `p`; adds `lse − s_label` to `loss` if given.
fn softmax_scores(
    weights: &[f64],
    intercepts: &[f64],
    row: &[f64],
    p: &mut [f64],
    loss: Option<&mut f64>,
    label: usize,
) {
    let r = row.len();
    for (class, score) in p.iter_mut().enumerate() {
        *score = intercepts[class] + dot(&weights[class * r..(class + 1) * r], row);
    }
    let max = p.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let label_score = p[label];
    let mut total = 0.0;
    for score in p.iter_mut() {
        *score = (*score - max).exp();
        total += *score;
    }
    p.iter_mut().for_each(|v| *v /= total);
    if let Some(loss) = loss {
        *loss += max + total.ln() - label_score;
    }
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

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
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
        let problem = Problem {
            features: &features,
            rank: 2,
            labels: &labels,
            classes: 3,
            c: 10.0,
        };
        let fit = problem.fit(None);
        let mut theta = fit.weights.clone();
        theta.extend(&fit.intercepts);
        let mut gradient = vec![0.0; theta.len()];
        let mut probs = vec![0.0; 27];
        problem.evaluate(&theta, &mut gradient, &mut probs);
        assert!(gradient.iter().all(|g| g.abs() < 1e-8), "{gradient:?}");
        let p = fit.probabilities(&features, 9, 2);
        assert!((p[0] + p[1] + p[2] - 1.0).abs() < 1e-12);
    }
}
