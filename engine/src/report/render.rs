//! The static report: `index.html` (minijinja), one SVG per figure in
//! `figures/`, the bundle and the viewer's files beside it; or, in
//! single-file mode, one self-contained HTML file.
//!
//! Figures are drawn from the bundle through [`viewer::view`], the same
//! path the browser viewer takes, so the static page and the interactive
//! one show the same numbers.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use serde::Serialize;
use sha2::{Digest, Sha256};
use viewer::bundle::Bundle;
use viewer::figures::Figure;
use viewer::view::{self, fmt_number, Derived, Selection, FIGURES};

use super::templates::Templates;
use crate::analysis::resample::{derive_seed, named_stream};
use crate::analysis::stats::bootstrap_mean_interval;

/// The compiled viewer (wasm-bindgen output of the `viewer` crate, built by
/// `scripts/build-viewer.sh` and committed, so that building the engine
/// needs no wasm toolchain).
pub const VIEWER_WASM: &[u8] = include_bytes!("../../../viewer/pkg/viewer_bg.wasm");
pub const VIEWER_JS: &str = include_str!("../../../viewer/pkg/viewer.js");

/// How to write the report.
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// One HTML file with the bundle and the viewer inlined.
    pub single_file: bool,
    /// A folder whose templates replace the built-in ones.
    pub templates: Option<PathBuf>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// `index.html`, or the single file.
    pub page: PathBuf,
    pub page_bytes: u64,
    pub figures: usize,
}

#[derive(Debug, Serialize)]
struct Panel {
    model: String,
    task: String,
    /// "Figure 3b": the figure's number and the panel's letter.
    label: String,
    /// Whose figure this is: "model · task", and the hypothesis where a
    /// figure is drawn once per hypothesis.
    name: String,
    /// Inline SVG markup (drawn by plotters from escaped text).
    svg: String,
    file: String,
    /// The same figure as a PNG at [`viewer::charts::PNG_SCALE`]× resolution.
    png: String,
    /// Key numbers, one sentence each.
    numbers: Vec<String>,
}

/// One analysis of the page: its heading, an introduction when it holds
/// several figures, and its figures.
#[derive(Debug, Serialize)]
struct Section {
    id: &'static str,
    title: &'static str,
    intro: &'static str,
    figures: Vec<SectionFigure>,
}

/// One figure of a section: a panel per model × task.
#[derive(Debug, Serialize)]
struct SectionFigure {
    id: &'static str,
    /// Figures are numbered through the page, as in a paper.
    number: usize,
    title: &'static str,
    caption: &'static str,
    panels: Vec<Panel>,
}

#[derive(Debug, Serialize)]
struct ExamplePrompt {
    task: String,
    shots: usize,
    text: String,
    /// The model whose chat template rendered this text (none: as written).
    through: Option<String>,
}

/// One model × task of the robustness table: its headline findings across
/// demonstration draws.
#[derive(Debug, Serialize)]
struct RobustnessTable {
    owner: String,
    /// "4 of 6 findings keep their sign in all 3 draws."
    sentence: String,
    rows: Vec<RobustnessRow>,
}

#[derive(Debug, Serialize)]
struct RobustnessRow {
    finding: String,
    mean: String,
    range: String,
    between: String,
    within: String,
    draws: String,
    sign_kept: bool,
}

/// The robustness tables of every model × task whose bundle has several
/// draws, from its `robustness` arrays.
fn robustness_tables(bundle: &Bundle) -> anyhow::Result<Vec<RobustnessTable>> {
    let fields = viewer::bundle::ROBUSTNESS_FIELDS.len();
    let mut tables = Vec::new();
    for model in &bundle.manifest.models {
        for task in &bundle.manifest.tasks {
            let Some(entry) = &task.robustness else {
                continue;
            };
            let Some(findings) = entry.findings.get(&model.name) else {
                continue;
            };
            let draws = task.draws;
            let rows = bundle.tensor_shaped(
                &viewer::bundle::model_array(&model.name, &task.name, "robustness"),
                &[findings.len(), fields + draws],
            )?;
            let level = format!("{:.0}%", 100.0 * entry.confidence);
            let interval = |low: f64, high: f64| {
                if low.is_finite() && high.is_finite() {
                    format!("{} to {}", fmt_signed(low), fmt_signed(high))
                } else {
                    "—".to_string()
                }
            };
            let rows: Vec<RobustnessRow> = findings
                .iter()
                .enumerate()
                .map(|(i, finding)| {
                    let v = |f: usize| rows.get(&[i, f]);
                    RobustnessRow {
                        finding: finding.clone(),
                        mean: fmt_signed(v(0)),
                        range: interval(v(1), v(2)),
                        between: interval(v(3), v(4)),
                        within: interval(v(5), v(6)),
                        draws: (0..draws)
                            .map(|d| fmt_signed(v(fields + d)))
                            .collect::<Vec<_>>()
                            .join(", "),
                        sign_kept: v(7) == 1.0,
                    }
                })
                .collect();
            let kept = rows.iter().filter(|r| r.sign_kept).count();
            tables.push(RobustnessTable {
                owner: format!("{} · {}", model.name, task.name),
                sentence: format!(
                    "{kept} of {} findings keep their sign in all {draws} draws of demonstrations; intervals are {level}.",
                    rows.len()
                ),
                rows,
            });
        }
    }
    Ok(tables)
}

