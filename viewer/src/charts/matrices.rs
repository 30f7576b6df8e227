//! Similarity matrices at one layer, side by side: the hypothesis (the
//! similarity the hypothesis predicts between every pair of items), then the
//! model's representational similarity without and with ICL. Every panel is
//! a square heatmap on the same diverging scale -1..1 (blue ↔ white ↔
//! vermillion), rows top to bottom and columns left to right in item order;
//! thin lines mark where the items' condition changes, so the condition
//! blocks the hypothesis predicts can be compared by eye.
//!
//! Above [`MAX_CELLS`] items a panel averages square blocks of items (NaNs
//! left out), which keeps the browser's redraw fast and the SVG small at no
//! visible cost: a panel is only a few hundred pixels wide anyway.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes;
use super::parts;
use super::style::{self, INK};
use super::ChartError;
use crate::figures::MatrixPanels;

/// Most cells drawn per side of a panel: a panel is about 230 pixels wide,
/// so 100 cells are 2 pixels or more each, and three panels stay near 30,000
/// rectangles, which keeps the SVG small (the viewer's canvas draws a
/// panel's cells as one image; its redraw is measured in
/// tests/report_browser.rs).
pub(crate) const MAX_CELLS: usize = 100;
const AXIS_LABEL: &str = "item";
const PANEL_X_LABEL_AREA: u32 = 40;
const PANEL_Y_LABEL_AREA: u32 = 52;
/// More boundaries than this would paint the panel grey: skip them.
const MAX_BOUNDARIES: usize = 64;

/// An n×n matrix reduced to at most `max`×`max` cells by averaging blocks of
/// `ceil(n / max)` items: `edges` are the cells' item boundaries (0..=n),
/// `cells` the row-major means (NaN where a block has no finite value).
/// Missing values (a short `values`) count as NaN.
pub(crate) fn downsample(n: usize, values: &[f64], max: usize) -> (Vec<usize>, Vec<f64>) {
    let block = n.div_ceil(max.max(1)).max(1);
    let m = n.div_ceil(block);
    let edges: Vec<usize> = (0..=m).map(|i| (i * block).min(n)).collect();
    let mut sums = vec![0.0; m * m];
    let mut counts = vec![0u32; m * m];
    // Only the values present are visited: a malformed (short) matrix with
    // a huge `n` costs nothing.
    let present = values.len().min(n.saturating_mul(n));
    for (idx, &v) in values[..present].iter().enumerate() {
        if v.is_finite() {
            let (r, c) = (idx / n, idx % n);
            let cell = (r / block) * m + c / block;
            sums[cell] += v;
            counts[cell] += 1;
        }
    }
    let cells = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &k)| if k == 0 { f64::NAN } else { s / f64::from(k) })
        .collect();
    (edges, cells)
}

/// Items after which the condition changes (block boundaries), when every
/// item has a condition.
fn boundaries(row_condition: &[usize], n: usize) -> Vec<usize> {
    if row_condition.len() != n {
        return Vec::new();
    }
    let b: Vec<usize> = (1..n)
        .filter(|&k| row_condition[k] != row_condition[k - 1])
        .collect();
    if b.len() > MAX_BOUNDARIES {
        Vec::new()
    } else {
        b
    }
}

/// Hypothesis and similarity matrices side by side (see the module docs).
pub fn similarity_matrices<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &MatrixPanels,
) -> Result<(), ChartError> {
    if !parts::prepare(area)? {
        return Ok(());
    }
    let area = parts::titled(area, &data.title)?;
    if data.panels.is_empty() {
        return parts::no_data(&area, AXIS_LABEL, AXIS_LABEL);
    }
    let (w, _) = area.dim_in_pixel();
    let (panels_area, bar_area) =
        area.split_horizontally(w.saturating_sub(style::COLOUR_BAR_WIDTH));
    let panel_areas = panels_area.split_evenly((1, data.panels.len()));
    let mut square = None;
    for (panel, (name, n, values)) in panel_areas.iter().zip(&data.panels) {
        let drawn = draw_panel(panel, name, *n, values, &data.row_condition)?;
        square = square.or(drawn);
    }
    if let Some((top, bottom)) = square {
        let y_range = bar_area.get_pixel_range().1;
        let top = (top - y_range.start).max(0) as u32;
        let bottom = (y_range.end - bottom).max(0) as u32;
        parts::colour_bar(&bar_area, 1.0, "similarity", top, bottom, false)?;
    }
    Ok(())
}

