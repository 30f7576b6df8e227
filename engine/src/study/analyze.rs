//! Every analysis of the study for every model, task, ICL state and layer,
//! gathered into the tidy tables the report and the exports are made of.
//!
//! The analyses themselves live in [`crate::analysis`]; this file only
//! slices the captured records and names the results.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use super::behavior::{self, draw_records, improvement_in_draw, state_records};
use super::capture::PromptRecord;
use super::export::{num, Table};
use crate::analysis::attention_ratio::{attention_ratios, log2_ratio};
use crate::analysis::correlation::behavior_representation_correlation;
use crate::analysis::probe::{logistic_probe_gram, numeric_confidence, ridge_probe_gram};
use crate::analysis::resample::derive_seed;
use crate::analysis::rsa::{
    cosine_from_gram, prompt_level_alignment, standardized_gram, Comparator,
};
use crate::analysis::rsa_bootstrap::{bootstrap_alignments, bootstrap_ci, bootstrap_group_draws};
use crate::analysis::rsa_permutation::permutation_p_values_across_layers;
use crate::analysis::stats::benjamini_hochberg;
use crate::analysis::stats::percentile_interval;
use crate::analysis::{AnalysisError, Embeddings, SquareMatrix};
use crate::capture::ModelInfo;
use crate::experiment::config::ParamValue;
use crate::experiment::{Experiment, Task};
use viewer::bundle::{model_array, task_array, upper_len, Tensor};

/// One model's captured run.
#[derive(Debug, Clone)]
pub struct ModelRun {
    pub name: String,
    pub info: ModelInfo,
    /// Block indices analysed, in order; embeddings hold these layers.
    pub layers: Vec<usize>,
    pub records: Vec<PromptRecord>,
    /// SHA-256 of the model file.
    pub sha256: String,
    pub capture_seconds: f64,
    /// The ICL-patching runs, when the experiment asks for them.
    pub patching: Option<super::patching::ModelPatching>,
    /// How its attention was read, decided before the first prompt.
    pub attention: crate::capture::AttentionPlan,
    /// The chat template its prompts were rendered through, if any.
    pub chat: Option<viewer::bundle::ChatEntry>,
}

/// Every result table of a study.
#[derive(Debug, Clone, Default)]
pub struct StudyResults {
    pub prompts: Table,
    pub behavior: Table,
    pub rsa_alignment: Table,
    pub prompt_alignment: Table,
    pub probe: Table,
    pub attention_ratio: Table,
    pub correlation: Table,
    /// ICL patching: every patched run, and the recovered fractions (empty
    /// tables when patching did not run; then they are not written).
    pub patching: Table,
    pub patching_recovery: Table,
    /// The same results as arrays, named and shaped as the report bundle
    /// lays them out (see `docs/bundle.md`): what the figures are drawn from.
    pub arrays: BTreeMap<String, Tensor>,
    /// Per task: the representation measures correlated with behaviour, in
    /// the order of the `correlation` and `measure_delta` arrays.
    pub measures: BTreeMap<String, Vec<String>>,
    /// Per task: what the `patching*` arrays hold, when patching ran.
    pub patching_entries: BTreeMap<String, viewer::bundle::PatchingEntry>,
    /// Each finding in every demonstration draw, and its spread across
    /// draws (empty tables with one draw; then they are not written).
    pub robustness_draws: Table,
    pub robustness: Table,
    /// Per task: what the `robustness` arrays hold, with several draws.
    pub robustness_entries: BTreeMap<String, viewer::bundle::RobustnessEntry>,
    /// Answers that turn on a near-tie, per model, task, state and draw.
    pub near_ties: Table,
}

impl StudyResults {
    /// The array `name` of `shape`, created filled with NaN on first use.
    fn array(&mut self, name: String, shape: &[usize]) -> &mut Tensor {
        self.arrays
            .entry(name)
            .or_insert_with(|| Tensor::nan(shape))
    }
}

impl StudyResults {
    /// Writes `behavior.csv`, `rsa_alignment.csv`, ... into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        for (name, table) in self.tables() {
            if !table.header.is_empty() {
                table.write(&dir.join(format!("{name}.csv")))?;
            }
        }
        Ok(())
    }

    pub fn tables(&self) -> [(&'static str, &Table); 12] {
        [
            ("near_ties", &self.near_ties),
            ("robustness", &self.robustness),
            ("robustness_draws", &self.robustness_draws),
            ("patching", &self.patching),
            ("patching_recovery", &self.patching_recovery),
            ("prompts", &self.prompts),
            ("behavior", &self.behavior),
            ("rsa_alignment", &self.rsa_alignment),
            ("prompt_alignment", &self.prompt_alignment),
            ("probe", &self.probe),
            ("attention_ratio", &self.attention_ratio),
            ("correlation", &self.correlation),
        ]
    }
}

