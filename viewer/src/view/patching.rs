//! The ICL-patching figures ("Putting the in-context state back"): how much
//! of the k-shot improvement returns when the 0-shot run of a target is
//! patched, at one layer, with the in-context state.
//!
//! For a method, a measure and a layer, over the targets whose patched,
//! 0-shot and k-shot values are all finite:
//!
//! ```text
//! fraction = (mean(patched) − mean(0-shot)) / (mean(k-shot) − mean(0-shot))
//! ```
//!
//! a ratio of means (0 = none of the k-shot gain recovered, 1 = all of it;
//! NaN when the k-shot gain is exactly 0). The direction of a measure does
//! not matter: for an error (lower is better) both differences are
//! negative.
//!
//! With every condition selected, the engine's `patching_recovery` is used
//! as stored, with its bootstrap interval over targets. For a subset of
//! conditions the point estimates are recomputed here from `patching` and
//! `patching_reference`, the same formula over the subset's targets; the
//! bootstrap is not redone in the browser (like the alignment's), so subset
//! figures have no band. The per-condition heatmap is always recomputed.
//!
//! Shapes (docs/bundle.md): `patching` `[method, layer, target, measure]`,
//! `patching_reference` `[state, target, measure]`, `patching_recovery`
//! `[method, measure, layer, 6]` (fields [`RECOVERY_FIELDS`]). Means are
//! accumulated in `f64` from the stored `f32`.

use serde::Serialize;

use super::{subset_note, Context, Selection};
use crate::bundle::{Bundle, BundleError, PatchingEntry, Tensor, RECOVERY_FIELDS};
use crate::figures::{LayerCurves, LayerHeatmap, Series};

/// The measure the report leads with: the teacher-forced log-probability
/// of the whole correct answer (a continuous measure over every target, so
/// less noisy than the greedy answer's behaviour).
pub const HEADLINE_MEASURE: &str = "answer_logprob";
/// The method of the per-condition figure and of the headline sentence.
pub const HEADLINE_METHOD: &str = "replace";
/// The `patching_recovery` fields' positions.
const FRACTION: usize = 0;
const CI_LOW: usize = 1;
const CI_HIGH: usize = 2;
const MEAN_PATCHED: usize = 3;
const MEAN_ZERO_SHOT: usize = 4;
const MEAN_K_SHOT: usize = 5;

/// One method × measure × layer of recovery (the `patching_recovery` fields).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Recovery {
    pub fraction: f64,
    /// The bootstrap interval; NaN when recomputed for a subset.
    pub ci_low: f64,
    pub ci_high: f64,
    pub mean_patched: f64,
    pub mean_zero_shot: f64,
    pub mean_k_shot: f64,
}

impl Recovery {
    const UNDEFINED: Recovery = Recovery {
        fraction: f64::NAN,
        ci_low: f64::NAN,
        ci_high: f64::NAN,
        mean_patched: f64::NAN,
        mean_zero_shot: f64::NAN,
        mean_k_shot: f64::NAN,
    };

    /// The point estimate over the targets where all three values are
    /// finite (see the module docs); no interval.
    pub fn of(patched: &[f64], zero_shot: &[f64], k_shot: &[f64]) -> Recovery {
        let (mut sums, mut n) = ([0.0f64; 3], 0usize);
        for ((&p, &z), &k) in patched.iter().zip(zero_shot).zip(k_shot) {
            if p.is_finite() && z.is_finite() && k.is_finite() {
                sums[0] += p;
                sums[1] += z;
                sums[2] += k;
                n += 1;
            }
        }
        if n == 0 {
            return Recovery::UNDEFINED;
        }
        let [p, z, k] = sums.map(|s| s / n as f64);
        let gain = k - z;
        Recovery {
            fraction: if gain == 0.0 {
                f64::NAN
            } else {
                (p - z) / gain
            },
            mean_patched: p,
            mean_zero_shot: z,
            mean_k_shot: k,
            ..Recovery::UNDEFINED
        }
    }

    fn from_fields(fields: &[f32]) -> Recovery {
        let at = |f: usize| fields.get(f).map_or(f64::NAN, |&v| f64::from(v));
        Recovery {
            fraction: at(FRACTION),
            ci_low: at(CI_LOW),
            ci_high: at(CI_HIGH),
            mean_patched: at(MEAN_PATCHED),
            mean_zero_shot: at(MEAN_ZERO_SHOT),
            mean_k_shot: at(MEAN_K_SHOT),
        }
    }
}

