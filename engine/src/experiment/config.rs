//! The experiment file: TOML in, a validated [`Experiment`] out.
//!
//! Strict by default: an unknown key is an error that names the key and its
//! line, and every value is checked before any model work starts. Every
//! choice the paper leaves open is an option here, with our default.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// An experiment file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the experiment file `{path}`: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("{origin}{line}: `{key}` {problem}")]
    Invalid {
        origin: String,
        line: String,
        key: String,
        problem: String,
    },
    #[error("there is no built-in preset `{0}`: choose one of linear-regression, reading-comprehension, paper")]
    UnknownPreset(String),
}

/// The built-in presets, as TOML, so that users can copy and edit them.
pub const LINEAR_REGRESSION_PRESET: &str = include_str!("presets/linear-regression.toml");
pub const READING_COMPREHENSION_PRESET: &str = include_str!("presets/reading-comprehension.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentFile {
    /// Names the report.
    pub name: String,
    /// Seeds every random choice: instances, demonstrations, permutations,
    /// bootstrap samples, cross-validation folds.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// GGUF files to run; `--model` on the command line replaces them.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub capture: CaptureOptions,
    #[serde(default)]
    pub analysis: AnalysisOptions,
    /// The causal test: the in-context state put back into 0-shot runs.
    #[serde(default, skip_serializing_if = "PatchingOptions::is_off")]
    pub patching: PatchingOptions,
    /// How much each finding depends on which demonstrations were drawn
    /// and in which order.
    #[serde(default, skip_serializing_if = "RobustnessOptions::is_single_draw")]
    pub robustness: RobustnessOptions,
    pub tasks: Vec<TaskFile>,
}

fn default_seed() -> u64 {
    20231001
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureOptions {
    /// How a prompt becomes one vector per layer: `last` (the last prompt
    /// token), or `mean:SEGMENT` / `max:SEGMENT` over a labelled segment
    /// (the study max-pooled over a subset of relevant tokens).
    pub pooling: String,
    /// Greedy tokens generated for the answer (its first line: generation
    /// stops after a newline).
    pub max_new_tokens: usize,
    /// Layers to analyse: all of them, or a list of block indices.
    pub layers: Option<Vec<usize>>,
    /// In a task with `demonstrations = "fixed"`, run the instruction and
    /// demonstrations that its k-shot prompts share once and continue every
    /// prompt from their KV cache, instead of running each prompt whole.
    pub reuse_prefix: bool,
    /// Prompts whose answers are generated together, one token of each per
    /// decode. Prompts are still captured one at a time; the batches are
    /// fixed by the experiment (consecutive prompts of one task in capture
    /// order), so resumed and sharded runs batch them the same way.
    pub answer_batch: usize,
    /// How each prompt reaches the model: `none` (plain text, as written),
    /// `model` (one user turn through the chat template in the model's
    /// GGUF, the assistant's turn opened for the answer), or a chat
    /// template of your own (Jinja, as Hugging Face writes them). Left out
    /// of the resolved experiment when `none`, so that plain-text runs keep
    /// their cache keys and bundles.
    #[serde(skip_serializing_if = "is_plain_text")]
    pub chat_template: String,
}

fn is_plain_text(chat_template: &str) -> bool {
    chat_template == "none"
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            pooling: "last".into(),
            max_new_tokens: 8,
            layers: None,
            reuse_prefix: true,
            answer_batch: 8,
            chat_template: "none".into(),
        }
    }
}

/// ICL patching: run each target's 0-shot prompt again with the last
/// prompt token's residual stream (`l_out-ℓ`) patched at one layer ℓ, and
/// measure how much of the k-shot improvement comes back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PatchingOptions {
    /// Run the patching analysis (on in the `paper` preset).
    pub enabled: bool,
    /// `replace` (the target's own k-shot state written over its 0-shot
    /// state) and/or `task-vector` (the mean k-shot − 0-shot difference of
    /// the *other* targets of the task added, times `scale`).
    pub methods: Vec<String>,
    /// Block indices to patch; every analysed layer when absent.
    pub layers: Option<Vec<usize>>,
    /// Patch every `layer_stride`-th of those layers, counted from the last
    /// (1 = all of them).
    pub layer_stride: usize,
    /// The factor the task vector is multiplied by.
    pub scale: f64,
    /// Also run each method's control: `replace` with the k-shot state of
    /// a target of another condition, `task-vector` with a random vector of
    /// the same norm.
    pub controls: bool,
    /// Greedy answers (scored like the capture's) after patches at every
    /// `greedy_stride`-th patched layer, counted from the last; 1 = every
    /// layer, 0 = none. The log-probabilities are measured at every layer.
    pub greedy_stride: usize,
    /// Patched runs that share one decode.
    pub batch: usize,
}

