//! A reader's selection applied to a bundle: the data of every figure and
//! the key numbers, recomputed for the chosen model, task, layer, head,
//! hypothesis, comparator, measure and subset of conditions.
//!
//! The same functions fill the engine's static SVG figures (everything
//! selected, the layer of the strongest effect) and the browser viewer's
//! canvases, so the two cannot disagree. The heavy part of a selection (what
//! depends on the condition subset) is computed once in [`Derived`] and
//! reused while the reader moves through layers and heads.

use serde::{Deserialize, Serialize};

mod patching;
mod patching_text;

pub use patching::{
    headline_measure, measure_label, recompute_recovery, Patching, PatchingNumbers, Recovery,
    HEADLINE_MEASURE, HEADLINE_METHOD,
};
pub use patching_text::{condition_sentences, recovery_sentences};

use crate::bundle::{model_array, task_array, upper_index, upper_len, Bundle, BundleError};
use crate::figures::{
    BehaviorByCondition, Figure, LayerCurves, LayerHeatmap, MatrixPanels, Scatter, Series,
};
use crate::stats::{correlation_p_value, kendall_tau_a, pearson, spearman};

/// Significance level for the filled markers of the by-layer figures
/// (Benjamini–Hochberg adjusted p-values across layers).
pub const ALPHA: f64 = 0.05;

/// Fields of the `alignment` array's last axis.
pub const ALIGNMENT_FIELDS: [&str; 5] = ["value", "p_value", "p_adjusted", "ci_low", "ci_high"];
/// Fields of the `correlation` array's last axis.
pub const CORRELATION_FIELDS: [&str; 5] =
    ["n", "pearson_r", "pearson_p", "spearman_rho", "spearman_p"];

/// What the reader has chosen. Indices refer to the manifest's lists; the
/// layer is an index into the model's analysed layers. `conditions` empty
/// means every condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    pub model: usize,
    pub task: usize,
    pub layer: usize,
    /// `None`: the mean over heads.
    pub head: Option<usize>,
    pub hypothesis: usize,
    pub comparator: usize,
    pub measure: usize,
    pub conditions: Vec<usize>,
    /// The patching figures' measure: an index into the task's
    /// `patching.measures` (by default the answer's log-probability).
    #[serde(default = "headline_measure")]
    pub patching_measure: usize,
}

impl Default for Selection {
    /// Everything first, every condition, the mean over heads, and the
    /// headline patching measure.
    fn default() -> Self {
        Selection {
            model: 0,
            task: 0,
            layer: 0,
            head: None,
            hypothesis: 0,
            comparator: 0,
            measure: 0,
            conditions: Vec::new(),
            patching_measure: headline_measure(),
        }
    }
}

impl Selection {
    /// Brings every index into range for `bundle` (a link made for another
    /// report, or a hand-edited fragment, still shows something sensible).
    pub fn clamp(mut self, bundle: &Bundle) -> Selection {
        let m = &bundle.manifest;
        let last = |n: usize| n.saturating_sub(1);
        self.model = self.model.min(last(m.models.len()));
        self.task = self.task.min(last(m.tasks.len()));
        if let Some(model) = m.models.get(self.model) {
            self.layer = self.layer.min(last(model.layers.len()));
            self.head = self.head.filter(|&h| h < model.n_head);
        }
        if let Some(task) = m.tasks.get(self.task) {
            self.hypothesis = self.hypothesis.min(last(task.hypotheses.len()));
            self.measure = self.measure.min(last(task.measures.len()));
            if let Some(patching) = &task.patching {
                self.patching_measure = self.patching_measure.min(last(patching.measures.len()));
            }
            let n = task.conditions.len();
            self.conditions.retain(|&c| c < n);
            self.conditions.sort_unstable();
            self.conditions.dedup();
            if self.conditions.len() == n {
                self.conditions.clear();
            }
        }
        self.comparator = self.comparator.min(last(m.comparators.len()));
        self
    }

    /// The URL fragment that restores this selection, e.g.
    /// `model=0&task=1&layer=12&head=mean&hypothesis=0&comparator=0&measure=0&conditions=all&patching=1`.
    pub fn to_fragment(&self) -> String {
        let head = self.head.map_or("mean".to_string(), |h| h.to_string());
        let conditions = if self.conditions.is_empty() {
            "all".to_string()
        } else {
            self.conditions
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "model={}&task={}&layer={}&head={head}&hypothesis={}&comparator={}&measure={}&conditions={conditions}&patching={}",
            self.model, self.task, self.layer, self.hypothesis, self.comparator, self.measure, self.patching_measure
        )
    }

