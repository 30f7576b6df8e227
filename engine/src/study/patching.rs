//! The causal test of the study's claim: for every target, its 0-shot
//! prompt runs again with the last prompt token's residual stream patched
//! at one layer, and the answer is measured (see
//! [`crate::analysis::patching`] for the recovered fraction and
//! [`crate::capture::PatchRunner`] for why a layer sweep is cheap).
//!
//! Methods, per target t and layer ℓ (states are `l_out-ℓ` at the last
//! prompt token, read during the capture):
//! - `replace`: t's own k-shot state written over its 0-shot state;
//! - `replace-control`: the k-shot state of a target of another condition
//!   (one per target, drawn from the seed);
//! - `task-vector`: the mean over the other targets of (k-shot − 0-shot)
//!   state, times `patching.scale`, added (leave-one-out: t's own answer
//!   never leaks in);
//! - `task-vector-control`: a random vector of the task vector's norm added.
//!
//! With several demonstration draws (`[robustness] draws`), every draw's
//! k-shot states are patched in turn, so that the recovered fraction has a
//! spread across draws like every other finding.
//!
//! Each target's runs are cached under a key of everything they depend on
//! (the model, the prompt, the answer, every patch vector's bytes, the
//! options), so an interrupted run resumes and a finished one re-renders
//! without the model.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::cache::{CaptureSettings, PromptCache};
use super::capture::{PromptRecord, Tokenized};
use crate::analysis::patching::{leave_one_out_task_vector, norm, random_vector_of_norm};
use crate::analysis::resample::named_rng;
use crate::capture::{
    CaptureError, FlashAttention, Model, Patch, PatchJob, PatchMode, PatchRunner,
};
use crate::experiment::scoring;
use crate::experiment::{Experiment, Scoring};
use crate::fingerprint::sha256_hex;
use viewer::bundle::PATCHING_METHODS;

/// Bump when what a cached patching result means changes.
pub const PATCHING_CACHE_FORMAT: u32 = 1;

/// What one run (patched or not) measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchValues {
    pub first_token_logprob: f64,
    pub answer_logprob: f64,
    /// The greedy answer, when it was generated.
    pub generated: Option<String>,
}

impl PatchValues {
    /// The three measures of the bundle's `measure` axis: the two
    /// log-probabilities and the scored answer (absolute error or 1/0
    /// correct; NaN without an answer or a number).
    pub fn measures(&self, experiment: &Experiment, task: usize, target: usize) -> [f64; 3] {
        let behaviour = self
            .generated
            .as_deref()
            .map_or(f64::NAN, |g| behaviour_value(experiment, task, target, g));
        [self.first_token_logprob, self.answer_logprob, behaviour]
    }
}

/// The behaviour value of an answer, as the `behavior` array holds it.
fn behaviour_value(experiment: &Experiment, task: usize, target: usize, generated: &str) -> f64 {
    let t = &experiment.tasks[task];
    let score = scoring::score(t.scoring, &t.instances[target], generated);
    match t.scoring {
        Scoring::Number => score.error.unwrap_or(f64::NAN),
        Scoring::Keywords => f64::from(u8::from(score.correct)),
    }
}

/// The patching results of one task on one model.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPatching {
    pub task: usize,
    /// Block indices patched.
    pub layers: Vec<usize>,
    /// Target instance of each entry of the target axis (ascending).
    pub targets: Vec<usize>,
    /// `[method][layer][target]`, methods as in [`PATCHING_METHODS`]; None
    /// where the method did not run.
    pub patched: Vec<Vec<Vec<Option<PatchValues>>>>,
    /// The unpatched 0-shot run of each target (same machinery as the
    /// patched runs, so that a null patch changes nothing).
    pub zero_shot: Vec<PatchValues>,
    /// The k-shot prompt of each target, from its capture.
    pub k_shot: Vec<PatchValues>,
    /// The target whose k-shot state `replace-control` writes.
    pub control_targets: Vec<Option<usize>>,
}

/// The patching results of one model.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelPatching {
    /// The first draw's patching, per task (the report's tables and figures).
    pub tasks: Vec<TaskPatching>,
    /// `[draw − 1][task]`: the later draws' patching, for the comparison
    /// across draws (empty with one draw).
    pub later_draws: Vec<Vec<TaskPatching>>,
    /// Patched runs in all (targets × layers × methods, plus references).
    pub runs: usize,
    /// Of those, the ones run now (the rest came from the cache).
    pub runs_now: usize,
    pub seconds: f64,
}

