//! Grouped, nested cross-validation for the probes (PAPER.md analysis 3).
//!
//! **Folds.** [`grouped_folds`] keeps every prompt of a target instance (its
//! 0-shot and k-shot copies) in one fold: the distinct group ids, sorted,
//! are shuffled with the seed (Fisher–Yates over ChaCha8) and dealt
//! round-robin into `k` folds, so fold sizes differ by at most one group.
//!
//! **Nesting.** For each outer fold, the regularisation strength is chosen
//! by an inner grouped cross-validation on the outer training part (`k`
//! inner folds, or fewer if it holds fewer groups, seeded by
//! `derive_seed(seed, outer fold)`): the candidate with the smallest summed
//! inner out-of-fold loss wins (the first on ties). The model refitted on
//! the whole outer training part with it predicts the outer test fold. Outer
//! folds run in parallel; results do not depend on the thread count.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::resample::{derive_seed, SeededRng};
use super::AnalysisError;

/// Fits on `train` and predicts `test` (indices of samples) for each
/// requested candidate: `[candidate][test row]`.
pub(crate) type FitPredict<'a, R> =
    dyn Fn(&[usize], &[usize], &[usize]) -> Result<Vec<Vec<R>>, AnalysisError> + Sync + 'a;

/// The loss of one prediction for one sample (index into the samples).
pub(crate) type Loss<'a, R> = dyn Fn(usize, &R) -> f64 + Sync + 'a;

/// The fold (`0..k`) of every sample, grouped by `groups` (see module docs).
pub fn grouped_folds(groups: &[usize], k: usize, seed: u64) -> Result<Vec<usize>, AnalysisError> {
    if k < 2 {
        return Err(AnalysisError::parameter(
            "folds",
            k,
            "cross-validation needs at least 2 folds",
        ));
    }
    let mut ids = groups.to_vec();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() < k {
        return Err(AnalysisError::TooFew {
            what: "target instances (groups) for the requested folds",
            needed: k,
            got: ids.len(),
        });
    }
    let mut dealt = ids;
    SeededRng::new(seed).shuffle(&mut dealt);
    let fold_of_id: BTreeMap<usize, usize> = dealt
        .iter()
        .enumerate()
        .map(|(position, &id)| (id, position % k))
        .collect();
    Ok(groups.iter().map(|g| fold_of_id[g]).collect())
}

/// Number of distinct values.
fn distinct(values: &[usize]) -> usize {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.dedup();
    v.len()
}

/// Out-of-fold predictions over `samples` (positions `0..samples.len()`
/// assigned to folds by `fold_of`), for each candidate: `[candidate][position]`.
pub(crate) fn out_of_fold<R: Clone + Default>(
    samples: &[usize],
    fold_of: &[usize],
    n_folds: usize,
    candidates: &[usize],
    fit_predict: &FitPredict<'_, R>,
) -> Result<Vec<Vec<R>>, AnalysisError> {
    let mut out = vec![vec![R::default(); samples.len()]; candidates.len()];
    for fold in 0..n_folds {
        let (test_positions, train_positions): (Vec<usize>, Vec<usize>) =
            (0..samples.len()).partition(|&p| fold_of[p] == fold);
        let train: Vec<usize> = train_positions.iter().map(|&p| samples[p]).collect();
        let test: Vec<usize> = test_positions.iter().map(|&p| samples[p]).collect();
        let predictions = fit_predict(&train, &test, candidates)?;
        for (column, values) in out.iter_mut().zip(predictions) {
            for (&p, v) in test_positions.iter().zip(values) {
                column[p] = v;
            }
        }
    }
    Ok(out)
}

/// Out-of-fold predictions of one model for an explicit fold assignment
/// (`fold_of[i]` in `0..k`), no nesting.
pub(crate) fn fixed_split<R: Clone + Default>(
    fold_of: &[usize],
    fit_predict: &FitPredict<'_, R>,
) -> Result<Vec<R>, AnalysisError> {
    let samples: Vec<usize> = (0..fold_of.len()).collect();
    let n_folds = fold_of.iter().max().map_or(0, |m| m + 1);
    let predictions = out_of_fold(&samples, fold_of, n_folds, &[0], fit_predict)?;
    Ok(predictions.into_iter().next().unwrap_or_default())
}

