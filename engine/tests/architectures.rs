//! Recomputed attention is verified, not assumed, for every architecture
//! the engine recomputes (`engine::capture::RECOMPUTED`): on each, the rows
//! recomputed from the RoPE'd queries and keys equal llama.cpp's own
//! softmax (`kq_soft_max-N`, flash attention off). Real small models where
//! a package ships one (SmolLM2 for `llama`, gemma-3-270m for `gemma3`,
//! with a prompt longer than its 512-token sliding window), and tiny
//! random-weight models that `scripts/tiny_arch_gguf.py` writes for the
//! others, each with the feature that could break the recomputation
//! (grouped-query heads, biases, Q/K norms, an attention-scale key,
//! logit soft-capping, sliding windows shorter than the prompt).

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::capture::{
    AttentionKeep, AttentionPath, AttentionRequest, CaptureRequest, ContextOptions, FlashAttention,
    HiddenRequest, Model, ModelOptions, Session,
};

/// Both paths round q and k to float16 and differ only in the order of
/// float32 sums (llama.cpp's SIMD dot products against our f64 sums, its
/// exp against ours); a 256-wide gemma head sums the most terms, and the
/// worst difference seen on any model is below 2e-6.
const RECOMPUTED_ATTENTION_TOLERANCE: f32 = 1e-5;

/// The sliding window of the tiny models, shorter than the prompt.
const TINY_WINDOW: usize = 8;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// gemma-3-270m, fetched by scripts/fetch-gemma3.sh (scripts/test.sh runs it).
fn gemma3_path() -> PathBuf {
    let path = repo().join("models/gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/fetch-gemma3.sh`",
        path.display()
    );
    path
}

fn load(path: &Path) -> Model {
    Model::load(&ModelOptions {
        path: path.to_path_buf(),
        n_gpu_layers: 0,
    })
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A prompt of about `words` words: short sentences about different
/// people, so that attention has something to pick out.
fn long_prompt(words: usize) -> String {
    let names = ["Hannah", "Max", "Olivia", "Noah", "Emma", "Liam"];
    let doings = [
        "reading a book",
        "cooking dinner",
        "painting a fence",
        "walking the dog",
    ];
    let mut text = String::new();
    let mut i = 0;
    while text.split_whitespace().count() < words {
        text.push_str(&format!(
            "{} is {} in the garden. ",
            names[i % names.len()],
            doings[(i / 3) % doings.len()]
        ));
        i += 1;
    }
    text.push_str("Question: What is Hannah doing? Answer:");
    text
}

/// The largest difference between the recomputed and materialized
/// attention rows of `queries` in `tokens`, over every layer and head;
/// also checks that both paths give the same hidden states.
fn worst_difference(model: &Model, tokens: &[i32], queries: Vec<usize>) -> f32 {
    let request = CaptureRequest {
        hidden: HiddenRequest::Pooled(vec![engine::capture::Pooling::Token(tokens.len() - 1)]),
        attention: Some(AttentionRequest {
            queries,
            keep: AttentionKeep::Rows,
        }),
        final_norm: false,
        all_logits: false,
    };
    let capture = |path| {
        Session::new(
            model,
            ContextOptions {
                n_ctx: 2048,
                threads: 2,
                flash_attention: FlashAttention::Off,
                attention_path: Some(path),
                ..ContextOptions::default()
            },
        )
        .expect("a context")
        .capture(tokens, &request)
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let materialized = capture(AttentionPath::Materialized);
    let recomputed = capture(AttentionPath::Recomputed);
    assert_eq!(materialized.hidden, recomputed.hidden);
    let (a, b) = (
        materialized.attention.expect("attention"),
        recomputed.attention.expect("attention"),
    );
    assert_eq!(a.shape, b.shape);
    // Rows are probabilities: they sum to 1 on both paths.
    for row in a.data.chunks(tokens.len()) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "a row sums to {sum}");
    }
    a.data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

#[test]
fn recomputed_attention_equals_llama_cpps_on_smollm2_and_gemma3() {
    let default = engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"));
    for (path, words) in [(default, 120), (gemma3_path(), 560)] {
        let model = load(&path);
        let tokens = model
            .tokenize(&long_prompt(words), false)
            .expect("tokenize");
        let n = tokens.len();
        if model.info().architecture == "gemma3" {
            // Past the 512-token window: the sliding layers mask the start.
            assert!(n > 560, "the gemma prompt has {n} tokens");
        }
        let worst = worst_difference(&model, &tokens, vec![0, n / 2, n - 1]);
        eprintln!(
            "{} ({n} tokens): recomputed vs materialized attention, max |Δ| = {worst:e}",
            model.info().architecture
        );
        assert!(worst <= RECOMPUTED_ATTENTION_TOLERANCE, "{worst:e}");
    }
}

/// Writes the tiny random-weight model of `arch` and loads it.
fn tiny(dir: &Path, arch: &str) -> Model {
    let tokenizer = engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join(format!("{arch}.gguf"));
    let mut command = Command::new("python3");
    command
        .arg(repo().join("scripts/tiny_arch_gguf.py"))
        .arg(arch)
        .arg("--tokenizer")
        .arg(&tokenizer);
    if arch.starts_with("gemma") {
        command.args(["--sliding-window", &TINY_WINDOW.to_string()]);
    }
    let result = command.arg("-o").arg(&out).output().expect("run python3");
    assert!(
        result.status.success(),
        "{arch}: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let model = load(&out);
    let _ = std::fs::remove_file(&out);
    model
}

#[test]
fn recomputed_attention_equals_llama_cpps_on_every_architecture_it_claims() {
    let dir = std::env::temp_dir().join(format!("engine-archs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    for support in engine::capture::RECOMPUTED {
        let arch = support.architecture;
        let model = tiny(&dir, arch);
        assert_eq!(model.info().architecture, arch);
        assert!(model.info().recomputable, "{arch}");
        let tokens = model.tokenize(&long_prompt(30), false).expect("tokenize");
        let n = tokens.len();
        assert!(n > 3 * TINY_WINDOW);
        let worst = worst_difference(&model, &tokens, vec![1, TINY_WINDOW + 3, n - 1]);
        eprintln!("{arch} (tiny, {n} tokens): max |Δ| = {worst:e}");
        assert!(worst <= RECOMPUTED_ATTENTION_TOLERANCE, "{arch}: {worst:e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_readme_lists_the_architectures_as_the_engine_decides_them() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README");
    let table = engine::capture::architecture_table();
    assert!(
        readme.contains(&table),
        "README.md's table of architectures differs from the engine's; paste this under \"Models\":\n{table}"
    );
}