fn comparator(name: &str) -> Comparator {
    match name {
        "kendall-tau-a" => Comparator::KendallTauA,
        "pearson" => Comparator::Pearson,
        _ => Comparator::Spearman,
    }
}

/// A stable 64-bit stream id for a named purpose (FNV-1a), so that the same
/// permutations and folds serve every model and both ICL states.
fn stream(name: &str) -> u64 {
    crate::analysis::resample::named_stream(name)
}

/// Per-target measures of one task and ICL state, `[layer][target]`, for the
/// behaviour ↔ representation correlation; and the state's findings, for
/// their comparison across demonstration draws.
#[derive(Debug, Default)]
pub(super) struct StateMeasures {
    /// `(hypothesis, [layer][target])`: prompt-level alignment (headline comparator).
    pub alignment: Vec<(String, Vec<Vec<f64>>)>,
    /// `[layer][target]`: log2 of the head-mean attention ratio.
    pub attention: Option<Vec<Vec<f64>>>,
    /// `(parameter, [layer][target])`: out-of-fold probe confidence.
    pub probe: Vec<(String, Vec<Vec<f64>>)>,
    /// `[hypothesis][comparator][layer]`: the alignment.
    pub alignment_values: Vec<Vec<Vec<f64>>>,
    /// `[hypothesis][layer][replicate]`: the headline comparator's bootstrap
    /// alignments (the same resamples of targets in both states).
    pub alignment_replicates: Vec<Vec<Vec<f64>>>,
    /// `[parameter][layer]`: the probe's cross-validated score.
    pub probe_values: Vec<Vec<f64>>,
}

/// One ICL state of one demonstration draw, and whether the p-values of
/// every comparator and the intervals of the other comparators are needed
/// (they are for the first draw, whose tables the report shows; later draws
/// only feed the comparison across draws).
#[derive(Debug, Clone, Copy)]
struct StatePass {
    shots: usize,
    draw: usize,
}

impl StatePass {
    fn first(shots: usize) -> StatePass {
        StatePass { shots, draw: 0 }
    }

    fn in_full(&self) -> bool {
        self.draw == 0
    }
}

/// The result tables, with their headers and no rows.
fn empty_results() -> StudyResults {
    StudyResults {
        prompts: Table::default(),
        behavior: Table::default(),
        rsa_alignment: Table::new(&[
            "model",
            "task",
            "shots",
            "layer",
            "hypothesis",
            "comparator",
            "value",
            "p_value",
            "p_adjusted",
            "ci_low",
            "ci_high",
        ]),
        prompt_alignment: Table::new(&[
            "model",
            "task",
            "shots",
            "layer",
            "hypothesis",
            "comparator",
            "prompt_id",
            "target_id",
            "value",
        ]),
        probe: Table::new(&[
            "model",
            "task",
            "shots",
            "layer",
            "parameter",
            "probe",
            "metric",
            "value",
            "penalties",
        ]),
        attention_ratio: Table::new(&[
            "model",
            "task",
            "shots",
            "layer",
            "head",
            "n",
            "log2_ratio",
            "ratio",
            "log2_ratio_normalized",
            "ratio_normalized",
        ]),
        arrays: BTreeMap::new(),
        measures: BTreeMap::new(),
        patching: Table::default(),
        patching_recovery: Table::default(),
        patching_entries: BTreeMap::new(),
        correlation: Table::new(&[
            "model",
            "task",
            "layer",
            "measure",
            "n",
            "pearson_r",
            "pearson_p",
            "spearman_rho",
            "spearman_p",
        ]),
        robustness_draws: Table::default(),
        robustness: Table::default(),
        robustness_entries: BTreeMap::new(),
        near_ties: Table::default(),
    }
}

