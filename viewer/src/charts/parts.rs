//! Pieces several figures draw: the background and title, a legend row,
//! a colour bar for the diverging scale, and the empty "no data" frame.

use plotters::coord::Shift;
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendCoord, DrawingErrorKind};

use super::axes::Ticked;
pub(crate) use super::style::Shape;
use super::style::{
    axis_style, diverging, legend_style, text_style, tick_style, COLOUR_BAR_WIDTH, INK, LEVELS,
    MARGIN, MIN_HEIGHT, MIN_WIDTH, MISSING, TITLE_PX, X_LABEL_AREA, Y_LABEL_AREA,
};
use super::ChartError;

/// Fills the background and reports whether the area is big enough to hold
/// a chart at all.
pub(crate) fn prepare<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
) -> Result<bool, ChartError> {
    area.fill(&WHITE)?;
    let (w, h) = area.dim_in_pixel();
    Ok(w >= MIN_WIDTH && h >= MIN_HEIGHT)
}

/// Draws the title on top and returns the area below it.
///
/// A title that does not fit on one line is never cut short: it breaks
/// after the figure's owner ("model · task") so that its subject reads on
/// a line of its own, then at spaces; only a title that would still need
/// more than [`TITLE_MAX_LINES`] lines (or holds one word wider than the
/// figure) is set in a smaller type, down to [`TITLE_MIN_PX`].
pub(crate) fn titled<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, ChartError> {
    let area = area.margin(MARGIN / 2, 0, 0, 0);
    if title.trim().is_empty() {
        return Ok(area);
    }
    let (w, _) = area.dim_in_pixel();
    let room = w.saturating_sub(2 * MARGIN).max(1);
    let mut px = TITLE_PX;
    let (lines, style) = loop {
        let style = text_style(px);
        let mut too_wide = false;
        let lines = title_lines(title, |line| {
            let fits = area
                .estimate_text_size(line, &style)
                .map_or(true, |(tw, _)| tw <= room);
            too_wide |= !fits && !line.contains(' ');
            fits
        });
        if (lines.len() <= TITLE_MAX_LINES && !too_wide) || px <= TITLE_MIN_PX {
            break (lines, style);
        }
        px = (px - 1.0).max(TITLE_MIN_PX);
    };
    if let [line] = lines.as_slice() {
        // One line: exactly plotters' own title layout.
        return Ok(area.titled(line, style)?);
    }
    let line_h = lines
        .iter()
        .map(|l| area.estimate_text_size(l, &style).map_or(0, |(_, h)| h))
        .max()
        .unwrap_or(0) as i32
        + TITLE_LEADING;
    let y_padding = (line_h / 2).min(5);
    let centred = style.pos(Pos::new(HPos::Center, VPos::Top));
    for (i, line) in lines.iter().enumerate() {
        area.draw(&Text::new(
            line.clone(),
            (w as i32 / 2, y_padding + i as i32 * line_h),
            centred.clone(),
        ))?;
    }
    let height = 2 * y_padding + lines.len() as i32 * line_h - TITLE_LEADING;
    Ok(area.split_vertically(height.max(0)).1)
}

/// Lines of a title never take more than this many rows before the type
/// gets smaller: a fourth line would cost the plot more than it gives.
pub(crate) const TITLE_MAX_LINES: usize = 3;
/// The smallest title type: still readable on a slide.
pub(crate) const TITLE_MIN_PX: f64 = 11.0;
/// Space between the lines of a wrapped title, in pixels.
const TITLE_LEADING: i32 = 3;

