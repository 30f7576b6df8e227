//! The per-target scatter behind a behaviour ↔ representation correlation
//! at one layer: one point per target, coloured by its condition (the same
//! palette colour as everywhere else), the least-squares line when it is
//! defined, and the correlation itself as a note in the emptiest corner.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes;
use super::parts::{self, Mark};
use super::style::{self, INK, MARGIN, X_LABEL_AREA, Y_LABEL_AREA};
use super::ChartError;
use crate::figures::Scatter;

/// The part of `y = slope·x + intercept` inside the box, if any: drawing the
/// whole line would run over the axes.
pub(crate) fn clip_line(
    (slope, intercept): (f64, f64),
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
) -> Option<((f64, f64), (f64, f64))> {
    if !(slope.is_finite() && intercept.is_finite()) {
        return None;
    }
    let (lo, hi) = if slope == 0.0 {
        if intercept < y0 || intercept > y1 {
            return None;
        }
        (x0, x1)
    } else {
        let (xa, xb) = ((y0 - intercept) / slope, (y1 - intercept) / slope);
        (x0.max(xa.min(xb)), x1.min(xa.max(xb)))
    };
    let at = |x: f64| (x, slope * x + intercept);
    (lo < hi).then(|| (at(lo), at(hi)))
}

/// Per-target scatter with fit line and note (see the module docs).
pub fn correlation_scatter<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &Scatter,
) -> Result<(), ChartError> {
    if !parts::prepare(area)? {
        return Ok(());
    }
    let area = parts::titled(area, &data.title)?;
    let points: Vec<(f64, f64, usize)> = data
        .points
        .iter()
        .copied()
        .filter(|(x, y, _)| x.is_finite() && y.is_finite())
        .collect();
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (
        axes::extent(points.iter().map(|p| p.0)),
        axes::extent(points.iter().map(|p| p.1)),
    ) else {
        return parts::no_data(&area, &data.x_label, &data.y_label);
    };
    let (x_lo, x_hi) = axes::padded(x_lo, x_hi, 0.05);
    let (y_lo, y_hi) = axes::padded(y_lo, y_hi, 0.08);

    let fit = data
        .fit
        .and_then(|f| clip_line(f, (x_lo, x_hi), (y_lo, y_hi)));
    let mut entries: Vec<(String, Mark)> = data
        .condition_names
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let (colour, shape) = style::category(c);
            (name.clone(), Mark::Point(colour, shape))
        })
        .collect();
    if fit.is_some() {
        entries.push(("least-squares fit".to_string(), Mark::Line(INK)));
    }
    let area = parts::legend_row(&area, &entries)?;

    let mut chart = ChartBuilder::on(&area)
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(data.x_label.as_str())
        .y_desc(data.y_label.as_str())
        .x_labels(8)
        .y_labels(8)
        .max_light_lines(0)
        .bold_line_style(INK.mix(0.08))
        .label_style(style::tick_style())
        .axis_desc_style(style::axis_style())
        .draw()?;

    chart.draw_series(points.iter().map(|&(x, y, c)| {
        let (colour, shape) = style::category(c);
        parts::marker((x, y), shape, 4, colour.mix(0.75).filled())
    }))?;
    if let Some((a, b)) = fit {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![a, b],
            INK.stroke_width(2),
        )))?;
    }

    let note = data.note.trim();
    if !note.is_empty() {
        // In the corner with the fewest points and least fit line under it,
        // on a white box so that what is under it does not garble it.
        let plot = chart.plotting_area().strip_coord_spec();
        let (pw, ph) = plot.dim_in_pixel();
        let (pw, ph) = (pw as i32, ph as i32);
        let text = style::legend_style();
        let (tw, th) = plot.estimate_text_size(note, &text)?;
        let (bw, bh) = (tw as i32 + 10, th as i32 + 8);
        let origin = chart.plotting_area().get_base_pixel();
        let to_plot = |x: f64, y: f64| {
            let p = chart.backend_coord(&(x, y));
            (p.0 - origin.0, p.1 - origin.1)
        };
        let mut obstacles: Vec<(i32, i32)> =
            points.iter().map(|&(x, y, _)| to_plot(x, y)).collect();
        if let Some(((ax, ay), (bx, by))) = fit {
            obstacles.extend((0..=20).map(|i| {
                let t = f64::from(i) / 20.0;
                to_plot(ax + (bx - ax) * t, ay + (by - ay) * t)
            }));
        }
        let corners = [
            (4, 4),
            (pw - 4 - bw, 4),
            (pw - 4 - bw, ph - 4 - bh),
            (4, ph - 4 - bh),
        ];
        let covered = |&(cx, cy): &(i32, i32)| {
            obstacles
                .iter()
                .filter(|&&(x, y)| {
                    x >= cx - 5 && x <= cx + bw + 5 && y >= cy - 5 && y <= cy + bh + 5
                })
                .count()
        };
        let (cx, cy) = corners
            .iter()
            .copied()
            .min_by_key(covered)
            .unwrap_or((4, 4));
        plot.draw(&Rectangle::new(
            [(cx, cy), (cx + bw, cy + bh)],
            WHITE.mix(0.85).filled(),
        ))?;
        let anchor = text.pos(Pos::new(HPos::Left, VPos::Top));
        plot.draw(&Text::new(note.to_string(), (cx + 5, cy + 4), anchor))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_line_is_clipped_to_the_plot() {
        let seg = clip_line((1.0, 0.0), (0.0, 10.0), (0.0, 5.0));
        assert_eq!(seg, Some(((0.0, 0.0), (5.0, 5.0))));
        assert_eq!(
            clip_line((0.0, 2.0), (0.0, 1.0), (0.0, 5.0)),
            Some(((0.0, 2.0), (1.0, 2.0)))
        );
        assert_eq!(clip_line((0.0, 9.0), (0.0, 1.0), (0.0, 5.0)), None);
        assert_eq!(clip_line((f64::NAN, 0.0), (0.0, 1.0), (0.0, 1.0)), None);
        assert_eq!(clip_line((1.0, 100.0), (0.0, 1.0), (0.0, 1.0)), None);
    }
}