/// The layers, states and records one task's patches are built from.
struct TaskStates<'r> {
    task: usize,
    layers: Vec<usize>,
    targets: Vec<usize>,
    zero: Vec<&'r PromptRecord>,
    k: Vec<&'r PromptRecord>,
    control_targets: Vec<Option<usize>>,
    n_embd: usize,
}

impl TaskStates<'_> {
    fn state<'a>(&self, record: &'a PromptRecord, layer: usize) -> &'a [f32] {
        let state = record.last_state.as_deref().unwrap_or(&[]);
        state
            .get(layer * self.n_embd..(layer + 1) * self.n_embd)
            .unwrap_or(&[])
    }

    /// Every patched run of target `t` (index on the target axis): first
    /// the unpatched reference, then each method at each layer, as
    /// `(method, layer index, job)`.
    fn jobs(&self, experiment: &Experiment, t: usize) -> Vec<(Option<usize>, usize, PatchJob)> {
        let options = &experiment.file.patching;
        let n_layers = self.layers.len();
        let mut jobs = vec![(
            None,
            0,
            PatchJob {
                patch: None,
                greedy: options.greedy_stride > 0,
            },
        )];
        let wants = |method: &str| options.methods.iter().any(|m| m == method);
        for (li, &layer) in self.layers.iter().enumerate() {
            let greedy =
                options.greedy_stride > 0 && (n_layers - 1 - li) % options.greedy_stride == 0;
            let mut push = |method: usize, mode: PatchMode, vector: Vec<f32>| {
                jobs.push((
                    Some(method),
                    li,
                    PatchJob {
                        patch: Some(Patch {
                            layer,
                            mode,
                            vector,
                        }),
                        greedy,
                    },
                ));
            };
            if wants("replace") {
                push(0, PatchMode::Replace, self.state(self.k[t], li).to_vec());
                if options.controls {
                    if let Some(u) = self.control_targets[t] {
                        push(1, PatchMode::Replace, self.state(self.k[u], li).to_vec());
                    }
                }
            }
            if wants("task-vector") {
                let zero: Vec<&[f32]> = self.zero.iter().map(|r| self.state(r, li)).collect();
                let k: Vec<&[f32]> = self.k.iter().map(|r| self.state(r, li)).collect();
                if let Some(vector) = leave_one_out_task_vector(&zero, &k, t, options.scale) {
                    let length = norm(&vector);
                    let target = self.targets[t];
                    let task_name = &experiment.tasks[self.task].name;
                    push(2, PatchMode::Add, vector);
                    if options.controls {
                        let mut rng = named_rng(
                            experiment.file.seed,
                            &format!("patching/random/{task_name}/{target}/{layer}"),
                        );
                        push(
                            3,
                            PatchMode::Add,
                            random_vector_of_norm(self.n_embd, length, &mut rng),
                        );
                    }
                }
            }
        }
        jobs
    }
}

/// For each target, a target of another condition (drawn from the seed),
/// or None when every target shares its condition.
fn control_targets(experiment: &Experiment, task: usize, targets: &[usize]) -> Vec<Option<usize>> {
    let t = &experiment.tasks[task];
    targets
        .iter()
        .map(|&target| {
            let condition = t.instances[target].condition;
            let others: Vec<usize> = (0..targets.len())
                .filter(|&u| t.instances[targets[u]].condition != condition)
                .collect();
            if others.is_empty() {
                return None;
            }
            let mut rng = named_rng(
                experiment.file.seed,
                &format!("patching/control/{}/{target}", t.name),
            );
            Some(others[rng.index(others.len())])
        })
        .collect()
}