    /// Parses a fragment written by [`Selection::to_fragment`] (with or
    /// without the leading `#`); unknown keys and bad values are ignored,
    /// keeping `base`'s value.
    pub fn from_fragment(fragment: &str, base: &Selection) -> Selection {
        let mut s = base.clone();
        for pair in fragment.trim_start_matches('#').split('&') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let number = value.parse::<usize>().ok();
            match (key, number) {
                ("model", Some(n)) => s.model = n,
                ("task", Some(n)) => s.task = n,
                ("layer", Some(n)) => s.layer = n,
                ("hypothesis", Some(n)) => s.hypothesis = n,
                ("comparator", Some(n)) => s.comparator = n,
                ("measure", Some(n)) => s.measure = n,
                ("patching", Some(n)) => s.patching_measure = n,
                ("head", Some(n)) => s.head = Some(n),
                ("head", None) if value == "mean" => s.head = None,
                ("conditions", _) if value == "all" || value.is_empty() => s.conditions.clear(),
                ("conditions", _) => {
                    let parsed: Option<Vec<usize>> =
                        value.split(',').map(|c| c.parse().ok()).collect();
                    if let Some(c) = parsed {
                        s.conditions = c;
                    }
                }
                _ => {}
            }
        }
        s
    }
}

/// Shapes of one model × task's arrays.
#[derive(Debug, Clone, Copy)]
struct Dims {
    layers: usize,
    heads: usize,
    targets: usize,
}

/// Everything that depends on the model, task, hypothesis, comparator and
/// condition subset, but not on the layer, head or measure.
#[derive(Debug, Clone)]
pub struct Derived {
    key: (usize, usize, usize, usize, Vec<usize>),
    /// Target indices kept by the condition subset.
    pub targets: Vec<usize>,
    /// `[state][layer]` alignment; recomputed when a subset is chosen.
    pub alignment: [Vec<f64>; 2],
    /// `[state][layer]` `(p_adjusted, ci_low, ci_high)` from the engine, only
    /// for the full set of conditions (resampling is not redone here).
    pub alignment_stats: Option<[Vec<(f64, f64, f64)>; 2]>,
    /// `[state][layer][head]`, head `n_head` being the mean over heads:
    /// mean over targets of log2(relevant / distractor). Empty without attention.
    pub log2_ratio: [Vec<Vec<f64>>; 2],
    /// `[measure][layer]`: `(n, pearson r, p, spearman ρ, p)`.
    pub correlation: Vec<Vec<[f64; 5]>>,
    /// The ICL-patching recovery, when the task was patched.
    pub patching: Option<Patching>,
}

impl Derived {
    /// Computes (or reuses `previous`, when the key is unchanged) the
    /// subset-dependent numbers for `selection`.
    pub fn for_selection(
        bundle: &Bundle,
        selection: &Selection,
        previous: Option<Derived>,
    ) -> Result<Derived, BundleError> {
        let key = (
            selection.model,
            selection.task,
            selection.hypothesis,
            selection.comparator,
            selection.conditions.clone(),
        );
        if let Some(previous) = previous.filter(|p| p.key == key) {
            return Ok(previous);
        }
        let ctx = Context::new(bundle, selection)?;
        let targets = ctx.targets(&selection.conditions);
        let all = targets.len() == ctx.dims.targets;
        let alignment_tensor = ctx.array(
            "alignment",
            &[
                2,
                ctx.task.hypotheses.len(),
                bundle.manifest.comparators.len(),
                ctx.dims.layers,
                5,
            ],
        )?;
        let (alignment, alignment_stats) = if all {
            let at = |s: usize, l: usize, f: usize| {
                alignment_tensor.get(&[s, selection.hypothesis, selection.comparator, l, f])
            };
            let values = |s: usize| (0..ctx.dims.layers).map(|l| at(s, l, 0)).collect();
            let stats = |s: usize| {
                (0..ctx.dims.layers)
                    .map(|l| (at(s, l, 2), at(s, l, 3), at(s, l, 4)))
                    .collect()
            };
            ([values(0), values(1)], Some([stats(0), stats(1)]))
        } else {
            let name = bundle
                .manifest
                .comparators
                .get(selection.comparator)
                .cloned()
                .unwrap_or_default();
            let h = ctx.hypothesis_upper(selection.hypothesis, &targets)?;
            let per_state = |s: usize| -> Result<Vec<f64>, BundleError> {
                (0..ctx.dims.layers)
                    .map(|l| Ok(compare(&name, &ctx.similarity_upper(s, l, &targets)?, &h)))
                    .collect()
            };
            ([per_state(0)?, per_state(1)?], None)
        };
        let log2_ratio = if ctx.task.attention.is_some() {
            [ctx.log2_ratios(0, &targets)?, ctx.log2_ratios(1, &targets)?]
        } else {
            [Vec::new(), Vec::new()]
        };
        let correlation = ctx.correlations(&targets)?;
        let patching = Patching::derive(&ctx, &targets)?;
        Ok(Derived {
            key,
            targets,
            alignment,
            alignment_stats,
            log2_ratio,
            correlation,
            patching,
        })
    }
}

