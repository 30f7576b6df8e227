//! By-layer curves: a measure on the y axis against the block index on the
//! x axis, one line per ICL state.
//!
//! - [`alignment_by_layer`]: how well the representations match the
//!   hypothesis at each layer, 0-shot vs k-shot, with a confidence band.
//! - [`probe_by_layer`]: how well a linear probe reads the target out of
//!   each layer.
//! - [`attention_ratio_by_layer`]: log2 ratio of the attention paid to the
//!   relevant tokens vs the rest, per layer.
//! - [`correlation_by_layer`]: correlation between behaviour and
//!   representation at each layer.
//! - [`recovery_by_layer`]: the fraction of the k-shot gain that patching
//!   the 0-shot run at each layer recovers, one line per patching method,
//!   each control dashed in its method's colour.
//!
//! Filled markers mark the layers a test found significant; hollow markers
//! the others (only when the figure carries significance at all). Thin
//! black dashed lines are the measure's references (chance, no change,
//! ratio 1; none and all recovered); the grey vertical rule is the layer the
//! reader selected.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::axes;
use super::parts::{self, Mark};
use super::style::{self, INK, MARGIN, X_LABEL_AREA, Y_LABEL_AREA};
use super::ChartError;
use crate::figures::{LayerCurves, Series};

/// Hypothesis alignment vs layer (see the module docs).
pub fn alignment_by_layer<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &LayerCurves,
) -> Result<(), ChartError> {
    layer_curves(area, data)
}

/// Probe score vs layer (see the module docs).
pub fn probe_by_layer<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &LayerCurves,
) -> Result<(), ChartError> {
    layer_curves(area, data)
}

/// log2 attention ratio vs layer (see the module docs).
pub fn attention_ratio_by_layer<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &LayerCurves,
) -> Result<(), ChartError> {
    layer_curves(area, data)
}

/// Behaviour ↔ representation correlation vs layer (see the module docs).
pub fn correlation_by_layer<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &LayerCurves,
) -> Result<(), ChartError> {
    layer_curves(area, data)
}

/// Recovered fraction of the k-shot gain vs layer (see the module docs).
pub fn recovery_by_layer<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &LayerCurves,
) -> Result<(), ChartError> {
    layer_curves(area, data)
}

const X_LABEL: &str = "layer (block index)";

/// `v` is (within rounding) one of `layers`.
fn contains(layers: &[f64], v: f64) -> bool {
    layers.iter().any(|l| (l - v).abs() < 1e-9)
}

