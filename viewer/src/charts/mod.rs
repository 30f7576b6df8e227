//! The report's charts: one plotters function per [`Figure`] kind, generic
//! over the drawing backend, so that the same code draws the static SVG of
//! the report (native, `render_svg`) and the canvas of the in-browser
//! viewer (wasm32, via plotters-canvas).
//!
//! House rules shared by every figure (`style.rs`, `parts.rs`): colours from the
//! Okabe–Ito [`PALETTE`](crate::figures::PALETTE), diverging scales blue ↔
//! white ↔ vermillion, layer on the x axis wherever it applies, axis titles on
//! every axis, and no panic on empty or non-finite data (an empty frame with
//! a "no data" note instead). Drawing is a pure function of the data, so the
//! same figure gives byte-identical SVG.

mod axes;
mod behavior;
mod heatmap;
mod layers;
mod matrices;
mod parts;
#[cfg(not(target_arch = "wasm32"))]
mod png;
mod scatter;
mod style;

#[cfg(test)]
mod tests;

use plotters::coord::Shift;
use plotters::drawing::DrawingAreaErrorKind;
use plotters::prelude::*;

use crate::figures::Figure;

pub use behavior::behavior_by_condition;
pub use heatmap::{attention_change_heatmap, recovery_by_condition};
pub use layers::{
    alignment_by_layer, attention_ratio_by_layer, correlation_by_layer, probe_by_layer,
    recovery_by_layer,
};
pub use matrices::similarity_matrices;
pub use parts::title_lines;
#[cfg(not(target_arch = "wasm32"))]
pub use png::{render_png, PNG_SCALE};
pub use scatter::correlation_scatter;

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The backend failed (or plotters rejected the layout); plotters' error
    /// is generic over the backend, so it is kept as its message.
    #[error("drawing failed: {0}")]
    Drawing(String),
    /// The embedded font could not be registered.
    #[error("font error: {0}")]
    Font(String),
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for ChartError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        ChartError::Drawing(e.to_string())
    }
}

/// Draws `figure` on `area` (which it first fills white).
pub fn draw<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    figure: &Figure,
) -> Result<(), ChartError> {
    match figure {
        Figure::Behavior(data) => behavior_by_condition(area, data),
        Figure::Matrices(data) => similarity_matrices(area, data),
        Figure::Alignment(data) => alignment_by_layer(area, data),
        Figure::Probe(data) => probe_by_layer(area, data),
        Figure::AttentionRatio(data) => attention_ratio_by_layer(area, data),
        Figure::AttentionChange(data) => attention_change_heatmap(area, data),
        Figure::Correlation(data) => correlation_by_layer(area, data),
        Figure::Scatter(data) => correlation_scatter(area, data),
        Figure::Recovery(data) => recovery_by_layer(area, data),
        Figure::RecoveryByCondition(data) => recovery_by_condition(area, data),
    }
}

/// A sensible default size in pixels for each kind of figure: the matrices
/// get one square panel per matrix plus the colour bar, the heatmap is wide
/// enough for 80 layer columns.
pub fn figure_size(figure: &Figure) -> (u32, u32) {
    match figure {
        Figure::Behavior(data) => ((160 * data.conditions.len() as u32).clamp(560, 1200), 420),
        Figure::Matrices(data) => {
            let panels = data.panels.len().clamp(1, 6) as u32;
            (panels * 330 + style::COLOUR_BAR_WIDTH + 20, 420)
        }
        Figure::Alignment(_)
        | Figure::Probe(_)
        | Figure::AttentionRatio(_)
        | Figure::Correlation(_)
        | Figure::Recovery(_) => (720, 420),
        Figure::AttentionChange(_) => (820, 460),
        // One row per condition: height for a dozen rows at most, then the
        // rows get thinner.
        Figure::RecoveryByCondition(data) => (820, (200 + 28 * data.rows as u32).clamp(300, 520)),
        Figure::Scatter(_) => (600, 460),
    }
}

/// Registers the embedded DejaVu Sans as plotters' "sans-serif" (once per
/// process). Natively plotters measures text with this font, so every
/// machine lays out the SVG identically; `render_svg` calls it, and a native
/// caller drawing on another backend must call it before [`draw`].
#[cfg(not(target_arch = "wasm32"))]
pub fn register_font() -> Result<(), ChartError> {
    use std::sync::OnceLock;
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
    REGISTERED
        .get_or_init(|| {
            plotters::style::register_font(style::FONT, FontStyle::Normal, DEJAVU_SANS)
                .map_err(|_| "the embedded DejaVuSans.ttf could not be parsed".to_string())
        })
        .clone()
        .map_err(ChartError::Font)
}

/// The title as an SVG of [`render_svg`] draws it: the text of the first
/// `<text>` element and of the ones right after it in the same type size (a
/// title's lines, drawn before anything else but the background),
/// unescaped and joined by spaces. For tests and tools that check what a
/// reader sees.
pub fn drawn_title(svg: &str) -> String {
    let size_of = |element: &str| {
        element
            .split_once("font-size=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(size, _)| size.to_string())
    };
    let mut lines = Vec::new();
    let Some(start) = svg.find("<text") else {
        return String::new();
    };
    let mut rest = &svg[start..];
    let mut title_size = None;
    while let Some(element) = rest.strip_prefix("<text") {
        let (Some(open), Some(close)) = (element.find('>'), element.find("</text>")) else {
            break;
        };
        let size = size_of(&element[..open]);
        if title_size.is_some() && size != title_size {
            break;
        }
        title_size = size;
        let text = element[open + 1..close].trim();
        lines.push(
            text.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        );
        rest = element[close + "</text>".len()..].trim_start();
    }
    lines.join(" ")
}

/// Renders `figure` as a standalone SVG document of `width` × `height` pixels.
#[cfg(not(target_arch = "wasm32"))]
pub fn render_svg(figure: &Figure, width: u32, height: u32) -> Result<String, ChartError> {
    register_font()?;
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (width.max(1), height.max(1))).into_drawing_area();
        draw(&root, figure)?;
        root.present()?;
    }
    Ok(svg)
}
