//! The top-two logit gap of every greedy choice of an answer: it is the gap
//! of the logits llama.cpp returns, it is the same however the answer is
//! generated (token by token, whole, in a batch), it is exactly 0 where two
//! tokens tie (a tiny model from `scripts/tiny_arch_gguf.py
//! --paired-output-rows`), and the near-tie threshold stays above what
//! switching flash attention moves a gap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use engine::capture::{
    AnswerBatch, CaptureRequest, ContextOptions, FlashAttention, GreedyAnswer, Model, ModelOptions,
    Session,
};
use engine::experiment::Experiment;
use engine::study;
use engine::study::near_ties::NEAR_TIE_LOGIT_GAP;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(path: &Path) -> Model {
    Model::load(&ModelOptions {
        path: path.to_path_buf(),
        n_gpu_layers: 0,
    })
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The default model, SmolLM2-135M-Instruct (Q4_1).
fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        load(&engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}")))
    })
}

fn session(model: &Model, flash_attention: FlashAttention) -> Session<'_> {
    Session::new(
        model,
        ContextOptions {
            n_ctx: 1024,
            threads: 2,
            flash_attention,
            ..ContextOptions::default()
        },
    )
    .expect("a context")
}

/// The `paper` preset and its tokens on the default model.
fn paper() -> &'static (Experiment, study::Tokenized) {
    static PAPER: OnceLock<(Experiment, study::Tokenized)> = OnceLock::new();
    PAPER.get_or_init(|| {
        let experiment = Experiment::preset("paper").unwrap_or_else(|e| panic!("{e}"));
        let tokenized = study::tokenize_all(model(), &experiment).expect("tokenize");
        (experiment, tokenized)
    })
}

/// A few prompts of the paper preset: 0-shot and k-shot prompts of both
/// tasks (each task's first target, then one further on).
fn a_few_paper_prompts() -> Vec<usize> {
    let experiment = &paper().0;
    let mut picked = Vec::new();
    for task in 0..experiment.tasks.len() {
        for shots_wanted in [false, true] {
            let mut of_kind = experiment
                .prompts
                .iter()
                .filter(|p| p.task == task && (p.shots > 0) == shots_wanted);
            picked.extend(of_kind.next().map(|p| p.id));
            picked.extend(of_kind.nth(4).map(|p| p.id));
        }
    }
    picked
}

/// The answer's stop rule in a study: after the first newline.
fn newline(token: i32) -> bool {
    model().token_bytes(token).contains(&b'\n')
}

/// The largest logit minus the second largest, found by sorting.
fn top1_minus_top2(logits: &[f32]) -> f32 {
    let mut sorted = logits.to_vec();
    sorted.sort_by(|a, b| b.total_cmp(a));
    sorted[0] - sorted[1]
}

/// The answer of the prompt `s` captured last, generated one token per call
/// (each call runs the token the one before chose) and stopped as a study
/// stops it; checks each gap against the logits llama.cpp returned for
/// that choice.
fn one_token_at_a_time(s: &mut Session<'_>, max_new: usize) -> GreedyAnswer {
    let mut answer = GreedyAnswer::default();
    while answer.tokens.len() < max_new {
        let step = s.continue_greedy_until(1, |_| false).expect("one token");
        assert_eq!(step.gaps.len(), 1, "one choice per call");
        assert_eq!(
            step.gaps[0].to_bits(),
            top1_minus_top2(s.last_logits()).to_bits()
        );
        answer.gaps.extend(&step.gaps);
        let Some(&token) = step.tokens.first() else {
            break;
        };
        answer.tokens.push(token);
        if newline(token) {
            break;
        }
    }
    answer
}

#[test]
fn every_gap_is_top1_minus_top2_of_the_logits_llama_cpp_returned_for_its_choice() {
    let (experiment, tokenized) = paper();
    let max_new = experiment.file.capture.max_new_tokens;
    let mut s = session(model(), FlashAttention::Auto);
    for p in a_few_paper_prompts() {
        let prompt = &tokenized.tokens[p];
        let logits = s
            .capture(prompt, &CaptureRequest::default())
            .expect("capture")
            .logits_last;
        let answer = s.continue_greedy_until(max_new, newline).expect("answer");
        // The first choice is made from the prompt's own last logits.
        assert_eq!(
            answer.gaps[0].to_bits(),
            top1_minus_top2(&logits).to_bits(),
            "prompt {p}"
        );
        let ended_by_eog = answer
            .tokens
            .last()
            .is_none_or(|&t| !newline(t) && answer.tokens.len() < max_new);
        assert_eq!(
            answer.gaps.len(),
            answer.tokens.len() + usize::from(ended_by_eog),
            "prompt {p}: {answer:?}"
        );
        s.capture(prompt, &CaptureRequest::default())
            .expect("capture");
        assert_eq!(one_token_at_a_time(&mut s, max_new), answer, "prompt {p}");
    }
}