/// Runs of consecutive finite points, sorted by layer: a non-finite value
/// leaves a gap rather than a line to zero.
fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, _)| x.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current = Vec::new();
    for (x, y) in sorted {
        if y.is_finite() {
            current.push((x, y));
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The band as polygons, one per run of finite `(low, high)`.
fn band_polygons(band: &[(f64, f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut sorted: Vec<(f64, f64, f64)> = band
        .iter()
        .copied()
        .filter(|(x, _, _)| x.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = Vec::new();
    let mut run: Vec<(f64, f64, f64)> = Vec::new();
    let mut flush = |run: &mut Vec<(f64, f64, f64)>| {
        if run.len() >= 2 {
            let upper = run.iter().map(|&(x, _, hi)| (x, hi));
            let lower = run.iter().rev().map(|&(x, lo, _)| (x, lo));
            out.push(upper.chain(lower).collect());
        }
        run.clear();
    };
    for b in sorted {
        if b.1.is_finite() && b.2.is_finite() {
            run.push(b);
        } else {
            flush(&mut run);
        }
    }
    flush(&mut run);
    out
}

fn finite_ys(series: &[Series]) -> impl Iterator<Item = f64> + '_ {
    series.iter().flat_map(|s| {
        let points = s.points.iter().filter(|p| p.0.is_finite()).map(|p| p.1);
        let band = s
            .band
            .iter()
            .filter(|b| b.0.is_finite())
            .flat_map(|b| [b.1, b.2]);
        points.chain(band)
    })
}

/// The shared drawing of every by-layer figure.
fn layer_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &LayerCurves,
) -> Result<(), ChartError> {
    if !parts::prepare(area)? {
        return Ok(());
    }
    let area = parts::titled(area, &data.title)?;
    let y_extent = axes::extent(finite_ys(&data.series));
    let x_extent = axes::extent(data.series.iter().flat_map(|s| {
        let points = s.points.iter().filter(|p| p.1.is_finite()).map(|p| p.0);
        let band = s
            .band
            .iter()
            .filter(|b| b.1.is_finite() || b.2.is_finite())
            .map(|b| b.0);
        points.chain(band)
    }));
    let (Some((x_lo, x_hi)), Some((y_lo, y_hi))) = (x_extent, y_extent) else {
        return parts::no_data(&area, X_LABEL, &data.y_label);
    };
    let selected = data.selected_layer.map(|l| l as f64);
    let (x_lo, x_hi) = axes::extent([x_lo, x_hi, selected.unwrap_or(x_lo)]).unwrap_or((x_lo, x_hi));
    let (x_lo, x_hi) = axes::padded(x_lo - 0.5, x_hi + 0.5, 0.0);

    // A measure with natural bounds keeps them (so figures compare at a
    // glance), widened only if data or reference fall outside.
    let references: Vec<f64> = data
        .references
        .iter()
        .copied()
        .filter(|r| r.is_finite())
        .collect();
    let fixed = data
        .y_range
        .filter(|(lo, hi)| lo.is_finite() && hi.is_finite() && lo < hi);
    let (y_lo, y_hi) = match fixed {
        Some((lo, hi))
            if lo <= y_lo && y_hi <= hi && references.iter().all(|&r| lo <= r && r <= hi) =>
        {
            (lo, hi)
        }
        _ => {
            let (lo, hi) = axes::extent([y_lo, y_hi].into_iter().chain(references.iter().copied()))
                .unwrap_or((y_lo, y_hi));
            let (lo, hi) = match fixed {
                Some((flo, fhi)) => (lo.min(flo), hi.max(fhi)),
                None => (lo, hi),
            };
            axes::padded(lo, hi, 0.05)
        }
    };

    let entries = legend_entries(&data.series);
    let area = parts::legend_row(&area, &entries)?;
    let ticks = axes::integer_ticks(x_lo, x_hi, 12);
    let mut chart = ChartBuilder::on(&area)
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(axes::Ticked::new(x_lo, x_hi, ticks), y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(X_LABEL)
        .y_desc(data.y_label.as_str())
        .x_label_formatter(&|v| axes::int_label(*v))
        .y_labels(8)
        .max_light_lines(0)
        .bold_line_style(INK.mix(0.08))
        .label_style(style::tick_style())
        .axis_desc_style(style::axis_style())
        .draw()?;

    for &r in &references {
        chart.draw_series(DashedLineSeries::new(
            [(x_lo, r), (x_hi, r)],
            6,
            4,
            INK.mix(0.7).stroke_width(1),
        ))?;
    }
    if let Some(layer) = selected {
        let rule = RGBColor(110, 110, 110).stroke_width(1);
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(layer, y_lo), (layer, y_hi)],
            rule,
        )))?;
        let text = style::tick_style()
            .color(&RGBColor(90, 90, 90))
            .pos(Pos::new(HPos::Left, VPos::Top));
        let label = format!("layer {}", axes::int_label(layer));
        // A few pixels right of the rule, so the rule does not cross the text.
        chart.draw_series(std::iter::once(
            EmptyElement::at((layer, y_hi)) + Text::new(label, (4, 3), text),
        ))?;
    }

    // Bands first, so that every line stays visible on top of every band.
    for s in &data.series {
        let colour = style::palette(s.colour);
        let opacity = if s.dashed { 0.10 } else { 0.18 };
        chart.draw_series(
            band_polygons(&s.band)
                .into_iter()
                .map(|p| Polygon::new(p, colour.mix(opacity).filled())),
        )?;
    }
    let with_significance = data.series.iter().any(|s| !s.significant.is_empty());
    for s in &data.series {
        let colour = style::palette(s.colour);
        let runs = segments(&s.points);
        if s.dashed {
            for run in &runs {
                chart.draw_series(DashedLineSeries::new(
                    run.iter().copied(),
                    7,
                    5,
                    colour.stroke_width(2),
                ))?;
            }
        } else {
            chart.draw_series(
                runs.iter()
                    .map(|run| PathElement::new(run.clone(), colour.stroke_width(2))),
            )?;
        }
        for run in &runs {
            // Without significance, only isolated points get a dot: a
            // single-layer run would otherwise be invisible.
            let marks = run.iter().filter(|_| with_significance || run.len() == 1);
            chart.draw_series(marks.flat_map(|&(x, y)| {
                if !with_significance {
                    vec![Circle::new((x, y), 3, colour.filled())]
                } else if contains(&s.significant, x) {
                    vec![Circle::new((x, y), 4, colour.filled())]
                } else {
                    vec![
                        Circle::new((x, y), 3, WHITE.filled()),
                        Circle::new((x, y), 3, colour.stroke_width(2)),
                    ]
                }
            }))?;
        }
    }
    Ok(())
}

fn legend_entries(series: &[Series]) -> Vec<(String, Mark)> {
    let mut entries: Vec<(String, Mark)> = series
        .iter()
        .map(|s| {
            let colour = style::palette(s.colour);
            let mark = if s.dashed {
                Mark::Dashed(colour)
            } else {
                Mark::Line(colour)
            };
            (s.label.clone(), mark)
        })
        .collect();
    if series.iter().any(|s| !s.significant.is_empty()) {
        entries.push(("significant".to_string(), Mark::Dot(INK)));
        entries.push(("not significant".to_string(), Mark::Ring(INK)));
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_split_lines_and_bands() {
        let runs = segments(&[(2.0, 1.0), (0.0, 0.5), (1.0, f64::NAN), (3.0, 2.0)]);
        assert_eq!(runs, vec![vec![(0.0, 0.5)], vec![(2.0, 1.0), (3.0, 2.0)]]);
        let polys = band_polygons(&[(0.0, 0.0, 1.0), (1.0, 0.0, 2.0), (2.0, f64::NAN, 1.0)]);
        assert_eq!(
            polys,
            vec![vec![(0.0, 1.0), (1.0, 2.0), (1.0, 0.0), (0.0, 0.0)]]
        );
    }
}