/// Figure titles and captions: what the figure shows and how to read it.
fn section_text(id: &str) -> (&'static str, &'static str) {
    match id {
        "behavior" => (
            "Behaviour before and after in-context learning",
            "Each condition's targets without demonstrations (0-shot) and with k solved demonstrations (k-shot). Answers scored right or wrong are drawn as the proportion correct, a bar per state with its 95% Wilson score interval (higher is better). Numeric errors are drawn as boxes: the line is the median, the box the middle half, the whiskers reach the furthest value within 1.5 times that range, and every dot is one target (lower is better).",
        ),
        "matrices" => (
            "Hypothesis and representational similarity",
            "Left, the hypothesis: which targets should be represented alike (rescaled to −1…1). Middle and right, the cosine similarity of the standardised embeddings of every pair of targets, without and with demonstrations, at the layer where alignment with that hypothesis gains most with demonstrations (one figure per hypothesis). Lines separate conditions; when the model represents the hypothesis, blocks along the diagonal light up.",
        ),
        "alignment" => (
            "Hypothesis alignment by layer",
            "The rank correlation between each layer's similarity matrix and the hypothesis matrix, without and with demonstrations, one figure per hypothesis. The band is the 95% bootstrap confidence interval over targets; filled markers are layers where the permutation test is significant after Benjamini–Hochberg correction (q < 0.05). The vertical rule marks the layer shown in the matrices. With several draws of demonstrations, the solid k-shot curve is the first draw's, and the dashed curve with its lighter band is the mean and the range of the k-shot alignment over every draw (no test is run on the mean: its markers are hollow).",
        ),
        "probe" => (
            "Parameterised probing by layer",
            "How well a linear probe decodes each condition parameter from the layer's embedding: cross-validated R² for numeric parameters (ridge), accuracy for categories (logistic), folds grouped by target so that a target's two prompts never sit on both sides of a split.",
        ),
        "attention_ratio" => (
            "Attention to relevant vs distractor information",
            "log2 of the attention the last prompt token pays to the relevant sentence divided by what it pays to the distractor, averaged over targets (0 = equal attention; +1 = twice as much on the relevant sentence). Demonstrations belong to neither span.",
        ),
        "attention_change" => (
            "Change of the attention ratio per head",
            "Each cell is one head of one layer: how much its log2 attention ratio changes with demonstrations (orange: more attention to the relevant sentence after ICL; blue: less). Grey cells are undefined.",
        ),
        "correlation" => (
            "Behaviour improvement vs representation change",
            "For each layer, the correlation across targets between how much the answer improves with demonstrations and how much a representation measure changes. Filled markers: p < 0.05 (uncorrected, two-sided).",
        ),
        "scatter" => (
            "The targets behind the correlation",
            "One dot per target at the layer shown: its change in the representation measure (x) against its behaviour improvement (y), coloured by condition, with the least-squares line.",
        ),
        "recovery" => (
            "How much of the k-shot gain a patch recovers, by layer",
            "For each patched layer, (mean patched − mean 0-shot) / (mean k-shot − mean 0-shot) over targets, here of the teacher-forced log-probability of the whole correct answer. 0 means the patch recovers none of the k-shot improvement, 1 all of it; the dashed controls, in their method's colour, show what any perturbation of the same size does. Bands are bootstrap confidence intervals over targets (in the explorer, a subset of conditions shows point estimates only). The vertical rule marks the layer of the largest recovery.",
        ),
        "recovery_conditions" => (
            "Recovery per condition",
            "The same fraction for the target's own k-shot state, over each condition's targets: white is none of that condition's k-shot gain, full orange all of it, blue a patch that moves the answer away from the k-shot one (the colours saturate beyond ±1). Grey cells are undefined (no k-shot gain, or no answer scored).",
        ),
        _ => ("", ""),
    }
}