/// The lines `title` is set in, given `fits` (whether a line fits the
/// width): the whole title when it fits; otherwise broken after the first
/// ": " (the owner, "model · task", then the subject, without the colon),
/// and every part that is still too wide broken at spaces, greedily. A
/// word wider than the width gets a line of its own; nothing is dropped or
/// shortened, so the words of the lines are the words of the title.
pub fn title_lines(title: &str, mut fits: impl FnMut(&str) -> bool) -> Vec<String> {
    let title = title.trim();
    if fits(title) {
        return vec![title.to_string()];
    }
    let parts: Vec<&str> = match title.split_once(": ") {
        Some((owner, subject)) => vec![owner, subject],
        None => vec![title],
    };
    let mut lines = Vec::new();
    for part in parts {
        if fits(part) {
            lines.push(part.to_string());
            continue;
        }
        let mut line = String::new();
        for word in part.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_string()
            } else {
                format!("{line} {word}")
            };
            if line.is_empty() || fits(&candidate) {
                line = candidate;
            } else {
                lines.push(std::mem::replace(&mut line, word.to_string()));
            }
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

/// An empty frame with the axis titles and a centred note, for figures
/// without any finite value to show: the reader sees that the figure exists
/// and why it is blank.
pub(crate) fn no_data<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x_label: &str,
    y_label: &str,
) -> Result<(), ChartError> {
    let mut chart = ChartBuilder::on(area)
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(
            Ticked::new(0.0, 1.0, Vec::new()),
            Ticked::new(0.0, 1.0, Vec::new()),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .axis_desc_style(axis_style())
        .draw()?;
    let note = axis_style()
        .color(&MISSING)
        .pos(Pos::new(HPos::Center, VPos::Center));
    chart.draw_series(std::iter::once(Text::new("no data", (0.5, 0.5), note)))?;
    Ok(())
}

/// How a legend entry is marked.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    Line(RGBColor),
    /// A dashed line: a control drawn beside its method.
    Dashed(RGBColor),
    Swatch(RGBColor),
    Dot(RGBColor),
    Ring(RGBColor),
    /// A category's filled marker: its colour and shape.
    Point(RGBColor, Shape),
}

/// A category's marker of `shape` centred on `at`, about `size` pixels
/// from centre to edge (a square is drawn a little smaller than a circle,
/// which it would otherwise outweigh). An element of its own, so that one
/// series can mix shapes.
pub(crate) struct Marker<C> {
    pub at: C,
    pub shape: Shape,
    pub size: i32,
    pub style: ShapeStyle,
}

pub(crate) fn marker<C>(at: C, shape: Shape, size: i32, style: ShapeStyle) -> Marker<C> {
    Marker {
        at,
        shape,
        size,
        style,
    }
}

impl<'a, C> PointCollection<'a, C> for &'a Marker<C> {
    type Point = &'a C;
    type IntoIter = std::iter::Once<&'a C>;
    fn point_iter(self) -> Self::IntoIter {
        std::iter::once(&self.at)
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for Marker<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        mut points: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let Some((x, y)) = points.next() else {
            return Ok(());
        };
        let s = self.size;
        let corners = match self.shape {
            Shape::Circle => {
                return backend.draw_circle((x, y), s as u32, &self.style, self.style.filled)
            }
            Shape::Square => {
                let h = (s * 4 + 2) / 5;
                vec![
                    (x - h, y - h),
                    (x + h, y - h),
                    (x + h, y + h),
                    (x - h, y + h),
                ]
            }
            Shape::Triangle => vec![
                (x, y - s - 1),
                (x + s + 1, y + s - 1),
                (x - s - 1, y + s - 1),
            ],
            Shape::Diamond => vec![(x, y - s - 1), (x + s, y), (x, y + s + 1), (x - s, y)],
        };
        if self.style.filled {
            backend.fill_polygon(corners, &self.style)
        } else {
            let mut closed = corners.clone();
            closed.push(corners[0]);
            backend.draw_path(closed, &self.style)
        }
    }
}