/// How far an answer's gaps may move in a batch with flash attention off:
/// the softmax then sums in an order that follows the cache layout, so the
/// logits round differently (measured on these prompts: 0.12 at most; with
/// flash attention on, the gaps are the same bits).
const BATCH_GAP_TOLERANCE: f32 = 0.25;

#[test]
fn answers_generated_in_a_batch_have_the_gaps_of_answers_generated_alone() {
    let (experiment, tokenized) = paper();
    let max_new = experiment.file.capture.max_new_tokens;
    let prompts = a_few_paper_prompts();
    for flash_attention in [FlashAttention::Auto, FlashAttention::Off] {
        let mut s = session(model(), flash_attention);
        let mut batch = AnswerBatch::new(model(), prompts.len(), 4096, 2, flash_attention)
            .expect("an answer context");
        let mut alone = Vec::new();
        for &p in &prompts {
            s.capture(&tokenized.tokens[p], &CaptureRequest::default())
                .expect("capture");
            batch.push(&s).expect("push");
            alone.push(s.continue_greedy_until(max_new, newline).expect("answer"));
        }
        let batched = batch.generate(max_new, newline).expect("generate");
        if flash_attention == FlashAttention::Auto {
            assert_eq!(batched, alone);
            continue;
        }
        for ((a, b), p) in batched.iter().zip(&alone).zip(&prompts) {
            // The choices made after the same tokens, up to where the
            // answers part (a near-tie) or end.
            let same = a.tokens.iter().zip(&b.tokens).take_while(|(x, y)| x == y);
            let comparable = (same.count() + 1).min(a.gaps.len()).min(b.gaps.len());
            for (x, y) in a.gaps[..comparable].iter().zip(&b.gaps[..comparable]) {
                assert!(
                    (x - y).abs() <= BATCH_GAP_TOLERANCE,
                    "prompt {p}: gaps {:?} in a batch, {:?} alone",
                    a.gaps,
                    b.gaps
                );
            }
        }
    }
}

/// A tiny random-weight llama whose output rows come in identical pairs
/// (`scripts/tiny_arch_gguf.py --paired-output-rows`): tokens 2i and 2i+1
/// always get the same logit.
fn paired_model(dir: &Path) -> Model {
    let tokenizer = engine::default_model::resolve(None).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.join("paired.gguf");
    let result = Command::new("python3")
        .arg(repo().join("scripts/tiny_arch_gguf.py"))
        .args(["llama", "--paired-output-rows", "--tokenizer"])
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
    let model = load(&out);
    let _ = std::fs::remove_file(&out);
    model
}