/// Runs every analysis on every model.
pub fn analyze(experiment: &Experiment, runs: &[ModelRun]) -> Result<StudyResults, AnalysisError> {
    let mut prompts = Table::default();
    for run in runs {
        let table = super::export::prompts_table(experiment, &run.name, &run.records);
        prompts.header = table.header;
        prompts.rows.extend(table.rows);
    }
    let mut results = StudyResults {
        prompts,
        behavior: behavior::behavior_table(experiment, runs),
        near_ties: behavior::near_tie_table(experiment, runs, super::near_ties::NEAR_TIE_LOGIT_GAP),
        ..empty_results()
    };
    let draws = experiment.file.robustness.variants();
    for run in runs {
        for (t, task) in experiment.tasks.iter().enumerate() {
            behavior_arrays(experiment, run, t, &mut results);
            let zero = analyze_state(experiment, run, t, StatePass::first(0), &mut results)?;
            let k = analyze_state(
                experiment,
                run,
                t,
                StatePass::first(task.shots),
                &mut results,
            )?;
            let correlated = correlate(experiment, run, t, 0, &zero, &k, &mut results)?;
            if draws > 1 {
                // The task's patching in draw `d`, where patching ran.
                let patching_in = |d: usize| {
                    let patching = run.patching.as_ref()?;
                    let tasks = match d {
                        0 => &patching.tasks,
                        d => patching.later_draws.get(d - 1)?,
                    };
                    tasks.iter().find(|tp| tp.task == t)
                };
                let mut findings = vec![super::robustness::findings(
                    experiment,
                    t,
                    &zero,
                    &k,
                    &correlated,
                    patching_in(0),
                )];
                for draw in 1..draws {
                    // Later draws' tables and arrays are not kept: only
                    // their findings are compared with the first draw's.
                    let mut scratch = empty_results();
                    let pass = StatePass {
                        shots: task.shots,
                        draw,
                    };
                    let k = analyze_state(experiment, run, t, pass, &mut scratch)?;
                    let correlated = correlate(experiment, run, t, draw, &zero, &k, &mut scratch)?;
                    findings.push(super::robustness::findings(
                        experiment,
                        t,
                        &zero,
                        &k,
                        &correlated,
                        patching_in(draw),
                    ));
                }
                super::robustness::record(experiment, run, t, &findings, &mut results);
            }
        }
        if let Some(patching) = &run.patching {
            for tp in &patching.tasks {
                patching_results(experiment, run, tp, &mut results);
            }
        }
    }
    Ok(results)
}

