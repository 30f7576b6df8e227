//! The study's analyses as pure functions: arrays and labels in, numbers out,
//! no I/O. Named after the paper's analyses (see `../shared/PAPER.md`,
//! "The analyses (our precise definitions)").
//!
//! | module | paper section | what |
//! |---|---|---|
//! | [`stats`] | all | ranks, Pearson / Spearman / Kendall τ-a, p-values, Benjamini–Hochberg, z-scores |
//! | [`resample`] | 2, 3 | seeded permutations, bootstrap draws, derived seeds (ChaCha8 only) |
//! | [`rsa`] | 2 | similarity matrices, hypothesis matrices, alignment, prompt-level alignment |
//! | [`rsa_permutation`] | 2 | permutation p-values of an alignment, one layer or all at once |
//! | [`rsa_bootstrap`] | 2 | bootstrap confidence interval of an alignment over target instances |
//! | [`probe`] | 3 | grouped cross-validated ridge and multinomial logistic probes |
//! | [`crossval`] | 3 | grouped folds and nested cross-validation for the probes |
//! | [`attention_ratio`] | 4 | relevant / distractor attention ratios per layer and head |
//! | [`correlation`] | 5 | behaviour change ↔ representation change, per layer |
//! | [`draws`] | — | a finding's spread across draws of demonstrations; paired change intervals |
//! | [`bench`] | — | a synthetic, timed run of the RSA and probe pipeline |
//!
//! Internal: `matrix` (the two array types), `kernel` (training-fold kernels
//! from a Gram matrix), `logistic` (the L-BFGS solver), `sorted_pairs` (S's
//! pairs sorted once, for Kendall τ-a and the bootstrap).
//!
//! Shapes: embeddings are `f32`, row-major `n_prompts × dim` ([`Embeddings`]);
//! similarity and hypothesis matrices are `n × n` `f64` ([`SquareMatrix`]).
//! Everything accumulates in `f64`. Randomness comes only from ChaCha8 seeded
//! by the caller, so the same inputs and seed give the same numbers on every
//! machine, whatever the number of threads.

pub mod attention_ratio;
pub mod bench;
pub mod correlation;
pub mod crossval;
pub mod draws;
mod kernel;
mod logistic;
mod matrix;
pub mod patching;
pub mod probe;
pub mod resample;
pub mod rsa;
pub mod rsa_bootstrap;
pub mod rsa_permutation;
mod sorted_pairs;
pub mod stats;

pub use matrix::{pair_count, Embeddings, SquareMatrix};

/// What went wrong in an analysis, with enough detail to fix the input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnalysisError {
    /// Two inputs that must agree in size do not.
    #[error("{what} has {got} elements, expected {expected}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// Too few prompts, groups or values for the analysis to be defined.
    #[error("{what}: need at least {needed}, got {got}")]
    TooFew {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    /// A NaN or infinite value where only finite values make sense.
    #[error("{what} holds a non-finite value at index {index}; remove or impute it first")]
    NonFinite { what: &'static str, index: usize },
    /// A parameter outside its valid range.
    #[error("invalid {name} = {value}: {reason}")]
    Parameter {
        name: &'static str,
        value: String,
        reason: &'static str,
    },
}

impl AnalysisError {
    pub(crate) fn parameter(
        name: &'static str,
        value: impl std::fmt::Display,
        reason: &'static str,
    ) -> Self {
        AnalysisError::Parameter {
            name,
            value: value.to_string(),
            reason,
        }
    }

    /// `Ok(())` when `got == expected`, a [`AnalysisError::Shape`] otherwise.
    pub(crate) fn check_len(what: &'static str, expected: usize, got: usize) -> Result<(), Self> {
        if expected == got {
            Ok(())
        } else {
            Err(AnalysisError::Shape {
                what,
                expected,
                got,
            })
        }
    }
}
