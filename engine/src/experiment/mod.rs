//! Experiments: the study's design turned into prompts.
//!
//! An experiment file (or a built-in preset) names tasks; each task has
//! conditions, target instances, hypotheses and probe targets; every target
//! instance becomes a pair of prompts, 0-shot and k-shot. Everything is
//! validated here, before any model work.

pub mod chat;
pub mod config;
pub mod prompts;
pub mod scoring;
pub mod spans;
pub mod tasks;
pub mod template;

use std::collections::BTreeSet;

pub use config::{ConfigError, Demonstrations, ExperimentFile};
pub use prompts::Prompt;
pub use tasks::{Hypothesis, HypothesisKind, Instance, ProbeTarget, Scoring, Task};

use config::{CustomFile, CustomHypothesis, ParamValue, TaskFile};

/// How a prompt's hidden states in one layer become one vector.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum PoolingChoice {
    /// The last prompt token (the one that predicts the answer).
    Last,
    /// Mean over the tokens of a labelled segment.
    Mean(String),
    /// Element-wise max over the tokens of a labelled segment.
    Max(String),
}

impl PoolingChoice {
    pub fn parse(text: &str) -> Option<Self> {
        match text.split_once(':') {
            None if text == "last" => Some(PoolingChoice::Last),
            Some(("mean", segment)) if !segment.is_empty() => {
                Some(PoolingChoice::Mean(segment.into()))
            }
            Some(("max", segment)) if !segment.is_empty() => {
                Some(PoolingChoice::Max(segment.into()))
            }
            _ => None,
        }
    }

    pub fn segment(&self) -> Option<&str> {
        match self {
            PoolingChoice::Last => None,
            PoolingChoice::Mean(s) | PoolingChoice::Max(s) => Some(s),
        }
    }
}

/// The widest answer batch: the answer context holds every prompt of a
/// batch, so its memory grows with the width, and the gain of a wider
/// decode levels off far below this.
pub const MAX_ANSWER_BATCH: usize = 64;

/// The comparators between similarity and hypothesis matrices.
pub const COMPARATORS: &[&str] = &["spearman", "kendall-tau-a", "pearson"];

/// A validated experiment with its prompts.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// As resolved (presets expanded, defaults filled): goes in the manifest.
    pub file: ExperimentFile,
    pub tasks: Vec<Task>,
    pub prompts: Vec<Prompt>,
    pub pooling: PoolingChoice,
    /// How the prompts reach each model (`capture.chat_template`).
    pub chat: chat::ChatTemplate,
}

/// Finds the line of a key in the experiment file, for messages.
struct Locator<'a> {
    origin: &'a str,
    text: Option<&'a str>,
}

impl Locator<'_> {
    /// ` (line N)` for `key` in the `index`-th `[[tasks]]` table (or at the
    /// top when `index` is None), or nothing when it cannot be found.
    fn line(&self, task: Option<usize>, key: &str) -> String {
        let Some(text) = self.text else {
            return String::new();
        };
        let mut in_task: Option<usize> = None;
        let mut seen_tasks = 0;
        for (number, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("[[tasks]]") {
                in_task = Some(seen_tasks);
                seen_tasks += 1;
                continue;
            }
            let here = match task {
                Some(t) => in_task == Some(t),
                None => true,
            };
            let is_key = trimmed
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='));
            let is_table = trimmed.starts_with(&format!("[[tasks.{key}]]"))
                || trimmed.starts_with(&format!("[{key}]"));
            if here && (is_key || is_table) {
                return format!(" (line {})", number + 1);
            }
        }
        match task {
            Some(t) => self
                .line(None, "[[tasks]]")
                .replace("line", &format!("task {} starts at line", t + 1)),
            None => String::new(),
        }
    }

    fn invalid(&self, task: Option<usize>, key: &str, problem: impl Into<String>) -> ConfigError {
        let path = match task {
            Some(t) => format!("tasks[{t}].{key}"),
            None => key.to_string(),
        };
        ConfigError::Invalid {
            origin: self.origin.to_string(),
            line: self.line(task, key.split('.').next_back().unwrap_or(key)),
            key: path,
            problem: problem.into(),
        }
    }
}