fn analyze_state(
    experiment: &Experiment,
    run: &ModelRun,
    t: usize,
    pass: StatePass,
    results: &mut StudyResults,
) -> Result<StateMeasures, AnalysisError> {
    let shots = pass.shots;
    let task = &experiment.tasks[t];
    let options = &experiment.file.analysis;
    let records = draw_records(experiment, &run.records, t, shots, pass.draw);
    let instances: Vec<_> = records
        .iter()
        .map(|r| &task.instances[experiment.prompts[r.prompt].target])
        .collect();
    let groups: Vec<usize> = instances.iter().map(|i| i.id).collect();
    let n = records.len();
    let dim = run.info.n_embd;
    let key = |layer: usize| {
        vec![
            run.name.clone(),
            task.name.clone(),
            shots.to_string(),
            layer.to_string(),
        ]
    };

    // One standardised Gram matrix per layer serves RSA and both probes.
    // Layers run in parallel (each Gram product is single-threaded).
    let grams = (0..run.layers.len())
        .into_par_iter()
        .map(|li| {
            let mut buffer = vec![0f32; n * dim];
            for (row, r) in records.iter().enumerate() {
                buffer[row * dim..(row + 1) * dim]
                    .copy_from_slice(&r.embedding[li * dim..(li + 1) * dim]);
            }
            standardized_gram(Embeddings::new(&buffer, n, dim)?)
        })
        .collect::<Result<Vec<_>, AnalysisError>>()?;
    let similarities: Vec<SquareMatrix> = grams.iter().map(cosine_from_gram).collect();
    let state = usize::from(shots != 0);
    let n_layers = run.layers.len();
    let rsm = results.array(
        model_array(&run.name, &task.name, "rsm"),
        &[2, n_layers, upper_len(n)],
    );
    for (li, s) in similarities.iter().enumerate() {
        let upper = s.upper_triangle();
        for (slot, v) in rsm.lane_mut(&[state, li]).iter_mut().zip(&upper) {
            *slot = *v as f32;
        }
    }
    let n_hyp = task.hypotheses.len();
    let n_comp = options.comparators.len();

    let mut measures = StateMeasures::default();
    for (hi, hypothesis) in task.hypotheses.iter().enumerate() {
        measures
            .alignment_values
            .push(vec![vec![f64::NAN; n_layers]; n_comp]);
        let h = SquareMatrix::new(n, hypothesis.matrix(&instances))?;
        let shared = results.array(task_array(&task.name, "hypotheses"), &[n_hyp, n, n]);
        for i in 0..n {
            for (j, slot) in shared.lane_mut(&[hi, i]).iter_mut().enumerate() {
                *slot = h.get(i, j) as f32;
            }
        }
        let seed = derive_seed(
            experiment.file.seed,
            stream(&format!("rsa/{}/{}", task.name, hypothesis.name)),
        );
        for (c, name) in options.comparators.iter().enumerate() {
            let cmp = comparator(name);
            let p_values = if pass.in_full() {
                permutation_p_values_across_layers(
                    &similarities,
                    &h,
                    cmp,
                    options.permutations,
                    seed,
                )?
            } else {
                vec![f64::NAN; n_layers]
            };
            let adjusted = benjamini_hochberg(&p_values);
            let mut replicates = Vec::new();
            for (li, s) in similarities.iter().enumerate() {
                let value = crate::analysis::rsa::alignment(s, &h, cmp)?;
                measures.alignment_values[hi][c][li] = value;
                let boot_seed = derive_seed(seed, stream(&format!("bootstrap/{li}")));
                // The headline comparator keeps its bootstrap alignments:
                // both states resample the same targets (same seed, same
                // groups), so their differences give the gain's interval.
                let (low, high) = if c == 0 {
                    let draws = bootstrap_group_draws(&groups, options.bootstrap, boot_seed);
                    let values = bootstrap_alignments(s, &h, cmp, &groups, &draws)?;
                    let interval = percentile_interval(&values, options.confidence);
                    replicates.push(values);
                    interval
                } else if pass.in_full() {
                    bootstrap_ci(
                        s,
                        &h,
                        cmp,
                        &groups,
                        options.bootstrap,
                        boot_seed,
                        options.confidence,
                    )?
                } else {
                    (f64::NAN, f64::NAN)
                };
                let mut row = key(run.layers[li]);
                row.extend([
                    hypothesis.name.clone(),
                    name.clone(),
                    num(value),
                    num(p_values[li]),
                    num(adjusted[li]),
                    num(low),
                    num(high),
                ]);
                results.rsa_alignment.push(row);
                let alignment = results.array(
                    model_array(&run.name, &task.name, "alignment"),
                    &[2, n_hyp, n_comp, n_layers, 5],
                );
                for (f, x) in [value, p_values[li], adjusted[li], low, high]
                    .into_iter()
                    .enumerate()
                {
                    alignment.set(&[state, hi, c, li, f], x);
                }
            }
            if c == 0 {
                measures.alignment_replicates.push(replicates);
                let mut per_layer = Vec::with_capacity(similarities.len());
                for (li, s) in similarities.iter().enumerate() {
                    let values = prompt_level_alignment(s, &h, cmp)?;
                    for (r, v) in records.iter().zip(&values) {
                        let mut row = key(run.layers[li]);
                        let target = experiment.prompts[r.prompt].target;
                        row.extend([
                            hypothesis.name.clone(),
                            name.clone(),
                            r.prompt.to_string(),
                            target.to_string(),
                            num(*v),
                        ]);
                        results.prompt_alignment.push(row);
                    }
                    per_layer.push(values);
                }
                measures
                    .alignment
                    .push((hypothesis.name.clone(), per_layer));
            }
        }
    }

    let fold_seed = derive_seed(
        experiment.file.seed,
        stream(&format!("probe/{}", task.name)),
    );
    let folds = options.cv_folds.min(groups.len());
    let n_probes = task.probes.len();
    for (pi, target) in task.probes.iter().enumerate() {
        let mut per_layer = Vec::with_capacity(grams.len());
        let mut scores = Vec::with_capacity(grams.len());
        for (li, g) in grams.iter().enumerate() {
            let (metric, value, penalties, confidence) = if target.numeric {
                let y: Vec<f64> = instances
                    .iter()
                    .map(|i| param_number(&i.params, &target.param))
                    .collect();
                let probe =
                    ridge_probe_gram(g, &y, &groups, folds, &options.ridge_alphas, fold_seed)?;
                (
                    "r2",
                    probe.r2,
                    probe.alphas_chosen,
                    numeric_confidence(&probe.predictions, &y),
                )
            } else {
                let (labels, n_classes) = categories(&instances, &target.param);
                let probe = logistic_probe_gram(
                    g,
                    &labels,
                    n_classes,
                    &groups,
                    folds,
                    &options.logistic_cs,
                    fold_seed,
                )?;
                (
                    "accuracy",
                    probe.accuracy,
                    probe.cs_chosen,
                    probe.true_class_probability,
                )
            };
            let mut row = key(run.layers[li]);
            let kind = if target.numeric { "ridge" } else { "logistic" };
            let penalties = penalties
                .iter()
                .map(|p| format!("{p}"))
                .collect::<Vec<_>>()
                .join(" ");
            row.extend([
                target.param.clone(),
                kind.to_string(),
                metric.to_string(),
                num(value),
                penalties,
            ]);
            results.probe.push(row);
            results
                .array(
                    model_array(&run.name, &task.name, "probe"),
                    &[2, n_probes, n_layers],
                )
                .set(&[state, pi, li], value);
            per_layer.push(confidence);
            scores.push(value);
        }
        measures.probe.push((target.param.clone(), per_layer));
        measures.probe_values.push(scores);
    }

    if task.attention_segments.is_some() {
        measures.attention = Some(attention(run, &records, shots, task, results)?);
    }
    Ok(measures)
}