impl Derived {
    /// The layer index where alignment gains most with demonstrations
    /// (k-shot minus 0-shot; the first such layer on ties), and the gain.
    pub fn largest_alignment_gain(&self) -> Option<(usize, f64)> {
        self.alignment[1]
            .iter()
            .zip(&self.alignment[0])
            .map(|(k, z)| k - z)
            .enumerate()
            .filter(|(_, g)| g.is_finite())
            .fold(None, |best: Option<(usize, f64)>, (l, g)| match best {
                Some((_, b)) if b >= g => best,
                _ => Some((l, g)),
            })
    }
}

/// The comparator named `name` between two equally long vectors.
pub fn compare(name: &str, x: &[f64], y: &[f64]) -> f64 {
    match name {
        "pearson" => pearson(x, y),
        "kendall-tau-a" => kendall_tau_a(x, y),
        _ => spearman(x, y),
    }
}

/// Borrowed views of one model × task.
struct Context<'b> {
    bundle: &'b Bundle,
    model: &'b crate::bundle::ModelEntry,
    task: &'b crate::bundle::TaskEntry,
    dims: Dims,
}

impl<'b> Context<'b> {
    fn new(bundle: &'b Bundle, selection: &Selection) -> Result<Context<'b>, BundleError> {
        let m = &bundle.manifest;
        let missing = |what: &str| BundleError::BadManifest(format!("it lists no {what}"));
        let model = m
            .models
            .get(selection.model)
            .ok_or_else(|| missing("model"))?;
        let task = m.tasks.get(selection.task).ok_or_else(|| missing("task"))?;
        let dims = Dims {
            layers: model.layers.len(),
            heads: model.n_head,
            targets: task.target_conditions.len(),
        };
        Ok(Context {
            bundle,
            model,
            task,
            dims,
        })
    }

    fn array(&self, name: &str, shape: &[usize]) -> Result<&'b crate::bundle::Tensor, BundleError> {
        self.bundle
            .tensor_shaped(&model_array(&self.model.name, &self.task.name, name), shape)
    }

    fn targets(&self, conditions: &[usize]) -> Vec<usize> {
        (0..self.dims.targets)
            .filter(|&t| {
                conditions.is_empty() || conditions.contains(&self.task.target_conditions[t])
            })
            .collect()
    }

    /// Strict upper triangle of the similarity matrix at `(state, layer)`
    /// restricted to `targets`.
    fn similarity_upper(
        &self,
        state: usize,
        layer: usize,
        targets: &[usize],
    ) -> Result<Vec<f64>, BundleError> {
        let p = self.dims.targets;
        let rsm = self.array("rsm", &[2, self.dims.layers, upper_len(p)])?;
        let lane = rsm.lane(&[state, layer]);
        let mut out = Vec::with_capacity(upper_len(targets.len()));
        for (a, &i) in targets.iter().enumerate() {
            for &j in &targets[a + 1..] {
                out.push(f64::from(lane[upper_index(p, i, j)]));
            }
        }
        Ok(out)
    }

    fn hypothesis_upper(
        &self,
        hypothesis: usize,
        targets: &[usize],
    ) -> Result<Vec<f64>, BundleError> {
        let p = self.dims.targets;
        let h = self.bundle.tensor_shaped(
            &task_array(&self.task.name, "hypotheses"),
            &[self.task.hypotheses.len(), p, p],
        )?;
        let mut out = Vec::with_capacity(upper_len(targets.len()));
        for (a, &i) in targets.iter().enumerate() {
            for &j in &targets[a + 1..] {
                out.push(h.get(&[hypothesis, i, j]));
            }
        }
        Ok(out)
    }

    /// `[layer][head]` (+ the head mean last) mean over `targets` of the
    /// log2 attention ratio, skipping non-finite values like the engine.
    fn log2_ratios(&self, state: usize, targets: &[usize]) -> Result<Vec<Vec<f64>>, BundleError> {
        let (l_n, h_n, p) = (self.dims.layers, self.dims.heads, self.dims.targets);
        let mass = self.array("attention_mass", &[2, l_n, h_n, p, 2])?;
        let mut out = vec![vec![f64::NAN; h_n + 1]; l_n];
        for (l, row) in out.iter_mut().enumerate() {
            let mut head_logs = vec![Vec::with_capacity(targets.len()); h_n];
            for (h, logs) in head_logs.iter_mut().enumerate() {
                let lane = mass.lane(&[state, l, h]);
                for &t in targets {
                    let (r, d) = (f64::from(lane[2 * t]), f64::from(lane[2 * t + 1]));
                    logs.push(log2_ratio(r, d));
                }
            }
            for h in 0..h_n {
                row[h] = mean_finite(head_logs[h].iter().copied());
            }
            // The head mean: per target, the mean of its finite head logs;
            // then the mean over targets.
            let per_target =
                (0..targets.len()).map(|k| mean_finite(head_logs.iter().map(|logs| logs[k])));
            row[h_n] = mean_finite(per_target);
        }
        Ok(out)
    }

