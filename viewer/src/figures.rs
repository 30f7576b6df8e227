//! What each figure shows, as plain numbers: the charts draw these, the
//! engine and the browser viewer fill them from a bundle and a selection.
//!
//! Keeping the data apart from the drawing lets one chart function serve
//! the static SVG and the canvas, and lets tests check the numbers without
//! drawing anything.

use serde::Serialize;

/// One line on a by-layer chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Legend text, e.g. "0-shot" or "4-shot".
    pub label: String,
    /// Index into [`PALETTE`], so that a condition keeps its colour in every figure.
    pub colour: usize,
    /// `(layer, value)`; non-finite values leave a gap.
    pub points: Vec<(f64, f64)>,
    /// Optional confidence band `(layer, low, high)`.
    pub band: Vec<(f64, f64, f64)>,
    /// Layers where the value is significant (drawn as filled markers).
    pub significant: Vec<f64>,
    /// Drawn dashed with a lighter band: a control beside the method it
    /// controls for, in the same colour, so that a reader pairs the two.
    pub dashed: bool,
}

/// A by-layer figure: alignment, probe score, attention ratio, correlation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerCurves {
    pub title: String,
    pub y_label: String,
    /// Fixed y range when the measure has natural bounds (e.g. -1..1);
    /// otherwise the chart fits the data.
    pub y_range: Option<(f64, f64)>,
    /// Horizontal reference lines (chance level, no change, ratio 1; or
    /// both ends of a scale, such as 0 and 1 of a recovered fraction).
    pub references: Vec<f64>,
    /// The layer the reader has selected, drawn as a vertical rule.
    pub selected_layer: Option<usize>,
    pub series: Vec<Series>,
}

/// Behaviour per condition, 0-shot next to k-shot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BehaviorByCondition {
    pub title: String,
    /// "absolute error" or "proportion correct".
    pub y_label: String,
    /// Values are 1 (correct) or 0 (wrong): drawn as the proportion correct
    /// with its 95% Wilson interval rather than as a box of zeros and ones.
    pub proportions: bool,
    /// Names of the conditions on the x axis.
    pub conditions: Vec<String>,
    /// One group per ICL state ("0-shot", "4-shot"), each with the values of
    /// every condition: `groups[state].1[condition]` = per-target values.
    pub groups: Vec<(String, Vec<Vec<f64>>)>,
}

/// Square matrices side by side: the hypothesis, then the similarity
/// matrices without and with ICL, at one layer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatrixPanels {
    pub title: String,
    /// `(panel title, n, row-major n×n values)`; values in -1..=1.
    pub panels: Vec<(String, usize, Vec<f64>)>,
    /// Condition of every row/column, to draw the block boundaries.
    pub row_condition: Vec<usize>,
}

/// A layer × row heatmap: the change in log2 attention ratio per head, or
/// the recovered fraction per condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerHeatmap {
    pub title: String,
    /// Legend text for the colour scale.
    pub value_label: String,
    /// Block indices on the x axis.
    pub layers: Vec<usize>,
    /// What a row is ("head", "condition"): the y axis title.
    pub row_label: String,
    pub rows: usize,
    /// Name of every row, bottom to top, each written on the axis; empty
    /// when rows are simply numbered `0..rows` (heads).
    pub row_names: Vec<String>,
    /// Row-major `[layer][row]`; non-finite cells are drawn grey.
    pub values: Vec<f64>,
    /// The colour scale is symmetric around 0: `-limit..=limit`.
    pub limit: f64,
    pub selected_layer: Option<usize>,
    pub selected_row: Option<usize>,
}

/// Per-target scatter behind a correlation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scatter {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// `(x, y, condition)`; the condition picks the colour.
    pub points: Vec<(f64, f64, usize)>,
    pub condition_names: Vec<String>,
    /// Least-squares line `(slope, intercept)`, when defined.
    pub fit: Option<(f64, f64)>,
    /// A line of text drawn in the corner, e.g. "Pearson r = 0.42 (p = 0.01)".
    pub note: String,
}

/// Okabe–Ito: eight colours distinguishable with the common colour-vision
/// deficiencies (Okabe & Ito, 2008). The last, black, is kept for references.
pub const PALETTE: [(u8, u8, u8); 8] = [
    (0, 114, 178),   // blue
    (213, 94, 0),    // vermillion
    (0, 158, 115),   // bluish green
    (204, 121, 167), // reddish purple
    (230, 159, 0),   // orange
    (86, 180, 233),  // sky blue
    (240, 228, 66),  // yellow
    (0, 0, 0),       // black
];

/// Every figure of a report, by kind. One chart function draws each kind
/// ([`crate::charts::draw`]), on an SVG or a canvas.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Figure {
    /// Behaviour before vs after ICL per condition (box with points).
    Behavior(BehaviorByCondition),
    /// Hypothesis and similarity matrices without and with ICL at one layer.
    Matrices(MatrixPanels),
    /// Hypothesis alignment vs layer, 0-shot vs k-shot, CI band, significance marks.
    Alignment(LayerCurves),
    /// Probe score vs layer.
    Probe(LayerCurves),
    /// Attention ratio (log2) vs layer.
    AttentionRatio(LayerCurves),
    /// Layer × head heatmap of the change in log2 attention ratio.
    AttentionChange(LayerHeatmap),
    /// Behaviour ↔ representation correlation vs layer.
    Correlation(LayerCurves),
    /// The per-target scatter behind the correlation at one layer.
    Scatter(Scatter),
    /// Fraction of the k-shot gain recovered by patching the 0-shot run at
    /// each layer, one line per method (controls dashed), CI band.
    Recovery(LayerCurves),
    /// Layer × condition heatmap of the fraction recovered by one method.
    RecoveryByCondition(LayerHeatmap),
}
