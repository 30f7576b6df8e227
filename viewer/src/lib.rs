//! The report bundle format and the report's charts, shared by the engine
//! (native) and the in-browser viewer (wasm32).
//!
//! - [`bundle`]: the versioned, zstd-compressed safetensors file a report is
//!   made of; defined once, decoded by the same code on both sides.
//! - [`figures`]: what each figure shows, as plain numbers.
//! - [`view`]: a reader's selection applied to a bundle, giving the figures'
//!   data and the numbers recomputed for that selection.
//! - [`charts`]: one plotters function per figure, generic over the backend.

pub mod bundle;
pub mod charts;
pub mod figures;
pub mod stats;
pub mod synthetic;
pub mod view;

// The canvas backend's batch of filled rectangles: pure, so tested natively too.
#[cfg(any(target_arch = "wasm32", test))]
mod fill_batch;
#[cfg(target_arch = "wasm32")]
mod web;