fn task_states<'r>(
    experiment: &Experiment,
    records: &'r [PromptRecord],
    task: usize,
    draw: usize,
    layers: &[usize],
    n_embd: usize,
) -> Result<TaskStates<'r>, CaptureError> {
    let shots = experiment.tasks[task].shots;
    let zero = super::behavior::state_records(experiment, records, task, 0);
    let k = super::behavior::draw_records(experiment, records, task, shots, draw);
    let targets: Vec<usize> = zero
        .iter()
        .map(|r| experiment.prompts[r.prompt].target)
        .collect();
    let complete = |r: &&PromptRecord| {
        r.last_state.as_ref().map(Vec::len) == Some(layers.len() * n_embd)
            && r.answer_logprobs.is_some()
    };
    if zero.len() != k.len() || !zero.iter().chain(&k).all(complete) {
        return Err(CaptureError::BadRequest(format!(
            "the captures of task `{}` hold no last-token states for patching; capture again with patching on",
            experiment.tasks[task].name
        )));
    }
    Ok(TaskStates {
        task,
        layers: layers.to_vec(),
        control_targets: control_targets(experiment, task, &targets),
        targets,
        zero,
        k,
        n_embd,
    })
}

/// Where the patching runs of one model are cached, and how their keys are
/// made.
#[derive(Debug)]
pub struct PatchCache<'c> {
    pub cache: &'c PromptCache,
    pub model_sha256: &'c str,
    pub settings: &'c CaptureSettings,
}

impl PatchCache<'_> {
    fn dir(&self) -> PathBuf {
        self.cache.dir().join("patching")
    }

    fn key(
        &self,
        experiment: &Experiment,
        prompt: usize,
        answer: &str,
        jobs: &[(Option<usize>, usize, PatchJob)],
    ) -> String {
        let runs: Vec<serde_json::Value> = jobs
            .iter()
            .map(|(method, _, job)| {
                let patch = job.patch.as_ref().map(|p| {
                    let bytes: Vec<u8> = p.vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    serde_json::json!({
                        "layer": p.layer,
                        "mode": format!("{:?}", p.mode),
                        "vector": sha256_hex(&bytes),
                    })
                });
                serde_json::json!({
                    "method": method.map(|m| PATCHING_METHODS[m]),
                    "patch": patch,
                    "greedy": job.greedy,
                })
            })
            .collect();
        let identity = serde_json::json!({
            "format": PATCHING_CACHE_FORMAT,
            "model": self.model_sha256,
            "settings": self.settings,
            "text": experiment.prompts[prompt].text,
            "answer": answer,
            "max_new_tokens": experiment.file.capture.max_new_tokens,
            "batch": experiment.file.patching.batch,
            "runs": runs,
        });
        sha256_hex(identity.to_string().as_bytes())
    }

    fn get(&self, key: &str, runs: usize) -> Option<Vec<PatchValues>> {
        let text = std::fs::read(self.dir().join(format!("{key}.json"))).ok()?;
        let values: Vec<PatchValues> = serde_json::from_slice(&text).ok()?;
        (values.len() == runs).then_some(values)
    }

    fn put(&self, key: &str, values: &[PatchValues]) -> anyhow::Result<()> {
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(|e| {
            anyhow::anyhow!("cannot create the patching cache `{}`: {e}", dir.display())
        })?;
        let bytes = serde_json::to_vec(values)?;
        Ok(crate::atomic::write_atomically(
            &dir.join(format!("{key}.json")),
            |w| w.write_all(&bytes),
        )?)
    }
}

/// How the patching stage runs on this machine.
#[derive(Debug, Clone, Copy)]
pub struct PatchingContext {
    pub threads: usize,
    pub flash_attention: FlashAttention,
}