/// Sections that hold several figures: `(section id, title, introduction,
/// figure ids)`. Every other figure is a section of its own.
const GROUPS: [(&str, &str, &str, &[&str]); 1] = [(
    "patching",
    "Putting the in-context state back",
    "The analyses above are correlational; this one intervenes. Each target's 0-shot prompt is run again with the residual stream of its last token, after one layer, patched with in-context information: replaced by the target's own k-shot state at that layer, or (control) by the k-shot state of a target of another condition; or shifted by the task vector, the mean k-shot − 0-shot difference of the other targets, or (control) by a random vector of the same norm. If what the model takes from the demonstrations sits in that state, the patched 0-shot run answers like the k-shot one.",
    &["recovery", "recovery_conditions"],
)];

/// The empty sections of the page, in the order of [`FIGURES`].
fn empty_sections() -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for &id in &FIGURES {
        let (title, caption) = section_text(id);
        let figure = SectionFigure {
            id,
            number: 0,
            title,
            caption,
            panels: Vec::new(),
        };
        match GROUPS.iter().find(|g| g.3.contains(&id)) {
            Some(&(group, title, intro, _)) => match sections.iter_mut().find(|s| s.id == group) {
                Some(section) => section.figures.push(figure),
                None => sections.push(Section {
                    id: group,
                    title,
                    intro,
                    figures: vec![figure],
                }),
            },
            None => sections.push(Section {
                id,
                title,
                intro: "",
                figures: vec![figure],
            }),
        }
    }
    sections
}

/// Figures drawn once per hypothesis of a task (the others once per task).
const PER_HYPOTHESIS: [&str; 2] = ["matrices", "alignment"];

/// Numbers the figures through the page (1, 2, …) and letters their panels
/// (a, b, …) where a figure has several.
fn number_figures(sections: &mut [Section]) {
    let figures = sections.iter_mut().flat_map(|s| s.figures.iter_mut());
    for (i, figure) in figures.enumerate() {
        figure.number = i + 1;
        let several = figure.panels.len() > 1;
        for (j, panel) in figure.panels.iter_mut().enumerate() {
            panel.label = if several {
                format!("Figure {}{}", i + 1, panel_letter(j))
            } else {
                format!("Figure {}", i + 1)
            };
        }
    }
}

/// a, b, …, z, aa, ab, …: the letter of panel `i`.
fn panel_letter(i: usize) -> String {
    let letter = |k: usize| char::from(b'a' + (k % 26) as u8);
    if i < 26 {
        letter(i).to_string()
    } else {
        format!("{}{}", letter(i / 26 - 1), letter(i))
    }
}

/// The patched block a static patching figure marks: where its text says
/// the own state recovers most.
fn peak_patched_layer(derived: &Derived) -> Option<usize> {
    let patching = derived.patching.as_ref()?;
    let layer = patching.peak(
        patching.method(view::HEADLINE_METHOD),
        patching.measure(view::HEADLINE_MEASURE),
    )?;
    patching.layers.get(layer).copied()
}

/// The layer a static figure shows: where the headline hypothesis gains
/// most alignment with demonstrations (the first layer when undefined).
fn headline_layer(derived: &Derived) -> usize {
    derived.largest_alignment_gain().map_or(0, |(l, _)| l)
}

/// Resamples of the bootstrap interval quoted for a mean behaviour: the
/// ends of a 95% interval move by well under the digits shown beyond 2000.
const BEHAVIOUR_BOOTSTRAP: usize = 2000;

/// "95% CI a to b" ("to", not a dash, since either end may be negative).
fn interval_text(low: f64, high: f64) -> String {
    format!("95% CI {} to {}", fmt_number(low), fmt_number(high))
}

