//! Bootstrap confidence interval for a hypothesis alignment (PAPER.md
//! analysis 2; the alignment is in [`super::rsa`]).
//!
//! Target instances (groups of prompts; one prompt each within
//! one ICL state, but a group may hold several) are drawn with replacement;
//! the drawn prompts form the sample, and the alignment is taken over pairs
//! of drawn prompts that are not the same original prompt. An original pair
//! `(a, b)` therefore enters with multiplicity `c_a c_b`, where `c_a` counts
//! the draws of `a`'s group; Spearman and Pearson are computed as weighted
//! coefficients over the `P` original pairs (ranks of the expanded sample
//! from S's and H's sorted orders, computed once), in O(P) per draw; Kendall
//! τ-a likewise in O(P log L) for L distinct H values (see the
//! sorted-pairs module). The interval is the percentile interval
//! (numpy "linear") of the finite bootstrap alignments. A draw whose
//! alignment is undefined (e.g. all drawn prompts share one label, so H is
//! constant) is NaN and left out of the interval.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::resample::SeededRng;
use super::rsa::{check_pair, Comparator};
use super::sorted_pairs::{hypothesis_levels, SortedPairs};
use super::stats::{percentile_interval, weighted_pearson};
use super::{AnalysisError, SquareMatrix};

/// Bootstrap percentile interval (`level`, e.g. 0.95) of the alignment of
/// `s` with `h`, resampling the groups (target instances) of `groups`
/// (`groups[i]` is prompt `i`'s group) `n_boot` times from `seed`.
pub fn bootstrap_ci(
    s: &SquareMatrix,
    h: &SquareMatrix,
    comparator: Comparator,
    groups: &[usize],
    n_boot: usize,
    seed: u64,
    level: f64,
) -> Result<(f64, f64), AnalysisError> {
    if !(level > 0.0 && level < 1.0) {
        return Err(AnalysisError::parameter(
            "confidence level",
            level,
            "must lie strictly between 0 and 1 (e.g. 0.95)",
        ));
    }
    if n_boot == 0 {
        return Err(AnalysisError::parameter(
            "n_boot",
            0,
            "need at least one bootstrap sample",
        ));
    }
    let draws = bootstrap_group_draws(groups, n_boot, seed);
    let values = bootstrap_alignments(s, h, comparator, groups, &draws)?;
    Ok(percentile_interval(&values, level))
}

/// `n_boot` bootstrap draws of group ids: each draws as many groups as there
/// are distinct ids, uniformly with replacement from the sorted distinct ids.
pub fn bootstrap_group_draws(groups: &[usize], n_boot: usize, seed: u64) -> Vec<Vec<usize>> {
    let mut ids = groups.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mut rng = SeededRng::new(seed);
    (0..n_boot)
        .map(|_| (0..ids.len()).map(|_| ids[rng.index(ids.len())]).collect())
        .collect()
}

/// The alignment in each bootstrap draw (a list of group ids, repeats
/// allowed); NaN for a draw whose alignment is undefined.
pub fn bootstrap_alignments(
    s: &SquareMatrix,
    h: &SquareMatrix,
    comparator: Comparator,
    groups: &[usize],
    draws: &[Vec<usize>],
) -> Result<Vec<f64>, AnalysisError> {
    check_pair(s, h, 3)?;
    AnalysisError::check_len("groups (one per prompt)", s.n(), groups.len())?;
    let mut members: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (prompt, &g) in groups.iter().enumerate() {
        members.entry(g).or_default().push(prompt);
    }
    for &g in draws.iter().flatten() {
        if !members.contains_key(&g) {
            return Err(AnalysisError::parameter(
                "drawn group",
                g,
                "no prompt belongs to it",
            ));
        }
    }
    let pairs = PairTable::new(s, h);
    Ok(draws
        .par_iter()
        .map_init(
            || Scratch::new(s.n(), pairs.len()),
            |scratch, draw| {
                scratch.counts.fill(0);
                for prompt in draw.iter().flat_map(|g| &members[g]) {
                    scratch.counts[*prompt] += 1;
                }
                pairs.weighted_alignment(scratch, comparator)
            },
        )
        .collect())
}