/// One square heatmap; returns the absolute top and bottom pixel of the
/// square (for the colour bar to line up with), or `None` if it is empty.
fn draw_panel<DB: DrawingBackend>(
    panel: &DrawingArea<DB, Shift>,
    name: &str,
    n: usize,
    values: &[f64],
    row_condition: &[usize],
) -> Result<Option<(i32, i32)>, ChartError> {
    let panel = if name.trim().is_empty() {
        panel.clone()
    } else {
        panel.titled(name, style::axis_style())?
    };
    if n == 0 || values.iter().all(|v| !v.is_finite()) {
        parts::no_data(&panel, AXIS_LABEL, AXIS_LABEL)?;
        return Ok(None);
    }
    // Shrink the panel so that the plot itself is square (cells must be
    // square for the block structure to read correctly).
    let (pw, ph) = panel.dim_in_pixel();
    let room_w = pw.saturating_sub(PANEL_Y_LABEL_AREA + 2 * style::MARGIN);
    let room_h = ph.saturating_sub(PANEL_X_LABEL_AREA + 2 * style::MARGIN);
    let side = room_w.min(room_h).max(1);
    let left = style::MARGIN + (room_w - side.min(room_w)) / 2;
    let top = style::MARGIN + (room_h - side.min(room_h)) / 2;
    let right = pw.saturating_sub(left + PANEL_Y_LABEL_AREA + side);
    let bottom = ph.saturating_sub(top + PANEL_X_LABEL_AREA + side);
    let square_area = panel.margin(top, bottom, left, right);

    let size = n as f64;
    let ticks = axes::integer_ticks(0.0, size, 5);
    // Row 0 at the top: y runs upwards, so row r is drawn at y = n - r.
    let y_ticks: Vec<f64> = ticks.iter().map(|t| size - t).collect();
    let mut chart = ChartBuilder::on(&square_area)
        .x_label_area_size(PANEL_X_LABEL_AREA)
        .y_label_area_size(PANEL_Y_LABEL_AREA)
        .build_cartesian_2d(
            axes::Ticked::new(0.0, size, ticks),
            axes::Ticked::new(0.0, size, y_ticks),
        )?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(AXIS_LABEL)
        .y_desc(AXIS_LABEL)
        .x_label_formatter(&|v| axes::int_label(*v))
        .y_label_formatter(&|v| axes::int_label(size - v))
        .label_style(style::tick_style())
        .axis_desc_style(style::axis_style())
        .draw()?;

    let (edges, cells) = downsample(n, values, MAX_CELLS);
    let m = edges.len().saturating_sub(1);
    let mut rects = Vec::new();
    for i in 0..m {
        let (y_top, y_bottom) = (size - edges[i] as f64, size - edges[i + 1] as f64);
        // Neighbouring cells of the same colour become one rectangle: the
        // hypothesis is made of constant blocks, so this removes most cells.
        let mut j = 0;
        while j < m {
            let colour = style::diverging(cells[i * m + j], 1.0);
            let mut end = j + 1;
            while end < m && style::diverging(cells[i * m + end], 1.0) == colour {
                end += 1;
            }
            rects.push(Rectangle::new(
                [(edges[j] as f64, y_bottom), (edges[end] as f64, y_top)],
                colour.filled(),
            ));
            j = end;
        }
    }
    chart.draw_series(rects)?;

    let line = INK.mix(0.55).stroke_width(1);
    chart.draw_series(boundaries(row_condition, n).into_iter().flat_map(|k| {
        let k = k as f64;
        [
            PathElement::new(vec![(k, 0.0), (k, size)], line),
            PathElement::new(vec![(0.0, size - k), (size, size - k)], line),
        ]
    }))?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0.0), (size, size)],
        INK.stroke_width(1),
    )))?;

    let y_range = chart.plotting_area().get_pixel_range().1;
    Ok(Some((y_range.start, y_range.end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_averages_blocks_and_skips_nan() {
        // 4×4 into 2×2 blocks.
        let mut v: Vec<f64> = (0..16).map(f64::from).collect();
        v[0] = f64::NAN;
        let (edges, cells) = downsample(4, &v, 2);
        assert_eq!(edges, vec![0, 2, 4]);
        assert_eq!(cells[0], (1.0 + 4.0 + 5.0) / 3.0);
        assert_eq!(cells[3], (10.0 + 11.0 + 14.0 + 15.0) / 4.0);
        // Small matrices pass through; missing values are NaN.
        let (edges, cells) = downsample(3, &[0.5; 7], MAX_CELLS);
        assert_eq!(edges, vec![0, 1, 2, 3]);
        assert!(cells[7].is_nan() && cells[8].is_nan() && cells[6] == 0.5);
        // Uneven sizes keep every item: 401 items in blocks of 3.
        let (edges, _) = downsample(401, &[], 150);
        assert_eq!((edges.len() - 1, edges.last().copied()), (134, Some(401)));
        assert_eq!(downsample(0, &[], MAX_CELLS), (vec![0], vec![]));
    }

    #[test]
    fn boundaries_where_condition_changes() {
        assert_eq!(boundaries(&[0, 0, 1, 1, 2], 5), vec![2, 4]);
        assert!(boundaries(&[0, 1], 3).is_empty());
    }
}
