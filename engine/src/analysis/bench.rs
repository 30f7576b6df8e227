//! A synthetic, timed run of the analysis pipeline at the study's scale
//! (e.g. 80 layers × 400 prompts × 8192 features, 1000 permutations), for
//! `engine bench`-style reporting. Prints nothing; returns timings.
//!
//! Data: prompt `i` belongs to target instance `i / 2` (two copies, like a
//! 0-shot and a k-shot prompt); instance `t` has a categorical condition
//! `t mod 6` ("activity") and a numeric one `t mod 5` ("slope"). Layer `ℓ`'s
//! embedding of prompt `i` is
//! `u_i + s_ℓ · pattern[activity] + s_ℓ · (slope − 2) · direction`, with
//! `s_ℓ = 0.6 (ℓ + 1) / L`, uniform noise `u_i` in `[−1, 1)` from ChaCha8
//! (seeded per layer and prompt) and fixed random patterns: the planted
//! structure grows with depth.
//!
//! Stages, each timed in wall-clock seconds over all layers: generating the
//! embeddings; the standardised Gram and similarity matrices (faer); the
//! Spearman alignment with two hypotheses (same activity; graded slope);
//! permutation p-values for both, all layers at once; Benjamini–Hochberg
//! across layers; bootstrap 95% intervals ([`BOOTSTRAP_SAMPLES`] draws of
//! target instances) for both hypotheses in every layer; a ridge probe of the
//! slope in every layer (5 grouped folds, nested choice among
//! [`RIDGE_ALPHAS`]).

use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use super::probe::ridge_probe_gram;
use super::resample::{derive_seed, SeededRng};
use super::rsa::{alignment, cosine_from_gram, graded, same_label, standardized_gram, Comparator};
use super::rsa_bootstrap::bootstrap_ci;
use super::rsa_permutation::permutation_p_values_across_layers;
use super::stats::benjamini_hochberg;
use super::{AnalysisError, Embeddings, SquareMatrix};

/// Bootstrap draws per interval.
pub const BOOTSTRAP_SAMPLES: usize = 200;

/// Ridge grid: `‖z_i‖² ≈ dim`, so useful `α` are a few orders around `dim`.
pub const RIDGE_ALPHAS: [f64; 4] = [1e2, 1e3, 1e4, 1e5];

const ACTIVITIES: usize = 6;
const SLOPES: usize = 5;
const FOLDS: usize = 5;

/// Seconds spent in each stage (wall clock).
#[derive(Debug, Clone, Serialize)]
pub struct StageSeconds {
    pub generate_embeddings: f64,
    pub similarity: f64,
    pub alignment: f64,
    pub permutation_test: f64,
    pub benjamini_hochberg: f64,
    pub bootstrap: f64,
    pub ridge_probe: f64,
    pub total: f64,
}

/// Headline numbers of the run, to show the planted structure was found.
#[derive(Debug, Clone, Serialize)]
pub struct BenchFindings {
    /// Spearman alignment with "same activity" in the first and last layer.
    pub activity_alignment_first_last: (f64, f64),
    /// Spearman alignment with graded slope in the first and last layer.
    pub slope_alignment_first_last: (f64, f64),
    /// Largest BH-adjusted permutation p-value of "same activity" over layers.
    pub activity_max_adjusted_p: f64,
    /// 95% bootstrap interval of the "same activity" alignment, last layer.
    pub activity_interval_last: (f64, f64),
    /// Ridge probe R² for the slope in the first and last layer.
    pub ridge_r2_first_last: (f64, f64),
}

/// What [`synthetic_benchmark`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct AnalysisBenchReport {
    pub layers: usize,
    pub prompts: usize,
    pub dim: usize,
    pub permutations: usize,
    pub bootstrap_samples: usize,
    /// Rayon worker threads used.
    pub threads: usize,
    pub seconds: StageSeconds,
    pub findings: BenchFindings,
}