/// The outcome of a nested cross-validation.
#[derive(Debug)]
pub(crate) struct Nested<R> {
    /// Out-of-fold prediction of every sample.
    pub predictions: Vec<R>,
    /// Candidate chosen in each outer fold.
    pub chosen: Vec<usize>,
    /// Outer fold of every sample.
    pub fold_of: Vec<usize>,
}

/// Nested grouped cross-validation over `n_candidates` candidates.
pub(crate) fn nested<R: Clone + Default + Send>(
    groups: &[usize],
    n_folds: usize,
    seed: u64,
    n_candidates: usize,
    fit_predict: &FitPredict<'_, R>,
    loss: &Loss<'_, R>,
) -> Result<Nested<R>, AnalysisError> {
    if n_candidates == 0 {
        return Err(AnalysisError::parameter(
            "regularisation grid",
            "[]",
            "give at least one value",
        ));
    }
    let fold_of = grouped_folds(groups, n_folds, seed)?;
    let candidates: Vec<usize> = (0..n_candidates).collect();
    let outer: Vec<(usize, Vec<(usize, R)>)> = (0..n_folds)
        .into_par_iter()
        .map(|fold| {
            let (test, train): (Vec<usize>, Vec<usize>) =
                (0..groups.len()).partition(|&i| fold_of[i] == fold);
            let chosen = if n_candidates == 1 {
                0
            } else {
                let train_groups: Vec<usize> = train.iter().map(|&i| groups[i]).collect();
                let inner_k = n_folds.min(distinct(&train_groups));
                let inner_folds =
                    grouped_folds(&train_groups, inner_k, derive_seed(seed, fold as u64))?;
                let inner = out_of_fold(&train, &inner_folds, inner_k, &candidates, fit_predict)?;
                let total_loss = |c: &Vec<R>| -> f64 {
                    train
                        .iter()
                        .zip(c)
                        .map(|(&i, prediction)| loss(i, prediction))
                        .sum()
                };
                let losses: Vec<f64> = inner.iter().map(total_loss).collect();
                (0..n_candidates).fold(0, |best, c| if losses[c] < losses[best] { c } else { best })
            };
            let predictions = fit_predict(&train, &test, &[chosen])?
                .pop()
                .unwrap_or_default();
            Ok((chosen, test.into_iter().zip(predictions).collect()))
        })
        .collect::<Result<_, AnalysisError>>()?;
    let mut predictions = vec![R::default(); groups.len()];
    let mut chosen = Vec::with_capacity(n_folds);
    for (c, fold_predictions) in outer {
        chosen.push(c);
        for (i, v) in fold_predictions {
            predictions[i] = v;
        }
    }
    Ok(Nested {
        predictions,
        chosen,
        fold_of,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_keeps_paired_copies_in_one_fold() {
        // 30 target instances, each as a 0-shot and a k-shot prompt.
        let groups: Vec<usize> = (0..60).map(|i| i % 30).collect();
        let folds = grouped_folds(&groups, 5, 3).expect("enough groups");
        for i in 0..30 {
            assert_eq!(folds[i], folds[i + 30], "instance {i} split across folds");
        }
        let mut sizes = [0; 5];
        folds.iter().for_each(|&f| sizes[f] += 1);
        assert_eq!(sizes, [12; 5]);
        assert_eq!(folds, grouped_folds(&groups, 5, 3).expect("enough groups"));
    }

    #[test]
    fn too_few_groups_for_the_folds_is_an_error() {
        assert!(grouped_folds(&[0, 0, 1, 1], 3, 0).is_err());
        assert!(grouped_folds(&[0, 1, 2], 1, 0).is_err());
    }
}
