//! Permutation test for a hypothesis alignment (PAPER.md analysis 2; the
//! alignment itself is in [`super::rsa`], its bootstrap interval in
//! [`super::rsa_bootstrap`]).
//!
//! The null hypothesis is that the condition labels
//! are exchangeable across prompts. A permutation `π` of the prompts gives
//! `H^π_ij = H_π(i)π(j)` (rows and columns together), and
//! `p = (1 + #{π : a(S, H^π) ≥ a(S, H) − ε}) / (1 + N)` over `N` seeded
//! permutations (one-sided: a larger alignment is the effect). `ε =`
//! [`TIE_TOLERANCE`] makes permutations that reproduce `H` exactly (e.g.
//! swaps within a label) count as ties despite a different summation order.
//!
//! Cost. For Spearman and Pearson the alignment is a dot product of unit
//! vectors: `ŝ` (S's upper triangle, ranked for Spearman, centred and
//! normalised) and `ĥ` likewise for H. Permuting H only reorders `ĥ`'s entries
//! (the multiset of pair values is unchanged, so its ranks move with it). So
//! `ŝ` is computed once per layer, and a block of permuted `ĥ` columns
//! (`P × 64`, `P = n(n−1)/2`) is multiplied by all layers at once (`L × P`),
//! one faer matrix product per block; the same permutations serve every
//! layer. For `n = 400`, `L = 80`, 1000 permutations that is 13 GFLOP.
//! Kendall τ-a is no dot product: S's pairs are sorted once per layer and
//! each permutation is scored by one pass over them with a Fenwick tree over
//! H's `L` distinct values, O(P log L) (see the sorted-pairs module): about
//! 1.4 ms per permutation and layer on one core for `n = 400`, so 1000
//! permutations × 80 layers take about a minute on 2 cores, against a few
//! seconds for Spearman.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef, Par};
use rayon::prelude::*;

use super::resample::random_permutations;
use super::rsa::{check_pair, Comparator};
use super::sorted_pairs::{hypothesis_levels, SortedPairs};
use super::stats::average_ranks;
use super::{pair_count, AnalysisError, SquareMatrix};

/// Alignments within this distance below the observed one count as ties
/// (≥): sums over ~10⁵ pairs in another order differ by ~10⁻¹³, while
/// distinct alignments of distinct orderings differ by far more than 10⁻¹⁰.
pub const TIE_TOLERANCE: f64 = 1e-10;

/// Permuted hypothesis vectors multiplied per block; 64 columns of 80k pairs
/// is 41 MB per worker thread.
const PERMUTATION_BLOCK: usize = 64;

/// One-sided permutation p-value of the alignment of `s` with `h`, with
/// `n_permutations` permutations drawn from `seed`. NaN when the alignment is
/// undefined (constant S or H).
pub fn permutation_p_value(
    s: &SquareMatrix,
    h: &SquareMatrix,
    comparator: Comparator,
    n_permutations: usize,
    seed: u64,
) -> Result<f64, AnalysisError> {
    let p = permutation_p_values_across_layers(
        std::slice::from_ref(s),
        h,
        comparator,
        n_permutations,
        seed,
    )?;
    Ok(p[0])
}

/// [`permutation_p_value`] for every layer, sharing one set of permutations
/// (the numbers equal those of calling it per layer with the same seed).
pub fn permutation_p_values_across_layers(
    layers: &[SquareMatrix],
    h: &SquareMatrix,
    comparator: Comparator,
    n_permutations: usize,
    seed: u64,
) -> Result<Vec<f64>, AnalysisError> {
    if n_permutations == 0 {
        return Err(AnalysisError::parameter(
            "n_permutations",
            0,
            "the permutation test needs at least one permutation",
        ));
    }
    let permutations = random_permutations(h.n(), n_permutations, seed);
    permutation_p_values_with_permutations(layers, h, comparator, &permutations)
}

/// The permutation p-values of every layer for explicit permutations of the
/// prompts (each a reordering of `0..n`).
pub fn permutation_p_values_with_permutations(
    layers: &[SquareMatrix],
    h: &SquareMatrix,
    comparator: Comparator,
    permutations: &[Vec<usize>],
) -> Result<Vec<f64>, AnalysisError> {
    for s in layers {
        check_pair(s, h, 3)?;
    }
    for perm in permutations {
        check_permutation(perm, h.n())?;
    }
    let (observed, exceed) = match comparator {
        Comparator::KendallTauA => kendall_null(layers, h, permutations),
        Comparator::Spearman | Comparator::Pearson => {
            dot_product_null(layers, h, comparator, permutations)
        }
    };
    let total = (1 + permutations.len()) as f64;
    Ok(observed
        .iter()
        .zip(exceed)
        .map(|(a, e)| {
            if a.is_nan() {
                f64::NAN
            } else {
                (1 + e) as f64 / total
            }
        })
        .collect())
}