/// The upper-triangle pairs of S and H, stored in ascending order of S
/// (ties in any order) so that every per-draw pass reads memory
/// sequentially; shared by all draws.
struct PairTable {
    pairs: SortedPairs,
    /// H value of each sorted pair.
    h: Vec<f64>,
    /// Level (index among H's distinct values, ascending) of each sorted pair.
    h_level: Vec<u32>,
    /// Number of distinct H values.
    h_levels: usize,
}

/// Per-thread buffers of one draw.
struct Scratch {
    /// Draws of each prompt.
    counts: Vec<u32>,
    /// Multiplicity of each pair, `c_a · c_b`.
    weights: Vec<u32>,
    /// Doubled, centred rank of each pair's S value in the sample.
    centred_s: Vec<f64>,
}

impl Scratch {
    fn new(prompts: usize, pairs: usize) -> Self {
        Scratch {
            counts: vec![0; prompts],
            weights: vec![0; pairs],
            centred_s: vec![0.0; pairs],
        }
    }
}

impl PairTable {
    fn new(s: &SquareMatrix, h: &SquareMatrix) -> Self {
        let pairs = SortedPairs::new(s);
        let (levels, h_levels) = hypothesis_levels(h);
        let n = h.n();
        let at = |k: usize| (pairs.first[k] as usize) * n + pairs.second[k] as usize;
        PairTable {
            h: (0..pairs.len()).map(|k| h.data()[at(k)]).collect(),
            h_level: (0..pairs.len()).map(|k| levels[at(k)]).collect(),
            h_levels,
            pairs,
        }
    }

    fn len(&self) -> usize {
        self.pairs.len()
    }

    /// The comparator over the sample in which each pair `(a, b)` appears
    /// `c_a · c_b` times (`scratch.counts` are the `c`).
    fn weighted_alignment(&self, scratch: &mut Scratch, comparator: Comparator) -> f64 {
        let Scratch {
            counts,
            weights,
            centred_s,
        } = scratch;
        let prompts = self.pairs.first.iter().zip(&self.pairs.second);
        for (w, (&a, &b)) in weights.iter_mut().zip(prompts) {
            *w = counts[a as usize] * counts[b as usize];
        }
        match comparator {
            Comparator::Spearman => self.weighted_spearman(weights, centred_s),
            Comparator::Pearson => {
                let w: Vec<f64> = weights.iter().map(|&w| f64::from(w)).collect();
                weighted_pearson(&self.pairs.s, &self.h, &w)
            }
            Comparator::KendallTauA => {
                self.pairs
                    .kendall_tau_a(&self.h_level, self.h_levels, Some(weights))
            }
        }
    }