    fn correlations(&self, targets: &[usize]) -> Result<Vec<Vec<[f64; 5]>>, BundleError> {
        let (l_n, p) = (self.dims.layers, self.dims.targets);
        let n_measures = self.task.measures.len();
        let improvement = self.array("improvement", &[p])?;
        let delta = self.array("measure_delta", &[n_measures, l_n, p])?;
        let mut out = Vec::with_capacity(n_measures);
        for m in 0..n_measures {
            let mut layers = Vec::with_capacity(l_n);
            for l in 0..l_n {
                let lane = delta.lane(&[m, l]);
                let (x, y): (Vec<f64>, Vec<f64>) = targets
                    .iter()
                    .map(|&t| (f64::from(improvement.data[t]), f64::from(lane[t])))
                    .filter(|(b, v)| b.is_finite() && v.is_finite())
                    .unzip();
                layers.push(correlation_row(&x, &y));
            }
            out.push(layers);
        }
        Ok(out)
    }
}

/// `log2(relevant / distractor)` with the engine's conventions: invalid
/// (negative or non-finite) masses and `0 / 0` give NaN.
pub fn log2_ratio(relevant: f64, distractor: f64) -> f64 {
    let valid = |m: f64| m.is_finite() && m >= 0.0;
    if valid(relevant) && valid(distractor) {
        (relevant / distractor).log2()
    } else {
        f64::NAN
    }
}

fn mean_finite(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// `(n, pearson r, p, spearman ρ, p)`; NaN statistics below three pairs.
pub fn correlation_row(x: &[f64], y: &[f64]) -> [f64; 5] {
    let n = x.len();
    if n < 3 {
        return [n as f64, f64::NAN, f64::NAN, f64::NAN, f64::NAN];
    }
    let (r, rho) = (pearson(x, y), spearman(x, y));
    [
        n as f64,
        r,
        correlation_p_value(r, n),
        rho,
        correlation_p_value(rho, n),
    ]
}

/// The key numbers of a selection, shown beside the figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Numbers {
    pub model: String,
    pub task: String,
    /// Block index of the selected layer.
    pub layer: usize,
    pub head: String,
    pub hypothesis: String,
    pub comparator: String,
    pub measure: String,
    pub shots: usize,
    pub targets: usize,
    pub conditions: String,
    pub alignment_zero: f64,
    pub alignment_k: f64,
    pub log2_ratio_zero: f64,
    pub log2_ratio_k: f64,
    pub correlation_r: f64,
    pub correlation_p: f64,
    pub correlation_n: f64,
    pub behavior_zero: f64,
    pub behavior_k: f64,
    pub behavior_metric: String,
    /// The patching numbers at the patched layer nearest the selected one,
    /// when the task was patched.
    pub patching: Option<PatchingNumbers>,
}

/// Figure identifiers, in report order; the canvas ids and SVG file names
/// are built from them.
pub const FIGURES: [&str; 10] = [
    "behavior",
    "matrices",
    "alignment",
    "probe",
    "attention_ratio",
    "attention_change",
    "correlation",
    "scatter",
    "recovery",
    "recovery_conditions",
];

/// Every figure of the selected model and task (figures that do not apply,
/// such as attention for a task without spans, are left out).
pub fn figures(
    bundle: &Bundle,
    derived: &Derived,
    selection: &Selection,
) -> Result<Vec<(&'static str, Figure)>, BundleError> {
    let ctx = Context::new(bundle, selection)?;
    let mut out = vec![
        ("behavior", Figure::Behavior(behavior(&ctx, derived)?)),
        (
            "matrices",
            Figure::Matrices(matrices(&ctx, derived, selection)?),
        ),
        (
            "alignment",
            Figure::Alignment(alignment(&ctx, derived, selection)),
        ),
        ("probe", Figure::Probe(probe(&ctx, selection)?)),
    ];
    if ctx.task.attention.is_some() {
        out.push((
            "attention_ratio",
            Figure::AttentionRatio(attention_ratio(&ctx, derived, selection)),
        ));
        out.push((
            "attention_change",
            Figure::AttentionChange(attention_change(&ctx, derived, selection)),
        ));
    }
    if !ctx.task.measures.is_empty() {
        out.push((
            "correlation",
            Figure::Correlation(correlation(&ctx, derived, selection)),
        ));
        out.push((
            "scatter",
            Figure::Scatter(scatter(&ctx, derived, selection)?),
        ));
    }
    if let Some(p) = &derived.patching {
        out.push((
            "recovery",
            Figure::Recovery(patching::recovery_figure(&ctx, derived, p, selection)),
        ));
        out.push((
            "recovery_conditions",
            Figure::RecoveryByCondition(patching::by_condition_figure(&ctx, p, selection)),
        ));
    }
    Ok(out)
}

