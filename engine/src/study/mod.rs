//! A whole study on one or more models: capture every prompt, score the
//! behaviour, run every analysis, and export the results.

pub mod analyze;
pub mod behavior;
pub mod cache;
pub mod capture;
pub mod export;
pub mod near_ties;
pub mod patching;
pub mod prompting;
pub mod robustness;
pub mod rounding;
pub mod runner;
mod summary;

pub use analyze::{analyze, ModelRun, StudyResults};
pub use capture::{
    answer_batches, answer_context, capture_all, capture_batch, capture_order, shared_prefix_len,
    tokenize_all, tokens_to_run, PromptRecord, Tokenized,
};

use crate::capture::{CaptureError, ContextOptions, Model};
use crate::experiment::Experiment;

/// The context a study needs: room for the longest prompt and its answer.
pub fn context_for(
    experiment: &Experiment,
    tokenized: &Tokenized,
    model: &Model,
    base: ContextOptions,
) -> Result<ContextOptions, CaptureError> {
    let info = model.info();
    let max_new = experiment.file.capture.max_new_tokens;
    // The first of the longest prompts, so the message names a stable one.
    let mut longest = (0, 0);
    for (i, tokens) in tokenized.tokens.iter().enumerate() {
        if tokens.len() > longest.0 {
            longest = (tokens.len(), i);
        }
    }
    let (tokens, index) = longest;
    let needed = tokens + max_new;
    if needed > info.n_ctx_train {
        let prompt = &experiment.prompts[index];
        return Err(CaptureError::ExperimentTooLong(format!(
            "prompt {index} (task `{}`, {} shots) is {tokens} tokens; with {max_new} tokens for the answer it needs \
             {needed}, more than the model's context of {}: use fewer shots or a shorter template",
            experiment.tasks[prompt.task].name, prompt.shots, info.n_ctx_train
        )));
    }
    let n_ctx = (needed.div_ceil(256) * 256)
        .min(info.n_ctx_train)
        .max(needed);
    Ok(ContextOptions {
        n_ctx: n_ctx as u32,
        ..base
    })
}
