//! Layer × row heatmaps: one column per layer (x axis, as everywhere), one
//! row per head or per condition (y axis), coloured on a diverging scale
//! symmetric around 0 (blue = negative, white = 0, vermillion = positive).
//! Non-finite cells are grey; the reader's selected layer / row is outlined.
//!
//! - [`attention_change_heatmap`]: how much ICL changes each attention
//!   head's log2 attention ratio (blue = decrease, vermillion = increase).
//! - [`recovery_by_condition`]: per condition, the fraction of the k-shot
//!   gain that patching the 0-shot run at each layer recovers (white = none,
//!   full vermillion = all of it).
//!
//! 80 layers × 64 heads is about 5000 rectangles, cheap for the SVG;
//! neighbouring cells of one colour are still merged. The viewer's canvas
//! backend (`web/canvas.rs`) draws small cells like these as one image.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes;
use super::parts;
use super::style::{self, INK, MARGIN, X_LABEL_AREA, Y_LABEL_AREA};
use super::ChartError;
use crate::figures::LayerHeatmap;

const X_LABEL: &str = "layer (block index)";
/// Row names longer than this are shortened on the axis.
const ROW_NAME_CHARS: usize = 22;
/// Named rows are all labelled up to this many; beyond, every few.
const MAX_NAMED_TICKS: usize = 30;
/// Pixels beside the tick labels for the tick marks, the gap and the
/// rotated axis title.
const AXIS_TITLE_ROOM: u32 = 44;

/// The scale's half-width: the given limit if usable, else the largest
/// finite |value|, else 1 (so an all-zero map is plain white, not an error).
pub(crate) fn usable_limit(limit: f64, values: &[f64]) -> f64 {
    if limit.is_finite() && limit > 0.0 {
        return limit;
    }
    let max = values
        .iter()
        .filter(|v| v.is_finite())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    if max > 0.0 {
        max
    } else {
        1.0
    }
}

/// Layer × head heatmap of the change in attention ratio (see the module docs).
pub fn attention_change_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &LayerHeatmap,
) -> Result<(), ChartError> {
    layer_heatmap(area, data)
}

/// Layer × condition heatmap of the recovered fraction (see the module docs).
pub fn recovery_by_condition<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &LayerHeatmap,
) -> Result<(), ChartError> {
    layer_heatmap(area, data)
}

/// The label of row position `v`: its name, or its number when rows are
/// numbered.
fn row_tick(data: &LayerHeatmap, v: f64) -> String {
    if data.row_names.is_empty() {
        return axes::int_label(v);
    }
    let i = v.round();
    match data.row_names.get(i.max(0.0) as usize) {
        Some(name) if i >= 0.0 => axes::shorten(name, ROW_NAME_CHARS),
        _ => String::new(),
    }
}