fn state_labels(ctx: &Context<'_>) -> [String; 2] {
    ["0-shot".to_string(), format!("{}-shot", ctx.task.shots)]
}

fn subset_note(ctx: &Context<'_>, derived: &Derived) -> String {
    if derived.targets.len() == ctx.dims.targets {
        String::new()
    } else {
        format!(
            " ({} of {} targets)",
            derived.targets.len(),
            ctx.dims.targets
        )
    }
}

fn behavior(ctx: &Context<'_>, derived: &Derived) -> Result<BehaviorByCondition, BundleError> {
    let values = ctx.array("behavior", &[2, ctx.dims.targets])?;
    let labels = state_labels(ctx);
    let proportions = ctx.task.behavior.metric == "correct";
    let groups = (0..2)
        .map(|s| {
            let per_condition = (0..ctx.task.conditions.len())
                .map(|c| {
                    derived
                        .targets
                        .iter()
                        .filter(|&&t| ctx.task.target_conditions[t] == c)
                        .map(|&t| values.get(&[s, t]))
                        .collect()
                })
                .collect();
            (labels[s].clone(), per_condition)
        })
        .collect();
    Ok(BehaviorByCondition {
        title: format!(
            "{} · {}: behaviour before and after ICL",
            ctx.model.name, ctx.task.name
        ),
        y_label: if proportions {
            "proportion correct".to_string()
        } else {
            ctx.task.behavior.metric.clone()
        },
        proportions,
        conditions: ctx.task.conditions.clone(),
        groups,
    })
}

fn matrices(
    ctx: &Context<'_>,
    derived: &Derived,
    selection: &Selection,
) -> Result<MatrixPanels, BundleError> {
    let targets = &derived.targets;
    let n = targets.len();
    let full = |upper: &[f64], diagonal: f64| {
        let mut m = vec![diagonal; n * n];
        let mut k = 0;
        for i in 0..n {
            for j in i + 1..n {
                m[i * n + j] = upper[k];
                m[j * n + i] = upper[k];
                k += 1;
            }
        }
        m
    };
    let hypothesis = ctx.hypothesis_upper(selection.hypothesis, targets)?;
    // Hypotheses are on their own scales (graded ones are ≤ 0): rescale to
    // -1..1 so that one colour scale serves every panel.
    let (lo, hi) = hypothesis
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let scaled: Vec<f64> = hypothesis
        .iter()
        .map(|&v| {
            if hi > lo {
                2.0 * (v - lo) / (hi - lo) - 1.0
            } else {
                1.0
            }
        })
        .collect();
    let labels = state_labels(ctx);
    let layer = ctx.model.layers.get(selection.layer).copied().unwrap_or(0);
    let mut panels = vec![(
        format!(
            "hypothesis: {}",
            ctx.task
                .hypotheses
                .get(selection.hypothesis)
                .cloned()
                .unwrap_or_default()
        ),
        n,
        full(&scaled, 1.0),
    )];
    for (s, label) in labels.iter().enumerate() {
        let upper = ctx.similarity_upper(s, selection.layer, targets)?;
        panels.push((format!("similarity, {label}"), n, full(&upper, 1.0)));
    }
    Ok(MatrixPanels {
        title: format!(
            "{} · {}: hypothesis and representational similarity at layer {layer}{}",
            ctx.model.name,
            ctx.task.name,
            subset_note(ctx, derived)
        ),
        panels,
        row_condition: targets
            .iter()
            .map(|&t| ctx.task.target_conditions[t])
            .collect(),
    })
}

fn layer_axis(ctx: &Context<'_>) -> Vec<f64> {
    ctx.model.layers.iter().map(|&l| l as f64).collect()
}

