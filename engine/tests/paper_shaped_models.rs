//! The paper-shaped random-weight models of `scripts/paper_shaped_gguf.py`:
//! llama.cpp loads them with the shapes of Llama-2 7B and 70B (one block of
//! each, so the test stays small: 0.3 and 0.9 GB), the default model's
//! tokenizer tokenizes as usual, a forward pass stays finite, and on the
//! 70B shape (64 query heads over 8 KV heads) the recomputed attention
//! equals llama.cpp's own softmax.

use std::path::{Path, PathBuf};
use std::process::Command;

use engine::capture::{
    AttentionKeep, AttentionPath, AttentionRequest, CaptureRequest, ContextOptions, FlashAttention,
    HiddenRequest, Model, ModelOptions, Session,
};

/// As in capture_real_model.rs: both paths round q and k to float16 and
/// differ only in the order of float32 sums; a 128-wide head sums more
/// terms than SmolLM2's 64, well within the margin.
const RECOMPUTED_ATTENTION_TOLERANCE: f32 = 1e-5;

const STORY: &str = "Hannah is reading a book in the garden. Max is cooking dinner for his family. Question: What is Hannah doing? Answer:";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-shaped-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Writes the `shape` model with its first block only and loads it.
fn shaped(dir: &Path, shape: &str) -> Model {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/paper_shaped_gguf.py");
    let tokenizer = engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join(format!("{shape}-1.gguf"));
    let result = Command::new("python3")
        .arg(&script)
        .arg(shape)
        .args(["--blocks", "1", "--tokenizer"])
        .arg(&tokenizer)
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run python3");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let model = Model::load(&ModelOptions {
        path: out.clone(),
        n_gpu_layers: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // The model holds the file mapped; the name can go now.
    let _ = std::fs::remove_file(&out);
    model
}

fn session(model: &Model, path: AttentionPath) -> Session<'_> {
    Session::new(
        model,
        ContextOptions {
            n_ctx: 256,
            threads: 2,
            flash_attention: FlashAttention::Off,
            attention_path: Some(path),
            ..ContextOptions::default()
        },
    )
    .expect("a context")
}

#[test]
fn paper_shaped_models_load_with_their_shapes_and_run() {
    let dir = scratch("load");
    let default = Model::load(&ModelOptions {
        path: engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}")),
        n_gpu_layers: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    for (shape, width, heads, kv_heads) in
        [("llama2-7b", 4096, 32, 32), ("llama2-70b", 8192, 64, 8)]
    {
        let model = shaped(&dir, shape);
        let info = model.info();
        assert_eq!(
            (
                info.architecture.as_str(),
                info.n_layer,
                info.n_embd,
                info.n_head,
                info.n_head_kv,
                info.n_vocab
            ),
            ("llama", 1, width, heads, kv_heads, default.info().n_vocab),
            "{shape}"
        );
        // The default model's tokenizer, token for token.
        assert_eq!(
            model.tokenize(STORY, false).expect("tokenize"),
            default.tokenize(STORY, false).expect("tokenize"),
            "{shape}"
        );
        let tokens = model.tokenize(STORY, false).expect("tokenize");
        let request = CaptureRequest {
            hidden: HiddenRequest::All,
            attention: Some(AttentionRequest {
                queries: vec![tokens.len() - 1],
                keep: AttentionKeep::Rows,
            }),
            final_norm: false,
            all_logits: false,
        };
        let materialized = session(&model, AttentionPath::Materialized)
            .capture(&tokens, &request)
            .expect("capture");
        assert!(materialized.logits_last.iter().all(|x| x.is_finite()));
        let hidden = materialized.hidden.as_ref().expect("hidden");
        assert!(hidden.data.iter().all(|x| x.is_finite()), "{shape}");
        let recomputed = session(&model, AttentionPath::Recomputed)
            .capture(&tokens, &request)
            .expect("capture");
        let (a, b) = (
            materialized.attention.expect("attention"),
            recomputed.attention.expect("attention"),
        );
        assert_eq!(a.shape, b.shape);
        let worst = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{shape}: recomputed vs materialized attention, max |Δ| = {worst:e}");
        assert!(
            worst <= RECOMPUTED_ATTENTION_TOLERANCE,
            "{shape}: {worst:e}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_generator_refuses_bad_input_with_exit_2() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/paper_shaped_gguf.py");
    let dir = scratch("bad");
    let not_gguf = dir.join("not.gguf");
    std::fs::write(&not_gguf, "hello").expect("write");
    let tokenizer = engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"));
    for (args, expected) in [
        (
            vec![
                "llama2-70b".into(),
                "--blocks".into(),
                "81".into(),
                "--tokenizer".into(),
                tokenizer.display().to_string(),
            ],
            "has 80 blocks; pass 1 to 80",
        ),
        (
            vec![
                "llama2-7b".into(),
                "--tokenizer".into(),
                not_gguf.display().to_string(),
            ],
            "is not a GGUF file",
        ),
    ] {
        let result = Command::new("python3")
            .arg(&script)
            .args(&args)
            .arg("-o")
            .arg(dir.join("out.gguf"))
            .output()
            .expect("run python3");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert_eq!(result.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
        assert!(!dir.join("out.gguf").exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
