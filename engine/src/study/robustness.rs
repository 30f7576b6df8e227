//! Findings across demonstration draws (`[robustness] draws`, `orders`):
//! every headline number of every draw, and how it spreads across draws,
//! beside the bootstrap interval within each draw.
//!
//! The 0-shot prompts are shared by every draw, so each draw's finding is
//! its k-shot state against the same 0-shot state. Patching runs in every
//! draw (each draw's k-shot states patched into the same 0-shot prompts).

use super::analyze::{patching_recoveries, Correlated, ModelRun, StateMeasures, StudyResults};
use super::export::{num, Table};
use super::patching::TaskPatching;
use crate::analysis::draws::{between_draw_spread, paired_change_interval, DrawSpread};
use crate::analysis::resample::{derive_seed, named_stream};
use crate::analysis::stats::bootstrap_mean_interval;
use crate::experiment::{Experiment, Scoring};
use viewer::bundle::{model_array, Tensor, PATCHING_MEASURES, PATCHING_METHODS};

/// A value and its bootstrap interval within one draw (NaN when the
/// finding has none, such as a cross-validated probe score).
#[derive(Debug, Clone, Copy)]
pub(super) struct Within {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

impl Within {
    fn bare(value: f64) -> Within {
        Within {
            value,
            low: f64::NAN,
            high: f64::NAN,
        }
    }
}

/// One draw's findings for one model and task.
#[derive(Debug)]
pub(super) struct DrawFindings {
    /// Mean per-target improvement of the behaviour (accuracy gain, or
    /// error reduction over targets whose both answers parse).
    behavior: Within,
    /// `[hypothesis][layer]`: k-shot minus 0-shot alignment (headline comparator).
    alignment_gain: Vec<Vec<Within>>,
    /// `[hypothesis][comparator][layer]`: the k-shot alignment, for the
    /// alignment figure's between-draw band.
    alignment_k: Vec<Vec<Vec<f64>>>,
    /// Per layer, then the mean over layers: the change of the head-mean
    /// log2 attention ratio.
    attention: Option<Vec<Within>>,
    /// `[parameter][layer]`: k-shot minus 0-shot probe score.
    probe: Vec<Vec<f64>>,
    /// Per measure: Pearson r of its change with the behaviour's, per layer.
    correlation: Vec<(String, Vec<f64>)>,
    /// Per patching method of [`PATCHING_HEADLINE_METHODS`] that ran: the
    /// recovered fraction of the k-shot gain in the answer's
    /// log-probability at each patched block `(block, fraction)`.
    patching: Vec<(usize, Vec<(usize, Within)>)>,
}

/// The patching methods whose recovery is a finding (their controls are
/// expected to recover nothing; their numbers stay in `patching_recovery`).
const PATCHING_HEADLINE_METHODS: [&str; 2] = ["replace", "task-vector"];

/// The patching measure of the findings: the teacher-forced log-probability
/// of the whole answer, the one the report's sentences quote.
const PATCHING_HEADLINE_MEASURE: &str = "answer_logprob";

fn mean_finite(values: &[f64]) -> f64 {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        f64::NAN
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    }
}