fn alignment(ctx: &Context<'_>, derived: &Derived, selection: &Selection) -> LayerCurves {
    let xs = layer_axis(ctx);
    let labels = state_labels(ctx);
    let series = (0..2)
        .map(|s| {
            let points = xs
                .iter()
                .copied()
                .zip(derived.alignment[s].iter().copied())
                .collect();
            let (band, significant) = match &derived.alignment_stats {
                Some(stats) => (
                    xs.iter()
                        .zip(&stats[s])
                        .map(|(&x, &(_, lo, hi))| (x, lo, hi))
                        .collect(),
                    xs.iter()
                        .zip(&stats[s])
                        .filter(|(_, (p, _, _))| *p < ALPHA)
                        .map(|(&x, _)| x)
                        .collect(),
                ),
                None => (Vec::new(), Vec::new()),
            };
            Series {
                label: labels[s].clone(),
                colour: s,
                points,
                band,
                significant,
                dashed: false,
            }
        })
        .collect();
    let mut series: Vec<Series> = series;
    if let Some(draws) = between_draw_series(ctx, derived, selection, &xs) {
        series[1].label.push_str(", first draw");
        series.push(draws);
    }
    let hypothesis = ctx
        .task
        .hypotheses
        .get(selection.hypothesis)
        .cloned()
        .unwrap_or_default();
    let comparator = ctx
        .bundle
        .manifest
        .comparators
        .get(selection.comparator)
        .cloned()
        .unwrap_or_default();
    LayerCurves {
        title: format!(
            "{} · {}: alignment with “{hypothesis}” by layer{}",
            ctx.model.name,
            ctx.task.name,
            subset_note(ctx, derived)
        ),
        y_label: format!("alignment ({comparator})"),
        y_range: Some((-1.0, 1.0)),
        references: vec![0.0],
        selected_layer: ctx.model.layers.get(selection.layer).copied(),
        series,
    }
}

/// The k-shot alignment's range over every demonstration draw, as a dashed
/// line (their mean) with a band (lowest to highest draw), beside the first
/// draw's curve. Only for the whole task: the draws were analysed on every
/// target, and a subset's range would need their similarity matrices.
fn between_draw_series(
    ctx: &Context<'_>,
    derived: &Derived,
    selection: &Selection,
    xs: &[f64],
) -> Option<Series> {
    let draws = ctx.task.draws;
    if draws < 2 || derived.targets.len() != ctx.dims.targets {
        return None;
    }
    let (n_hyp, n_comp) = (
        ctx.task.hypotheses.len(),
        ctx.bundle.manifest.comparators.len(),
    );
    let values = ctx
        .array("alignment_draws", &[draws, n_hyp, n_comp, ctx.dims.layers])
        .ok()?;
    let (h, c) = (selection.hypothesis, selection.comparator);
    let mut points = Vec::with_capacity(xs.len());
    let mut band = Vec::with_capacity(xs.len());
    for (l, &x) in xs.iter().enumerate() {
        let per_draw: Vec<f64> = (0..draws)
            .map(|d| values.get(&[d, h, c, l]))
            .filter(|v| v.is_finite())
            .collect();
        if per_draw.len() < draws {
            points.push((x, f64::NAN));
            band.push((x, f64::NAN, f64::NAN));
            continue;
        }
        let mean = per_draw.iter().sum::<f64>() / draws as f64;
        let low = per_draw.iter().copied().fold(f64::INFINITY, f64::min);
        let high = per_draw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        points.push((x, mean));
        band.push((x, low, high));
    }
    Some(Series {
        label: format!("{}-shot, mean and range of {draws} draws", ctx.task.shots),
        colour: 1,
        points,
        band,
        significant: Vec::new(),
        dashed: true,
    })
}

fn probe(ctx: &Context<'_>, selection: &Selection) -> Result<LayerCurves, BundleError> {
    let n_probes = ctx.task.probes.len();
    let scores = ctx.array("probe", &[2, n_probes, ctx.dims.layers])?;
    let xs = layer_axis(ctx);
    let labels = state_labels(ctx);
    let mut series = Vec::new();
    for (p, entry) in ctx.task.probes.iter().enumerate() {
        for (s, label) in labels.iter().enumerate() {
            series.push(Series {
                label: format!("{} ({}), {label}", entry.param, entry.metric),
                colour: 2 * p + s,
                points: xs
                    .iter()
                    .enumerate()
                    .map(|(l, &x)| (x, scores.get(&[s, p, l])))
                    .collect(),
                band: Vec::new(),
                significant: Vec::new(),
                dashed: false,
            });
        }
    }
    let metrics: Vec<&str> = ctx.task.probes.iter().map(|p| p.metric.as_str()).collect();
    let y_label = if metrics.iter().all(|m| *m == "accuracy") {
        "cross-validated accuracy"
    } else if metrics.iter().all(|m| *m == "r2") {
        "cross-validated R²"
    } else {
        "cross-validated accuracy or R²"
    };
    Ok(LayerCurves {
        title: format!(
            "{} · {}: probe score by layer (every condition)",
            ctx.model.name, ctx.task.name
        ),
        y_label: y_label.to_string(),
        y_range: None,
        references: Vec::new(),
        selected_layer: ctx.model.layers.get(selection.layer).copied(),
        series,
    })
}

