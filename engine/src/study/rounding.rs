//! The rounding check (`engine report --check-rounding`): kernel
//! sensitivity measured, not assumed. Flash attention on and off compute
//! the same function and differ only in how llama.cpp rounds (its fused
//! kernel keeps queries and partial sums in float16), so rerunning prompts
//! with the other setting shows how far rounding alone moves the captured
//! numbers, and which greedy answers it flips (those that turned on a
//! near-tie, [`super::near_ties`]).
//!
//! A deterministic sample of the run's answer batches (a draw under the
//! experiment's seed, [`sample_batches`]) is captured and answered again in
//! a second context that differs from the run's only in its flash-attention
//! setting ([`other_setting`]): same context size, same answer batches
//! (an answer's rounding can depend on the prompts beside it,
//! [`crate::capture::AnswerBatch`]), same attention path. Each prompt is
//! then compared with the run's record ([`compare`]). Nothing of the rerun
//! reaches the cache, the bundle's arrays or an analysis.
//!
//! The change of an array is measured per analysed layer, where the scale
//! is comparable: absolute, `max_i |a_i − b_i|`, and relative, that over
//! `max_i |a_i|` (the run's values `a`); the largest over layers is kept.
//! Differences are taken in f64 from the f32 values (exact for values of
//! similar size: f64 holds the 24 bits of both and their offset).

use std::ops::ControlFlow;

use super::capture::{answer_batches, answer_context, capture_batch, tokenize_all, PromptRecord};
use super::export::{num, Table};
use crate::analysis::resample::named_rng;
use crate::capture::{
    AttentionPath, AttentionPlan, CaptureError, ContextOptions, FlashAttention, Model, Session,
};
use crate::experiment::Experiment;

/// Prompts the check reruns when `--check-rounding-prompts` is not given:
/// enough to see whether rounding flips answers at all, at the cost of
/// capturing two dozen prompts once more (a tenth of the `paper` preset's
/// 240).
pub const DEFAULT_PROMPTS: usize = 24;

/// The file the check's rows go to, in the report's `data/` folder.
pub const TABLE_FILE: &str = "rounding_check.csv";

/// The largest change of one array between the two settings, over its
/// layers (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Change {
    /// `max |a − b|`, in the array's own unit.
    pub absolute: f64,
    /// `max |a − b| / max |a|`, per layer.
    pub relative: f64,
}

impl Change {
    /// The larger of two changes, field by field.
    fn max(self, other: Change) -> Change {
        Change {
            absolute: self.absolute.max(other.absolute),
            relative: self.relative.max(other.relative),
        }
    }
}

/// One rerun prompt beside the run's record of it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PromptComparison {
    pub prompt: usize,
    pub task: String,
    pub shots: usize,
    /// The run's greedy answer, and the rerun's.
    pub answer: String,
    pub answer_other: String,
    pub answer_changed: bool,
    pub score_changed: bool,
    /// The run answer's narrowest top-two logit gap (infinite for an
    /// answer of no choices): a flipped answer should have a small one.
    pub min_gap: f32,
    /// The pooled hidden state of each analysed layer (`embedding`).
    pub embedding: Change,
    /// The attention mass on the relevant and distractor spans, where the
    /// task has them and the check compares attention.
    pub attention: Option<Change>,
}

/// What the rounding check found on one model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RoundingCheck {
    /// `flash attention off instead of auto`, or the like.
    pub other_setting: String,
    /// Whether attention was compared: only where the run recomputed it
    /// (llama.cpp's own probabilities exist only with flash attention off,
    /// so a run that read those has no attention with flash attention on).
    pub compares_attention: bool,
    /// Prompts rerun (whole answer batches: at least the number asked for,
    /// or every prompt).
    pub prompts: usize,
    pub answers_changed: usize,
    pub scores_changed: usize,
    /// The largest relative change of a pooled hidden state.
    pub largest_embedding_change: f64,
    pub largest_embedding_change_abs: f64,
    /// The largest change of an attention mass, relative and absolute;
    /// `None` when attention was not compared or no rerun task has spans.
    pub largest_attention_change: Option<f64>,
    pub largest_attention_change_abs: Option<f64>,
    /// Ids of the prompts whose answer changed.
    pub changed_prompts: Vec<usize>,
    /// Every rerun prompt, in id order.
    pub rows: Vec<PromptComparison>,
}