impl Experiment {
    /// Validates an experiment file and builds its prompts. `text` is the
    /// file's source, used to say on which line a problem is.
    pub fn build(
        file: ExperimentFile,
        origin: &str,
        text: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let at = Locator { origin, text };
        validate_top(&file, &at)?;
        let pooling = PoolingChoice::parse(&file.capture.pooling).ok_or_else(|| {
            at.invalid(
                None,
                "capture.pooling",
                "must be `last`, `mean:SEGMENT` or `max:SEGMENT` (for example `max:query`)",
            )
        })?;
        let chat = chat::ChatTemplate::parse(&file.capture.chat_template).ok_or_else(|| {
            at.invalid(
                None,
                "capture.chat_template",
                "must be `none`, `model` (the template in the model's GGUF) or a chat template (Jinja text with `{{ messages }}`)",
            )
        })?;
        if let chat::ChatTemplate::Inline(source) = &chat {
            chat::ChatRenderer::new(source, chat::ChatTokens::placeholder()).map_err(|e| {
                at.invalid(
                    None,
                    "capture.chat_template",
                    format!("does not compile: {e}"),
                )
            })?;
        }
        let mut tasks = Vec::new();
        let mut names = BTreeSet::new();
        for (t, task_file) in file.tasks.iter().enumerate() {
            let task = build_task(task_file, t, file.seed, &at)?;
            if !names.insert(task.name.clone()) {
                return Err(at.invalid(
                    Some(t),
                    "name",
                    format!("`{}` is used by two tasks: give each a name", task.name),
                ));
            }
            tasks.push(task);
        }
        if file.patching.enabled {
            if let Some((t, task)) = tasks.iter().enumerate().find(|(_, task)| task.shots == 0) {
                return Err(at.invalid(
                    Some(t),
                    "shots",
                    format!(
                        "is 0, so task `{}` has no k-shot prompts to patch from: give it shots, or set `patching.enabled = false`",
                        task.name
                    ),
                ));
            }
        }
        validate_robustness(&file.robustness, &tasks, &at)?;
        let mut prompts = Vec::new();
        for (t, task) in tasks.iter().enumerate() {
            let built = prompts::build_prompts(task, t, file.seed, prompts.len(), &file.robustness)
                .map_err(|e| at.invalid(Some(t), "shots", e))?;
            check_segments(task, &built, &pooling, t, &at)?;
            prompts.extend(built);
        }
        Ok(Experiment {
            file,
            tasks,
            prompts,
            pooling,
            chat,
        })
    }

    /// Reads, validates and builds an experiment file.
    pub fn from_path(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        let origin = path.display().to_string();
        Self::build(ExperimentFile::parse(&text, &origin)?, &origin, Some(&text))
    }

    /// A built-in preset (`paper`, `linear-regression`, `reading-comprehension`).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        Self::build(
            ExperimentFile::preset(name)?,
            &format!("built-in preset `{name}`"),
            None,
        )
    }

    /// The layers to patch, checked against the model's once it is loaded
    /// (before any capture): `patching.layers`, or every analysed layer,
    /// then every `patching.layer_stride`-th of them counted from the last
    /// (so that the last layer, where the exact check holds, is always in).
    pub fn patching_layers(&self, n_layer: usize) -> Result<Vec<usize>, ConfigError> {
        let stride = self.file.patching.layer_stride.max(1);
        let all = self.patching_layer_list(n_layer)?;
        let n = all.len();
        Ok(all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| (n - 1 - i) % stride == 0)
            .map(|(_, l)| l)
            .collect())
    }

    fn patching_layer_list(&self, n_layer: usize) -> Result<Vec<usize>, ConfigError> {
        match &self.file.patching.layers {
            None => self.layers(n_layer),
            Some(layers) => checked_layers(layers, "patching.layers", n_layer),
        }
    }

    /// Checks the layers asked for against the model's, once it is loaded.
    pub fn layers(&self, n_layer: usize) -> Result<Vec<usize>, ConfigError> {
        match &self.file.capture.layers {
            None => Ok((0..n_layer).collect()),
            Some(layers) => checked_layers(layers, "capture.layers", n_layer),
        }
    }
}

