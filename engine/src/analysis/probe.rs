//! Parameterized probing (PAPER.md analysis 3): linear probes that decode a
//! condition's parameters from one layer's embeddings.
//!
//! Input: the feature-standardised embeddings `Z` (`n × dim`, z-scored
//! across all `n` prompts as for RSA), used through their Gram matrix
//! `G = Z Zᵀ` ([`super::rsa::standardized_gram`]); each fold's problem is
//! solved in the span of its training rows (see the kernel module), exact
//! for these L2-penalised models and independent of `dim`.
//!
//! - **Ridge** (numeric parameters: slope, intercept):
//!   `min_{w,b} ‖y − Xw − b‖² + α‖w‖²` (scikit-learn `Ridge`), intercept
//!   unpenalised by centring `X` and `y` on the training fold. Dual solution
//!   `β = (K + αI)⁻¹ (y − ȳ)` by Cholesky, `ŷ = K_test β + ȳ`. Metric: R² of
//!   the out-of-fold predictions, `1 − Σ(y − ŷ)² / Σ(y − ȳ)²` (scikit-learn
//!   `r2_score`; NaN when `y` is constant). Inner loss: squared error.
//! - **Multinomial logistic** (categories: activity, person):
//!   `min C · Σ log-loss + ½‖W‖²`, intercepts unpenalised (scikit-learn
//!   `LogisticRegression`, multinomial). Always the softmax form, also for
//!   two classes (where it equals scikit-learn's binary model at `2C`). A
//!   class absent from a training fold gets probability 0 there. Metric:
//!   out-of-fold accuracy (argmax, lowest class on ties). Inner loss: log
//!   loss, which separates grid values that tie on accuracy. Fits along the
//!   `C` grid warm-start from the previous one.
//!
//! Cross-validation is grouped by target instance and nested (see
//! [`super::crossval`]). Useful `α` and `C` scale with `dim`: `‖z_i‖² ≈ dim`.
//!
//! Cost, measured on this project's 2-core machine for `n = 400` prompts,
//! 5 folds (one eigendecomposition or Cholesky of a ~320-row kernel per fit):
//! ridge over 4 `α` ≈ 0.1 s per layer; logistic with 6 classes over
//! `C ∈ {0.01, 0.1, 1, 10}` ≈ 1.6 s per layer (`dim` does not matter).
//!
//! Probe confidence per prompt, for the behaviour correlation (analysis 5):
//! for categories the out-of-fold probability of the true class
//! ([`LogisticProbe::true_class_probability`]); for numbers
//! [`numeric_confidence`], `−|ŷ − y|` out of fold.

use faer::Mat;
use serde::Serialize;

use super::crossval::{fixed_split, nested};
use super::kernel::FoldKernel;
use super::logistic::Problem;
use super::rsa::standardized_gram;
use super::{AnalysisError, Embeddings, SquareMatrix};

/// A cross-validated ridge probe of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct RidgeProbe {
    /// R² of the out-of-fold predictions.
    pub r2: f64,
    /// Out-of-fold prediction of every prompt.
    pub predictions: Vec<f64>,
    /// `α` chosen by the inner cross-validation, per outer fold.
    pub alphas_chosen: Vec<f64>,
    /// Outer fold of every prompt.
    pub folds: Vec<usize>,
}

/// A cross-validated multinomial logistic probe of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LogisticProbe {
    /// Fraction of prompts whose out-of-fold argmax is the true class.
    pub accuracy: f64,
    /// Out-of-fold probability of each prompt's true class.
    pub true_class_probability: Vec<f64>,
    /// Out-of-fold predicted class of every prompt.
    pub predictions: Vec<usize>,
    /// `C` chosen by the inner cross-validation, per outer fold.
    pub cs_chosen: Vec<f64>,
    /// Outer fold of every prompt.
    pub folds: Vec<usize>,
}

/// Ridge probe of `y` from embeddings `x` (z-scored here), `folds`-fold
/// grouped nested cross-validation over the `alphas` grid.
pub fn ridge_probe(
    x: Embeddings<'_>,
    y: &[f64],
    groups: &[usize],
    folds: usize,
    alphas: &[f64],
    seed: u64,
) -> Result<RidgeProbe, AnalysisError> {
    ridge_probe_gram(&standardized_gram(x)?, y, groups, folds, alphas, seed)
}

