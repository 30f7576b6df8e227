//! Prompts as each model sees them: plain text with the model's own BOS
//! rule (SmolLM2 adds none, gemma adds `<bos>`), or one chat turn through
//! the model's template (SmolLM2-Instruct's ChatML) or an inline one
//! (Vicuna's `USER:`/`ASSISTANT:`). In every case the labelled segments map
//! to the tokens of their own text, the template's markers are single
//! special tokens, and the 0-shot and k-shot prompts of a target agree
//! token for token from the query on: the demonstrations are the only
//! difference.

use std::path::{Path, PathBuf};

use engine::capture::{Model, ModelOptions};
use engine::experiment::{Experiment, ExperimentFile};
use engine::study;

const SMALL: &str = include_str!("../../tests/fixtures/small-experiment.toml");

const VICUNA: &str = "{% for message in messages %}{% if message['role'] == 'user' %}USER: {{ message['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}";

fn load(path: &Path) -> Model {
    Model::load(&ModelOptions {
        path: path.to_path_buf(),
        n_gpu_layers: 0,
    })
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn default_path() -> PathBuf {
    engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"))
}

fn gemma3_path() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/fetch-gemma3.sh`",
        path.display()
    );
    path
}

/// The small experiment with `capture.chat_template` set to `template`.
fn experiment_with(template: Option<&str>) -> Experiment {
    let text = match template {
        None => SMALL.to_string(),
        Some(t) => SMALL.replacen(
            "[capture]\n",
            &format!("[capture]\nchat_template = {}\n", toml_string(t)),
            1,
        ),
    };
    Experiment::build(
        ExperimentFile::parse(&text, "small").expect("parse"),
        "small",
        Some(&text),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string is a TOML basic string")
}

/// Checks segments, special tokens and the 0-shot/k-shot pairing of the
/// prompts `experiment` gives `model`; returns the first prompt's text.
fn check_prompts(model: &Model, experiment: &Experiment) -> String {
    let (seen, chat) = study::prompting::prompts_for_model(experiment, "m", model.info())
        .unwrap_or_else(|e| panic!("{e}"));
    let tokenized = study::tokenize_all(model, &seen).expect("tokenize");
    for (i, p) in seen.prompts.iter().enumerate() {
        let tokens = &tokenized.tokens[i];
        // BOS exactly as the model's metadata says, and only once.
        let bos = model.tokenize("x", false).expect("tokenize")[0];
        let starts_with_bos = model.info().adds_bos;
        assert_eq!(tokens[0] == bos, starts_with_bos, "prompt {i}");
        assert!(
            !starts_with_bos || tokens[1] != bos,
            "two BOS in prompt {i}"
        );
        // Every segment's tokens spell its text.
        for (label, ranges) in &p.segments {
            let bytes = &ranges[0];
            let span = engine::experiment::spans::tokens_in(&tokenized.anchors[i], bytes);
            let spelled = model.detokenize(&tokens[span]);
            assert_eq!(
                spelled.trim(),
                p.text[bytes.clone()].trim(),
                "segment {label} of prompt {i}"
            );
        }
    }
    if let Some(chat) = &chat {
        // The template's markers are special tokens, one each.
        let first = &seen.prompts[0].text;
        if first.contains("<|im_start|>") {
            let marker = model.tokenize("<|im_start|>", true).expect("tokenize");
            assert_eq!(marker.len(), 1 + usize::from(model.info().adds_bos));
            assert!(tokenized.tokens[0].contains(marker.last().expect("a token")));
        }
        assert!(!chat.template.is_empty());
    }
    // The pairing: from the query on, the 0-shot and k-shot prompts of a
    // target are the same tokens.
    for zero in seen.prompts.iter().filter(|p| p.shots == 0) {
        let k = seen
            .prompts
            .iter()
            .find(|q| q.task == zero.task && q.target == zero.target && q.shots > 0)
            .expect("a k-shot prompt");
        let tail = |p: &engine::experiment::Prompt| {
            let query = &p.segments["query"][0];
            let from = engine::experiment::spans::tokens_in(&tokenized.anchors[p.id], query).start;
            tokenized.tokens[p.id][from..].to_vec()
        };
        assert_eq!(
            tail(zero),
            tail(k),
            "target {} of task {}",
            zero.target,
            zero.task
        );
    }
    seen.prompts[0].text.clone()
}

#[test]
fn plain_prompts_follow_each_models_bos_rule_and_pair_token_for_token() {
    let plain = experiment_with(None);
    let smollm = load(&default_path());
    assert!(!smollm.info().adds_bos);
    let text = check_prompts(&smollm, &plain);
    assert_eq!(text, plain.prompts[0].text);
    let gemma = load(&gemma3_path());
    assert!(gemma.info().adds_bos, "gemma adds <bos>");
    check_prompts(&gemma, &plain);
}

#[test]
fn the_models_chatml_template_makes_each_prompt_a_user_turn() {
    let smollm = load(&default_path());
    let experiment = experiment_with(Some("model"));
    let text = check_prompts(&smollm, &experiment);
    assert!(text.starts_with("<|im_start|>system\n"), "{text}");
    assert!(text.contains(&format!(
        "<|im_start|>user\n{}<|im_end|>",
        experiment.prompts[0].text
    )));
    assert!(text.ends_with("<|im_start|>assistant\n"), "{text}");
}

#[test]
fn an_inline_vicuna_template_renders_user_and_assistant_turns() {
    let experiment = experiment_with(Some(VICUNA));
    for path in [default_path(), gemma3_path()] {
        let model = load(&path);
        let text = check_prompts(&model, &experiment);
        assert_eq!(
            text,
            format!("USER: {}\nASSISTANT:", experiment.prompts[0].text)
        );
    }
}

#[test]
fn a_model_without_a_template_asked_for_its_own_is_a_clear_error() {
    let gemma = load(&gemma3_path());
    let err =
        study::prompting::prompts_for_model(&experiment_with(Some("model")), "gemma", gemma.info())
            .expect_err("gemma-3-270m has no chat template");
    let message = err.to_string();
    assert!(
        message.contains("has no chat template in its GGUF"),
        "{message}"
    );
    assert!(message.contains("capture.chat_template"), "{message}");
}

#[test]
fn a_bad_chat_template_value_is_refused_naming_the_key_and_its_line() {
    for (value, expected) in [
        ("chatml", "must be `none`, `model`"),
        ("{% for m in messages %}", "does not compile"),
    ] {
        let text = SMALL.replacen(
            "[capture]\n",
            &format!("[capture]\nchat_template = {}\n", toml_string(value)),
            1,
        );
        let err = Experiment::build(
            ExperimentFile::parse(&text, "small.toml").expect("parse"),
            "small.toml",
            Some(&text),
        )
        .expect_err("refused")
        .to_string();
        assert!(err.contains("capture.chat_template"), "{err}");
        assert!(err.contains("line 4"), "{err}");
        assert!(err.contains(expected), "{err}");
    }
}