/// Runs the synthetic pipeline (see module docs) and times each stage.
pub fn synthetic_benchmark(
    layers: usize,
    prompts: usize,
    dim: usize,
    permutations: usize,
    seed: u64,
) -> Result<AnalysisBenchReport, AnalysisError> {
    let needed = 2 * ACTIVITIES * FOLDS;
    if prompts < needed {
        return Err(AnalysisError::TooFew {
            what: "prompts for the benchmark",
            needed,
            got: prompts,
        });
    }
    if layers == 0 || dim == 0 {
        return Err(AnalysisError::TooFew {
            what: "layers and features for the benchmark",
            needed: 1,
            got: 0,
        });
    }
    let start = Instant::now();
    let instance: Vec<usize> = (0..prompts).map(|i| i / 2).collect();
    let activity: Vec<usize> = instance.iter().map(|t| t % ACTIVITIES).collect();
    let slope: Vec<f64> = instance.iter().map(|t| (t % SLOPES) as f64).collect();
    let mut rng = SeededRng::new(seed);
    let mut random_vector = || {
        (0..dim)
            .map(|_| rng.symmetric_unit_f32())
            .collect::<Vec<f32>>()
    };
    let patterns: Vec<Vec<f32>> = (0..ACTIVITIES).map(|_| random_vector()).collect();
    let direction = random_vector();

    // Layers in blocks of one per thread: each layer's generation and Gram
    // matrix run on one thread (see `rsa::gram_of_rows`), and only one
    // block's embeddings are alive at a time.
    let (mut generate, mut similarity) = (0.0, 0.0);
    let mut grams = Vec::with_capacity(layers);
    let block = rayon::current_num_threads().max(1);
    for first in (0..layers).step_by(block) {
        let block_layers = first..(first + block).min(layers);
        let t = Instant::now();
        let embeddings: Vec<Vec<f32>> = block_layers
            .into_par_iter()
            .map(|layer| {
                let strength = 0.6 * (layer + 1) as f32 / layers as f32;
                let mut data = vec![0.0f32; prompts * dim];
                for (i, row) in data.chunks_mut(dim).enumerate() {
                    let mut noise = SeededRng::new(derive_seed(seed, (layer * prompts + i) as u64));
                    let shift = strength * (slope[i] as f32 - 2.0);
                    for ((x, p), d) in row.iter_mut().zip(&patterns[activity[i]]).zip(&direction) {
                        *x = noise.symmetric_unit_f32() + strength * p + shift * d;
                    }
                }
                data
            })
            .collect();
        generate += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let block_grams: Vec<SquareMatrix> = embeddings
            .par_iter()
            .map(|data| standardized_gram(Embeddings::new(data, prompts, dim)?))
            .collect::<Result<_, _>>()?;
        grams.extend(block_grams);
        similarity += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    let similarities: Vec<SquareMatrix> = grams.par_iter().map(cosine_from_gram).collect();
    similarity += t.elapsed().as_secs_f64();

    let hypotheses = [same_label(&activity), graded(&slope)];
    let t = Instant::now();
    let alignments: Vec<Vec<f64>> = hypotheses
        .iter()
        .map(|h| {
            similarities
                .par_iter()
                .map(|s| alignment(s, h, Comparator::Spearman))
                .collect::<Result<_, _>>()
        })
        .collect::<Result<_, _>>()?;
    let alignment_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let p_values: Vec<Vec<f64>> = hypotheses
        .iter()
        .enumerate()
        .map(|(k, h)| {
            let seed = derive_seed(seed, 1000 + k as u64);
            permutation_p_values_across_layers(
                &similarities,
                h,
                Comparator::Spearman,
                permutations,
                seed,
            )
        })
        .collect::<Result<_, _>>()?;
    let permutation_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let adjusted: Vec<Vec<f64>> = p_values.iter().map(|p| benjamini_hochberg(p)).collect();
    let bh_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let intervals: Vec<Vec<(f64, f64)>> = hypotheses
        .iter()
        .map(|h| bootstrap_all_layers(&similarities, h, &instance, seed))
        .collect::<Result<_, _>>()?;
    let bootstrap_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let r2: Vec<f64> = grams
        .par_iter()
        .map(|g| Ok(ridge_probe_gram(g, &slope, &instance, FOLDS, &RIDGE_ALPHAS, seed)?.r2))
        .collect::<Result<_, AnalysisError>>()?;
    let ridge_s = t.elapsed().as_secs_f64();

    let first_last = |v: &[f64]| (v[0], v[v.len() - 1]);
    Ok(AnalysisBenchReport {
        layers,
        prompts,
        dim,
        permutations,
        bootstrap_samples: BOOTSTRAP_SAMPLES,
        threads: rayon::current_num_threads(),
        seconds: StageSeconds {
            generate_embeddings: generate,
            similarity,
            alignment: alignment_s,
            permutation_test: permutation_s,
            benjamini_hochberg: bh_s,
            bootstrap: bootstrap_s,
            ridge_probe: ridge_s,
            total: start.elapsed().as_secs_f64(),
        },
        findings: BenchFindings {
            activity_alignment_first_last: first_last(&alignments[0]),
            slope_alignment_first_last: first_last(&alignments[1]),
            activity_max_adjusted_p: adjusted[0].iter().copied().fold(f64::NAN, f64::max),
            activity_interval_last: intervals[0][layers - 1],
            ridge_r2_first_last: first_last(&r2),
        },
    })
}

/// Bootstrap intervals of one hypothesis in every layer (same draws per layer).
fn bootstrap_all_layers(
    similarities: &[SquareMatrix],
    h: &SquareMatrix,
    groups: &[usize],
    seed: u64,
) -> Result<Vec<(f64, f64)>, AnalysisError> {
    similarities
        .par_iter()
        .map(|s| {
            bootstrap_ci(
                s,
                h,
                Comparator::Spearman,
                groups,
                BOOTSTRAP_SAMPLES,
                seed,
                0.95,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_benchmark_finds_the_planted_structure() {
        let report = synthetic_benchmark(3, 60, 512, 99, 1).expect("valid sizes");
        let findings = &report.findings;
        let (first, last) = findings.activity_alignment_first_last;
        assert!(last > first && last > 0.1, "{findings:?}");
        assert!(findings.activity_max_adjusted_p < 0.05, "{findings:?}");
        assert!(findings.ridge_r2_first_last.1 > 0.5, "{findings:?}");
        assert!(report.seconds.total > 0.0);
    }

    #[test]
    fn too_few_prompts_is_an_error() {
        assert!(synthetic_benchmark(2, 10, 16, 10, 0).is_err());
    }
}