impl RoundingCheck {
    /// What the report's manifest keeps of the check (its rows are in
    /// `data/rounding_check.csv`).
    pub fn entry(&self) -> viewer::bundle::RoundingEntry {
        viewer::bundle::RoundingEntry {
            other_setting: self.other_setting.clone(),
            prompts: self.prompts,
            answers_changed: self.answers_changed,
            scores_changed: self.scores_changed,
            largest_embedding_change: self.largest_embedding_change,
            largest_attention_change: self.largest_attention_change,
        }
    }
}

/// The setting the check reruns with, and what it compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherSetting {
    pub flash_attention: FlashAttention,
    /// `Some(path)` when attention is compared (the run's own path).
    pub attention_path: Option<AttentionPath>,
    /// `flash attention off instead of auto`.
    pub description: String,
}

fn setting_name(f: FlashAttention) -> &'static str {
    match f {
        FlashAttention::Auto => "auto",
        FlashAttention::On => "on",
        FlashAttention::Off => "off",
    }
}

/// The other flash-attention setting of a run planned as `plan`. A run
/// that recomputed attention reruns with the opposite setting on the same
/// path (`auto` turns flash attention on wherever llama.cpp supports it,
/// so its opposite is `off`) and compares attention too. A run that read
/// llama.cpp's probabilities (flash attention off) reruns with it on and
/// compares answers and hidden states only.
pub fn other_setting(plan: &AttentionPlan) -> OtherSetting {
    let flash_attention = match plan.flash_attention {
        FlashAttention::Off => FlashAttention::On,
        FlashAttention::On | FlashAttention::Auto => FlashAttention::Off,
    };
    let attention_path = (plan.path == AttentionPath::Recomputed).then_some(plan.path);
    OtherSetting {
        flash_attention,
        attention_path,
        description: format!(
            "flash attention {} instead of {}",
            setting_name(flash_attention),
            setting_name(plan.flash_attention)
        ),
    }
}

/// The answer batches to rerun (indices into `batches`, in order): drawn
/// under `seed` until they hold at least `want` prompts. Whole batches,
/// because an answer is generated beside the prompts of its batch.
pub fn sample_batches(batches: &[Vec<usize>], want: usize, seed: u64) -> Vec<usize> {
    let mut rng = named_rng(seed, "rounding-check");
    let mut chosen = Vec::new();
    let mut prompts = 0;
    for b in rng.permutation(batches.len()) {
        if prompts >= want {
            break;
        }
        prompts += batches[b].len();
        chosen.push(b);
    }
    chosen.sort_unstable();
    chosen
}

/// The change from `a` (the run's) to `b`, both `[layers, width]`, per
/// layer (see the module documentation). A layer whose run values are all
/// zero counts its absolute change as relative (0 when nothing moved).
pub fn change_by_layer(a: &[f32], b: &[f32], layers: usize) -> Change {
    if layers == 0 || a.is_empty() {
        return Change::default();
    }
    let width = a.len().div_ceil(layers);
    a.chunks(width)
        .zip(b.chunks(width))
        .map(|(a, b)| {
            let mut absolute = 0f64;
            let mut scale = 0f64;
            for (&x, &y) in a.iter().zip(b) {
                absolute = absolute.max((f64::from(x) - f64::from(y)).abs());
                scale = scale.max(f64::from(x).abs());
            }
            let relative = if scale > 0.0 {
                absolute / scale
            } else {
                absolute
            };
            Change { absolute, relative }
        })
        .fold(Change::default(), Change::max)
}

/// The run's record of a prompt beside its rerun, over `layers` analysed
/// layers.
pub fn compare(
    experiment: &Experiment,
    run: &PromptRecord,
    other: &PromptRecord,
    layers: usize,
) -> PromptComparison {
    let p = &experiment.prompts[run.prompt];
    let attention = match (&run.attention_mass, &other.attention_mass) {
        (Some(a), Some(b)) => Some(change_by_layer(a, b, layers)),
        _ => None,
    };
    PromptComparison {
        prompt: run.prompt,
        task: experiment.tasks[p.task].name.clone(),
        shots: p.shots,
        answer: run.generated.clone(),
        answer_other: other.generated.clone(),
        answer_changed: run.generated != other.generated,
        score_changed: run.score != other.score,
        min_gap: super::near_ties::min_gap(&run.answer_gaps),
        embedding: change_by_layer(&run.embedding, &other.embedding, layers),
        attention,
    }
}