/// The key numbers under a static figure, as sentences: each with its unit
/// and, where the analysis has one, its interval.
fn figure_numbers(
    id: &str,
    figure: &Figure,
    numbers: &view::Numbers,
    derived: &Derived,
    conditions: &[String],
    at: (&Selection, &[usize]),
    seed: u64,
) -> Vec<String> {
    let shots = numbers.shots;
    let (selection, layers) = at;
    let stats_at = |state: usize| {
        derived
            .alignment_stats
            .as_ref()
            .and_then(|stats| stats[state].get(selection.layer))
            .copied()
    };
    let alignment_at = |state: usize, value: f64| match stats_at(state) {
        Some((_, low, high)) => format!("{} ({})", fmt_number(value), interval_text(low, high)),
        None => fmt_number(value),
    };
    match (id, figure) {
        ("behavior", Figure::Behavior(data)) => behaviour_sentences(data, numbers, seed),
        ("matrices", _) => {
            let gain = numbers.alignment_k - numbers.alignment_zero;
            vec![format!(
                "Shown at layer {}, where alignment with “{}” gains most with demonstrations: {} at 0-shot, {} at {shots}-shot ({}, a gain of {}).",
                numbers.layer,
                numbers.hypothesis,
                fmt_number(numbers.alignment_zero),
                fmt_number(numbers.alignment_k),
                numbers.comparator,
                fmt_signed(gain)
            )]
        }
        ("alignment", Figure::Alignment(curves)) => {
            let mut lines = vec![format!(
                "At layer {}, where it gains most, alignment with “{}” ({}) is {} at 0-shot and {} at {shots}-shot.",
                numbers.layer,
                numbers.hypothesis,
                numbers.comparator,
                alignment_at(0, numbers.alignment_zero),
                alignment_at(1, numbers.alignment_k)
            )];
            if derived.alignment_stats.is_some() {
                let layers = derived.alignment[0].len();
                let counts: Vec<String> = curves
                    .series
                    .iter()
                    .map(|s| format!("{} of {layers} layers at {}", s.significant.len(), s.label))
                    .collect();
                lines.push(format!("Significant (q < 0.05): {}.", counts.join(", ")));
            }
            lines
        }
        ("probe", Figure::Probe(curves)) => curves
            .series
            .iter()
            .filter_map(|s| {
                s.points
                    .iter()
                    .filter(|p| p.1.is_finite())
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|&(x, y)| format!("{}: best {} at layer {x}.", s.label, fmt_number(y)))
            })
            .collect(),
        ("attention_ratio", _) => vec![format!(
            "At layer {}, {}: the log2 ratio is {} at 0-shot and {} at {shots}-shot, so the relevant sentence gets {}× the distractor's attention before and {}× after.",
            numbers.layer,
            numbers.head,
            fmt_number(numbers.log2_ratio_zero),
            fmt_number(numbers.log2_ratio_k),
            fmt_number(numbers.log2_ratio_zero.exp2()),
            fmt_number(numbers.log2_ratio_k.exp2())
        )],
        ("attention_change", Figure::AttentionChange(map)) => {
            let best = map
                .values
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .max_by(|a, b| a.1.total_cmp(b.1));
            match best {
                Some((i, v)) if map.rows > 0 => vec![format!(
                    "The largest increase is at layer {}, head {}: {} in log2 ratio.",
                    map.layers.get(i / map.rows).copied().unwrap_or(0),
                    i % map.rows,
                    fmt_signed(*v)
                )],
                _ => vec!["No head has a defined ratio.".to_string()],
            }
        }
        ("correlation", Figure::Correlation(_)) => {
            let rows = derived.correlation.get(selection.measure);
            let strongest = rows.and_then(|rows| {
                rows.iter()
                    .enumerate()
                    .filter(|(_, r)| r[1].is_finite())
                    .max_by(|a, b| a.1[1].abs().total_cmp(&b.1[1].abs()))
            });
            match strongest {
                Some((l, r)) => vec![format!(
                    "The strongest Pearson correlation with the change in {} is r = {} at layer {} (p = {}, n = {} targets).",
                    numbers.measure,
                    fmt_number(r[1]),
                    layers.get(l).copied().unwrap_or(l),
                    view::fmt_p(r[2]),
                    r[0]
                )],
                None => vec![format!("No defined correlation for {}.", numbers.measure)],
            }
        }
        ("scatter", Figure::Scatter(s)) => vec![format!("At layer {}: {}.", numbers.layer, s.note)],
        ("recovery", _) => derived.patching.as_ref().map_or_else(Vec::new, |p| {
            view::recovery_sentences(
                p,
                p.measure(view::HEADLINE_MEASURE),
                shots,
                &numbers.behavior_metric,
            )
        }),
        ("recovery_conditions", _) => derived.patching.as_ref().map_or_else(Vec::new, |p| {
            view::condition_sentences(p, p.measure(view::HEADLINE_MEASURE), conditions)
        }),
        _ => Vec::new(),
    }
}