/// Runs (or reads from the cache) every patched run of every task of one
/// model (`n_layer` blocks of width `n_embd`), in every demonstration draw. `model` is needed only when
/// something is not cached: without it, the first missing run returns
/// `Ok(None)`, and the caller loads the model and calls again.
/// `progress` ticks once per target and draw, and notes a line per task
/// and draw.
#[allow(clippy::too_many_arguments)]
pub fn patch_model(
    experiment: &Experiment,
    records: &[PromptRecord],
    n_layer: usize,
    n_embd: usize,
    cache: &PatchCache<'_>,
    context: PatchingContext,
    model: Option<(&Model, &Tokenized)>,
    mut progress: Option<&mut crate::progress::Progress>,
) -> anyhow::Result<Option<ModelPatching>> {
    let started = Instant::now();
    let mut out = ModelPatching::default();
    if !experiment.file.patching.enabled {
        return Ok(Some(out));
    }
    let layers = experiment.patching_layers(n_layer)?;
    let draws = experiment.file.robustness.variants();
    let mut runner: Option<PatchRunner<'_>> = None;
    for (draw, task) in (0..draws).flat_map(|d| (0..experiment.tasks.len()).map(move |t| (d, t))) {
        let states = task_states(experiment, records, task, draw, &layers, n_embd)?;
        let n_targets = states.targets.len();
        let mut result = TaskPatching {
            task,
            layers: layers.clone(),
            targets: states.targets.clone(),
            patched: vec![vec![vec![None; n_targets]; layers.len()]; PATCHING_METHODS.len()],
            zero_shot: Vec::with_capacity(n_targets),
            k_shot: states
                .k
                .iter()
                .map(|r| {
                    let (first, answer) = r.answer_logprobs.unwrap_or((f64::NAN, f64::NAN));
                    PatchValues {
                        first_token_logprob: first,
                        answer_logprob: answer,
                        generated: Some(r.generated.clone()),
                    }
                })
                .collect(),
            control_targets: states.control_targets.clone(),
        };
        let task_started = Instant::now();
        let mut now = 0;
        for t in 0..n_targets {
            let jobs = states.jobs(experiment, t);
            let prompt = states.zero[t].prompt;
            // The answer as text: its tokens follow from the model, which
            // the key names by its hash.
            let answer_text = super::capture::answer_continuation(
                &experiment.tasks[task].instances[states.targets[t]].answer,
            );
            let key = cache.key(experiment, prompt, &answer_text, &jobs);
            let values = match cache.get(&key, jobs.len()) {
                Some(values) => values,
                None => {
                    let Some((model, tokenized)) = model else {
                        return Ok(None);
                    };
                    if runner.is_none() {
                        let max_prompt = tokenized.tokens.iter().map(Vec::len).max().unwrap_or(1);
                        let max_answer = tokenized.answers.iter().map(Vec::len).max().unwrap_or(1);
                        let r = PatchRunner::new(
                            model,
                            experiment.file.patching.batch,
                            max_prompt,
                            max_answer,
                            experiment.file.capture.max_new_tokens,
                            context.threads,
                            context.flash_attention,
                        )?;
                        runner = Some(r);
                    }
                    let Some(r) = runner.as_mut() else {
                        unreachable!("the runner was just created");
                    };
                    let stop = |token: i32| model.token_bytes(token).contains(&b'\n');
                    let patch_jobs: Vec<PatchJob> =
                        jobs.iter().map(|(_, _, j)| j.clone()).collect();
                    let runs = r.run(
                        &tokenized.tokens[prompt],
                        &tokenized.answers[prompt],
                        &patch_jobs,
                        experiment.file.capture.max_new_tokens,
                        stop,
                    )?;
                    let values: Vec<PatchValues> = runs
                        .into_iter()
                        .map(|run| PatchValues {
                            first_token_logprob: run.first_token_logprob,
                            answer_logprob: run.answer_logprob,
                            generated: run.generated.map(|g| model.detokenize(&g)),
                        })
                        .collect();
                    cache.put(&key, &values)?;
                    now += values.len();
                    values
                }
            };
            out.runs += values.len();
            if let Some(p) = progress.as_mut() {
                p.tick();
            }
            for ((method, li, _), value) in jobs.iter().zip(values) {
                match method {
                    None => result.zero_shot.push(value),
                    Some(m) => result.patched[*m][*li][t] = Some(value),
                }
            }
        }
        out.runs_now += now;
        if let Some(p) = progress.as_mut() {
            let which = if draws > 1 {
                format!(" (draw {} of {draws})", draw + 1)
            } else {
                String::new()
            };
            p.note(&format!(
                "patched task `{}`{which}: {n_targets} targets × {} layers, {} runs ({now} now) in {}",
                experiment.tasks[task].name,
                layers.len(),
                result.patched.iter().flatten().flatten().flatten().count() + n_targets,
                crate::progress::duration(task_started.elapsed().as_secs_f64())
            ));
        }
        if draw == 0 {
            out.tasks.push(result);
        } else {
            if out.later_draws.len() < draw {
                out.later_draws.push(Vec::new());
            }
            out.later_draws[draw - 1].push(result);
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    Ok(Some(out))
}

/// `patching.csv`: one row per model, task, target, layer and method, with
/// the target's unpatched 0-shot and k-shot values on the same row.
pub fn patching_table_header() -> Vec<&'static str> {
    vec![
        "model",
        "task",
        "target_id",
        "condition",
        "layer",
        "method",
        "first_token_logprob",
        "answer_logprob",
        "correct",
        "error",
        "answer",
        "zero_shot_first_token_logprob",
        "zero_shot_answer_logprob",
        "zero_shot_correct",
        "zero_shot_error",
        "k_shot_first_token_logprob",
        "k_shot_answer_logprob",
        "k_shot_correct",
        "k_shot_error",
    ]
}

/// `patching_recovery.csv`: the recovered fraction per model, task,
/// method, measure and layer.
pub fn recovery_table_header() -> Vec<&'static str> {
    let mut header = vec!["model", "task", "method", "measure", "layer", "n"];
    header.extend(viewer::bundle::RECOVERY_FIELDS);
    header
}