#[test]
fn every_choice_of_a_model_with_paired_output_rows_is_an_exact_tie_won_by_the_lower_token() {
    let dir = std::env::temp_dir().join(format!("engine-near-ties-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    let model = paired_model(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let prompts = [
        "The capital of France is",
        "Hannah is reading a book. Max is",
    ];
    let max_new = 12;
    let mut s = session(&model, FlashAttention::Auto);
    let mut batch =
        AnswerBatch::new(&model, prompts.len(), 256, 2, FlashAttention::Auto).expect("a context");
    let mut alone = Vec::new();
    for text in prompts {
        let tokens = model.tokenize(text, false).expect("tokenize");
        let logits = s
            .capture(&tokens, &CaptureRequest::default())
            .expect("capture")
            .logits_last;
        // The float16 rows stayed identical: so do their logits, bit for bit.
        assert_eq!(logits.len() % 2, 0);
        for pair in logits.chunks(2) {
            assert_eq!(pair[0].to_bits(), pair[1].to_bits(), "{text:?}");
        }
        batch.push(&s).expect("push");
        alone.push(s.continue_greedy_until(max_new, |_| false).expect("answer"));
    }
    let batched = batch.generate(max_new, |_| false).expect("generate");
    assert!(alone.iter().any(|a| !a.tokens.is_empty()), "{alone:?}");
    for (answer, text) in alone.iter().chain(&batched).zip(prompts.iter().cycle()) {
        assert!(!answer.gaps.is_empty(), "{text:?}");
        assert!(
            answer.gaps.iter().all(|g| g.to_bits() == 0.0f32.to_bits()),
            "{text:?}: gaps {:?}",
            answer.gaps
        );
        assert!(
            answer.tokens.iter().all(|t| t % 2 == 0),
            "{text:?}: the tie goes to the lower token, but the answer is {:?}",
            answer.tokens
        );
    }
    assert_eq!(batched, alone);
}

/// Every row of logits at which `answer`'s greedy choices were made after
/// `prompt`: the prompt and the answer run teacher-forced in one capture.
fn choice_logits(
    session: &mut Session<'_>,
    prompt: &[i32],
    answer: &GreedyAnswer,
) -> Vec<Vec<f32>> {
    let mut tokens = prompt.to_vec();
    tokens.extend_from_slice(&answer.tokens);
    let request = CaptureRequest {
        all_logits: true,
        ..CaptureRequest::default()
    };
    let logits = session
        .capture(&tokens, &request)
        .expect("capture")
        .logits_all
        .expect("all logits");
    let n_vocab = logits.shape[1];
    (0..answer.gaps.len())
        .map(|k| {
            let row = prompt.len() - 1 + k;
            logits.data[row * n_vocab..(row + 1) * n_vocab].to_vec()
        })
        .collect()
}

/// How far switching flash attention on moves the greedy choices of some
/// answers (generated with it off, then teacher-forced with it on and off).
#[derive(Debug, Default)]
struct FlashRounding {
    /// The largest change of any logit at any choice.
    logit: f32,
    /// The largest change of any choice's top-two gap.
    gap: f32,
    /// The flash-off gap of each choice that flash attention flips.
    flipped: Vec<f32>,
    choices: usize,
}

fn flash_rounding(prompts: &[usize]) -> FlashRounding {
    let (experiment, tokenized) = paper();
    let max_new = experiment.file.capture.max_new_tokens;
    let mut off = session(model(), FlashAttention::Off);
    let mut on = session(model(), FlashAttention::On);
    let mut rounding = FlashRounding::default();
    for &p in prompts {
        let prompt = &tokenized.tokens[p];
        off.capture(prompt, &CaptureRequest::default())
            .expect("capture");
        let answer = off.continue_greedy_until(max_new, newline).expect("answer");
        let (a, b) = (
            choice_logits(&mut off, prompt, &answer),
            choice_logits(&mut on, prompt, &answer),
        );
        for (x, y) in a.iter().zip(&b) {
            let worst = x
                .iter()
                .zip(y)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            rounding.logit = rounding.logit.max(worst);
            let gap = top1_minus_top2(x);
            rounding.gap = rounding.gap.max((gap - top1_minus_top2(y)).abs());
            if argmax(x) != argmax(y) {
                rounding.flipped.push(gap);
            }
            rounding.choices += 1;
        }
    }
    rounding
}

/// The first index of the largest value.
fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Measured on these prompts: logits move by up to 1.76, gaps by up to
/// 0.56, and the one choice flipped (an answer that ends at once with flash
/// attention off and reads " Lucas is eating dinner." with it on) had a
/// gap of 0.10.
#[test]
fn flash_attention_moves_no_gap_as_far_as_the_near_tie_threshold() {
    let rounding = flash_rounding(&a_few_paper_prompts());
    eprintln!("flash attention on vs off: {rounding:?}");
    assert!(rounding.gap < NEAR_TIE_LOGIT_GAP, "{rounding:?}");
    // A flipped choice was a near-tie.
    assert!(
        rounding.flipped.iter().all(|&g| g < NEAR_TIE_LOGIT_GAP),
        "{rounding:?}"
    );
}

/// The measurement behind [`NEAR_TIE_LOGIT_GAP`]'s figures.
#[test]
#[ignore = "a measurement: every prompt of the paper preset (40 minutes on two cores)"]
fn measure_flash_rounding_on_every_paper_prompt() {
    let all: Vec<usize> = (0..paper().0.prompts.len()).collect();
    eprintln!("{} prompts: {:?}", all.len(), flash_rounding(&all));
}