/// The check's totals over its `rows`.
pub fn summarize(setting: &OtherSetting, mut rows: Vec<PromptComparison>) -> RoundingCheck {
    rows.sort_by_key(|r| r.prompt);
    let embedding = rows
        .iter()
        .map(|r| r.embedding)
        .fold(Change::default(), Change::max);
    let attention = rows.iter().filter_map(|r| r.attention).reduce(Change::max);
    RoundingCheck {
        other_setting: setting.description.clone(),
        compares_attention: setting.attention_path.is_some(),
        prompts: rows.len(),
        answers_changed: rows.iter().filter(|r| r.answer_changed).count(),
        scores_changed: rows.iter().filter(|r| r.score_changed).count(),
        largest_embedding_change: embedding.relative,
        largest_embedding_change_abs: embedding.absolute,
        largest_attention_change: attention.map(|c| c.relative),
        largest_attention_change_abs: attention.map(|c| c.absolute),
        changed_prompts: rows
            .iter()
            .filter(|r| r.answer_changed)
            .map(|r| r.prompt)
            .collect(),
        rows,
    }
}

impl RoundingCheck {
    /// One line for the run's output.
    pub fn summary_line(&self) -> String {
        let answers = if self.answers_changed == 1 {
            "answer"
        } else {
            "answers"
        };
        let mut line = format!(
            "rounding check ({}, {} prompts): {} {answers} of {} changed ({} scores); largest change of a pooled hidden state {:.1e} (relative)",
            self.other_setting,
            self.prompts,
            self.answers_changed,
            self.prompts,
            self.scores_changed,
            self.largest_embedding_change,
        );
        match (self.compares_attention, self.largest_attention_change) {
            (true, Some(change)) => {
                line += &format!(", of an attention mass {change:.1e} (relative)")
            }
            (true, None) => {}
            (false, _) => line += "; attention not compared (llama.cpp's own probabilities, which this run read, exist only with flash attention off)",
        }
        line
    }
}

/// `rounding_check.csv`: one row per model and rerun prompt.
pub fn table(checks: &[(String, RoundingCheck)]) -> Table {
    let mut table = Table::new(&[
        "model",
        "prompt_id",
        "task",
        "shots",
        "answer",
        "answer_other",
        "changed",
        "score_changed",
        "min_gap",
        "embedding_change",
        "embedding_change_abs",
        "attention_change",
        "attention_change_abs",
    ]);
    let optional = |x: Option<f64>| x.map(num).unwrap_or_default();
    for (model, check) in checks {
        for r in &check.rows {
            table.push(vec![
                model.clone(),
                r.prompt.to_string(),
                r.task.clone(),
                r.shots.to_string(),
                r.answer.clone(),
                r.answer_other.clone(),
                u8::from(r.answer_changed).to_string(),
                u8::from(r.score_changed).to_string(),
                if r.min_gap.is_finite() {
                    num(f64::from(r.min_gap))
                } else {
                    String::new()
                },
                num(r.embedding.relative),
                num(r.embedding.absolute),
                optional(r.attention.map(|c| c.relative)),
                optional(r.attention.map(|c| c.absolute)),
            ]);
        }
    }
    table
}