/// The patching analysis of one model × task for a condition subset.
#[derive(Debug, Clone)]
pub struct Patching {
    pub entry: PatchingEntry,
    /// Block indices patched: the x axis of both figures.
    pub layers: Vec<usize>,
    /// `[method][measure][layer]`.
    pub recovery: Vec<Vec<Vec<Recovery>>>,
    /// Whether `recovery` is the engine's, with its bootstrap intervals
    /// (every condition selected).
    pub stored: bool,
    /// The conditions of the subset, in the task's order: the heatmap's rows.
    pub conditions: Vec<usize>,
    /// `[measure][row][layer]`: the fraction recovered by
    /// [`HEADLINE_METHOD`] over the targets of each of `conditions`.
    pub by_condition: Vec<Vec<Vec<f64>>>,
}

/// The `patching` and `patching_reference` arrays of one model × task.
struct Arrays<'b> {
    patched: &'b Tensor,
    reference: &'b Tensor,
}

impl<'b> Arrays<'b> {
    fn read(
        ctx: &Context<'b>,
        entry: &PatchingEntry,
        n_layers: usize,
    ) -> Result<Self, BundleError> {
        let (n_methods, n_measures, p) =
            (entry.methods.len(), entry.measures.len(), ctx.dims.targets);
        Ok(Arrays {
            patched: ctx.array("patching", &[n_methods, n_layers, p, n_measures])?,
            reference: ctx.array("patching_reference", &[2, p, n_measures])?,
        })
    }

    /// The recovery of one method × measure × layer over `targets`.
    fn recover(&self, method: usize, measure: usize, layer: usize, targets: &[usize]) -> Recovery {
        let values = |pick: &dyn Fn(usize) -> f64| -> Vec<f64> {
            targets.iter().map(|&t| pick(t)).collect()
        };
        Recovery::of(
            &values(&|t| self.patched.get(&[method, layer, t, measure])),
            &values(&|t| self.reference.get(&[0, t, measure])),
            &values(&|t| self.reference.get(&[1, t, measure])),
        )
    }