impl Default for PatchingOptions {
    fn default() -> Self {
        PatchingOptions {
            enabled: false,
            methods: vec!["replace".into(), "task-vector".into()],
            layers: None,
            layer_stride: 1,
            scale: 1.0,
            controls: true,
            greedy_stride: 1,
            batch: 32,
        }
    }
}

impl PatchingOptions {
    /// Left out of the resolved experiment when off, so that experiments
    /// without patching keep their manifests and cache keys.
    pub fn is_off(&self) -> bool {
        *self == PatchingOptions::default()
    }
}

/// Demonstration resampling: every target's k-shot prompt built from
/// `draws` independent draws of demonstrations, each shown in `orders`
/// orders, and every analysis repeated on each, so that the report can say
/// which findings survive another draw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RobustnessOptions {
    /// Independent, seeded sets of demonstrations per target (1: one draw,
    /// as the study). With `demonstrations = "fixed"`, independent fixed
    /// sets.
    pub draws: usize,
    /// Orders each drawn set is shown in: the order drawn, then distinct
    /// permutations of it (at most k! of them).
    pub orders: usize,
}

impl Default for RobustnessOptions {
    fn default() -> Self {
        RobustnessOptions {
            draws: 1,
            orders: 1,
        }
    }
}

impl RobustnessOptions {
    /// Left out of the resolved experiment for one draw in one order, so
    /// that such experiments keep their manifests.
    pub fn is_single_draw(&self) -> bool {
        *self == RobustnessOptions::default()
    }