fn head_label(selection: &Selection) -> String {
    selection
        .head
        .map_or("mean over heads".to_string(), |h| format!("head {h}"))
}

fn attention_ratio(ctx: &Context<'_>, derived: &Derived, selection: &Selection) -> LayerCurves {
    let xs = layer_axis(ctx);
    let labels = state_labels(ctx);
    let head = selection.head.unwrap_or(ctx.dims.heads);
    let series = (0..2)
        .map(|s| Series {
            label: labels[s].clone(),
            colour: s,
            points: xs
                .iter()
                .enumerate()
                .map(|(l, &x)| {
                    (
                        x,
                        derived.log2_ratio[s]
                            .get(l)
                            .and_then(|r| r.get(head))
                            .copied()
                            .unwrap_or(f64::NAN),
                    )
                })
                .collect(),
            band: Vec::new(),
            significant: Vec::new(),
            dashed: false,
        })
        .collect();
    LayerCurves {
        title: format!(
            "{} · {}: attention to relevant vs distractor, {}{}",
            ctx.model.name,
            ctx.task.name,
            head_label(selection),
            subset_note(ctx, derived)
        ),
        y_label: "log2(relevant / distractor attention)".to_string(),
        y_range: None,
        references: vec![0.0],
        selected_layer: ctx.model.layers.get(selection.layer).copied(),
        series,
    }
}

fn attention_change(ctx: &Context<'_>, derived: &Derived, selection: &Selection) -> LayerHeatmap {
    let h_n = ctx.dims.heads;
    let mut values = Vec::with_capacity(ctx.dims.layers * h_n);
    for l in 0..ctx.dims.layers {
        for h in 0..h_n {
            let at = |s: usize| {
                derived.log2_ratio[s]
                    .get(l)
                    .and_then(|r| r.get(h))
                    .copied()
                    .unwrap_or(f64::NAN)
            };
            values.push(at(1) - at(0));
        }
    }
    let limit = values
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    LayerHeatmap {
        title: format!(
            "{} · {}: change in log2 attention ratio after ICL, per head{}",
            ctx.model.name,
            ctx.task.name,
            subset_note(ctx, derived)
        ),
        value_label: format!("Δ log2 ratio ({}-shot − 0-shot)", ctx.task.shots),
        layers: ctx.model.layers.clone(),
        row_label: "head".to_string(),
        rows: h_n,
        row_names: Vec::new(),
        values,
        limit,
        selected_layer: ctx.model.layers.get(selection.layer).copied(),
        selected_row: selection.head,
    }
}

fn correlation(ctx: &Context<'_>, derived: &Derived, selection: &Selection) -> LayerCurves {
    let xs = layer_axis(ctx);
    let rows = derived
        .correlation
        .get(selection.measure)
        .cloned()
        .unwrap_or_default();
    let curve = |label: &str, colour: usize, value: usize, p: usize| Series {
        label: label.to_string(),
        colour,
        points: xs.iter().zip(&rows).map(|(&x, r)| (x, r[value])).collect(),
        band: Vec::new(),
        significant: xs
            .iter()
            .zip(&rows)
            .filter(|(_, r)| r[p] < ALPHA)
            .map(|(&x, _)| x)
            .collect(),
        dashed: false,
    };
    let measure = ctx
        .task
        .measures
        .get(selection.measure)
        .cloned()
        .unwrap_or_default();
    LayerCurves {
        title: format!(
            "{} · {}: behaviour improvement vs change in {measure}{}",
            ctx.model.name,
            ctx.task.name,
            subset_note(ctx, derived)
        ),
        y_label: "correlation across targets".to_string(),
        y_range: Some((-1.0, 1.0)),
        references: vec![0.0],
        selected_layer: ctx.model.layers.get(selection.layer).copied(),
        series: vec![curve("Pearson r", 2, 1, 2), curve("Spearman ρ", 3, 3, 4)],
    }
}