/// `layers` sorted without repeats, or an error naming `key` when one is
/// past the model's `n_layer` blocks.
fn checked_layers(layers: &[usize], key: &str, n_layer: usize) -> Result<Vec<usize>, ConfigError> {
    if let Some(bad) = layers.iter().find(|&&l| l >= n_layer) {
        return Err(ConfigError::Invalid {
            origin: "the experiment".into(),
            line: String::new(),
            key: key.into(),
            problem: format!(
                "names layer {bad}, but the model has layers 0 to {}",
                n_layer.saturating_sub(1)
            ),
        });
    }
    let mut sorted = layers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    Ok(sorted)
}

fn validate_top(f: &ExperimentFile, at: &Locator<'_>) -> Result<(), ConfigError> {
    let ok_name = !f.name.is_empty()
        && f.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !f.name.starts_with('.');
    if !ok_name {
        return Err(at.invalid(
            None,
            "name",
            "must be letters, digits, `-`, `_` or `.` (it names the report folder)",
        ));
    }
    if f.tasks.is_empty() {
        return Err(at.invalid(None, "tasks", "is empty: add at least one [[tasks]] table"));
    }
    let a = &f.analysis;
    if a.comparators.is_empty() {
        return Err(at.invalid(
            None,
            "analysis.comparators",
            "is empty: use one or more of spearman, kendall-tau-a, pearson",
        ));
    }
    if let Some(bad) = a
        .comparators
        .iter()
        .find(|c| !COMPARATORS.contains(&c.as_str()))
    {
        return Err(at.invalid(
            None,
            "analysis.comparators",
            format!("has `{bad}`; use spearman, kendall-tau-a or pearson"),
        ));
    }
    if a.permutations == 0 || a.bootstrap == 0 {
        return Err(at.invalid(
            None,
            "analysis.permutations",
            "and `analysis.bootstrap` must be at least 1",
        ));
    }
    if !(a.confidence > 0.0 && a.confidence < 1.0) {
        return Err(at.invalid(
            None,
            "analysis.confidence",
            "must be between 0 and 1, such as 0.95",
        ));
    }
    if a.cv_folds < 2 {
        return Err(at.invalid(None, "analysis.cv_folds", "must be at least 2"));
    }
    if a.ridge_alphas.is_empty() || a.ridge_alphas.iter().any(|&x| !(x > 0.0 && x.is_finite())) {
        return Err(at.invalid(
            None,
            "analysis.ridge_alphas",
            "must be a non-empty list of positive numbers",
        ));
    }
    if a.logistic_cs.is_empty() || a.logistic_cs.iter().any(|&x| !(x > 0.0 && x.is_finite())) {
        return Err(at.invalid(
            None,
            "analysis.logistic_cs",
            "must be a non-empty list of positive numbers",
        ));
    }
    if f.capture.max_new_tokens == 0 {
        return Err(at.invalid(
            None,
            "capture.max_new_tokens",
            "must be at least 1 (the answer is generated)",
        ));
    }
    if !(1..=MAX_ANSWER_BATCH).contains(&f.capture.answer_batch) {
        return Err(at.invalid(
            None,
            "capture.answer_batch",
            format!("must be between 1 (each answer alone) and {MAX_ANSWER_BATCH}"),
        ));
    }
    validate_patching(f, at)
}