    /// k-shot prompts per target: every draw in every order.
    pub fn variants(&self) -> usize {
        self.draws * self.orders
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisOptions {
    /// Rank correlations between similarity and hypothesis matrices:
    /// `spearman`, `kendall-tau-a`, `pearson`. The first is the headline.
    pub comparators: Vec<String>,
    /// Label permutations for the alignment p-values.
    pub permutations: usize,
    /// Bootstrap samples (over target instances) for confidence intervals.
    pub bootstrap: usize,
    /// Confidence level of the intervals.
    pub confidence: f64,
    /// Cross-validation folds of the probes (grouped by target instance).
    pub cv_folds: usize,
    /// Ridge penalties the inner cross-validation chooses from.
    pub ridge_alphas: Vec<f64>,
    /// Inverse penalties of the logistic probe (scikit-learn's C).
    pub logistic_cs: Vec<f64>,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        AnalysisOptions {
            comparators: vec!["spearman".into(), "kendall-tau-a".into(), "pearson".into()],
            permutations: 1000,
            bootstrap: 1000,
            confidence: 0.95,
            cv_folds: 5,
            ridge_alphas: vec![0.1, 1.0, 10.0, 100.0, 1000.0],
            logistic_cs: vec![0.01, 0.1, 1.0, 10.0],
        }
    }
}

/// How demonstrations are chosen for the k-shot copy of a target instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Demonstrations {
    /// k other instances drawn for each target (from other conditions, so the
    /// target's own answer is never shown).
    #[default]
    PerInstance,
    /// One set of k instances shared by every target of the task (targets
    /// whose condition appears in the set get a replacement for that slot).
    Fixed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum TaskFile {
    LinearRegression(LinearRegressionFile),
    ReadingComprehension(ReadingComprehensionFile),
    Custom(CustomFile),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearRegressionFile {
    #[serde(default = "linear_regression_name")]
    pub name: String,
    #[serde(default = "default_shots")]
    pub shots: usize,
    #[serde(default = "default_instances")]
    pub instances_per_condition: usize,
    #[serde(default)]
    pub demonstrations: Demonstrations,
    /// Replaces the built-in prompt template (minijinja, with segments).
    pub template: Option<String>,
    pub slopes: Vec<i64>,
    pub intercepts: Vec<i64>,
    #[serde(default = "default_points")]
    pub points: usize,
    #[serde(default)]
    pub x_min: i64,
    #[serde(default = "default_x_max")]
    pub x_max: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingComprehensionFile {
    #[serde(default = "reading_comprehension_name")]
    pub name: String,
    #[serde(default = "default_shots")]
    pub shots: usize,
    #[serde(default = "default_instances")]
    pub instances_per_condition: usize,
    #[serde(default)]
    pub demonstrations: Demonstrations,
    pub template: Option<String>,
    pub names: Vec<String>,
    pub activities: Vec<Activity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Activity {
    pub phrase: String,
    pub keywords: Vec<String>,
}

/// A task the user defines: a template, instances, hypotheses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomFile {
    pub name: String,
    #[serde(default = "default_shots")]
    pub shots: usize,
    #[serde(default)]
    pub demonstrations: Demonstrations,
    /// minijinja template; sees `demonstrations` (a list of instances with
    /// their `answer`) and `target` (an instance). Label segments with
    /// `{% filter segment("query") %}...{% endfilter %}`.
    pub template: String,
    /// How answers are scored: `number` (absolute error of the first number)
    /// or `contains` (correct when the answer contains the expected text).
    #[serde(default = "default_scoring")]
    pub scoring: String,
    /// Segment labels of the relevant and the distractor span, for the
    /// attention ratio (both or neither).
    pub relevant_segment: Option<String>,
    pub distractor_segment: Option<String>,
    pub instances: Vec<CustomInstance>,
    #[serde(default)]
    pub hypotheses: Vec<CustomHypothesis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomInstance {
    pub condition: String,
    pub answer: String,
    /// Parameters of the condition: numbers get ridge probes and graded
    /// hypotheses, strings logistic probes and same/different hypotheses.
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
    /// Anything else the template needs.
    #[serde(default)]
    pub vars: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomHypothesis {
    pub name: String,
    /// `same` (1 when a parameter is equal), `graded` (−|difference| of a
    /// numeric parameter), or `matrix` (condition × condition values).
    pub kind: String,
    pub param: Option<String>,
    /// With `matrix`: the conditions in row order, and the symmetric matrix.
    pub conditions: Option<Vec<String>>,
    pub matrix: Option<Vec<Vec<f64>>>,
}

fn linear_regression_name() -> String {
    "linear-regression".into()
}
fn reading_comprehension_name() -> String {
    "reading-comprehension".into()
}
fn default_shots() -> usize {
    4
}
fn default_instances() -> usize {
    4
}
fn default_points() -> usize {
    3
}
fn default_x_max() -> i64 {
    9
}
fn default_scoring() -> String {
    "contains".into()
}

impl ExperimentFile {
    /// Parses TOML; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: tidy_toml_error(&e, text),
        })
    }

    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// A built-in preset: `linear-regression`, `reading-comprehension`, or
    /// `paper` (both tasks, as the study).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        let parse =
            |text: &str, which: &str| Self::parse(text, &format!("built-in preset `{which}`"));
        match name {
            "linear-regression" => parse(LINEAR_REGRESSION_PRESET, name),
            "reading-comprehension" => parse(READING_COMPREHENSION_PRESET, name),
            "paper" => {
                let mut paper = parse(LINEAR_REGRESSION_PRESET, "linear-regression")?;
                let reading = parse(READING_COMPREHENSION_PRESET, "reading-comprehension")?;
                paper.name = "paper".into();
                paper.tasks.extend(reading.tasks);
                // On two CPU cores a patched run costs what its tokens
                // cost (~6.6 ms each for SmolLM2-135M, three per run):
                // every third layer, with greedy answers at every fifth
                // patched layer, keeps the whole run within twice the run
                // without patching (README, Performance). Set both strides
                // to 1 to patch and answer at every layer.
                paper.patching = PatchingOptions {
                    enabled: true,
                    layer_stride: 3,
                    greedy_stride: 5,
                    ..PatchingOptions::default()
                };
                // Three draws of demonstrations: the least that shows
                // whether a finding keeps its sign; each adds one k-shot
                // capture per target (README, Performance).
                paper.robustness = RobustnessOptions {
                    draws: 3,
                    orders: 1,
                };
                Ok(paper)
            }
            other => Err(ConfigError::UnknownPreset(other.to_string())),
        }
    }
}

/// toml's messages are multi-line with a source excerpt; we say the line
/// and the explanation in one sentence.
fn tidy_toml_error(e: &toml::de::Error, text: &str) -> String {
    let message = e.message().trim().trim_end_matches('\n').replace('\n', " ");
    let Some(span) = e.span() else { return message };
    let mut line = line_of_byte(text, span.start);
    // Inside a `[[tasks]]` table serde sees the whole table at once, so toml
    // points at the table; find the offending key's own line after it.
    if let Some(key) = message
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split('`').next())
    {
        let own_line = text.lines().enumerate().skip(line - 1).find(|(_, l)| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
        if let Some((number, _)) = own_line {
            line = number + 1;
        }
    }
    format!("line {line}: {message}")
}

/// 1-based line number of a byte offset.
pub(crate) fn line_of_byte(text: &str, byte: usize) -> usize {
    text.as_bytes()[..byte.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
