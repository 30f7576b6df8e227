//! What every layer of the engine may return or use, at the bottom of the
//! house so that data flows one way (capture → experiment → analysis →
//! study → report → commands → cli) and nothing reaches up for it.

/// A problem with what the user asked for (exit code 2), outside the
/// capture and the experiment file (which have their own typed errors).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);