/// `[robustness]`: at least one draw in one order, no more draws than a
/// task has distinct demonstration sets, no more orders than `k!`.
fn validate_robustness(
    r: &config::RobustnessOptions,
    tasks: &[Task],
    at: &Locator<'_>,
) -> Result<(), ConfigError> {
    if r.draws == 0 {
        return Err(at.invalid(
            None,
            "robustness.draws",
            "is 0: use 1 for one draw of demonstrations (as the study), or more to see which findings survive another draw",
        ));
    }
    if r.orders == 0 {
        return Err(at.invalid(
            None,
            "robustness.orders",
            "is 0: use 1 to show each draw in the order drawn, or more to add permutations of it",
        ));
    }
    for task in tasks {
        // One draw needs one set; too few demonstrations for it at all is
        // `shots`'s error, said when the prompts are built.
        let available = prompts::fewest_distinct_sets(task);
        if r.draws > 1 && r.draws as u128 > available {
            return Err(at.invalid(
                None,
                "robustness.draws",
                format!(
                    "is {}, but task `{}` has only {available} distinct sets of {} demonstrations for some of its targets: ask for at most {available}",
                    r.draws, task.name, task.shots
                ),
            ));
        }
        let permutations = prompts::orderings(task.shots);
        if r.orders as u128 > permutations {
            return Err(at.invalid(
                None,
                "robustness.orders",
                format!(
                    "is {}, but the {} demonstrations of task `{}` can be ordered in only {permutations} ways ({}!): ask for at most {permutations}",
                    r.orders, task.shots, task.name, task.shots
                ),
            ));
        }
    }
    Ok(())
}

/// The patching methods an experiment file may name.
pub const PATCHING_METHODS: &[&str] = &["replace", "task-vector"];
/// The most patched runs one decode may hold (llama.cpp keeps at most 256
/// sequences, one of which holds the prompt).
pub const MAX_PATCHING_BATCH: usize = 255;

fn validate_patching(f: &ExperimentFile, at: &Locator<'_>) -> Result<(), ConfigError> {
    let p = &f.patching;
    if !p.enabled {
        return Ok(());
    }
    if p.methods.is_empty() {
        return Err(at.invalid(
            None,
            "patching.methods",
            "is empty: use `replace`, `task-vector` or both (or set `patching.enabled = false`)",
        ));
    }
    if let Some(bad) = p
        .methods
        .iter()
        .find(|m| !PATCHING_METHODS.contains(&m.as_str()))
    {
        return Err(at.invalid(
            None,
            "patching.methods",
            format!("has `{bad}`; use `replace` or `task-vector`"),
        ));
    }
    if !p.scale.is_finite() {
        return Err(at.invalid(
            None,
            "patching.scale",
            "must be a finite number, such as 1.0",
        ));
    }
    if p.layer_stride == 0 {
        return Err(at.invalid(
            None,
            "patching.layer_stride",
            "must be at least 1 (1 patches every layer)",
        ));
    }
    if !(1..=MAX_PATCHING_BATCH).contains(&p.batch) {
        return Err(at.invalid(
            None,
            "patching.batch",
            format!("must be between 1 and {MAX_PATCHING_BATCH}"),
        ));
    }
    if p.layers.as_ref().is_some_and(Vec::is_empty) {
        return Err(at.invalid(
            None,
            "patching.layers",
            "is empty: list block indices, or leave it out to patch every analysed layer",
        ));
    }
    Ok(())
}

