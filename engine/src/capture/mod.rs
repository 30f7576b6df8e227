//! Capture: what a model computes inside, for one prompt at a time.
//!
//! This is the seam between llama.cpp and the rest of the engine. Everything
//! outside this module sees plain Rust types: a [`CaptureRequest`] says what to
//! keep, an [`Activations`] holds what was kept. Only `llama.rs` touches FFI.
//!
//! Reductions happen while the model runs (inside llama.cpp's tensor
//! callback): pooling hidden states over token sets, and summing attention over
//! key spans. A request that only wants summaries therefore costs memory in
//! proportion to layers × heads × spans, never layers × heads × tokens².

mod answers;
mod architectures;
mod cpu;
mod llama;
mod observer;
mod patching;
mod request;
mod session;

pub use answers::AnswerBatch;
pub use architectures::{
    architecture_table, plan_attention, recomputes, ArchitectureSupport, AttentionPlan,
    FlashAttentionRefused, RECOMPUTED,
};
pub(crate) use llama::supports_gpu_offload;
pub use llama::{llama_build_info, FlashAttention, GgufSummary, Transfers};
pub use patching::{Patch, PatchJob, PatchMode, PatchRunner, PatchedRun};
pub use request::{
    Activations, AttentionKeep, AttentionPath, AttentionRequest, CaptureRequest, F32Array,
    HiddenRequest, Pooling,
};
pub use session::{
    model_architecture, CaptureError, ContextOptions, GreedyAnswer, Model, ModelInfo, ModelOptions,
    Session,
};
