//! `engine report` on the models a researcher brings, with default flags:
//! gemma-3-270m (gemma3, 18 layers, sliding windows) works the first time,
//! beside SmolLM2 (llama, 30 layers) in one report; the attention path each
//! model took is in the run record and the bundle; a chat model is prompted
//! through its template, and the report shows the rendered prompt; a flag
//! an architecture cannot serve is refused before any capture.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SMALL_EXPERIMENT: &str = include_str!("fixtures/small-experiment.toml");

fn engine(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engine"))
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1790000000")
        .output()
        .expect("run the engine binary")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("engine-models-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn gemma3() -> String {
    let path = repo().join("models/gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/fetch-gemma3.sh`",
        path.display()
    );
    path.display().to_string()
}

fn smollm2() -> String {
    engine::default_model::resolve(None)
        .unwrap_or_else(|e| panic!("{e}"))
        .display()
        .to_string()
}

fn ok(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn manifest(dir: &Path) -> viewer::bundle::Manifest {
    engine::report::read_bundle(&dir.join(viewer::bundle::FILE_NAME))
        .expect("bundle")
        .manifest
}

/// The rows of a results table of the report.
fn rows(dir: &Path, table: &str) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("data").join(format!("{table}.csv")))
        .unwrap_or_else(|e| panic!("{table}.csv: {e}"));
    text.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn gemma3_beside_smollm2_works_with_default_flags_each_on_its_own_attention_path() {
    let dir = scratch("side-by-side");
    let experiment = dir.join("small.toml");
    std::fs::write(&experiment, SMALL_EXPERIMENT).expect("write experiment");
    let out = dir.join("report");
    let (gemma, smollm) = (gemma3(), smollm2());
    let stderr = ok(&engine(&[
        "report",
        experiment.to_str().expect("utf-8"),
        "--model",
        &smollm,
        "--model",
        &gemma,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    // One line per model says which path and why.
    assert!(
        stderr.contains("attention `gemma3`: attention recomputed"),
        "{stderr}"
    );
    assert!(
        stderr.contains("attention `llama`: attention recomputed"),
        "{stderr}"
    );
    let m = manifest(&out);
    let layers: Vec<(String, usize)> = m
        .models
        .iter()
        .map(|e| (e.architecture.clone(), e.n_layer))
        .collect();
    assert_eq!(
        layers,
        vec![("llama".to_string(), 30), ("gemma3".to_string(), 18)]
    );
    for model in &m.models {
        assert_eq!(model.attention_path.as_deref(), Some("recomputed"));
        assert!(model.chat.is_none());
    }
    // Every table, for both models; attention masses present.
    for table in [
        "prompts",
        "behavior",
        "rsa_alignment",
        "prompt_alignment",
        "probe",
        "attention_ratio",
        "correlation",
    ] {
        let rows = rows(&out, table);
        for model in &m.models {
            assert!(
                rows.iter().any(|r| r[0] == model.name),
                "{table}.csv has no row of {}",
                model.name
            );
        }
    }
    let attention = rows(&out, "attention_ratio");
    assert!(attention
        .iter()
        .all(|r| r.iter().all(|v| !v.contains("NaN"))));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("run.json")).expect("run.json"))
            .expect("json");
    let paths: Vec<&str> = record["models"]
        .as_array()
        .expect("models")
        .iter()
        .map(|m| m["attention"].as_str().expect("attention recorded"))
        .collect();
    assert!(paths.iter().all(|p| p.contains("recomputed")), "{paths:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn flash_attention_off_by_hand_gives_gemma3_the_materialized_path() {
    let dir = scratch("gemma-off");
    let experiment = dir.join("small.toml");
    std::fs::write(&experiment, SMALL_EXPERIMENT).expect("write experiment");
    let out = dir.join("off");
    let gemma = gemma3();
    let stderr = ok(&engine(&[
        "report",
        experiment.to_str().expect("utf-8"),
        "--model",
        &gemma,
        "--flash-attn",
        "off",
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        stderr.contains("llama.cpp's own attention probabilities (flash attention off, as asked)"),
        "{stderr}"
    );
    assert_eq!(
        manifest(&out).models[0].attention_path.as_deref(),
        Some("materialized")
    );
    assert!(!rows(&out, "attention_ratio").is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_chat_model_is_prompted_through_its_template_and_the_report_shows_it() {
    let dir = scratch("chat");
    let experiment = dir.join("chat.toml");
    std::fs::write(
        &experiment,
        SMALL_EXPERIMENT.replacen("[capture]\n", "[capture]\nchat_template = \"model\"\n", 1),
    )
    .expect("write experiment");
    let out = dir.join("report");
    ok(&engine(&[
        "report",
        "-q",
        experiment.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    let m = manifest(&out);
    let chat = m.models[0]
        .chat
        .as_ref()
        .expect("the chat template is recorded");
    assert_eq!(chat.origin, "model");
    assert!(chat.template.contains("<|im_start|>"));
    let html = std::fs::read_to_string(out.join("index.html")).expect("index.html");
    assert!(html.contains("a chat turn (template from its GGUF)"));
    assert!(html.contains("sees it (its chat template)"));
    assert!(html.contains(
        "The chat template SmolLM2-135M-Instruct.Q4_1's prompts went through (from its GGUF)"
    ));
    assert!(html.contains("&lt;|im_start|&gt;assistant"));
    // The same experiment on a base model without a template: exit 2, a
    // clear sentence, nothing written.
    let refused = dir.join("refused");
    let gemma = gemma3();
    let result = engine(&[
        "report",
        "-q",
        experiment.to_str().expect("utf-8"),
        "--model",
        &gemma,
        "--out",
        refused.to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("has no chat template in its GGUF"),
        "{stderr}"
    );
    assert!(!refused.join(viewer::bundle::FILE_NAME).exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tiny random-weight model of `gemma` (the first Gemma), an
/// architecture the engine does not recompute (scripts/tiny_arch_gguf.py).
fn tiny_gemma(dir: &Path) -> String {
    let out = dir.join("gemma.gguf");
    let result = Command::new("python3")
        .arg(repo().join("scripts/tiny_arch_gguf.py"))
        .arg("gemma")
        .arg("--tokenizer")
        .arg(smollm2())
        .arg("-o")
        .arg(&out)
        .output()
        .expect("run python3");
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    out.display().to_string()
}

#[test]
fn an_architecture_without_recomputation_materializes_beside_one_that_recomputes() {
    let dir = scratch("materialized");
    let experiment = dir.join("small.toml");
    std::fs::write(&experiment, SMALL_EXPERIMENT).expect("write experiment");
    let gemma = tiny_gemma(&dir);
    let smollm = smollm2();
    let out = dir.join("report");
    let stderr = ok(&engine(&[
        "report",
        experiment.to_str().expect("utf-8"),
        "--model",
        &gemma,
        "--model",
        &smollm,
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    assert!(
        stderr.contains("attention `gemma`: llama.cpp's own attention probabilities, flash attention off (recomputation is verified only for llama"),
        "{stderr}"
    );
    let m = manifest(&out);
    let paths: Vec<Option<&str>> = m
        .models
        .iter()
        .map(|e| e.attention_path.as_deref())
        .collect();
    assert_eq!(paths, vec![Some("materialized"), Some("recomputed")]);
    let attention = rows(&out, "attention_ratio");
    for model in &m.models {
        assert!(attention.iter().any(|r| r[0] == model.name));
    }

    // `--flash-attn on` cannot serve it: exit 2 before any capture.
    let refused = dir.join("refused");
    let result = engine(&[
        "report",
        "-q",
        experiment.to_str().expect("utf-8"),
        "--model",
        &gemma,
        "--flash-attn",
        "on",
        "--out",
        refused.to_str().expect("utf-8"),
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--flash-attn on cannot be used with `gemma`"),
        "{stderr}"
    );
    assert!(!stderr.contains("captured"), "{stderr}");
    assert!(!refused.exists(), "nothing is written");
    let _ = std::fs::remove_dir_all(&dir);
}