/// Attention ratios per prompt, summarised per layer and head over prompts
/// as the mean log2 ratio (ratios are skewed; the geometric mean is its 2^).
fn attention(
    run: &ModelRun,
    records: &[&PromptRecord],
    shots: usize,
    task: &Task,
    results: &mut StudyResults,
) -> Result<Vec<Vec<f64>>, AnalysisError> {
    let n_layers = run.layers.len();
    let n_head = run.info.n_head;
    let n_targets = records.len();
    let state = usize::from(shots != 0);
    let mut per_prompt = Vec::with_capacity(records.len());
    for (t, r) in records.iter().enumerate() {
        let (Some(mass), Some((len_r, len_d))) = (&r.attention_mass, r.span_lengths) else {
            continue;
        };
        let masses = results.array(
            model_array(&run.name, &task.name, "attention_mass"),
            &[2, n_layers, n_head, n_targets, 2],
        );
        for li in 0..n_layers {
            for h in 0..n_head {
                let lane = masses.lane_mut(&[state, li, h]);
                lane[2 * t] = mass[(li * n_head + h) * 2];
                lane[2 * t + 1] = mass[(li * n_head + h) * 2 + 1];
            }
        }
        let spans = results.array(
            model_array(&run.name, &task.name, "span_lengths"),
            &[2, n_targets, 2],
        );
        spans.set(&[state, t, 0], len_r as f64);
        spans.set(&[state, t, 1], len_d as f64);
        let at = |li: usize, h: usize, s: usize| f64::from(mass[(li * n_head + h) * 2 + s]);
        let relevant: Vec<Vec<f64>> = (0..n_layers)
            .map(|li| (0..n_head).map(|h| at(li, h, 0)).collect())
            .collect();
        let distractor: Vec<Vec<f64>> = (0..n_layers)
            .map(|li| (0..n_head).map(|h| at(li, h, 1)).collect())
            .collect();
        per_prompt.push(attention_ratios(&relevant, &distractor, len_r, len_d)?);
    }
    let mean_finite = |values: &mut dyn Iterator<Item = f64>| -> (f64, usize) {
        let finite: Vec<f64> = values.filter(|v| v.is_finite()).collect();
        let n = finite.len();
        (
            if n == 0 {
                f64::NAN
            } else {
                finite.iter().sum::<f64>() / n as f64
            },
            n,
        )
    };
    let mut head_mean_log = vec![Vec::with_capacity(per_prompt.len()); n_layers];
    for li in 0..n_layers {
        for head in 0..=n_head {
            // head == n_head is the average over heads (mean of per-head log2 ratios).
            let log_of = |p: &crate::analysis::attention_ratio::AttentionRatios,
                          normalized: bool| {
                let table = if normalized {
                    &p.per_head_length_normalized
                } else {
                    &p.per_head
                };
                if head < n_head {
                    log2_ratio(table[li][head])
                } else {
                    let logs: Vec<f64> = table[li]
                        .iter()
                        .map(|&x| log2_ratio(x))
                        .filter(|x| x.is_finite())
                        .collect();
                    if logs.is_empty() {
                        f64::NAN
                    } else {
                        logs.iter().sum::<f64>() / logs.len() as f64
                    }
                }
            };
            let (log_mean, n) = mean_finite(&mut per_prompt.iter().map(|p| log_of(p, false)));
            let (log_norm, _) = mean_finite(&mut per_prompt.iter().map(|p| log_of(p, true)));
            if head == n_head {
                head_mean_log[li] = per_prompt.iter().map(|p| log_of(p, false)).collect();
            }
            let summary = results.array(
                model_array(&run.name, &task.name, "attention_ratio"),
                &[2, n_layers, n_head + 1, 2],
            );
            summary.set(&[state, li, head, 0], log_mean);
            summary.set(&[state, li, head, 1], log_norm);
            let head_label = if head < n_head {
                head.to_string()
            } else {
                "mean".to_string()
            };
            results.attention_ratio.push(vec![
                run.name.clone(),
                task.name.clone(),
                shots.to_string(),
                run.layers[li].to_string(),
                head_label,
                n.to_string(),
                num(log_mean),
                num(log_mean.exp2()),
                num(log_norm),
                num(log_norm.exp2()),
            ]);
        }
    }
    Ok(head_mean_log)
}