/// A change with its sign: "+0.120", "−0.050".
fn fmt_signed(x: f64) -> String {
    let text = fmt_number(x);
    if x.is_finite() && x > 0.0 {
        format!("+{text}")
    } else if x.is_finite() && x < 0.0 {
        text.replacen('-', "−", 1)
    } else {
        text
    }
}

/// Behaviour in words: accuracy with its 95% Wilson interval for answers
/// scored right or wrong; the mean error with a 95% bootstrap interval over
/// targets otherwise.
fn behaviour_sentences(
    data: &viewer::figures::BehaviorByCondition,
    numbers: &view::Numbers,
    seed: u64,
) -> Vec<String> {
    let state_values = |s: usize| -> Vec<f64> {
        data.groups.get(s).map_or_else(Vec::new, |g| {
            g.1.iter()
                .flatten()
                .copied()
                .filter(|v| v.is_finite())
                .collect()
        })
    };
    let label = |s: usize| data.groups.get(s).map_or("", |g| g.0.as_str());
    if data.proportions {
        let state = |s: usize| match viewer::stats::proportion_correct(&state_values(s)) {
            Some(share) => format!(
                "{} ({} of {}; 95% Wilson interval {} to {}) at {}",
                percent(share.proportion),
                share.correct,
                share.n,
                percent(share.low),
                percent(share.high),
                label(s)
            ),
            None => format!("n/a at {}", label(s)),
        };
        vec![format!("Accuracy is {} and {}.", state(0), state(1))]
    } else {
        let state = |s: usize| {
            let values = state_values(s);
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let (low, high) = bootstrap_mean_interval(
                &values,
                BEHAVIOUR_BOOTSTRAP,
                0.95,
                derive_seed(seed, named_stream(&format!("report/behaviour/{s}"))),
            );
            format!(
                "{} ({}, {} targets) at {}",
                fmt_number(mean),
                interval_text(low, high),
                values.len(),
                label(s)
            )
        };
        vec![format!(
            "The mean {} is {} and {}; the intervals are bootstraps over targets, and unparseable answers are left out.",
            numbers.behavior_metric,
            state(0),
            state(1)
        )]
    }
}

/// How many answers of each ICL state turn on a near-tie, and the
/// behaviour without them, from the bundle's `answer_gap` and `behavior`
/// arrays; `None` for a bundle without gaps.
fn near_tie_sentence(
    bundle: &Bundle,
    model: &viewer::bundle::ModelEntry,
    task: &viewer::bundle::TaskEntry,
) -> Option<String> {
    let threshold = bundle.manifest.near_tie_gap?;
    let n = task.target_conditions.len();
    let array = |name: &str| {
        bundle
            .tensor_shaped(
                &viewer::bundle::model_array(&model.name, &task.name, name),
                &[2, n],
            )
            .ok()
    };
    let (gaps, behavior) = (array("answer_gap")?, array("behavior")?);
    let proportions = task.behavior.metric == "correct";
    let labels = ["0-shot".to_string(), format!("{}-shot", task.shots)];
    let mut counts = Vec::new();
    let mut without = Vec::new();
    for (s, label) in labels.iter().enumerate() {
        let clear: Vec<f64> = (0..n)
            .filter(|&t| gaps.get(&[s, t]) >= threshold)
            .map(|t| behavior.get(&[s, t]))
            .filter(|v| v.is_finite())
            .collect();
        let ties = (0..n).filter(|&t| gaps.get(&[s, t]) < threshold).count();
        counts.push(format!("{ties} of {n} answers at {label}"));
        let mean = clear.iter().sum::<f64>() / clear.len() as f64;
        without.push(if proportions {
            percent(mean)
        } else {
            fmt_number(mean)
        });
    }
    let measure = if proportions {
        "accuracy".to_string()
    } else {
        format!("the mean {}", task.behavior.metric)
    };
    Some(format!(
        "Near-ties (a greedy choice whose top two logits are less than {} apart, so close that rounding alone could flip the answer): {}; without them, {measure} is {} and {}.",
        fmt_number(threshold),
        counts.join(" and "),
        without[0],
        without[1]
    ))
}