fn build_task(f: &TaskFile, t: usize, seed: u64, at: &Locator<'_>) -> Result<Task, ConfigError> {
    let bad = |key: &str, problem: String| at.invalid(Some(t), key, problem);
    let task = match f {
        TaskFile::LinearRegression(lr) => {
            if lr.slopes.is_empty() || lr.intercepts.is_empty() {
                return Err(bad(
                    "slopes",
                    "and `intercepts` must each list at least one value".into(),
                ));
            }
            if has_duplicates(&lr.slopes) || has_duplicates(&lr.intercepts) {
                return Err(bad(
                    "slopes",
                    "and `intercepts` must not repeat a value".into(),
                ));
            }
            if lr.slopes.len() * lr.intercepts.len() < 2 {
                return Err(bad(
                    "slopes",
                    "× `intercepts` must give at least 2 conditions to compare".into(),
                ));
            }
            if lr.points == 0 {
                return Err(bad("points", "must be at least 1".into()));
            }
            let available = (lr.x_max - lr.x_min + 1).max(0) as usize;
            if available < lr.points + 1 {
                return Err(bad(
                    "x_max",
                    format!(
                        "leaves {available} distinct x values, but {} points and a query need {}",
                        lr.points,
                        lr.points + 1
                    ),
                ));
            }
            check_instances(lr.instances_per_condition, t, at)?;
            tasks::linear_regression(lr, seed)
        }
        TaskFile::ReadingComprehension(rc) => {
            if rc.names.len() < 2 || has_duplicates(&rc.names) {
                return Err(bad("names", "must list at least 2 different names".into()));
            }
            if rc.activities.len() < 2 {
                return Err(bad(
                    "activities",
                    "must list at least 2 activities (they are the conditions)".into(),
                ));
            }
            if let Some(a) = rc
                .activities
                .iter()
                .find(|a| a.keywords.iter().all(|k| k.trim().is_empty()))
            {
                return Err(bad(
                    "activities",
                    format!("`{}` needs at least one keyword to score answers", a.phrase),
                ));
            }
            check_instances(rc.instances_per_condition, t, at)?;
            tasks::reading_comprehension(rc, seed)
        }
        TaskFile::Custom(c) => {
            let hypotheses = custom_hypotheses(c, t, at)?;
            tasks::custom(c, hypotheses)
        }
    };
    for hypothesis in &task.hypotheses {
        if let HypothesisKind::Graded(p) = &hypothesis.kind {
            if task
                .instances
                .iter()
                .any(|i| !matches!(i.params.get(p), Some(ParamValue::Number(_))))
            {
                return Err(bad(
                    "hypotheses",
                    format!(
                        "`{}` grades `{p}`, which is not a number in every instance",
                        hypothesis.name
                    ),
                ));
            }
        }
    }
    Ok(task)
}

fn has_duplicates<T: Ord>(items: &[T]) -> bool {
    let set: BTreeSet<&T> = items.iter().collect();
    set.len() != items.len()
}

fn check_instances(per_condition: usize, t: usize, at: &Locator<'_>) -> Result<(), ConfigError> {
    if per_condition < 2 {
        return Err(at.invalid(
            Some(t),
            "instances_per_condition",
            format!(
                "is {per_condition}; a condition needs at least 2 instances to compare within it"
            ),
        ));
    }
    Ok(())
}

fn custom_hypotheses(
    c: &CustomFile,
    t: usize,
    at: &Locator<'_>,
) -> Result<Vec<Hypothesis>, ConfigError> {
    let bad = |key: &str, problem: String| at.invalid(Some(t), key, problem);
    if c.scoring != "number" && c.scoring != "contains" {
        return Err(bad(
            "scoring",
            format!("is `{}`; use `number` or `contains`", c.scoring),
        ));
    }
    if c.relevant_segment.is_some() != c.distractor_segment.is_some() {
        return Err(bad(
            "relevant_segment",
            "and `distractor_segment` go together: give both or neither".into(),
        ));
    }
    let mut conditions: Vec<&str> = Vec::new();
    for i in &c.instances {
        if !conditions.contains(&i.condition.as_str()) {
            conditions.push(&i.condition);
        }
    }
    if conditions.len() < 2 {
        return Err(bad("instances", "must cover at least 2 conditions".into()));
    }
    for condition in &conditions {
        let n = c
            .instances
            .iter()
            .filter(|i| i.condition == *condition)
            .count();
        if n < 2 {
            return Err(bad(
                "instances",
                format!("condition `{condition}` has {n} instance; each needs at least 2"),
            ));
        }
    }
    let params: BTreeSet<&String> = c.instances.iter().flat_map(|i| i.params.keys()).collect();
    if let Some(i) = c.instances.iter().find(|i| i.params.len() != params.len()) {
        return Err(bad(
            "instances",
            format!(
                "an instance of `{}` lacks some of the parameters {params:?}",
                i.condition
            ),
        ));
    }
    c.hypotheses
        .iter()
        .map(|h| custom_hypothesis(h, &conditions, &params, t, at))
        .collect()
}

