//! A whole study on one or more models: capture every prompt, score the
//! behaviour, run every analysis, and export the results.

pub mod analyze;
pub mod behavior;
pub mod capture;
pub mod export;
mod summary;

pub use analyze::{analyze, ModelRun, StudyResults};
pub use capture::{capture_all, tokenize_all, PromptRecord, Tokenized};

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
    let (longest, index) = tokenized
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.len(), i))
        .max()
        .unwrap_or((0, 0));
    let needed = longest + experiment.file.capture.max_new_tokens;
    if needed > info.n_ctx_train {
        return Err(CaptureError::PromptTooLong {
            tokens: longest,
            n_ctx: info
                .n_ctx_train
                .saturating_sub(experiment.file.capture.max_new_tokens),
            n_ctx_train: info.n_ctx_train,
        })
        .map_err(|e| CaptureError::BadRequest(format!("prompt {index}: {e}")));
    }
    let n_ctx = (needed.div_ceil(256) * 256)
        .min(info.n_ctx_train)
        .max(needed);
    Ok(ContextOptions {
        n_ctx: n_ctx as u32,
        ..base
    })
}