/// What the behaviour ↔ representation correlation of one draw found.
#[derive(Debug)]
pub(super) struct Correlated {
    /// Per target: the behaviour's improvement from 0-shot to k-shot.
    pub improvement: Vec<f64>,
    /// Per measure: its Pearson r with the improvement, per layer.
    pub pearson: Vec<(String, Vec<f64>)>,
}

fn correlate(
    experiment: &Experiment,
    run: &ModelRun,
    t: usize,
    draw: usize,
    zero: &StateMeasures,
    k: &StateMeasures,
    results: &mut StudyResults,
) -> Result<Correlated, AnalysisError> {
    let task = &experiment.tasks[t];
    let delta_behavior = improvement_in_draw(experiment, &run.records, t, draw);
    let delta = |a: &[Vec<f64>], b: &[Vec<f64>]| -> Vec<Vec<f64>> {
        a.iter()
            .zip(b)
            .map(|(x, y)| x.iter().zip(y).map(|(u, v)| v - u).collect())
            .collect()
    };
    let mut measures: Vec<(String, Vec<Vec<f64>>)> = Vec::new();
    for ((name, a), (_, b)) in zero.alignment.iter().zip(&k.alignment) {
        measures.push((format!("alignment: {name}"), delta(a, b)));
    }
    if let (Some(a), Some(b)) = (&zero.attention, &k.attention) {
        measures.push(("attention ratio (log2)".to_string(), delta(a, b)));
    }
    for ((name, a), (_, b)) in zero.probe.iter().zip(&k.probe) {
        measures.push((format!("probe confidence: {name}"), delta(a, b)));
    }
    let n_layers = run.layers.len();
    let n_targets = delta_behavior.len();
    let improvement = results.array(
        model_array(&run.name, &task.name, "improvement"),
        &[n_targets],
    );
    for (slot, v) in improvement.data.iter_mut().zip(&delta_behavior) {
        *slot = *v as f32;
    }
    let names: Vec<String> = measures.iter().map(|(name, _)| name.clone()).collect();
    let n_measures = names.len();
    results.measures.insert(task.name.clone(), names);
    let mut pearson = Vec::with_capacity(n_measures);
    for (mi, (measure, per_layer)) in measures.into_iter().enumerate() {
        let correlations = behavior_representation_correlation(&delta_behavior, &per_layer)?;
        pearson.push((
            measure.clone(),
            correlations.iter().map(|c| c.pearson_r).collect(),
        ));
        let deltas = results.array(
            model_array(&run.name, &task.name, "measure_delta"),
            &[n_measures, n_layers, n_targets],
        );
        for (li, values) in per_layer.iter().enumerate() {
            for (slot, v) in deltas.lane_mut(&[mi, li]).iter_mut().zip(values) {
                *slot = *v as f32;
            }
        }
        let table = results.array(
            model_array(&run.name, &task.name, "correlation"),
            &[n_measures, n_layers, 5],
        );
        for (li, c) in correlations.iter().enumerate() {
            for (f, x) in [
                c.n as f64,
                c.pearson_r,
                c.pearson_p,
                c.spearman_rho,
                c.spearman_p,
            ]
            .into_iter()
            .enumerate()
            {
                table.set(&[mi, li, f], x);
            }
        }
        for (li, c) in correlations.iter().enumerate() {
            results.correlation.push(vec![
                run.name.clone(),
                task.name.clone(),
                run.layers[li].to_string(),
                measure.clone(),
                c.n.to_string(),
                num(c.pearson_r),
                num(c.pearson_p),
                num(c.spearman_rho),
                num(c.spearman_p),
            ]);
        }
    }
    Ok(Correlated {
        improvement: delta_behavior,
        pearson,
    })
}