/// The CSV cells of one run: log-probabilities, then correct and error
/// (empty without a greedy answer).
fn value_cells(
    experiment: &Experiment,
    task: usize,
    target: usize,
    v: &PatchValues,
) -> Vec<String> {
    use super::export::num;
    let t = &experiment.tasks[task];
    let (correct, error) = match v.generated.as_deref() {
        Some(g) => {
            let score = scoring::score(t.scoring, &t.instances[target], g);
            (
                u8::from(score.correct).to_string(),
                score.error.map_or(String::new(), num),
            )
        }
        None => (String::new(), String::new()),
    };
    vec![
        num(v.first_token_logprob),
        num(v.answer_logprob),
        correct,
        error,
    ]
}

/// The rows of `patching.csv` for one model's task.
pub fn patching_rows(experiment: &Experiment, model: &str, tp: &TaskPatching) -> Vec<Vec<String>> {
    let task = &experiment.tasks[tp.task];
    let mut rows = Vec::new();
    for (m, method) in PATCHING_METHODS.iter().enumerate() {
        for (li, &layer) in tp.layers.iter().enumerate() {
            for (t, &target) in tp.targets.iter().enumerate() {
                let Some(v) = &tp.patched[m][li][t] else {
                    continue;
                };
                let mut row = vec![
                    model.to_string(),
                    task.name.clone(),
                    target.to_string(),
                    task.conditions[task.instances[target].condition].clone(),
                    layer.to_string(),
                    method.to_string(),
                ];
                let mut cells = value_cells(experiment, tp.task, target, v);
                let answer = v
                    .generated
                    .as_deref()
                    .map_or(String::new(), |g| scoring::answer_text(g).to_string());
                cells.insert(4, answer);
                row.extend(cells);
                let zero = value_cells(experiment, tp.task, target, &tp.zero_shot[t]);
                let k = value_cells(experiment, tp.task, target, &tp.k_shot[t]);
                row.extend(zero);
                row.extend(k);
                rows.push(row);
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::PatchValues;
    use crate::analysis::resample::SeededRng;

    /// A report made from the patching cache must be the report made while
    /// patching, to the last digit: every cached number reads back as the
    /// number written (serde_json's `float_roundtrip`; its default parser
    /// is off by one ulp on some numbers, and a re-rendered patching table
    /// then differed in its last digits).
    #[test]
    fn cached_patching_values_read_back_bit_for_bit() {
        let mut rng = SeededRng::new(7);
        for _ in 0..20_000 {
            // Log-probabilities: negative, of every magnitude the cache sees.
            let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let scale = 10f64.powi((rng.below(8) as i32) - 4);
            let values = PatchValues {
                first_token_logprob: -unit * scale,
                answer_logprob: -unit * scale * 3.7,
                generated: None,
            };
            let text = serde_json::to_vec(&values).expect("serialize");
            let back: PatchValues = serde_json::from_slice(&text).expect("parse");
            assert_eq!(
                back.first_token_logprob.to_bits(),
                values.first_token_logprob.to_bits()
            );
            assert_eq!(
                back.answer_logprob.to_bits(),
                values.answer_logprob.to_bits()
            );
        }
    }
}