    /// `[method][measure][layer]` over `targets`, recomputed.
    fn recovery(&self, targets: &[usize]) -> Vec<Vec<Vec<Recovery>>> {
        let [n_methods, n_layers, _, n_measures] = self.patched.shape[..] else {
            return Vec::new();
        };
        (0..n_methods)
            .map(|m| {
                (0..n_measures)
                    .map(|q| {
                        (0..n_layers)
                            .map(|l| self.recover(m, q, l, targets))
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }
}

impl Patching {
    /// The patching of the selected model and task over `targets`, or
    /// `None` when the task was not patched (bundles from before patching,
    /// or a model left out of the analysis).
    pub(super) fn derive(
        ctx: &Context<'_>,
        targets: &[usize],
    ) -> Result<Option<Patching>, BundleError> {
        let Some((entry, layers)) = patched(ctx) else {
            return Ok(None);
        };
        let (n_methods, n_measures, n_layers) =
            (entry.methods.len(), entry.measures.len(), layers.len());
        let arrays = Arrays::read(ctx, entry, n_layers)?;
        let all = targets.len() == ctx.dims.targets;
        let recovery = if all {
            let stored = ctx.array(
                "patching_recovery",
                &[n_methods, n_measures, n_layers, RECOVERY_FIELDS.len()],
            )?;
            (0..n_methods)
                .map(|m| {
                    (0..n_measures)
                        .map(|q| {
                            (0..n_layers)
                                .map(|l| Recovery::from_fields(stored.lane(&[m, q, l])))
                                .collect()
                        })
                        .collect()
                })
                .collect()
        } else {
            arrays.recovery(targets)
        };

        let conditions: Vec<usize> = (0..ctx.task.conditions.len())
            .filter(|&c| targets.iter().any(|&t| ctx.task.target_conditions[t] == c))
            .collect();
        let method = headline_index(&entry.methods, HEADLINE_METHOD);
        let by_condition = (0..n_measures)
            .map(|q| {
                conditions
                    .iter()
                    .map(|&c| {
                        let of: Vec<usize> = targets
                            .iter()
                            .copied()
                            .filter(|&t| ctx.task.target_conditions[t] == c)
                            .collect();
                        (0..n_layers)
                            .map(|l| arrays.recover(method, q, l, &of).fraction)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        Ok(Some(Patching {
            entry: entry.clone(),
            layers: layers.clone(),
            recovery,
            stored: all,
            conditions,
            by_condition,
        }))
    }

    /// Position of `method` on the method axis (the first method when the
    /// bundle has no such method).
    pub fn method(&self, method: &str) -> usize {
        headline_index(&self.entry.methods, method)
    }

    /// Position of `measure` on the measure axis (the first measure when
    /// the bundle has no such measure).
    pub fn measure(&self, measure: &str) -> usize {
        headline_index(&self.entry.measures, measure)
    }

    /// The recovery of `method` and `measure` at layer index `layer`.
    pub fn at(&self, method: usize, measure: usize, layer: usize) -> Recovery {
        self.recovery
            .get(method)
            .and_then(|m| m.get(measure))
            .and_then(|q| q.get(layer))
            .copied()
            .unwrap_or(Recovery::UNDEFINED)
    }

    /// The layer index where `method` recovers the largest fraction of
    /// `measure` (the first on ties), if any fraction is defined.
    pub fn peak(&self, method: usize, measure: usize) -> Option<usize> {
        (0..self.layers.len())
            .map(|l| (l, self.at(method, measure, l).fraction))
            .filter(|(_, f)| f.is_finite())
            .fold(None, |best: Option<(usize, f64)>, (l, f)| match best {
                Some((_, b)) if b >= f => best,
                _ => Some((l, f)),
            })
            .map(|(l, _)| l)
    }

    /// The patched layer index nearest block index `block` (the lower on
    /// ties).
    pub fn nearest(&self, block: usize) -> Option<usize> {
        (0..self.layers.len()).min_by_key(|&l| self.layers[l].abs_diff(block))
    }
}

/// `[method][measure][layer]` recovery of the selected model and task over
/// `targets`, always recomputed from `patching` and `patching_reference`
/// (never read from `patching_recovery`, which the synthetic bundles fill
/// with it); `None` when the task was not patched.
pub fn recompute_recovery(
    bundle: &Bundle,
    selection: &Selection,
    targets: &[usize],
) -> Result<Option<Vec<Vec<Vec<Recovery>>>>, BundleError> {
    let ctx = Context::new(bundle, selection)?;
    let Some((entry, layers)) = patched(&ctx) else {
        return Ok(None);
    };
    Ok(Some(
        Arrays::read(&ctx, entry, layers.len())?.recovery(targets),
    ))
}

/// The task's patching entry and the model's patched layers, when the
/// task was patched on this model.
fn patched<'b>(ctx: &Context<'b>) -> Option<(&'b PatchingEntry, &'b Vec<usize>)> {
    let entry = ctx.task.patching.as_ref()?;
    Some((entry, entry.layers.get(&ctx.model.name)?))
}

/// Position of `name` in `names`, or 0.
fn headline_index(names: &[String], name: &str) -> usize {
    names.iter().position(|n| n == name).unwrap_or(0)
}

/// The default of [`Selection::patching_measure`]: [`HEADLINE_MEASURE`] on
/// the `measure` axis as the bundle format defines it.
pub fn headline_measure() -> usize {
    headline_index(
        &crate::bundle::PATCHING_MEASURES.map(String::from),
        HEADLINE_MEASURE,
    )
}

/// How a patching measure is named in titles and text.
pub fn measure_label(measure: &str, behavior_metric: &str) -> String {
    match measure {
        "answer_logprob" => "answer log-prob".to_string(),
        "first_token_logprob" => "first-token log-prob".to_string(),
        "behavior" => format!("behaviour ({behavior_metric})"),
        other => other.replace('_', " "),
    }
}

/// How a method is named in legends, and whether it is a control (drawn
/// dashed in its method's colour).
fn method_label(method: &str, shots: usize, scale: f64) -> (String, bool) {
    match method {
        "replace" => (format!("its own {shots}-shot state"), false),
        "replace-control" => (
            format!("control: another condition's {shots}-shot state"),
            true,
        ),
        "task-vector" => (format!("task vector added (×{scale})"), false),
        "task-vector-control" => ("control: random vector, same norm".to_string(), true),
        other => (other.to_string(), other.ends_with("-control")),
    }
}

/// A method's colour index: a control shares its method's.
fn method_colour(method: &str) -> usize {
    // Blue and orange: the Okabe–Ito pair that stays apart for every
    // common colour-vision deficiency.
    if method.starts_with("task-vector") {
        4
    } else {
        0
    }
}

/// The selected measure, clamped to the bundle's measure axis.
fn selected_measure(patching: &Patching, selection: &Selection) -> usize {
    selection
        .patching_measure
        .min(patching.entry.measures.len().saturating_sub(1))
}

fn measure_name(ctx: &Context<'_>, patching: &Patching, measure: usize) -> String {
    let name = patching
        .entry
        .measures
        .get(measure)
        .map_or("", String::as_str);
    measure_label(name, &ctx.task.behavior.metric)
}

/// The recovered-fraction-by-layer figure.
pub(super) fn recovery_figure(
    ctx: &Context<'_>,
    derived: &super::Derived,
    patching: &Patching,
    selection: &Selection,
) -> LayerCurves {
    let measure = selected_measure(patching, selection);
    let xs: Vec<f64> = patching.layers.iter().map(|&l| l as f64).collect();
    let series = patching
        .entry
        .methods
        .iter()
        .enumerate()
        .map(|(m, name)| {
            let (label, dashed) = method_label(name, ctx.task.shots, patching.entry.scale);
            let at = |l: usize| patching.at(m, measure, l);
            Series {
                label,
                colour: method_colour(name),
                points: xs
                    .iter()
                    .enumerate()
                    .map(|(l, &x)| (x, at(l).fraction))
                    .collect(),
                band: if patching.stored {
                    xs.iter()
                        .enumerate()
                        .map(|(l, &x)| (x, at(l).ci_low, at(l).ci_high))
                        .collect()
                } else {
                    Vec::new()
                },
                significant: Vec::new(),
                dashed,
            }
        })
        .collect();
    LayerCurves {
        title: format!(
            "{} · {}: {}-shot gain recovered by patching ({}){}",
            ctx.model.name,
            ctx.task.name,
            ctx.task.shots,
            measure_name(ctx, patching, measure),
            subset_note(ctx, derived)
        ),
        y_label: "fraction of the gain recovered".to_string(),
        // 0 = nothing recovered, 1 = the k-shot level; both always shown.
        y_range: Some((-0.2, 1.2)),
        references: vec![0.0, 1.0],
        selected_layer: selected_block(ctx, patching, selection),
        series,
    }
}

/// The per-condition heatmap of [`HEADLINE_METHOD`]'s recovered fraction.
pub(super) fn by_condition_figure(
    ctx: &Context<'_>,
    patching: &Patching,
    selection: &Selection,
) -> LayerHeatmap {
    let measure = selected_measure(patching, selection);
    let rows = patching
        .by_condition
        .get(measure)
        .cloned()
        .unwrap_or_default();
    let n_layers = patching.layers.len();
    let mut values = Vec::with_capacity(n_layers * rows.len());
    for l in 0..n_layers {
        for row in &rows {
            values.push(row.get(l).copied().unwrap_or(f64::NAN));
        }
    }
    LayerHeatmap {
        title: format!(
            "{} · {}: {}-shot gain recovered per condition by the own state ({})",
            ctx.model.name,
            ctx.task.name,
            ctx.task.shots,
            measure_name(ctx, patching, measure)
        ),
        value_label: "fraction of the gain recovered".to_string(),
        layers: patching.layers.clone(),
        row_label: "condition".to_string(),
        rows: patching.conditions.len(),
        row_names: patching
            .conditions
            .iter()
            .map(|&c| ctx.task.conditions[c].clone())
            .collect(),
        values,
        // Full colour at 1 (all of the gain) and at −1.
        limit: 1.0,
        selected_layer: selected_block(ctx, patching, selection),
        selected_row: None,
    }
}

/// The patched block nearest the reader's layer: the layer the numbers
/// describe.
fn selected_block(ctx: &Context<'_>, patching: &Patching, selection: &Selection) -> Option<usize> {
    let block = ctx.model.layers.get(selection.layer).copied()?;
    patching.nearest(block).map(|l| patching.layers[l])
}

/// The key patching numbers at the patched layer nearest the selection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchingNumbers {
    /// Block index the numbers are for.
    pub layer: usize,
    pub measure: String,
    /// Fraction recovered by each method, in the order of
    /// [`crate::bundle::PATCHING_METHODS`]'s names as keys.
    pub replace: f64,
    pub replace_control: f64,
    pub task_vector: f64,
    pub task_vector_control: f64,
    /// Means of the measure over the targets: the 0-shot and k-shot runs
    /// and the 0-shot run with its own k-shot state written in.
    pub zero_shot: f64,
    pub k_shot: f64,
    pub patched: f64,
}

pub(super) fn numbers(
    ctx: &Context<'_>,
    patching: &Patching,
    selection: &Selection,
) -> Option<PatchingNumbers> {
    let block = ctx.model.layers.get(selection.layer).copied()?;
    let layer = patching.nearest(block)?;
    let measure = selected_measure(patching, selection);
    let fraction = |method: &str| {
        let m = patching.entry.methods.iter().position(|n| n == method);
        m.map_or(f64::NAN, |m| patching.at(m, measure, layer).fraction)
    };
    let own = patching.at(patching.method(HEADLINE_METHOD), measure, layer);
    Some(PatchingNumbers {
        layer: patching.layers[layer],
        measure: measure_name(ctx, patching, measure),
        replace: fraction("replace"),
        replace_control: fraction("replace-control"),
        task_vector: fraction("task-vector"),
        task_vector_control: fraction("task-vector-control"),
        zero_shot: own.mean_zero_shot,
        k_shot: own.mean_k_shot,
        patched: own.mean_patched,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::{model_array, PATCHING_MEASURES};
    use crate::synthetic::{bundle, Spec};
    use crate::view::{Derived, Selection};

    /// The stored `f32` fraction against one recomputed in `f64` from the
    /// stored `f32` inputs: a few float32 ulps of the ratio.
    const F32_ROUNDING: f64 = 1e-5;

    #[test]
    fn the_headline_measure_is_the_answer_log_probability() {
        assert_eq!(PATCHING_MEASURES[headline_measure()], HEADLINE_MEASURE);
        assert_eq!(Selection::default().patching_measure, headline_measure());
    }

    #[test]
    fn recovery_is_a_ratio_of_means_over_complete_targets() {
        let nan = f64::NAN;
        // The third target lacks a patched value and is left out of every mean.
        let r = Recovery::of(&[-2.0, -1.0, nan], &[-4.0, -2.0, -9.0], &[-1.0, -1.0, 0.0]);
        assert_eq!(r.mean_zero_shot, -3.0);
        assert_eq!(r.mean_k_shot, -1.0);
        assert_eq!(r.mean_patched, -1.5);
        assert_eq!(r.fraction, 0.75);
        assert!(r.ci_low.is_nan() && r.ci_high.is_nan());
        // An error, lower is better: the same formula.
        assert_eq!(Recovery::of(&[2.0], &[4.0], &[0.0]).fraction, 0.5);
        // No gain: undefined rather than infinite.
        assert!(Recovery::of(&[2.0], &[1.0], &[1.0]).fraction.is_nan());
        assert!(Recovery::of(&[], &[], &[]).fraction.is_nan());
    }

    #[test]
    fn recomputing_over_every_target_reproduces_the_stored_recovery() {
        let b = bundle(Spec::SMALL);
        let selection = Selection::default().clamp(&b);
        let ctx = Context::new(&b, &selection).expect("context");
        let stored = Derived::for_selection(&b, &selection, None)
            .expect("derive")
            .patching
            .expect("the synthetic bundle is patched");
        assert!(stored.stored, "every condition: the engine's numbers");
        let entry = b.manifest.tasks[0].patching.as_ref().expect("entry");
        let p = ctx.dims.targets;
        let all: Vec<usize> = (0..p).collect();
        let arrays = Arrays::read(&ctx, entry, stored.layers.len()).expect("arrays");
        let recomputed = arrays.recovery(&all);
        // And by hand, straight from the arrays: plain sums over targets.
        let patched = b
            .tensor(&model_array("synthetic", "reading", "patching"))
            .expect("patching");
        let reference = b
            .tensor(&model_array("synthetic", "reading", "patching_reference"))
            .expect("reference");
        // NaN where no target has all three values (greedy answers skipped).
        let close = |a: f64, b: f64| {
            (a.is_nan() && b.is_nan()) || (a - b).abs() <= F32_ROUNDING * b.abs().max(1.0)
        };
        let mut checked = 0;
        for (m, per_method) in recomputed.iter().enumerate() {
            for (q, per_measure) in per_method.iter().enumerate() {
                for (l, ours) in per_measure.iter().enumerate() {
                    let (mut sp, mut sz, mut sk, mut n) = (0.0, 0.0, 0.0, 0.0);
                    for t in 0..p {
                        let (v, z, k) = (
                            patched.get(&[m, l, t, q]),
                            reference.get(&[0, t, q]),
                            reference.get(&[1, t, q]),
                        );
                        if v.is_finite() && z.is_finite() && k.is_finite() {
                            (sp, sz, sk, n) = (sp + v, sz + z, sk + k, n + 1.0);
                        }
                    }
                    let by_hand = (sp / n - sz / n) / (sk / n - sz / n);
                    let engine = stored.at(m, q, l);
                    assert!(
                        close(ours.fraction, by_hand) && close(ours.fraction, engine.fraction),
                        "method {m} measure {q} layer {l}: recomputed {}, by hand {by_hand}, stored {}",
                        ours.fraction,
                        engine.fraction
                    );
                    assert!(close(ours.mean_patched, engine.mean_patched));
                    assert!(close(ours.mean_zero_shot, engine.mean_zero_shot));
                    assert!(close(ours.mean_k_shot, engine.mean_k_shot));
                    assert!(
                        engine.fraction.is_nan()
                            || (engine.ci_low <= engine.fraction
                                && engine.fraction <= engine.ci_high)
                    );
                    checked += usize::from(ours.fraction.is_finite());
                }
            }
        }
        // Every log-probability cell and the behaviour of every other layer.
        let layers = stored.layers.len();
        assert_eq!(
            checked,
            entry.methods.len() * (2 * layers + layers.div_ceil(2))
        );
    }

    #[test]
    fn a_condition_subset_recomputes_without_a_band() {
        let b = bundle(Spec::SMALL);
        let selection = Selection {
            conditions: vec![0, 2],
            ..Selection::default()
        }
        .clamp(&b);
        let derived = Derived::for_selection(&b, &selection, None).expect("derive");
        let patching = derived.patching.as_ref().expect("patched");
        assert!(!patching.stored);
        assert_eq!(patching.conditions, vec![0, 2]);
        let ctx = Context::new(&b, &selection).expect("context");
        let figure = recovery_figure(&ctx, &derived, patching, &selection);
        assert!(figure.series.iter().all(|s| s.band.is_empty()));
        assert!(figure.title.contains("of 24 targets"), "{}", figure.title);
        // The subset's own point estimate, over its own targets.
        let own = patching.at(0, 1, 2);
        assert!(own.fraction.is_finite());
        let heatmap = by_condition_figure(&ctx, patching, &selection);
        assert_eq!(heatmap.row_names, vec!["activity 0", "activity 2"]);
        assert_eq!(heatmap.values.len(), 2 * patching.layers.len());
    }

    #[test]
    fn recovery_peaks_mid_depth_in_the_synthetic_study() {
        let b = bundle(Spec::SMALL);
        let derived = Derived::for_selection(&b, &Selection::default(), None).expect("derive");
        let patching = derived.patching.expect("patched");
        let measure = headline_measure();
        let replace = patching.method("replace");
        let peak = patching.peak(replace, measure).expect("a peak");
        assert!(
            peak > 0 && peak + 1 < patching.layers.len(),
            "peak at {peak}"
        );
        let control = patching.method("replace-control");
        assert!(
            patching.at(control, measure, peak).fraction
                < patching.at(replace, measure, peak).fraction
        );
    }

    #[test]
    fn an_unpatched_task_has_no_patching_figures() {
        let mut b = bundle(Spec::SMALL);
        b.manifest.tasks[0].patching = None;
        let selection = Selection::default();
        let derived = Derived::for_selection(&b, &selection, None).expect("derive");
        assert!(derived.patching.is_none());
        let figures = crate::view::figures(&b, &derived, &selection).expect("figures");
        assert!(figures.iter().all(|(id, _)| !id.starts_with("recovery")));
        let numbers = crate::view::numbers(&b, &derived, &selection).expect("numbers");
        assert!(numbers.patching.is_none());
    }
}