/// Draws a one-line (wrapping when needed) legend under the title and
/// returns the area below it. A row of its own never hides data, which a
/// legend box inside the plot would for some curves.
pub(crate) fn legend_row<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    entries: &[(String, Mark)],
) -> Result<DrawingArea<DB, Shift>, ChartError> {
    if entries.is_empty() {
        return Ok(area.clone());
    }
    const MARK_W: i32 = 22;
    const ROW_H: i32 = 20;
    const MAX_ROWS: i32 = 3;
    let style = legend_style();
    let (w, _) = area.dim_in_pixel();
    let left = (MARGIN + Y_LABEL_AREA) as i32;
    let right = w as i32 - MARGIN as i32;
    // Lay out first (to know the height), then draw.
    let mut placed = Vec::with_capacity(entries.len());
    let (mut x, mut row) = (left, 0);
    for (label, mark) in entries {
        let (tw, _) = area.estimate_text_size(label, &style)?;
        let item_w = MARK_W + 6 + tw as i32;
        if x > left && x + item_w > right {
            // Beyond a few rows the legend would crowd out the plot: the
            // remaining entries are left out.
            if row + 1 == MAX_ROWS {
                break;
            }
            x = left;
            row += 1;
        }
        placed.push((x, row, label, *mark));
        x += item_w + 18;
    }
    let height = (row + 1) * ROW_H + 4;
    let (strip, rest) = area.split_vertically(height);
    let text = style.pos(Pos::new(HPos::Left, VPos::Center));
    for (x, row, label, mark) in placed {
        let y = row * ROW_H + ROW_H / 2;
        let mid = (x + MARK_W / 2, y);
        match mark {
            Mark::Line(c) => strip.draw(&PathElement::new(
                vec![(x, y), (x + MARK_W, y)],
                c.stroke_width(3),
            ))?,
            Mark::Dashed(c) => {
                for (a, b) in [(0, 5), (8, 14), (MARK_W - 5, MARK_W)] {
                    strip.draw(&PathElement::new(
                        vec![(x + a, y), (x + b, y)],
                        c.stroke_width(3),
                    ))?;
                }
            }
            Mark::Swatch(c) => {
                strip.draw(&Rectangle::new(
                    [(x + 3, y - 6), (x + MARK_W - 3, y + 6)],
                    c.mix(0.35).filled(),
                ))?;
                strip.draw(&Rectangle::new(
                    [(x + 3, y - 6), (x + MARK_W - 3, y + 6)],
                    c.stroke_width(2),
                ))?;
            }
            Mark::Dot(c) => strip.draw(&Circle::new(mid, 5, c.filled()))?,
            Mark::Ring(c) => strip.draw(&Circle::new(mid, 4, c.stroke_width(2)))?,
            Mark::Point(c, shape) => strip.draw(&marker(mid, shape, 5, c.filled()))?,
        }
        strip.draw(&Text::new(label.clone(), (x + MARK_W + 6, y), text.clone()))?;
    }
    Ok(rest)
}

/// A vertical colour bar for the diverging scale `-limit..limit`, its ticks
/// and rotated title on the right. `bottom` is the space under the bar, so
/// that it lines up with the plot next to it; a grey "n/a" swatch is drawn
/// there when `missing` says some cells are non-finite.
pub(crate) fn colour_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    limit: f64,
    label: &str,
    top: u32,
    bottom: u32,
    missing: bool,
) -> Result<(), ChartError> {
    let limit = if limit.is_finite() && limit > 0.0 {
        limit
    } else {
        1.0
    };
    let mut chart = ChartBuilder::on(area)
        .margin_top(top)
        .margin_bottom(bottom)
        .margin_left(6)
        .right_y_label_area_size(COLOUR_BAR_WIDTH - 32)
        .build_cartesian_2d(Ticked::new(0.0, 1.0, Vec::new()), -limit..limit)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .y_labels(5)
        .y_desc(label)
        .label_style(tick_style())
        .axis_desc_style(axis_style())
        .draw()?;
    // One rectangle per level of the scale, so the bar shows exactly the
    // colours the cells can take.
    let levels = LEVELS as i32;
    chart.draw_series((-levels..=levels).map(|k| {
        let at = |t: f64| (t / LEVELS).clamp(-1.0, 1.0) * limit;
        let k = f64::from(k);
        Rectangle::new(
            [(0.0, at(k - 0.5)), (1.0, at(k + 0.5))],
            diverging(at(k), limit).filled(),
        )
    }))?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, -limit), (1.0, limit)],
        INK.mix(0.6).stroke_width(1),
    )))?;
    if missing {
        let (_, h) = area.dim_in_pixel();
        let y = h as i32 - bottom as i32 + 14;
        area.draw(&Rectangle::new([(6, y), (20, y + 14)], MISSING.filled()))?;
        let text = tick_style().pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new("n/a", (26, y + 7), text))?;
    }
    Ok(())
}
