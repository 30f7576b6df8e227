//! The charts' shared look: fonts and sizes, margins, the Okabe–Ito
//! palette and the diverging colour scale.
//!
//! Everything here is a pure function of its inputs, so the same data gives
//! the same drawing commands, and so byte-identical SVG.

use plotters::prelude::*;

use crate::figures::PALETTE;

/// Font family of every text: the embedded DejaVu Sans natively (registered
/// under this name by `render_svg`), the browser's sans-serif on a canvas.
pub(crate) const FONT: &str = "sans-serif";
/// Text sizes in CSS pixels (em size), as they appear on screen.
pub(crate) const TITLE_PX: f64 = 16.0;
pub(crate) const AXIS_PX: f64 = 14.0;
pub(crate) const TICK_PX: f64 = 12.0;
pub(crate) const LEGEND_PX: f64 = 13.0;

/// Outer margin and the room reserved for tick labels plus axis title.
pub(crate) const MARGIN: u32 = 12;
pub(crate) const X_LABEL_AREA: u32 = 44;
pub(crate) const Y_LABEL_AREA: u32 = 64;
/// Width of a colour bar, its tick labels and its (rotated) title.
pub(crate) const COLOUR_BAR_WIDTH: u32 = 92;
/// Levels of the diverging scale on each side of white: 32 steps are finer
/// than the eye can tell apart, and equal neighbours merge into one
/// rectangle, which keeps big heatmaps cheap to draw.
pub(crate) const LEVELS: f64 = 32.0;

/// Below this size there is no room for axes; figures draw only the white
/// background rather than let plotters lay out negative-sized areas.
pub(crate) const MIN_WIDTH: u32 = 120;
pub(crate) const MIN_HEIGHT: u32 = 90;

/// Black, kept for reference lines and outlines (the palette's last entry).
pub(crate) const INK: RGBColor = RGBColor(0, 0, 0);
/// Non-finite cells: a mid grey, darker than the white at the scale's centre
/// so "missing" never reads as "zero".
pub(crate) const MISSING: RGBColor = RGBColor(160, 160, 160);

/// Plotters' size for text of `px` pixels. The SVG backend (and the
/// embedded font's measurement) divide the size by 1.24, the canvas uses it
/// as is; this makes both show the same size.
fn font_size(px: f64) -> f64 {
    if cfg!(target_arch = "wasm32") {
        px
    } else {
        px * 1.24
    }
}

/// Text of `px` pixels in the charts' font.
pub(crate) fn text_style(px: f64) -> TextStyle<'static> {
    (FONT, font_size(px)).into_font().into()
}
pub(crate) fn axis_style() -> TextStyle<'static> {
    text_style(AXIS_PX)
}
pub(crate) fn tick_style() -> TextStyle<'static> {
    text_style(TICK_PX)
}
pub(crate) fn legend_style() -> TextStyle<'static> {
    text_style(LEGEND_PX)
}

/// The palette's colours for data: Okabe–Ito without its black, which is
/// kept for ink (references, outlines, the fit line).
pub(crate) const DATA_COLOURS: usize = PALETTE.len() - 1;

/// Colour `i` of the Okabe–Ito palette, black left out; indices wrap so that
/// any index is safe (categories beyond the seventh also take a [`Shape`]).
pub(crate) fn palette(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % DATA_COLOURS];
    RGBColor(r, g, b)
}

/// The second channel of a category: seven colours tell seven categories
/// apart, and the eighth onwards (nine conditions in a reading-comprehension
/// study) repeats a colour in another shape, so no two categories look
/// alike, in colour or in grey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
}

const SHAPES: [Shape; 4] = [
    Shape::Circle,
    Shape::Square,
    Shape::Triangle,
    Shape::Diamond,
];

/// Colour and shape of category `i`: distinct for the first
/// `DATA_COLOURS × 4` (28) categories.
pub(crate) fn category(i: usize) -> (RGBColor, Shape) {
    (palette(i), SHAPES[(i / DATA_COLOURS) % SHAPES.len()])
}

/// Diverging scale for `-limit..=limit`: blue (negative) through white (0) to
/// vermillion (positive), the Okabe–Ito pair that stays distinct for the
/// common colour-vision deficiencies, in `2 * LEVELS + 1` steps (0 is
/// exactly white). Values beyond the limit saturate; non-finite values (or
/// an unusable limit) are grey.
pub(crate) fn diverging(value: f64, limit: f64) -> RGBColor {
    if !(value.is_finite() && limit.is_finite() && limit > 0.0) {
        return MISSING;
    }
    let t = ((value / limit).clamp(-1.0, 1.0) * LEVELS).round() / LEVELS;
    let end = if t < 0.0 { palette(0) } else { palette(1) };
    let a = t.abs();
    let mix = |c: u8| {
        (255.0 + (f64::from(c) - 255.0) * a)
            .round()
            .clamp(0.0, 255.0) as u8
    };
    RGBColor(mix(end.0), mix(end.1), mix(end.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diverging_endpoints_and_centre() {
        assert_eq!(diverging(0.0, 1.0), RGBColor(255, 255, 255));
        assert_eq!(diverging(-1.0, 1.0), palette(0));
        assert_eq!(diverging(5.0, 1.0), palette(1));
        assert_eq!(diverging(f64::NAN, 1.0), MISSING);
        assert_eq!(diverging(0.5, 0.0), MISSING);
        // Quantised: tiny values are white, close values share a colour.
        assert_eq!(diverging(0.01, 1.0), RGBColor(255, 255, 255));
        assert_eq!(diverging(0.5, 1.0), diverging(0.505, 1.0));
        assert_ne!(diverging(0.5, 1.0), diverging(0.55, 1.0));
        assert_eq!(palette(8), palette(1));
        assert_ne!(palette(6), INK, "black is ink, not data");
        // Nine conditions: nine distinct marks, the last two in a new shape.
        let marks: Vec<_> = (0..28).map(category).collect();
        for (i, a) in marks.iter().enumerate() {
            assert!(marks[..i].iter().all(|b| b != a), "category {i} repeats");
        }
        assert_eq!(category(7), (palette(0), Shape::Square));
    }
}