/// The findings of one draw: its k-shot state `k` against the shared
/// 0-shot state `zero`, and the draw's patching of the task, if any.
pub(super) fn findings(
    experiment: &Experiment,
    t: usize,
    zero: &StateMeasures,
    k: &StateMeasures,
    correlated: &Correlated,
    patching: Option<&TaskPatching>,
) -> DrawFindings {
    let task = &experiment.tasks[t];
    let options = &experiment.file.analysis;
    let seed = |purpose: &str| {
        derive_seed(
            experiment.file.seed,
            named_stream(&format!("robustness/{purpose}/{}", task.name)),
        )
    };
    let with_interval = |values: &[f64], purpose: &str| {
        let (low, high) =
            bootstrap_mean_interval(values, options.bootstrap, options.confidence, seed(purpose));
        Within {
            value: mean_finite(values),
            low,
            high,
        }
    };
    let behavior = with_interval(&correlated.improvement, "behavior");
    let alignment_gain = zero
        .alignment_values
        .iter()
        .zip(&k.alignment_values)
        .zip(
            zero.alignment_replicates
                .iter()
                .zip(&k.alignment_replicates),
        )
        .map(|((v0, vk), (r0, rk))| {
            (0..v0[0].len())
                .map(|li| {
                    let (low, high) = paired_change_interval(&r0[li], &rk[li], options.confidence);
                    Within {
                        value: vk[0][li] - v0[0][li],
                        low,
                        high,
                    }
                })
                .collect()
        })
        .collect();
    let attention = match (&zero.attention, &k.attention) {
        (Some(a), Some(b)) => {
            let changes: Vec<Vec<f64>> = a
                .iter()
                .zip(b)
                .map(|(x, y)| x.iter().zip(y).map(|(u, v)| v - u).collect())
                .collect();
            let mut per_layer: Vec<Within> = changes
                .iter()
                .enumerate()
                .map(|(li, c)| with_interval(c, &format!("attention/{li}")))
                .collect();
            let n_targets = changes.first().map_or(0, Vec::len);
            let over_layers: Vec<f64> = (0..n_targets)
                .map(|target| mean_finite(&changes.iter().map(|c| c[target]).collect::<Vec<_>>()))
                .collect();
            per_layer.push(with_interval(&over_layers, "attention/mean"));
            Some(per_layer)
        }
        _ => None,
    };
    let probe = zero
        .probe_values
        .iter()
        .zip(&k.probe_values)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| y - x).collect())
        .collect();
    DrawFindings {
        behavior,
        alignment_gain,
        alignment_k: k.alignment_values.clone(),
        attention,
        probe,
        correlation: correlated.pearson.clone(),
        patching: patching
            .map(|tp| patching_findings(experiment, tp))
            .unwrap_or_default(),
    }
}

/// The recovered fraction of each headline method at each patched block,
/// with its bootstrap interval over targets.
fn patching_findings(
    experiment: &Experiment,
    tp: &TaskPatching,
) -> Vec<(usize, Vec<(usize, Within)>)> {
    let cells = patching_recoveries(experiment, tp);
    let Some(measure) = PATCHING_MEASURES
        .iter()
        .position(|&m| m == PATCHING_HEADLINE_MEASURE)
    else {
        return Vec::new();
    };
    PATCHING_METHODS
        .iter()
        .enumerate()
        .filter(|(_, name)| PATCHING_HEADLINE_METHODS.contains(name))
        .filter_map(|(m, _)| {
            let per_layer: Vec<(usize, Within)> = cells
                .iter()
                .filter(|c| c.method == m && c.measure == measure)
                .map(|c| {
                    let r = &c.recovery;
                    let within = Within {
                        value: r.fraction,
                        low: r.ci_low,
                        high: r.ci_high,
                    };
                    (tp.layers[c.layer_index], within)
                })
                .collect();
            (!per_layer.is_empty()).then_some((m, per_layer))
        })
        .collect()
}

/// The header of `robustness_draws.csv`.
const DRAW_HEADER: &[&str] = &[
    "model",
    "task",
    "finding",
    "layer",
    "draw",
    "value",
    "within_low",
    "within_high",
];

/// The header of `robustness.csv`.
const SPREAD_HEADER: &[&str] = &[
    "model",
    "task",
    "finding",
    "layer",
    "draws",
    "mean",
    "min",
    "max",
    "between_low",
    "between_high",
    "within_low",
    "within_high",
    "sign_kept",
    "headline",
];

/// Which row of a family of findings is its headline.
enum Headline {
    Row(usize),
    /// The largest mean over draws (a gain).
    Largest,
    /// The largest mean in magnitude (a correlation).
    Strongest,
}

/// One finding at one layer (or none) in every draw.
struct Series {
    finding: String,
    layer: String,
    per_draw: Vec<Within>,
}

