//! Behaviour before and after in-context learning: accuracy, error and the
//! unparseable rate per condition and overall, and each target instance's
//! improvement from 0-shot to k-shot (the behaviour side of the
//! behaviour ↔ representation correlation).

use super::analyze::ModelRun;
use super::capture::PromptRecord;
use super::export::{num, Table};
use crate::experiment::{Experiment, Scoring};

/// Behaviour of one group of prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct BehaviorSummary {
    pub n: usize,
    pub accuracy: f64,
    /// Mean |ŷ − y| over parseable answers (numeric tasks; NaN otherwise).
    pub mean_error: f64,
    pub median_error: f64,
    pub unparseable_rate: f64,
}

pub fn summarize(records: &[&PromptRecord]) -> BehaviorSummary {
    let n = records.len();
    let correct = records.iter().filter(|r| r.score.correct).count();
    let mut errors: Vec<f64> = records.iter().filter_map(|r| r.score.error).collect();
    errors.sort_by(f64::total_cmp);
    let unparseable = records.iter().filter(|r| r.score.unparseable).count();
    let mean_error = if errors.is_empty() {
        f64::NAN
    } else {
        errors.iter().sum::<f64>() / errors.len() as f64
    };
    let median_error = match errors.len() {
        0 => f64::NAN,
        m if m % 2 == 1 => errors[m / 2],
        m => (errors[m / 2 - 1] + errors[m / 2]) / 2.0,
    };
    BehaviorSummary {
        n,
        accuracy: correct as f64 / n.max(1) as f64,
        mean_error,
        median_error,
        unparseable_rate: unparseable as f64 / n.max(1) as f64,
    }
}

/// Records of one task and ICL state, in target order; the k-shot state is
/// the first demonstration draw's.
pub fn state_records<'r>(
    experiment: &Experiment,
    records: &'r [PromptRecord],
    task: usize,
    shots: usize,
) -> Vec<&'r PromptRecord> {
    draw_records(experiment, records, task, shots, 0)
}

/// Records of one task and ICL state in demonstration draw `draw` (the
/// 0-shot prompts, shared by every draw, are draw 0), in target order.
pub fn draw_records<'r>(
    experiment: &Experiment,
    records: &'r [PromptRecord],
    task: usize,
    shots: usize,
    draw: usize,
) -> Vec<&'r PromptRecord> {
    let draw = if shots == 0 { 0 } else { draw };
    let mut chosen: Vec<&PromptRecord> = records
        .iter()
        .filter(|r| {
            let p = &experiment.prompts[r.prompt];
            p.task == task && p.shots == shots && p.draw == draw
        })
        .collect();
    chosen.sort_by_key(|r| experiment.prompts[r.prompt].target);
    chosen
}

/// Per target instance: how much better the k-shot answer is than the
/// 0-shot one. Numeric tasks: error reduction (NaN when either answer is
/// unparseable); others: correctness gain (−1, 0 or 1).
pub fn improvement(experiment: &Experiment, records: &[PromptRecord], task: usize) -> Vec<f64> {
    improvement_in_draw(experiment, records, task, 0)
}

/// [`improvement`] with the k-shot prompts of demonstration draw `draw`.
pub fn improvement_in_draw(
    experiment: &Experiment,
    records: &[PromptRecord],
    task: usize,
    draw: usize,
) -> Vec<f64> {
    let t = &experiment.tasks[task];
    let zero = state_records(experiment, records, task, 0);
    let k = draw_records(experiment, records, task, t.shots, draw);
    zero.iter()
        .zip(&k)
        .map(|(a, b)| match t.scoring {
            Scoring::Number => match (a.score.error, b.score.error) {
                (Some(e0), Some(ek)) => e0 - ek,
                _ => f64::NAN,
            },
            Scoring::Keywords => {
                f64::from(u8::from(b.score.correct)) - f64::from(u8::from(a.score.correct))
            }
        })
        .collect()
}

/// `behavior.csv`: one row per model, task, ICL state and condition (and
/// `all` for the whole task).
pub fn behavior_table(experiment: &Experiment, runs: &[ModelRun]) -> Table {
    let mut table = Table::new(&[
        "model",
        "task",
        "shots",
        "condition",
        "n",
        "accuracy",
        "mean_error",
        "median_error",
        "unparseable_rate",
    ]);
    for ModelRun {
        name: model,
        records,
        ..
    } in runs
    {
        for (t, task) in experiment.tasks.iter().enumerate() {
            for shots in [0, task.shots] {
                let state = state_records(experiment, records, t, shots);
                let mut groups: Vec<(String, Vec<&PromptRecord>)> = task
                    .conditions
                    .iter()
                    .enumerate()
                    .map(|(c, name)| {
                        let members = state
                            .iter()
                            .copied()
                            .filter(|r| {
                                task.instances[experiment.prompts[r.prompt].target].condition == c
                            })
                            .collect();
                        (name.clone(), members)
                    })
                    .collect();
                groups.push(("all".to_string(), state.clone()));
                for (condition, members) in groups {
                    let s = summarize(&members);
                    table.push(vec![
                        model.clone(),
                        task.name.clone(),
                        shots.to_string(),
                        condition,
                        s.n.to_string(),
                        num(s.accuracy),
                        num(s.mean_error),
                        num(s.median_error),
                        num(s.unparseable_rate),
                    ]);
                }
            }
        }
    }
    table
}

/// `near_ties.csv`: per model, task, ICL state and demonstration draw, how
/// many answers turn on a near-tie (a greedy choice whose top two logits
/// are closer than `threshold`, so that rounding alone could flip it), and
/// the behaviour with those answers left out.
pub fn near_tie_table(experiment: &Experiment, runs: &[ModelRun], threshold: f32) -> Table {
    let mut table = Table::new(&[
        "model",
        "task",
        "shots",
        "draw",
        "threshold",
        "n",
        "near_ties",
        "accuracy",
        "accuracy_without_near_ties",
        "mean_error",
        "mean_error_without_near_ties",
    ]);
    let draws = experiment.file.robustness.variants();
    for run in runs {
        for (t, task) in experiment.tasks.iter().enumerate() {
            let states = std::iter::once((0, 0)).chain((0..draws).map(|d| (task.shots, d)));
            for (shots, draw) in states {
                let all = draw_records(experiment, &run.records, t, shots, draw);
                let clear: Vec<&PromptRecord> = all
                    .iter()
                    .copied()
                    .filter(|r| !super::near_ties::is_near_tie(&r.answer_gaps, threshold))
                    .collect();
                let (with, without) = (summarize(&all), summarize(&clear));
                table.push(vec![
                    run.name.clone(),
                    task.name.clone(),
                    shots.to_string(),
                    draw.to_string(),
                    num(f64::from(threshold)),
                    with.n.to_string(),
                    (with.n - without.n).to_string(),
                    num(with.accuracy),
                    num(without.accuracy),
                    num(with.mean_error),
                    num(without.mean_error),
                ]);
            }
        }
    }
    table
}