    /// Spearman's ρ of the weighted sample. Average ranks of the expanded
    /// sample: a tie run of total weight `W` after `B` smaller copies ranks
    /// `B + (W + 1)/2`; doubled, `2B + W + 1`, an integer, so the prefix sums
    /// are exact integer additions. The weighted mean of the doubled ranks is
    /// `M + 1` (`M = Σ w`) for S and H alike. The weighted Pearson sums run
    /// in four independent lanes (no floating-point dependency chain).
    fn weighted_spearman(&self, weights: &[u32], centred_s: &mut [f64]) -> f64 {
        let mut h_weight = vec![[0u64; 4]; self.h_levels];
        let (runs, ws) = (self.h_level.chunks_exact(4), weights.chunks_exact(4));
        for (&run, &w) in runs.remainder().iter().zip(ws.remainder()) {
            h_weight[run as usize][0] += u64::from(w);
        }
        for (run, w) in runs.zip(ws) {
            for lane in 0..4 {
                h_weight[run[lane] as usize][lane] += u64::from(w[lane]);
            }
        }
        let mut below = 0u64;
        let h_rank: Vec<u64> = h_weight
            .iter()
            .map(|lanes| {
                let run_weight: u64 = lanes.iter().sum();
                let rank = 2 * below + run_weight + 1;
                below += run_weight;
                rank
            })
            .collect();
        let centre = (below + 1) as f64;
        let h_centred: Vec<f64> = h_rank.iter().map(|&r| r as f64 - centre).collect();
        // Every pair as if untied, then tie runs (rare for similarities)
        // reset to their common rank; the running total is the same.
        let mut below = 0u64;
        for (x, &w) in centred_s.iter_mut().zip(weights.iter()) {
            let w = u64::from(w);
            *x = (2 * below + w + 1) as f64 - centre;
            below += w;
        }
        for &(start, len) in &self.pairs.ties {
            let run = start as usize..(start + len) as usize;
            let twice_below = centred_s[run.start] + centre - f64::from(weights[run.start]) - 1.0;
            let run_weight: f64 = weights[run.clone()].iter().map(|&w| f64::from(w)).sum();
            centred_s[run].fill(twice_below + run_weight + 1.0 - centre);
        }
        let (mut sxy, mut sxx, mut syy) = ([0.0f64; 4], [0.0f64; 4], [0.0f64; 4]);
        let mut add = |lane: usize, x: f64, w: u32, run: u32| {
            let (w, y) = (f64::from(w), h_centred[run as usize]);
            sxy[lane] += w * x * y;
            sxx[lane] += w * x * x;
            syy[lane] += w * y * y;
        };
        let (xs, ws, runs) = (
            centred_s.chunks_exact(4),
            weights.chunks_exact(4),
            self.h_level.chunks_exact(4),
        );
        let tail = xs
            .remainder()
            .iter()
            .zip(ws.remainder())
            .zip(runs.remainder());
        for ((x, w), run) in xs.zip(ws).zip(runs) {
            for lane in 0..4 {
                add(lane, x[lane], w[lane], run[lane]);
            }
        }
        for ((&x, &w), &run) in tail {
            add(0, x, w, run);
        }
        let (sxy, sxx, syy): (f64, f64, f64) =
            (sxy.iter().sum(), sxx.iter().sum(), syy.iter().sum());
        if sxx <= 0.0 || syy <= 0.0 {
            return f64::NAN;
        }
        (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::resample::SeededRng;
    use crate::analysis::rsa::same_label;

    /// The bootstrap sample written out: every pair of drawn prompts
    /// (positions u < v) that are not the same original prompt.
    fn expanded_alignment(
        s: &SquareMatrix,
        h: &SquareMatrix,
        groups: &[usize],
        draw: &[usize],
        c: Comparator,
    ) -> f64 {
        let drawn: Vec<usize> = draw
            .iter()
            .flat_map(|g| (0..groups.len()).filter(move |&p| groups[p] == *g))
            .collect();
        let (mut xs, mut ys) = (Vec::new(), Vec::new());
        for u in 0..drawn.len() {
            for v in u + 1..drawn.len() {
                if drawn[u] != drawn[v] {
                    xs.push(s.get(drawn[u], drawn[v]));
                    ys.push(h.get(drawn[u], drawn[v]));
                }
            }
        }
        c.apply(&xs, &ys)
    }

    #[test]
    fn weighted_bootstrap_equals_the_expanded_sample() {
        let n = 14;
        let mut rng = SeededRng::new(4);
        // Similarities rounded to 0.1 so that S has ties too.
        let values: Vec<f64> = (0..n * n).map(|_| (rng.index(11) as f64) / 10.0).collect();
        let s = SquareMatrix::from_fn(n, |i, j| values[i.min(j) * n + i.max(j)]);
        let h = same_label(&(0..n).map(|i| i % 3).collect::<Vec<_>>());
        let groups: Vec<usize> = (0..n).map(|i| i / 2).collect();
        let draws = bootstrap_group_draws(&groups, 6, 9);
        for c in [
            Comparator::Spearman,
            Comparator::Pearson,
            Comparator::KendallTauA,
        ] {
            let fast = bootstrap_alignments(&s, &h, c, &groups, &draws).expect("valid input");
            for (draw, value) in draws.iter().zip(fast) {
                let expected = expanded_alignment(&s, &h, &groups, draw, c);
                assert!(
                    (value - expected).abs() < 1e-12,
                    "{c:?}: {value} vs {expected}"
                );
            }
        }
    }

    #[test]
    fn interval_contains_the_alignment_of_a_strong_effect() {
        let labels: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let h = same_label(&labels);
        let s = SquareMatrix::from_fn(30, |i, j| h.get(i, j) + 0.01 * ((i * j) % 7) as f64);
        let groups: Vec<usize> = (0..30).collect();
        let (low, high) =
            bootstrap_ci(&s, &h, Comparator::Spearman, &groups, 200, 1, 0.95).expect("valid input");
        let observed =
            crate::analysis::rsa::alignment(&s, &h, Comparator::Spearman).expect("same size");
        assert!(
            low <= observed && observed <= high,
            "{low} {observed} {high}"
        );
    }
}