/// `behavior` `[state, target]`: absolute error (NaN when unparseable) for
/// numeric tasks, 1 or 0 for correct or not otherwise; `answer_gap`
/// `[state, target]`: the narrowest top-two logit gap of the answer's
/// greedy choices (infinite for an answer of no choice).
fn behavior_arrays(experiment: &Experiment, run: &ModelRun, t: usize, results: &mut StudyResults) {
    let task = &experiment.tasks[t];
    for (state, shots) in [0, task.shots].into_iter().enumerate() {
        let records = state_records(experiment, &run.records, t, shots);
        let n = records.len();
        let gaps = results.array(model_array(&run.name, &task.name, "answer_gap"), &[2, n]);
        for (target, r) in records.iter().enumerate() {
            gaps.set(
                &[state, target],
                f64::from(super::near_ties::min_gap(&r.answer_gaps)),
            );
        }
        let behavior = results.array(model_array(&run.name, &task.name, "behavior"), &[2, n]);
        for (target, r) in records.iter().enumerate() {
            let value = match task.scoring {
                crate::experiment::Scoring::Number => r.score.error.unwrap_or(f64::NAN),
                crate::experiment::Scoring::Keywords => f64::from(u8::from(r.score.correct)),
            };
            behavior.set(&[state, target], value);
        }
    }
}

fn param_number(params: &std::collections::BTreeMap<String, ParamValue>, name: &str) -> f64 {
    match params.get(name) {
        Some(ParamValue::Number(x)) => *x,
        _ => f64::NAN,
    }
}

/// Category labels (indices in sorted order of the values) and their count.
fn categories(instances: &[&crate::experiment::Instance], name: &str) -> (Vec<usize>, usize) {
    let values: Vec<String> = instances
        .iter()
        .map(|i| match i.params.get(name) {
            Some(ParamValue::Text(s)) => s.clone(),
            Some(ParamValue::Number(x)) => format!("{x}"),
            None => String::new(),
        })
        .collect();
    let mut distinct = values.clone();
    distinct.sort();
    distinct.dedup();
    let labels = values
        .iter()
        .map(|v| distinct.iter().position(|d| d == v).unwrap_or(0))
        .collect();
    (labels, distinct.len())
}

/// One recovered fraction of a task's patching: a method, a measure and a
/// patched layer (indices into `PATCHING_METHODS`, `PATCHING_MEASURES` and
/// the task's patched layers), over `n` targets.
pub(super) struct RecoveryCell {
    pub method: usize,
    pub measure: usize,
    pub layer_index: usize,
    pub recovery: crate::analysis::patching::Recovery,
    pub n: usize,
}

/// Every run's measures of one task's patching: each target's unpatched
/// 0-shot and k-shot values, and `[method, layer, target, measure]` of the
/// patched runs (NaN where a method did not run).
fn patch_measures(
    experiment: &Experiment,
    tp: &super::patching::TaskPatching,
) -> (Vec<[f64; 3]>, Vec<[f64; 3]>, Tensor) {
    use viewer::bundle::{PATCHING_MEASURES, PATCHING_METHODS};
    let (n_methods, n_layers, n_targets, n_measures) = (
        PATCHING_METHODS.len(),
        tp.layers.len(),
        tp.targets.len(),
        PATCHING_MEASURES.len(),
    );
    let measures_of =
        |v: &super::patching::PatchValues, t: usize| v.measures(experiment, tp.task, tp.targets[t]);
    let zero: Vec<[f64; 3]> = (0..n_targets)
        .map(|t| measures_of(&tp.zero_shot[t], t))
        .collect();
    let k: Vec<[f64; 3]> = (0..n_targets)
        .map(|t| measures_of(&tp.k_shot[t], t))
        .collect();
    let mut patched = Tensor::nan(&[n_methods, n_layers, n_targets, n_measures]);
    for m in 0..n_methods {
        for li in 0..n_layers {
            for t in 0..n_targets {
                if let Some(v) = &tp.patched[m][li][t] {
                    for (q, value) in measures_of(v, t).into_iter().enumerate() {
                        patched.set(&[m, li, t, q], value);
                    }
                }
            }
        }
    }
    (zero, k, patched)
}

/// The recovered fraction of every method that ran, measure and patched
/// layer of one task's patching, with its bootstrap interval over targets
/// (cells without a complete target are left out).
pub(super) fn patching_recoveries(
    experiment: &Experiment,
    tp: &super::patching::TaskPatching,
) -> Vec<RecoveryCell> {
    let (zero, k, patched) = patch_measures(experiment, tp);
    recoveries_of_measures(experiment, tp, &zero, &k, &patched)
}