fn scatter(
    ctx: &Context<'_>,
    derived: &Derived,
    selection: &Selection,
) -> Result<Scatter, BundleError> {
    let (l_n, p) = (ctx.dims.layers, ctx.dims.targets);
    let n_measures = ctx.task.measures.len();
    let improvement = ctx.array("improvement", &[p])?;
    let delta = ctx.array("measure_delta", &[n_measures, l_n, p])?;
    let measure = selection.measure.min(n_measures.saturating_sub(1));
    let lane = delta.lane(&[measure, selection.layer.min(l_n.saturating_sub(1))]);
    let points: Vec<(f64, f64, usize)> = derived
        .targets
        .iter()
        .map(|&t| {
            (
                f64::from(lane[t]),
                f64::from(improvement.data[t]),
                ctx.task.target_conditions[t],
            )
        })
        .filter(|(x, y, _)| x.is_finite() && y.is_finite())
        .collect();
    let xs: Vec<f64> = points.iter().map(|p| p.0).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    let row = correlation_row(&xs, &ys);
    let fit = least_squares(&xs, &ys);
    let layer = ctx.model.layers.get(selection.layer).copied().unwrap_or(0);
    let measure_name = ctx.task.measures.get(measure).cloned().unwrap_or_default();
    Ok(Scatter {
        title: format!(
            "{} · {}: per-target change at layer {layer}{}",
            ctx.model.name,
            ctx.task.name,
            subset_note(ctx, derived)
        ),
        x_label: format!("Δ {measure_name} ({}-shot − 0-shot)", ctx.task.shots),
        y_label: format!("behaviour improvement ({})", ctx.task.behavior.metric),
        points,
        condition_names: ctx.task.conditions.clone(),
        fit,
        note: format!(
            "Pearson r = {} (p = {}), n = {}",
            fmt_number(row[1]),
            fmt_p(row[2]),
            row[0]
        ),
    })
}

fn least_squares(x: &[f64], y: &[f64]) -> Option<(f64, f64)> {
    let n = x.len();
    if n < 2 {
        return None;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let sxx: f64 = x.iter().map(|v| (v - mx) * (v - mx)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let slope = sxy / sxx;
    Some((slope, my - slope * mx))
}

/// A number for text: three decimals, "n/a" for NaN, "∞" for infinities.
pub fn fmt_number(x: f64) -> String {
    if x.is_nan() {
        "n/a".to_string()
    } else if x.is_infinite() {
        if x > 0.0 {
            "∞".to_string()
        } else {
            "−∞".to_string()
        }
    } else {
        format!("{x:.3}")
    }
}

/// A p-value for text: "< 0.001" below a thousandth.
pub fn fmt_p(p: f64) -> String {
    if p.is_nan() {
        "n/a".to_string()
    } else if p < 0.001 {
        "< 0.001".to_string()
    } else {
        format!("{p:.3}")
    }
}

/// The key numbers for `selection`.
pub fn numbers(
    bundle: &Bundle,
    derived: &Derived,
    selection: &Selection,
) -> Result<Numbers, BundleError> {
    let ctx = Context::new(bundle, selection)?;
    let l = selection.layer;
    let head = selection.head.unwrap_or(ctx.dims.heads);
    let ratio = |s: usize| {
        derived.log2_ratio[s]
            .get(l)
            .and_then(|r| r.get(head))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let corr = derived
        .correlation
        .get(selection.measure)
        .and_then(|m| m.get(l))
        .copied()
        .unwrap_or([f64::NAN; 5]);
    let values = ctx.array("behavior", &[2, ctx.dims.targets])?;
    let behavior_mean =
        |s: usize| mean_finite(derived.targets.iter().map(|&t| values.get(&[s, t])));
    let conditions = if selection.conditions.is_empty() {
        "all".to_string()
    } else {
        selection
            .conditions
            .iter()
            .filter_map(|&c| ctx.task.conditions.get(c).cloned())
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(Numbers {
        model: ctx.model.name.clone(),
        task: ctx.task.name.clone(),
        layer: ctx.model.layers.get(l).copied().unwrap_or(0),
        head: head_label(selection),
        hypothesis: ctx
            .task
            .hypotheses
            .get(selection.hypothesis)
            .cloned()
            .unwrap_or_default(),
        comparator: bundle
            .manifest
            .comparators
            .get(selection.comparator)
            .cloned()
            .unwrap_or_default(),
        measure: ctx
            .task
            .measures
            .get(selection.measure)
            .cloned()
            .unwrap_or_default(),
        shots: ctx.task.shots,
        targets: derived.targets.len(),
        conditions,
        alignment_zero: derived.alignment[0].get(l).copied().unwrap_or(f64::NAN),
        alignment_k: derived.alignment[1].get(l).copied().unwrap_or(f64::NAN),
        log2_ratio_zero: ratio(0),
        log2_ratio_k: ratio(1),
        correlation_r: corr[1],
        correlation_p: corr[2],
        correlation_n: corr[0],
        behavior_zero: behavior_mean(0),
        behavior_k: behavior_mean(1),
        behavior_metric: ctx.task.behavior.metric.clone(),
        patching: derived
            .patching
            .as_ref()
            .and_then(|p| patching::numbers(&ctx, p, selection)),
    })
}