/// "46%", or "n/a".
fn percent(x: f64) -> String {
    if x.is_finite() {
        format!("{:.0}%", 100.0 * x)
    } else {
        "n/a".to_string()
    }
}

/// Renders every figure of every model × task of `bundle` and writes the
/// report into `dir` (or the single file `dir/index.html` with everything
/// inlined).
pub fn render_report(
    dir: &Path,
    bundle: &Bundle,
    options: &RenderOptions,
) -> anyhow::Result<Rendered> {
    let templates = Templates::load(options.templates.as_deref())?;
    let manifest = &bundle.manifest;
    let mut sections = empty_sections();
    let figures_dir = dir.join("figures");
    if !options.single_file {
        std::fs::create_dir_all(&figures_dir)
            .with_context(|| format!("cannot create `{}`", figures_dir.display()))?;
    }
    let mut figure_count = 0;
    for (m, model) in manifest.models.iter().enumerate() {
        for (t, task) in manifest.tasks.iter().enumerate() {
            let owner = format!("{} · {}", model.name, task.name);
            // The figures of a hypothesis are drawn for every hypothesis,
            // each at the layer where it gains most; the rest once.
            for h in 0..task.hypotheses.len().max(1) {
                let base = Selection {
                    model: m,
                    task: t,
                    hypothesis: h,
                    ..Selection::default()
                };
                let derived = Derived::for_selection(bundle, &base, None)?;
                let selection = Selection {
                    layer: headline_layer(&derived),
                    ..base
                };
                let numbers = view::numbers(bundle, &derived, &selection)?;
                let peak = peak_patched_layer(&derived);
                for (id, mut figure) in view::figures(bundle, &derived, &selection)? {
                    let per_hypothesis = PER_HYPOTHESIS.contains(&id);
                    if h > 0 && !per_hypothesis {
                        continue;
                    }
                    match &mut figure {
                        Figure::Recovery(curves) => curves.selected_layer = peak,
                        Figure::RecoveryByCondition(map) => map.selected_layer = peak,
                        _ => {}
                    }
                    let (width, height) = viewer::charts::figure_size(&figure);
                    let svg = viewer::charts::render_svg(&figure, width, height)
                        .with_context(|| format!("cannot draw the {id} figure"))?;
                    let hypothesis = task.hypotheses.get(h).filter(|_| per_hypothesis);
                    let file = match hypothesis {
                        Some(name) => format!(
                            "figures/{}-{}-{id}-{}.svg",
                            file_safe(&model.name),
                            file_safe(&task.name),
                            file_safe(name)
                        ),
                        None => format!(
                            "figures/{}-{}-{id}.svg",
                            file_safe(&model.name),
                            file_safe(&task.name)
                        ),
                    };
                    if !options.single_file {
                        crate::atomic::write_atomically(&dir.join(&file), |w| {
                            std::io::Write::write_all(w, svg.as_bytes())
                        })?;
                        let png = viewer::charts::render_png(
                            &figure,
                            width,
                            height,
                            viewer::charts::PNG_SCALE,
                        )
                        .with_context(|| format!("cannot draw the {id} figure as PNG"))?;
                        crate::atomic::write_atomically(&dir.join(png_file(&file)), |w| {
                            std::io::Write::write_all(w, &png)
                        })?;
                    }
                    let mut lines = figure_numbers(
                        id,
                        &figure,
                        &numbers,
                        &derived,
                        &task.conditions,
                        (&selection, &model.layers),
                        manifest.seed,
                    );
                    if id == "behavior" {
                        lines.extend(near_tie_sentence(bundle, model, task));
                    }
                    let slot = sections
                        .iter_mut()
                        .flat_map(|s| s.figures.iter_mut())
                        .find(|f| f.id == id);
                    if let Some(slot) = slot {
                        slot.panels.push(Panel {
                            model: model.name.clone(),
                            task: task.name.clone(),
                            label: String::new(),
                            name: match hypothesis {
                                Some(name) => format!("{owner}, hypothesis “{name}”"),
                                None => owner.clone(),
                            },
                            svg: strip_xml_declaration(&svg),
                            png: png_file(&file),
                            file,
                            numbers: lines,
                        });
                    }
                    figure_count += 1;
                }
            }
        }
    }
    for section in &mut sections {
        section.figures.retain(|f| !f.panels.is_empty());
    }
    sections.retain(|s| !s.figures.is_empty());
    number_figures(&mut sections);
    let has_patching = manifest.tasks.iter().any(|t| t.patching.is_some());

    let examples: Vec<ExamplePrompt> = manifest
        .tasks
        .iter()
        .enumerate()
        .flat_map(|(t, task)| {
            [0, task.shots].into_iter().filter_map(move |shots| {
                manifest
                    .prompts
                    .iter()
                    .find(|p| p.task == t && p.shots == shots)
                    .map(|p| (task.name.clone(), shots, p))
            })
        })
        .flat_map(|(task, shots, p)| {
            let plain = ExamplePrompt {
                task: task.clone(),
                shots,
                text: p.text.clone(),
                through: None,
            };
            // Each chat model's rendering of the same prompt, as it saw it.
            let chats = manifest.models.iter().filter_map(move |m| {
                let chat = m.chat.as_ref()?;
                let segments = p
                    .segments
                    .iter()
                    .map(|(label, ranges)| {
                        (label.clone(), ranges.iter().map(|&(a, b)| a..b).collect())
                    })
                    .collect();
                let turn = crate::study::prompting::chat_renderer(chat)
                    .and_then(|r| r.render_turn(&p.text, &segments))
                    .ok()?;
                Some(ExamplePrompt {
                    task: task.clone(),
                    shots,
                    text: turn.text,
                    through: Some(m.name.clone()),
                })
            });
            std::iter::once(plain).chain(chats)
        })
        .collect();

    // The single file inlines the very bytes of the report's bundle file
    // (written before the pages), rather than compressing the bundle again.
    let bundle_bytes = if options.single_file {
        let path = dir.join(viewer::bundle::FILE_NAME);
        std::fs::read(&path).with_context(|| {
            format!(
                "cannot read `{}` to inline it (write the bundle first)",
                path.display()
            )
        })?
    } else {
        Vec::new()
    };
    let engine64 = base64::engine::general_purpose::STANDARD;
    // The page's script: in single-file mode the wasm-bindgen glue, our
    // script and the data are one inline module (allowed by its hash in the
    // Content-Security-Policy); otherwise an external module.
    let inline_script = if options.single_file {
        Some(format!(
            "{}\n{}\nconst wasmBytes = decodeBase64(\"{}\");\nconst bundleBytes = decodeBase64(\"{}\");\nstart({{ init: (bytes) => initSync({{ module: bytes }}), Viewer, wasmBytes, bundleBytes }});\n",
            VIEWER_JS,
            templates.script(),
            engine64.encode(VIEWER_WASM),
            engine64.encode(&bundle_bytes)
        ))
    } else {
        None
    };
    let script_src = match &inline_script {
        Some(script) => {
            let hash = engine64.encode(Sha256::digest(script.as_bytes()));
            format!("'sha256-{hash}' 'wasm-unsafe-eval'")
        }
        None => "'self' 'wasm-unsafe-eval'".to_string(),
    };
    // No request may leave the report's own origin (none at all from file://).
    let csp = format!(
        "default-src 'none'; script-src {script_src}; connect-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; form-action 'none'"
    );
    let options_rows = option_rows(&manifest.experiment);
    let robustness = robustness_tables(bundle)?;
    let rounding: Vec<String> = manifest
        .models
        .iter()
        .filter_map(|m| {
            let c = m.rounding_check.as_ref()?;
            let attention = match c.largest_attention_change {
                Some(x) => format!(", of an attention mass {}", fmt_number(x)),
                None => String::new(),
            };
            Some(format!(
                "{}: rerunning {} prompts with {} changed {} of their answers ({} of their scores); the largest relative change of a pooled hidden state was {}{attention}.",
                m.name,
                c.prompts,
                c.other_setting,
                c.answers_changed,
                c.scores_changed,
                fmt_number(c.largest_embedding_change)
            ))
        })
        .collect();
    let draws = manifest.tasks.iter().map(|t| t.draws).max().unwrap_or(1);
    let html = templates.render_report(&serde_json::json!({
        "manifest": manifest,
        "sections": sections,
        "has_patching": has_patching,
        "robustness": robustness,
        "rounding": rounding,
        "draws": draws,
        "examples": examples,
        "options": options_rows,
        "csp": csp,
        "single_file": options.single_file,
        "inline_script": inline_script.unwrap_or_default(),
        "bundle_file": viewer::bundle::FILE_NAME,
    }))?;

    let page = if options.single_file {
        dir.join(format!("{}.html", file_safe(&manifest.title)))
    } else {
        dir.join("index.html")
    };
    crate::atomic::write_atomically(&page, |w| std::io::Write::write_all(w, html.as_bytes()))?;
    if !options.single_file {
        for (name, bytes) in [
            ("viewer_bg.wasm", VIEWER_WASM),
            ("viewer.js", VIEWER_JS.as_bytes()),
            ("report.js", templates.script_module().as_bytes()),
        ] {
            crate::atomic::write_atomically(&dir.join(name), |w| {
                std::io::Write::write_all(w, bytes)
            })?;
        }
    }
    Ok(Rendered {
        page,
        page_bytes: html.len() as u64,
        figures: figure_count,
    })
}