fn custom_hypothesis(
    h: &CustomHypothesis,
    conditions: &[&str],
    params: &BTreeSet<&String>,
    t: usize,
    at: &Locator<'_>,
) -> Result<Hypothesis, ConfigError> {
    let bad =
        |problem: String| at.invalid(Some(t), "hypotheses", format!("`{}` {problem}", h.name));
    let param = || -> Result<String, ConfigError> {
        let p = h
            .param
            .clone()
            .ok_or_else(|| bad("needs `param`, the parameter it compares".into()))?;
        if !params.contains(&p) {
            return Err(bad(format!("compares `{p}`, which no instance has")));
        }
        Ok(p)
    };
    let kind = match h.kind.as_str() {
        "same" => HypothesisKind::Same(param()?),
        "graded" => HypothesisKind::Graded(param()?),
        "matrix" => {
            let (Some(order), Some(matrix)) = (&h.conditions, &h.matrix) else {
                return Err(bad("needs `conditions` (row order) and `matrix`".into()));
            };
            let n = conditions.len();
            if order.len() != n || matrix.len() != n || matrix.iter().any(|row| row.len() != n) {
                return Err(bad(format!(
                    "must be {n} × {n}, one row and column per condition"
                )));
            }
            let index: Vec<usize> = conditions
                .iter()
                .map(|c| {
                    order
                        .iter()
                        .position(|o| o == c)
                        .ok_or_else(|| bad(format!("does not list condition `{c}`")))
                })
                .collect::<Result<_, _>>()?;
            for (i, row) in matrix.iter().enumerate() {
                for (j, &value) in row.iter().enumerate() {
                    if !value.is_finite() {
                        return Err(bad(format!(
                            "has a value that is not a finite number at ({i}, {j})"
                        )));
                    }
                    if value != matrix[j][i] {
                        return Err(bad(format!(
                            "is not symmetric: entry ({i}, {j}) differs from ({j}, {i})"
                        )));
                    }
                }
            }
            // Reorder rows and columns to the task's condition order.
            HypothesisKind::Matrix(
                (0..n)
                    .map(|a| (0..n).map(|b| matrix[index[a]][index[b]]).collect())
                    .collect(),
            )
        }
        other => {
            return Err(bad(format!(
                "has kind `{other}`; use same, graded or matrix"
            )))
        }
    };
    Ok(Hypothesis {
        name: h.name.clone(),
        kind,
    })
}

/// Every segment the analyses use must exist, exactly once, in every prompt.
fn check_segments(
    task: &Task,
    prompts: &[Prompt],
    pooling: &PoolingChoice,
    t: usize,
    at: &Locator<'_>,
) -> Result<(), ConfigError> {
    let mut needed: Vec<(&str, &str)> = Vec::new();
    if let Some(s) = pooling.segment() {
        needed.push((s, "capture.pooling"));
    }
    if let Some((relevant, distractor)) = &task.attention_segments {
        needed.push((relevant, "relevant_segment"));
        needed.push((distractor, "distractor_segment"));
    }
    for (label, key) in needed {
        for p in prompts {
            let count = p.segments.get(label).map_or(0, Vec::len);
            if count != 1 {
                let problem = if count == 0 {
                    format!("uses the segment `{label}`, which the template of task `{}` never produces", task.name)
                } else {
                    format!("uses the segment `{label}`, which occurs {count} times in a prompt of task `{}`", task.name)
                };
                return Err(match key {
                    "capture.pooling" => at.invalid(None, key, problem),
                    _ => at.invalid(Some(t), key, problem),
                });
            }
        }
    }
    Ok(())
}