/// The shared drawing of every layer × row heatmap.
fn layer_heatmap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &LayerHeatmap,
) -> Result<(), ChartError> {
    if !parts::prepare(area)? {
        return Ok(());
    }
    let area = parts::titled(area, &data.title)?;
    let (n_layers, n_rows) = (data.layers.len(), data.rows);
    let n_cells = n_layers.saturating_mul(n_rows);
    let present = &data.values[..data.values.len().min(n_cells)];
    if n_cells == 0 || present.iter().all(|v| !v.is_finite()) {
        return parts::no_data(&area, X_LABEL, &data.row_label);
    }
    let value = |layer: usize, row: usize| {
        present
            .get(layer * n_rows + row)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let limit = usable_limit(data.limit, present);
    let missing = present.len() < n_cells || present.iter().any(|v| !v.is_finite());

    let (w, _) = area.dim_in_pixel();
    let (plot_area, bar_area) = area.split_horizontally(w.saturating_sub(style::COLOUR_BAR_WIDTH));

    // Columns sit at positions 0..n_layers and are labelled with the layer
    // numbers, so a subset of layers (every 4th, say) keeps equal widths.
    let x_hi = n_layers as f64 - 0.5;
    let y_hi = n_rows as f64 - 0.5;
    let x_ticks = axes::integer_ticks(0.0, n_layers as f64 - 1.0, 12);
    let max_y_ticks = if data.row_names.is_empty() {
        10
    } else {
        MAX_NAMED_TICKS
    };
    let y_ticks = axes::integer_ticks(0.0, n_rows as f64 - 1.0, max_y_ticks);
    // Named rows need room for the widest name beside the axis title
    // (numbered rows keep the figures' usual room).
    let mut y_label_area = Y_LABEL_AREA;
    if !data.row_names.is_empty() {
        for &tick in &y_ticks {
            let (tw, _) =
                plot_area.estimate_text_size(&row_tick(data, tick), &style::tick_style())?;
            y_label_area = y_label_area.max(tw + AXIS_TITLE_ROOM);
        }
    }
    let layer_label = |v: &f64| -> String {
        let i = v.round();
        match data.layers.get(i.max(0.0) as usize) {
            Some(layer) if i >= 0.0 => layer.to_string(),
            _ => String::new(),
        }
    };
    let mut chart = ChartBuilder::on(&plot_area)
        .margin(MARGIN)
        .margin_right(4)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(y_label_area)
        .build_cartesian_2d(
            axes::Ticked::new(-0.5, x_hi, x_ticks),
            axes::Ticked::new(-0.5, y_hi, y_ticks),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(X_LABEL)
        .y_desc(data.row_label.as_str())
        .x_label_formatter(&layer_label)
        .y_label_formatter(&|v| row_tick(data, *v))
        .label_style(style::tick_style())
        .axis_desc_style(style::axis_style())
        .draw()?;

    let mut rects = Vec::new();
    for row in 0..n_rows {
        let (y0, y1) = (row as f64 - 0.5, row as f64 + 0.5);
        let mut layer = 0;
        while layer < n_layers {
            let colour = style::diverging(value(layer, row), limit);
            let mut end = layer + 1;
            while end < n_layers && style::diverging(value(end, row), limit) == colour {
                end += 1;
            }
            rects.push(Rectangle::new(
                [(layer as f64 - 0.5, y0), (end as f64 - 0.5, y1)],
                colour.filled(),
            ));
            layer = end;
        }
    }
    chart.draw_series(rects)?;

    // Outline the selection: the cell when both are set, else the column or
    // the row.
    let column = data
        .selected_layer
        .and_then(|l| data.layers.iter().position(|&x| x == l));
    let row = data.selected_row.filter(|&h| h < n_rows);
    let outline = match (column, row) {
        (Some(c), Some(h)) => Some((
            (c as f64 - 0.5, h as f64 - 0.5),
            (c as f64 + 0.5, h as f64 + 0.5),
        )),
        (Some(c), None) => Some(((c as f64 - 0.5, -0.5), (c as f64 + 0.5, y_hi))),
        (None, Some(h)) => Some(((-0.5, h as f64 - 0.5), (x_hi, h as f64 + 0.5))),
        (None, None) => None,
    };
    if let Some((a, b)) = outline {
        chart.draw_series(std::iter::once(Rectangle::new([a, b], INK.stroke_width(2))))?;
    }

    let y_range = chart.plotting_area().get_pixel_range().1;
    let bar_range = bar_area.get_pixel_range().1;
    let top = (y_range.start - bar_range.start).max(0) as u32;
    let bottom = (bar_range.end - y_range.end).max(0) as u32;
    parts::colour_bar(&bar_area, limit, &data.value_label, top, bottom, missing)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_falls_back_to_the_data() {
        assert_eq!(usable_limit(2.0, &[5.0]), 2.0);
        assert_eq!(usable_limit(0.0, &[-3.0, 1.0, f64::NAN]), 3.0);
        assert_eq!(usable_limit(f64::NAN, &[0.0]), 1.0);
        assert_eq!(usable_limit(-1.0, &[]), 1.0);
    }
}
