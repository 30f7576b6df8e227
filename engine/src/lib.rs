//! The engine: runs GGUF models through llama.cpp, captures what they compute
//! inside, and (in later stages) analyses and publishes it.
//!
//! Data flows one way: `capture` → `experiment` → `analysis` → `study` →
//! `report` → `commands` → `cli`; errors and fingerprints live at the bottom
//! (`errors`, `fingerprint`), where every layer may use them.

pub mod analysis;
pub mod atomic;
pub mod capture;
pub mod cli;
mod commands;
pub mod default_model;
pub mod errors;
pub mod experiment;
pub mod fingerprint;
pub mod npz;
pub mod progress;
pub mod report;
pub mod study;