/// Writes every draw's findings and their spread into `results`: the
/// `robustness_draws` and `robustness` tables and the `alignment_draws`
/// array `[draw, hypothesis, comparator, layer]`.
pub(super) fn record(
    experiment: &Experiment,
    run: &ModelRun,
    t: usize,
    draws: &[DrawFindings],
    results: &mut StudyResults,
) {
    let task = &experiment.tasks[t];
    let options = &experiment.file.analysis;
    if results.robustness.header.is_empty() {
        results.robustness = Table::new(SPREAD_HEADER);
        results.robustness_draws = Table::new(DRAW_HEADER);
    }
    let layer = |li: usize| run.layers[li].to_string();
    let comparator = options.comparators.first().cloned().unwrap_or_default();
    // Each family of findings, with one series per layer, and the row the
    // report shows: the one given, or the layer the figures' sentences
    // point at (where a gain is largest, where a correlation is strongest),
    // judged by the mean over draws.
    let mut families: Vec<(Vec<Series>, Headline)> = Vec::new();
    let behavior_name = match task.scoring {
        Scoring::Number => "behaviour: error reduction",
        Scoring::Keywords => "behaviour: accuracy gain",
    };
    families.push((
        vec![Series {
            finding: behavior_name.to_string(),
            layer: String::new(),
            per_draw: draws.iter().map(|d| d.behavior).collect(),
        }],
        Headline::Row(0),
    ));
    for (hi, h) in task.hypotheses.iter().enumerate() {
        let series = (0..run.layers.len())
            .map(|li| Series {
                finding: format!("alignment gain: {} ({comparator})", h.name),
                layer: layer(li),
                per_draw: draws.iter().map(|d| d.alignment_gain[hi][li]).collect(),
            })
            .collect();
        families.push((series, Headline::Largest));
    }
    if draws.iter().all(|d| d.attention.is_some()) && task.attention_segments.is_some() {
        let n = run.layers.len();
        let series = (0..=n)
            .map(|li| Series {
                finding: "attention ratio change (log2)".to_string(),
                layer: if li < n {
                    layer(li)
                } else {
                    "mean".to_string()
                },
                per_draw: draws
                    .iter()
                    .map(|d| {
                        d.attention
                            .as_ref()
                            .map_or(Within::bare(f64::NAN), |a| a[li])
                    })
                    .collect(),
            })
            .collect();
        families.push((series, Headline::Row(n)));
    }
    for (pi, p) in task.probes.iter().enumerate() {
        let metric = if p.numeric { "r2" } else { "accuracy" };
        let series = (0..run.layers.len())
            .map(|li| Series {
                finding: format!("probe change: {} ({metric})", p.param),
                layer: layer(li),
                per_draw: draws
                    .iter()
                    .map(|d| Within::bare(d.probe[pi][li]))
                    .collect(),
            })
            .collect();
        families.push((series, Headline::Largest));
    }
    let n_measures = draws.first().map_or(0, |d| d.correlation.len());
    for mi in 0..n_measures {
        let name = &draws[0].correlation[mi].0;
        let series = (0..run.layers.len())
            .map(|li| Series {
                finding: format!("correlation with behaviour: {name}"),
                layer: layer(li),
                per_draw: draws
                    .iter()
                    .map(|d| Within::bare(d.correlation[mi].1[li]))
                    .collect(),
            })
            .collect();
        families.push((series, Headline::Strongest));
    }
    // Patching: a method's family only where every draw patched the same
    // blocks with it (a draw without a complete target has no fraction).
    for (m, first) in draws.first().map_or(&[][..], |d| &d.patching[..]) {
        let blocks: Vec<usize> = first.iter().map(|(block, _)| *block).collect();
        let per_draw: Option<Vec<&Vec<(usize, Within)>>> = draws
            .iter()
            .map(|d| {
                d.patching
                    .iter()
                    .find(|(other, _)| other == m)
                    .map(|(_, cells)| cells)
                    .filter(|cells| cells.iter().map(|(b, _)| *b).eq(blocks.iter().copied()))
            })
            .collect();
        let Some(per_draw) = per_draw else {
            continue;
        };
        let series = blocks
            .iter()
            .enumerate()
            .map(|(i, block)| Series {
                finding: format!(
                    "patching recovery: {} (answer log-probability)",
                    PATCHING_METHODS[*m]
                ),
                layer: block.to_string(),
                per_draw: per_draw.iter().map(|cells| cells[i].1).collect(),
            })
            .collect();
        families.push((series, Headline::Largest));
    }

    let mut headlines: Vec<(String, DrawSpread, Vec<Within>)> = Vec::new();
    for (series, headline) in families {
        let spreads: Vec<DrawSpread> = series
            .iter()
            .map(|s| {
                let values: Vec<f64> = s.per_draw.iter().map(|w| w.value).collect();
                between_draw_spread(&values, options.confidence)
            })
            .collect();
        let best_by = |key: fn(f64) -> f64| {
            spreads
                .iter()
                .enumerate()
                .filter(|(_, s)| s.mean.is_finite())
                .max_by(|a, b| key(a.1.mean).total_cmp(&key(b.1.mean)))
                .map(|(i, _)| i)
        };
        let headline = match headline {
            Headline::Row(i) => Some(i),
            Headline::Largest => best_by(|m| m),
            Headline::Strongest => best_by(f64::abs),
        };
        if let Some(i) = headline {
            let s = &series[i];
            let label = match s.layer.as_str() {
                "" => s.finding.clone(),
                "mean" => format!("{}, mean over layers", s.finding),
                layer => format!("{} at layer {layer}", s.finding),
            };
            headlines.push((label, spreads[i], s.per_draw.clone()));
        }
        for (i, (s, spread)) in series.iter().zip(&spreads).enumerate() {
            for (d, w) in s.per_draw.iter().enumerate() {
                results.robustness_draws.push(vec![
                    run.name.clone(),
                    task.name.clone(),
                    s.finding.clone(),
                    s.layer.clone(),
                    d.to_string(),
                    num(w.value),
                    num(w.low),
                    num(w.high),
                ]);
            }
            let lows: Vec<f64> = s.per_draw.iter().map(|w| w.low).collect();
            let highs: Vec<f64> = s.per_draw.iter().map(|w| w.high).collect();
            results.robustness.push(vec![
                run.name.clone(),
                task.name.clone(),
                s.finding.clone(),
                s.layer.clone(),
                spread.n.to_string(),
                num(spread.mean),
                num(spread.min),
                num(spread.max),
                num(spread.low),
                num(spread.high),
                num(mean_finite(&lows)),
                num(mean_finite(&highs)),
                spread.sign_kept.to_string(),
                (Some(i) == headline).to_string(),
            ]);
        }
    }

    let fields = viewer::bundle::ROBUSTNESS_FIELDS.len();
    let mut rows = Tensor::nan(&[headlines.len(), fields + draws.len()]);
    for (i, (_, spread, per_draw)) in headlines.iter().enumerate() {
        let within =
            |f: fn(&Within) -> f64| mean_finite(&per_draw.iter().map(f).collect::<Vec<_>>());
        let head = [
            spread.mean,
            spread.min,
            spread.max,
            spread.low,
            spread.high,
            within(|w| w.low),
            within(|w| w.high),
            f64::from(u8::from(spread.sign_kept)),
        ];
        for (f, v) in head
            .into_iter()
            .chain(per_draw.iter().map(|w| w.value))
            .enumerate()
        {
            rows.set(&[i, f], v);
        }
    }
    results
        .arrays
        .insert(model_array(&run.name, &task.name, "robustness"), rows);
    results
        .robustness_entries
        .entry(task.name.clone())
        .or_insert_with(|| viewer::bundle::RobustnessEntry {
            findings: Default::default(),
            confidence: options.confidence,
        })
        .findings
        .insert(
            run.name.clone(),
            headlines.into_iter().map(|(label, _, _)| label).collect(),
        );

    let (n_hyp, n_comp, n_layers) = (
        task.hypotheses.len(),
        options.comparators.len(),
        run.layers.len(),
    );
    let mut alignment = Tensor::nan(&[draws.len(), n_hyp, n_comp, n_layers]);
    for (d, findings) in draws.iter().enumerate() {
        for (hi, per_comparator) in findings.alignment_k.iter().enumerate() {
            for (c, per_layer) in per_comparator.iter().enumerate() {
                for (li, &v) in per_layer.iter().enumerate() {
                    alignment.set(&[d, hi, c, li], v);
                }
            }
        }
    }
    results.arrays.insert(
        model_array(&run.name, &task.name, "alignment_draws"),
        alignment,
    );
}