/// [`ridge_probe`] from the standardised Gram matrix `G = Z Zᵀ`.
pub fn ridge_probe_gram(
    g: &SquareMatrix,
    y: &[f64],
    groups: &[usize],
    folds: usize,
    alphas: &[f64],
    seed: u64,
) -> Result<RidgeProbe, AnalysisError> {
    check_inputs(g, y.len(), groups.len())?;
    check_targets(y)?;
    check_grid("ridge alpha", alphas)?;
    let fit = |train: &[usize], test: &[usize], candidates: &[usize]| {
        ridge_fit_predict(g, y, train, test, &pick(alphas, candidates))
    };
    let loss = |i: usize, prediction: &f64| (y[i] - prediction).powi(2);
    let result = nested(groups, folds, seed, alphas.len(), &fit, &loss)?;
    Ok(RidgeProbe {
        r2: r2_score(y, &result.predictions),
        predictions: result.predictions,
        alphas_chosen: result.chosen.iter().map(|&c| alphas[c]).collect(),
        folds: result.fold_of,
    })
}

/// Out-of-fold ridge predictions for an explicit fold assignment
/// (`fold_of[i]` in `0..k`) and a fixed `alpha`.
pub fn ridge_fold_predictions(
    g: &SquareMatrix,
    y: &[f64],
    fold_of: &[usize],
    alpha: f64,
) -> Result<Vec<f64>, AnalysisError> {
    check_inputs(g, y.len(), fold_of.len())?;
    check_targets(y)?;
    check_grid("ridge alpha", &[alpha])?;
    let fit = |train: &[usize], test: &[usize], _: &[usize]| {
        ridge_fit_predict(g, y, train, test, &[alpha])
    };
    fixed_split(fold_of, &fit)
}

/// Multinomial logistic probe of `labels` (in `0..n_classes`) from
/// embeddings `x` (z-scored here), grouped nested cross-validation over the
/// `cs` grid.
pub fn logistic_probe(
    x: Embeddings<'_>,
    labels: &[usize],
    n_classes: usize,
    groups: &[usize],
    folds: usize,
    cs: &[f64],
    seed: u64,
) -> Result<LogisticProbe, AnalysisError> {
    logistic_probe_gram(
        &standardized_gram(x)?,
        labels,
        n_classes,
        groups,
        folds,
        cs,
        seed,
    )
}

/// [`logistic_probe`] from the standardised Gram matrix `G = Z Zᵀ`.
pub fn logistic_probe_gram(
    g: &SquareMatrix,
    labels: &[usize],
    n_classes: usize,
    groups: &[usize],
    folds: usize,
    cs: &[f64],
    seed: u64,
) -> Result<LogisticProbe, AnalysisError> {
    check_inputs(g, labels.len(), groups.len())?;
    check_labels(labels, n_classes)?;
    check_grid("logistic C", cs)?;
    let fit = |train: &[usize], test: &[usize], candidates: &[usize]| {
        logistic_fit_predict(g, labels, n_classes, train, test, &pick(cs, candidates))
    };
    let loss = |i: usize, p: &Vec<f64>| -p[labels[i]].max(f64::MIN_POSITIVE).ln();
    let result = nested(groups, folds, seed, cs.len(), &fit, &loss)?;
    let predictions: Vec<usize> = result.predictions.iter().map(|p| argmax(p)).collect();
    let correct = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(LogisticProbe {
        accuracy: correct as f64 / labels.len() as f64,
        true_class_probability: result
            .predictions
            .iter()
            .zip(labels)
            .map(|(p, &l)| p[l])
            .collect(),
        predictions,
        cs_chosen: result.chosen.iter().map(|&c| cs[c]).collect(),
        folds: result.fold_of,
    })
}

/// Out-of-fold class probabilities (`[prompt][class]`) for an explicit fold
/// assignment and a fixed `c`.
pub fn logistic_fold_probabilities(
    g: &SquareMatrix,
    labels: &[usize],
    n_classes: usize,
    fold_of: &[usize],
    c: f64,
) -> Result<Vec<Vec<f64>>, AnalysisError> {
    check_inputs(g, labels.len(), fold_of.len())?;
    check_labels(labels, n_classes)?;
    check_grid("logistic C", &[c])?;
    let fit = |train: &[usize], test: &[usize], _: &[usize]| {
        logistic_fit_predict(g, labels, n_classes, train, test, &[c])
    };
    fixed_split(fold_of, &fit)
}

/// Probe confidence for a numeric parameter: `−|ŷ − y|` per prompt.
pub fn numeric_confidence(predictions: &[f64], y: &[f64]) -> Vec<f64> {
    predictions
        .iter()
        .zip(y)
        .map(|(p, t)| -(p - t).abs())
        .collect()
}