/// [`patching_recoveries`] from the measures [`patch_measures`] gave.
fn recoveries_of_measures(
    experiment: &Experiment,
    tp: &super::patching::TaskPatching,
    zero: &[[f64; 3]],
    k: &[[f64; 3]],
    patched: &Tensor,
) -> Vec<RecoveryCell> {
    use crate::analysis::patching::recovered_fraction;
    use crate::analysis::resample::named_rng;
    use viewer::bundle::{PATCHING_MEASURES, PATCHING_METHODS};
    let task = &experiment.tasks[tp.task];
    let options = &experiment.file.analysis;
    let mut cells = Vec::new();
    for (m, runs) in tp.patched.iter().enumerate() {
        if runs.iter().all(|layer| layer.iter().all(Option::is_none)) {
            continue;
        }
        for q in 0..PATCHING_MEASURES.len() {
            let z: Vec<f64> = zero.iter().map(|v| v[q]).collect();
            let kk: Vec<f64> = k.iter().map(|v| v[q]).collect();
            for (li, &layer) in tp.layers.iter().enumerate() {
                let p: Vec<f64> = (0..tp.targets.len())
                    .map(|t| patched.get(&[m, li, t, q]))
                    .collect();
                let mut rng = named_rng(
                    experiment.file.seed,
                    &format!(
                        "patching/bootstrap/{}/{}/{}/{layer}",
                        task.name, PATCHING_METHODS[m], PATCHING_MEASURES[q]
                    ),
                );
                let (recovery, n) = recovered_fraction(
                    &p,
                    &z,
                    &kk,
                    options.bootstrap,
                    options.confidence,
                    &mut rng,
                );
                if n > 0 {
                    cells.push(RecoveryCell {
                        method: m,
                        measure: q,
                        layer_index: li,
                        recovery,
                        n,
                    });
                }
            }
        }
    }
    cells
}

/// The patching arrays, tables and manifest entry of one model's task:
/// every run's measures, the references, and the recovered fraction per
/// method, measure and layer with its bootstrap interval over targets.
fn patching_results(
    experiment: &Experiment,
    run: &ModelRun,
    tp: &super::patching::TaskPatching,
    results: &mut StudyResults,
) {
    use crate::analysis::patching::recovery_fields;
    use viewer::bundle::{PatchingEntry, PATCHING_MEASURES, PATCHING_METHODS, RECOVERY_FIELDS};
    let task = &experiment.tasks[tp.task];
    let (n_methods, n_layers, n_targets, n_measures) = (
        PATCHING_METHODS.len(),
        tp.layers.len(),
        tp.targets.len(),
        PATCHING_MEASURES.len(),
    );
    let (zero, k, patched) = patch_measures(experiment, tp);
    let reference = results.array(
        model_array(&run.name, &task.name, "patching_reference"),
        &[2, n_targets, n_measures],
    );
    for t in 0..n_targets {
        for q in 0..n_measures {
            reference.set(&[0, t, q], zero[t][q]);
            reference.set(&[1, t, q], k[t][q]);
        }
    }
    let options = &experiment.file.analysis;
    let mut recovery = Tensor::nan(&[n_methods, n_measures, n_layers, RECOVERY_FIELDS.len()]);
    if results.patching_recovery.header.is_empty() {
        results.patching_recovery = Table::new(&super::patching::recovery_table_header());
        results.patching = Table::new(&super::patching::patching_table_header());
    }
    for cell in recoveries_of_measures(experiment, tp, &zero, &k, &patched) {
        let (m, q, li) = (cell.method, cell.measure, cell.layer_index);
        for (f, value) in recovery_fields(&cell.recovery).into_iter().enumerate() {
            recovery.set(&[m, q, li, f], value);
        }
        let mut row = vec![
            run.name.clone(),
            task.name.clone(),
            PATCHING_METHODS[m].to_string(),
            PATCHING_MEASURES[q].to_string(),
            tp.layers[li].to_string(),
            cell.n.to_string(),
        ];
        row.extend(recovery_fields(&cell.recovery).into_iter().map(num));
        results.patching_recovery.push(row);
    }
    results
        .arrays
        .insert(model_array(&run.name, &task.name, "patching"), patched);
    results.arrays.insert(
        model_array(&run.name, &task.name, "patching_recovery"),
        recovery,
    );
    for row in super::patching::patching_rows(experiment, &run.name, tp) {
        results.patching.push(row);
    }
    let entry = results
        .patching_entries
        .entry(task.name.clone())
        .or_insert_with(|| PatchingEntry {
            methods: PATCHING_METHODS.iter().map(|m| m.to_string()).collect(),
            measures: PATCHING_MEASURES.iter().map(|m| m.to_string()).collect(),
            layers: BTreeMap::new(),
            scale: experiment.file.patching.scale,
            confidence: options.confidence,
        });
    entry.layers.insert(run.name.clone(), tp.layers.clone());
}