/// Options of the experiment as `(name, value)` rows for the header: the
/// capture and analysis tables, flattened.
fn option_rows(experiment: &serde_json::Value) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for table in ["capture", "analysis", "robustness"] {
        if let Some(serde_json::Value::Object(map)) = experiment.get(table) {
            for (key, value) in map {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Array(items) => items
                        .iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        .collect::<Vec<_>>()
                        .join(", "),
                    other => other.to_string(),
                };
                rows.push((format!("{table}.{key}"), text));
            }
        }
    }
    rows
}

/// A name made safe for a file name: letters, digits, `-`, `_`, `.`.
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The PNG beside a figure's SVG: same name, `.png`.
fn png_file(svg_file: &str) -> String {
    match svg_file.strip_suffix(".svg") {
        Some(stem) => format!("{stem}.png"),
        None => format!("{svg_file}.png"),
    }
}

fn strip_xml_declaration(svg: &str) -> String {
    match svg.find("<svg") {
        Some(start) => svg[start..].to_string(),
        None => svg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page `render_report` writes for `bundle`, in a fresh folder.
    fn page(bundle: &Bundle, name: &str) -> String {
        let dir = std::env::temp_dir().join(format!("render-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        let rendered = render_report(&dir, bundle, &RenderOptions::default()).expect("renders");
        let html = std::fs::read_to_string(&rendered.page).expect("read page");
        let _ = std::fs::remove_dir_all(&dir);
        html
    }

    #[test]
    fn a_patched_task_gets_the_patching_section_with_its_numbers() {
        let bundle = viewer::synthetic::bundle(viewer::synthetic::Spec::SMALL);
        let html = page(&bundle, "patched");
        let start = html
            .find("<section id=\"patching\"")
            .expect("the patching section");
        let section = &html[start..];
        assert!(section.contains("<h2>Putting the in-context state back</h2>"));
        for figure in ["recovery", "recovery_conditions"] {
            assert!(
                section.contains(&format!("<h3 id=\"{figure}\">")),
                "{figure}"
            );
            assert!(
                html.contains(&format!("id=\"canvas-{figure}\"")),
                "{figure}"
            );
        }
        assert!(section
            .contains("0 means the patch recovers none of the k-shot improvement, 1 all of it"));
        assert!(section.contains("Replacing the last token&#x27;s state at layer "));
        assert!(
            section.contains("(95% CI "),
            "the engine's interval is quoted"
        );
        assert!(section.contains(" nats at 0-shot, "));
        assert!(section.contains("Largest recovery with the own state, per condition: activity 0 "));
        assert!(html.contains("id=\"control-patching\""));
        // After every correlational section.
        assert!(html.find("<section id=\"scatter\"").expect("scatter") < start);
    }

    #[test]
    fn an_unpatched_bundle_has_no_trace_of_patching() {
        let mut bundle = viewer::synthetic::bundle(viewer::synthetic::Spec::SMALL);
        bundle.manifest.tasks[0].patching = None;
        let html = page(&bundle, "unpatched");
        for text in [
            "id=\"patching\"",
            "canvas-recovery",
            "control-patching",
            "data-needs",
            "<h3 id=",
            "caption intro",
        ] {
            assert!(!html.contains(text), "{text} in an unpatched report");
        }
        assert!(html.contains("<section id=\"scatter\" class=\"analysis\">\n<h2>The targets behind the correlation</h2>\n<p class=\"caption\">"));
    }
}