/// Coefficient of determination (scikit-learn `r2_score`), NaN for constant `y`.
pub fn r2_score(y: &[f64], predictions: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let total: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let residual: f64 = y
        .iter()
        .zip(predictions)
        .map(|(v, p)| (v - p).powi(2))
        .sum();
    if total > 0.0 {
        1.0 - residual / total
    } else {
        f64::NAN
    }
}

/// Ridge predictions for `test` after fitting on `train`, one row per alpha.
fn ridge_fit_predict(
    g: &SquareMatrix,
    y: &[f64],
    train: &[usize],
    test: &[usize],
    alphas: &[f64],
) -> Result<Vec<Vec<f64>>, AnalysisError> {
    let kernel = FoldKernel::new(g, train, test);
    let m = train.len();
    let y_mean = train.iter().map(|&i| y[i]).sum::<f64>() / m as f64;
    let centred = Mat::from_fn(m, 1, |i, _| y[train[i]] - y_mean);
    alphas
        .iter()
        .map(|&alpha| {
            let beta = kernel.solve_regularised(alpha, &centred).ok_or_else(|| {
                AnalysisError::parameter(
                    "ridge alpha",
                    alpha,
                    "too small for this kernel: K + αI is not numerically positive definite",
                )
            })?;
            Ok((0..test.len())
                .map(|i| {
                    y_mean
                        + (0..m)
                            .map(|u| kernel.cross[(i, u)] * beta[(u, 0)])
                            .sum::<f64>()
                })
                .collect())
        })
        .collect()
}

/// Logistic class probabilities for `test` after fitting on `train`, one
/// `[test row][class]` table per `C`.
fn logistic_fit_predict(
    g: &SquareMatrix,
    labels: &[usize],
    n_classes: usize,
    train: &[usize],
    test: &[usize],
    cs: &[f64],
) -> Result<Vec<Vec<Vec<f64>>>, AnalysisError> {
    let features = FoldKernel::new(g, train, test).eigen_features()?;
    // Classes present in this training fold, and each label's index among them.
    let mut present: Vec<usize> = train.iter().map(|&i| labels[i]).collect();
    present.sort_unstable();
    present.dedup();
    let compact: Vec<usize> = train
        .iter()
        .map(|&i| present.partition_point(|&c| c < labels[i]))
        .collect();
    let expand = |probabilities: &[f64]| -> Vec<Vec<f64>> {
        probabilities
            .chunks(present.len())
            .map(|row| {
                let mut full = vec![0.0; n_classes];
                present.iter().zip(row).for_each(|(&c, &p)| full[c] = p);
                full
            })
            .collect()
    };
    let mut order: Vec<usize> = (0..cs.len()).collect();
    order.sort_by(|&a, &b| cs[a].total_cmp(&cs[b]));
    let mut out = vec![Vec::new(); cs.len()];
    let mut previous = None;
    for index in order {
        let problem = Problem::new(features.train.as_ref(), &compact, present.len(), cs[index]);
        let fit = problem.fit(previous.as_ref());
        out[index] = expand(&fit.probabilities(features.test.as_ref()));
        previous = Some(fit);
    }
    Ok(out)
}

fn pick(grid: &[f64], candidates: &[usize]) -> Vec<f64> {
    candidates.iter().map(|&c| grid[c]).collect()
}

fn argmax(p: &[f64]) -> usize {
    (0..p.len()).fold(0, |best, c| if p[c] > p[best] { c } else { best })
}

fn check_inputs(g: &SquareMatrix, n_targets: usize, n_groups: usize) -> Result<(), AnalysisError> {
    AnalysisError::check_len("probe targets (one per prompt)", g.n(), n_targets)?;
    AnalysisError::check_len("groups or folds (one per prompt)", g.n(), n_groups)
}

fn check_targets(y: &[f64]) -> Result<(), AnalysisError> {
    match y.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(AnalysisError::NonFinite {
            what: "probe targets",
            index,
        }),
        None => Ok(()),
    }
}

fn check_labels(labels: &[usize], n_classes: usize) -> Result<(), AnalysisError> {
    if n_classes < 2 {
        return Err(AnalysisError::parameter(
            "n_classes",
            n_classes,
            "a classifier needs at least 2 classes",
        ));
    }
    match labels.iter().find(|&&l| l >= n_classes) {
        Some(l) => Err(AnalysisError::parameter(
            "label",
            l,
            "labels must lie in 0..n_classes",
        )),
        None => Ok(()),
    }
}

fn check_grid(name: &'static str, grid: &[f64]) -> Result<(), AnalysisError> {
    match grid.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
        Some(v) => Err(AnalysisError::parameter(
            name,
            v,
            "regularisation values must be finite and positive",
        )),
        None => Ok(()),
    }
}
