//! Behaviour per condition, before vs after ICL: for every condition on the
//! x axis, one box per ICL state side by side (median, quartiles, whiskers
//! to the furthest value within 1.5 IQR of the box), with every per-target
//! value drawn over it as a point.
//!
//! Correct/wrong behaviour has no spread worth a box (every box would run
//! from 0 to 1): it is drawn as the proportion correct, one bar per state,
//! with its 95% Wilson score interval.
//!
//! Points are spread sideways by a fixed low-discrepancy sequence of their
//! index (not a random jitter), so the same data always gives the same
//! picture. Values are never moved vertically: 0/1 correctness stays 0/1.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::axes;
use super::parts::{self, Mark};
use super::style::{self, INK, MARGIN, X_LABEL_AREA, Y_LABEL_AREA};
use super::ChartError;
use crate::figures::BehaviorByCondition;
use crate::stats::proportion_correct;

const X_LABEL: &str = "condition";
/// Fraction of a condition's slot the boxes of all states share.
const SLOT: f64 = 0.8;
/// Fewer values than this get points and a median tick, but no box: a box
/// of two values would suggest a spread that was never measured.
const MIN_FOR_BOX: usize = 3;

/// Box summary of one group of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BoxStats {
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub whisker_lo: f64,
    pub whisker_hi: f64,
}

/// Quantile of sorted values by linear interpolation (Hyndman & Fan type 7,
/// the default of R and NumPy).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => {
            let h = (n - 1) as f64 * q;
            let (i, frac) = (h.floor() as usize, h - h.floor());
            let lo = sorted[i.min(n - 1)];
            let hi = sorted[(i + 1).min(n - 1)];
            lo + (hi - lo) * frac
        }
    }
}

/// Median, quartiles and Tukey whiskers of the finite values, if any.
pub(crate) fn box_stats(values: &[f64]) -> Option<BoxStats> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let (q1, median, q3) = (
        quantile(&sorted, 0.25),
        quantile(&sorted, 0.5),
        quantile(&sorted, 0.75),
    );
    let iqr = q3 - q1;
    let (fence_lo, fence_hi) = (q1 - 1.5 * iqr, q3 + 1.5 * iqr);
    let whisker_lo = sorted
        .iter()
        .copied()
        .find(|&v| v >= fence_lo)
        .unwrap_or(q1);
    let whisker_hi = sorted
        .iter()
        .rev()
        .copied()
        .find(|&v| v <= fence_hi)
        .unwrap_or(q3);
    Some(BoxStats {
        median,
        q1,
        q3,
        whisker_lo,
        whisker_hi,
    })
}

/// Deterministic sideways offset in -0.5..0.5 for the `i`-th point: the
/// golden-ratio sequence spreads any number of points evenly.
fn jitter(i: usize) -> f64 {
    let x = (i as f64 + 1.0) * 0.618_033_988_749_894_9;
    x - x.floor() - 0.5
}

/// Behaviour per condition, 0-shot next to k-shot (see the module docs).
pub fn behavior_by_condition<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    data: &BehaviorByCondition,
) -> Result<(), ChartError> {
    if !parts::prepare(area)? {
        return Ok(());
    }
    let area = parts::titled(area, &data.title)?;
    let n_conditions = data.conditions.len();
    let n_states = data.groups.len();
    let values = |state: usize, condition: usize| -> &[f64] {
        data.groups
            .get(state)
            .and_then(|g| g.1.get(condition))
            .map_or(&[][..], |v| v.as_slice())
    };
    let y_extent = axes::extent(
        (0..n_states)
            .flat_map(|s| (0..n_conditions).flat_map(move |c| values(s, c).iter().copied())),
    );
    let Some((y_lo, y_hi)) = y_extent else {
        return parts::no_data(&area, X_LABEL, &data.y_label);
    };
    // Proportions keep their natural 0..1 scale, with room for an interval
    // that ends at 0 or 1 to show its cap.
    let (y_lo, y_hi) = if data.proportions {
        (-0.03, 1.03)
    } else {
        axes::padded(y_lo, y_hi, 0.06)
    };

    let mut entries: Vec<(String, Mark)> = data
        .groups
        .iter()
        .enumerate()
        .map(|(s, g)| (g.0.clone(), Mark::Swatch(style::palette(s))))
        .collect();
    if data.proportions {
        entries.push(("95% Wilson interval".to_string(), Mark::Line(INK)));
    }
    let area = parts::legend_row(&area, &entries)?;

    let x_hi = n_conditions as f64 - 0.5;
    let ticks: Vec<f64> = (0..n_conditions).map(|c| c as f64).collect();
    // Long names would run into each other: allow roughly one character per
    // 8 px of a condition's slot.
    let (w, _) = area.dim_in_pixel();
    let slot_px = w.saturating_sub(MARGIN * 2 + Y_LABEL_AREA) as usize / n_conditions.max(1);
    let max_chars = (slot_px / 8).max(4);
    let names: Vec<String> = data
        .conditions
        .iter()
        .map(|c| axes::shorten(c, max_chars))
        .collect();
    let name_of = |v: &f64| -> String {
        let i = v.round();
        if i >= 0.0 && (v - i).abs() < 1e-9 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };

    let mut chart = ChartBuilder::on(&area)
        .margin(MARGIN)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA)
        .build_cartesian_2d(axes::Ticked::new(-0.5, x_hi, ticks), y_lo..y_hi)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(X_LABEL)
        .y_desc(data.y_label.as_str())
        .x_label_formatter(&name_of)
        .y_labels(8)
        .max_light_lines(0)
        .bold_line_style(INK.mix(0.08))
        .label_style(style::tick_style())
        .axis_desc_style(style::axis_style())
        .draw()?;

    let group_w = SLOT / n_states.max(1) as f64;
    let box_w = group_w * 0.7;
    for c in 0..n_conditions {
        for s in 0..n_states {
            let colour = style::palette(s);
            let centre = c as f64 - SLOT / 2.0 + group_w * (s as f64 + 0.5);
            let vals = values(s, c);
            if data.proportions {
                draw_proportion(&mut chart, vals, centre, box_w, colour)?;
            } else {
                draw_box(&mut chart, vals, centre, box_w, colour)?;
            }
        }
    }
    Ok(())
}