fn check_permutation(perm: &[usize], n: usize) -> Result<(), AnalysisError> {
    AnalysisError::check_len("permutation", n, perm.len())?;
    let mut seen = vec![false; n];
    for &i in perm {
        if i >= n || std::mem::replace(&mut seen[i], true) {
            return Err(AnalysisError::parameter(
                "permutation entry",
                i,
                "a permutation must hold each of 0..n exactly once",
            ));
        }
    }
    Ok(())
}

/// The values a comparator correlates, centred and scaled to unit norm
/// (ranks for Spearman, raw values for Pearson); `None` when constant.
fn unit_scores(values: &[f64], comparator: Comparator) -> Option<Vec<f64>> {
    let mut v = match comparator {
        Comparator::Spearman => average_ranks(values),
        _ => values.to_vec(),
    };
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    v.iter_mut().for_each(|x| *x -= mean);
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

/// The strict upper triangle of `H^π` (`H_π(i)π(j)`, `i < j`), written into
/// `out` from a full row-major `n × n` source.
fn gather_permuted_pairs(full: &[f64], n: usize, perm: &[usize], out: &mut [f64]) {
    let mut p = 0;
    for i in 0..n {
        let row = &full[perm[i] * n..(perm[i] + 1) * n];
        for &pj in &perm[i + 1..] {
            out[p] = row[pj];
            p += 1;
        }
    }
}

/// Observed alignments and exceedance counts per layer, Spearman / Pearson.
fn dot_product_null(
    layers: &[SquareMatrix],
    h: &SquareMatrix,
    comparator: Comparator,
    permutations: &[Vec<usize>],
) -> (Vec<f64>, Vec<usize>) {
    let (n, pairs, n_layers) = (h.n(), pair_count(h.n()), layers.len());
    let undefined = (vec![f64::NAN; n_layers], vec![0; n_layers]);
    let Some(h_unit) = unit_scores(&h.upper_triangle(), comparator) else {
        return undefined;
    };
    let layer_units: Vec<Option<Vec<f64>>> = layers
        .par_iter()
        .map(|s| unit_scores(&s.upper_triangle(), comparator))
        .collect();
    // ĥ as a full symmetric matrix, so that permuted pairs are gathers.
    let mut h_full = vec![0.0; n * n];
    let mut p = 0;
    for i in 0..n {
        for j in i + 1..n {
            h_full[i * n + j] = h_unit[p];
            h_full[j * n + i] = h_unit[p];
            p += 1;
        }
    }
    let observed: Vec<f64> = layer_units
        .iter()
        .map(|u| u.as_ref().map_or(f64::NAN, |u| dot(u, &h_unit)))
        .collect();
    let a = Mat::from_fn(n_layers, pairs, |l, p| {
        layer_units[l].as_ref().map_or(0.0, |u| u[p])
    });
    let exceed = permutations
        .par_chunks(PERMUTATION_BLOCK)
        .map_init(Vec::new, |buffer: &mut Vec<f64>, block| {
            // Reused per worker: a fresh 41 MB block would be page-faulted in
            // every time.
            buffer.resize(pairs * block.len(), 0.0);
            for (column, perm) in buffer.chunks_mut(pairs).zip(block) {
                gather_permuted_pairs(&h_full, n, perm, column);
            }
            let b = MatRef::from_column_major_slice(buffer, pairs, block.len());
            let mut c = Mat::<f64>::zeros(n_layers, block.len());
            matmul(c.as_mut(), Accum::Replace, a.as_ref(), b, 1.0, Par::Seq);
            (0..n_layers)
                .map(|l| {
                    (0..block.len())
                        .filter(|&k| c[(l, k)] >= observed[l] - TIE_TOLERANCE)
                        .count()
                })
                .collect::<Vec<usize>>()
        })
        .reduce(|| vec![0; n_layers], add_counts);
    (observed, exceed)
}

fn add_counts(mut a: Vec<usize>, b: Vec<usize>) -> Vec<usize> {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
    a
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Observed alignments and exceedance counts per layer, Kendall τ-a: S's
/// pairs sorted once per layer, each permutation scored in O(P log L).
fn kendall_null(
    layers: &[SquareMatrix],
    h: &SquareMatrix,
    permutations: &[Vec<usize>],
) -> (Vec<f64>, Vec<usize>) {
    let n = h.n();
    let (levels, n_levels) = hypothesis_levels(h);
    layers
        .iter()
        .map(|s| {
            let pairs = SortedPairs::new(s);
            let score = |perm: &[usize], buffer: &mut Vec<u32>| {
                buffer.clear();
                let prompts = pairs.first.iter().zip(&pairs.second);
                buffer.extend(
                    prompts.map(|(&a, &b)| levels[perm[a as usize] * n + perm[b as usize]]),
                );
                pairs.kendall_tau_a(buffer, n_levels, None)
            };
            let identity: Vec<usize> = (0..n).collect();
            let observed = score(&identity, &mut Vec::new());
            let exceed = permutations
                .par_iter()
                .map_init(Vec::new, |buffer, perm| {
                    usize::from(score(perm, buffer) >= observed - TIE_TOLERANCE)
                })
                .sum::<usize>();
            (observed, exceed)
        })
        .unzip()
}