/// Reruns the answer batches `chosen` ([`sample_batches`]) of
/// `experiment` (as the model sees it) on `model` with the other setting
/// of the run's `plan`, and compares them with the run's `records` (all
/// prompts, in id order). `context` is the run's (its flash attention and
/// path resolved); `after_batch` hears of each batch done with its prompt
/// count, and may stop the check.
#[allow(clippy::too_many_arguments)]
pub fn rerun(
    model: &Model,
    experiment: &Experiment,
    layers: &[usize],
    context: &ContextOptions,
    plan: &AttentionPlan,
    records: &[PromptRecord],
    chosen: &[usize],
    after_batch: &mut dyn FnMut(usize) -> ControlFlow<anyhow::Error>,
) -> anyhow::Result<RoundingCheck> {
    let setting = other_setting(plan);
    let mut experiment = experiment.clone();
    // Without attention to compare, the rerun asks for none: the run's
    // path needs flash attention off.
    if setting.attention_path.is_none() {
        for task in &mut experiment.tasks {
            task.attention_segments = None;
        }
    }
    // Patching's extra reads (the last state, the teacher-forced answer)
    // leave the greedy answer as it is; the check compares neither.
    experiment.file.patching.enabled = false;
    let experiment = &experiment;
    let batches = answer_batches(experiment);
    let tokenized = tokenize_all(model, experiment)?;
    // The run's context size: kernels choose their split by the cache's size.
    let run_options = super::context_for(experiment, &tokenized, model, context.clone())?;
    let options = ContextOptions {
        flash_attention: setting.flash_attention,
        attention_path: setting.attention_path,
        ..run_options
    };
    let mut session = Session::new(model, options)?;
    if setting.attention_path.is_some() {
        session.check_graph()?;
    }
    let mut answers = answer_context(&session, experiment, &tokenized)?;
    let mut rows = Vec::new();
    for &b in chosen {
        let batch = batches.get(b).ok_or_else(|| {
            CaptureError::BadRequest(format!(
                "the rounding check has no answer batch {b}: the experiment has {}",
                batches.len()
            ))
        })?;
        let reruns = capture_batch(
            &mut session,
            answers.as_mut(),
            experiment,
            &tokenized,
            batch,
            layers,
        )?;
        for other in &reruns {
            let run = records.get(other.prompt).ok_or_else(|| {
                CaptureError::BadRequest(format!(
                    "the run has no record of prompt {} to compare",
                    other.prompt
                ))
            })?;
            if run.embedding.len() != other.embedding.len() {
                return Err(CaptureError::Decode(format!(
                    "prompt {}: the rerun captured {} numbers of pooled hidden states, the run {}",
                    other.prompt,
                    other.embedding.len(),
                    run.embedding.len()
                ))
                .into());
            }
            rows.push(compare(experiment, run, other, layers.len()));
        }
        if let ControlFlow::Break(stop) = after_batch(batch.len()) {
            return Err(stop);
        }
    }
    Ok(summarize(&setting, rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::scoring::Score;

    fn record(
        prompt: usize,
        embedding: Vec<f32>,
        attention: Option<Vec<f32>>,
        answer: &str,
    ) -> PromptRecord {
        PromptRecord {
            prompt,
            n_tokens: 10,
            token_spans: Vec::new(),
            embedding,
            attention_mass: attention,
            span_lengths: None,
            generated: answer.into(),
            answer_gaps: vec![2.5, 0.125],
            score: Score {
                correct: answer == " 7",
                error: None,
                unparseable: false,
            },
            last_state: None,
            answer_logprobs: None,
        }
    }

    fn recomputed(flash_attention: FlashAttention) -> AttentionPlan {
        AttentionPlan {
            path: AttentionPath::Recomputed,
            flash_attention,
            reason: String::new(),
        }
    }

    #[test]
    fn a_change_is_relative_to_its_own_layer() {
        // Layer 0 values near 100 move by 1; layer 1 values near 1 move by
        // 0.5: the small layer's change is the larger relative one.
        let a = [100.0, -50.0, 1.0, 0.25];
        let b = [99.0, -50.0, 1.0, 0.75];
        let change = change_by_layer(&a, &b, 2);
        assert_eq!(change.absolute, 1.0);
        assert_eq!(change.relative, 0.5);
        assert_eq!(change_by_layer(&a, &a, 2), Change::default());
    }

    #[test]
    fn a_layer_of_zeros_counts_its_absolute_change() {
        assert_eq!(change_by_layer(&[0.0, 0.0], &[0.0, 0.0], 1).relative, 0.0);
        assert_eq!(change_by_layer(&[0.0, 0.0], &[0.0, 0.5], 1).relative, 0.5);
    }

    #[test]
    fn a_flipped_answer_is_counted_with_its_score_and_changes() {
        let experiment = Experiment::preset("linear-regression").expect("preset");
        let p = &experiment.prompts[3];
        let run = record(3, vec![2.0, 4.0, 1.0, 1.0], Some(vec![0.5, 0.25]), " 7");
        let same = record(3, vec![2.0, 4.0, 1.0, 1.0], Some(vec![0.5, 0.25]), " 7");
        let moved = record(3, vec![2.0, 4.5, 1.0, 1.0], Some(vec![0.5, 0.3]), " 8");

        let unchanged = compare(&experiment, &run, &same, 2);
        assert!(!unchanged.answer_changed && !unchanged.score_changed);
        assert_eq!(unchanged.embedding, Change::default());
        assert_eq!(unchanged.task, experiment.tasks[p.task].name);
        assert_eq!(unchanged.shots, p.shots);
        assert_eq!(unchanged.min_gap, 0.125);

        let flipped = compare(&experiment, &run, &moved, 2);
        assert!(flipped.answer_changed && flipped.score_changed);
        assert_eq!(flipped.embedding.absolute, 0.5);
        assert_eq!(flipped.embedding.relative, 0.125);
        // The second layer's attention: 0.05 on a largest mass of 0.25,
        // in f64 from the f32 values.
        let attention = flipped.attention.expect("attention compared");
        let moved_by = f64::from(0.3f32) - 0.25;
        assert_eq!(attention.absolute, moved_by);
        assert_eq!(attention.relative, moved_by / 0.25);

        let setting = other_setting(&recomputed(FlashAttention::Auto));
        let check = summarize(&setting, vec![flipped, unchanged]);
        assert_eq!(
            (check.prompts, check.answers_changed, check.scores_changed),
            (2, 1, 1)
        );
        assert_eq!(check.changed_prompts, vec![3]);
        assert_eq!(check.largest_embedding_change, 0.125);
        assert_eq!(check.largest_attention_change, Some(moved_by / 0.25));
        assert_eq!(
            check.summary_line(),
            "rounding check (flash attention off instead of auto, 2 prompts): 1 answer of 2 changed (1 scores); \
             largest change of a pooled hidden state 1.2e-1 (relative), of an attention mass 2.0e-1 (relative)"
        );
        let table = table(&[("m".into(), check)]);
        let task = &experiment.tasks[p.task].name;
        let shots = p.shots.to_string();
        let flipped_row = table
            .rows
            .iter()
            .find(|r| r[6] == "1")
            .expect("a changed row");
        assert_eq!(
            flipped_row[..10],
            ["m", "3", task, &shots, " 7", " 8", "1", "1", "0.125", "0.125"]
        );
    }

    #[test]
    fn the_other_setting_flips_flash_attention_and_compares_attention_only_on_the_recomputed_path()
    {
        let off = other_setting(&recomputed(FlashAttention::On));
        assert_eq!(off.flash_attention, FlashAttention::Off);
        assert_eq!(off.attention_path, Some(AttentionPath::Recomputed));
        assert_eq!(off.description, "flash attention off instead of on");
        let materialized = other_setting(&AttentionPlan {
            path: AttentionPath::Materialized,
            flash_attention: FlashAttention::Off,
            reason: String::new(),
        });
        assert_eq!(materialized.flash_attention, FlashAttention::On);
        assert_eq!(materialized.attention_path, None);
        let check = summarize(&materialized, Vec::new());
        assert!(check.summary_line().contains("attention not compared"));
    }

    #[test]
    fn the_sample_is_whole_batches_drawn_under_the_seed() {
        let batches: Vec<Vec<usize>> = (0..10).map(|b| vec![3 * b, 3 * b + 1, 3 * b + 2]).collect();
        let sample = sample_batches(&batches, 7, 42);
        assert_eq!(sample.len(), 3, "7 prompts take three batches of 3");
        assert!(sample.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample, sample_batches(&batches, 7, 42));
        assert_ne!(sample, sample_batches(&batches, 7, 43));
        assert_eq!(
            sample_batches(&batches, 1000, 42),
            (0..10).collect::<Vec<_>>()
        );
    }
}