type Chart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<axes::Ticked, plotters::coord::types::RangedCoordf64>>;

/// Proportion correct of one condition and state: a bar from 0, the 95%
/// Wilson interval over it. Values at or above 0.5 count as correct.
fn draw_proportion<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    vals: &[f64],
    centre: f64,
    width: f64,
    colour: RGBColor,
) -> Result<(), ChartError> {
    let Some(share) = proportion_correct(vals) else {
        return Ok(());
    };
    let (p, lo, hi) = (share.proportion, share.low, share.high);
    let (left, right) = (centre - width / 2.0, centre + width / 2.0);
    chart.draw_series([
        Rectangle::new([(left, 0.0), (right, p)], colour.mix(0.35).filled()),
        Rectangle::new([(left, 0.0), (right, p)], colour.stroke_width(2)),
    ])?;
    let cap = width / 4.0;
    let ink = INK.stroke_width(2);
    chart.draw_series([
        PathElement::new(vec![(centre, lo), (centre, hi)], ink),
        PathElement::new(vec![(centre - cap, lo), (centre + cap, lo)], ink),
        PathElement::new(vec![(centre - cap, hi), (centre + cap, hi)], ink),
    ])?;
    Ok(())
}

/// Box, whiskers, median and every value of one condition and state.
fn draw_box<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    vals: &[f64],
    centre: f64,
    box_w: f64,
    colour: RGBColor,
) -> Result<(), ChartError> {
    let (left, right) = (centre - box_w / 2.0, centre + box_w / 2.0);
    if let Some(b) = box_stats(vals) {
        let finite = vals.iter().filter(|v| v.is_finite()).count();
        let line = colour.stroke_width(2);
        if finite >= MIN_FOR_BOX {
            let cap = box_w / 4.0;
            chart.draw_series([
                Rectangle::new([(left, b.q1), (right, b.q3)], colour.mix(0.15).filled()),
                Rectangle::new([(left, b.q1), (right, b.q3)], line),
            ])?;
            chart.draw_series([
                PathElement::new(vec![(centre, b.q3), (centre, b.whisker_hi)], line),
                PathElement::new(vec![(centre, b.q1), (centre, b.whisker_lo)], line),
                PathElement::new(
                    vec![(centre - cap, b.whisker_hi), (centre + cap, b.whisker_hi)],
                    line,
                ),
                PathElement::new(
                    vec![(centre - cap, b.whisker_lo), (centre + cap, b.whisker_lo)],
                    line,
                ),
            ])?;
        }
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(left, b.median), (right, b.median)],
            colour.stroke_width(3),
        )))?;
    }
    let points = vals
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .map(|(i, &v)| {
            Circle::new(
                (centre + jitter(i) * box_w * 0.9, v),
                3,
                colour.mix(0.55).filled(),
            )
        });
    chart.draw_series(points)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_stats_match_type_7_quantiles() {
        let b =
            box_stats(&[1.0, 2.0, 3.0, 4.0, 100.0, f64::NAN]).unwrap_or_else(|| panic!("no stats"));
        assert_eq!((b.q1, b.median, b.q3), (2.0, 3.0, 4.0));
        // 100 is beyond q3 + 1.5 IQR = 7: the whisker stops at 4.
        assert_eq!((b.whisker_lo, b.whisker_hi), (1.0, 4.0));
        assert_eq!(box_stats(&[f64::NAN]), None);
        let one = box_stats(&[0.5]).unwrap_or_else(|| panic!("no stats"));
        assert_eq!((one.q1, one.median, one.whisker_hi), (0.5, 0.5, 0.5));
    }

    #[test]
    fn proportion_correct_counts_finite_values_with_a_wilson_interval() {
        let share =
            proportion_correct(&[1.0, 0.0, 1.0, 1.0, f64::NAN]).unwrap_or_else(|| panic!("none"));
        assert_eq!((share.correct, share.n, share.proportion), (3, 4, 0.75));
        let (lo, hi) = crate::stats::wilson_interval(3, 4, crate::stats::Z_95);
        assert_eq!((share.low, share.high), (lo, hi));
        assert!(lo < share.proportion && share.proportion < hi);
        assert_eq!(proportion_correct(&[f64::NAN]), None);
    }

    #[test]
    fn jitter_is_bounded_and_deterministic() {
        for i in 0..1000 {
            assert!((-0.5..0.5).contains(&jitter(i)));
            assert_eq!(jitter(i), jitter(i));
        }
    }
}
