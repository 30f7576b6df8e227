//! Axis ranges and ticks: finite extents, padded ranges that plotters can
//! always use (it asserts on NaN ranges and loops on infinite ones), whole
//! number ticks for layers, heads and items, and tick label text.

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// Smallest and largest finite value, if any.
pub(crate) fn extent<I: IntoIterator<Item = f64>>(values: I) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// `lo..hi` widened by `frac` of its span on both sides; a zero span gets a
/// margin around the value, and anything non-finite falls back to -1..1.
/// Plotters asserts on NaN ranges and loops on infinite ones, so every range
/// given to it passes through here.
pub(crate) fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (-1.0, 1.0);
    }
    let (lo, hi) = (lo.min(hi), lo.max(hi));
    let span = hi - lo;
    let scale = lo.abs().max(hi.abs()).max(1e-12);
    let (lo, hi) = if span <= scale * 1e-9 {
        let pad = (scale * 0.1).max(0.5);
        (lo - pad, hi + pad)
    } else {
        (lo - span * frac, hi + span * frac)
    };
    if lo.is_finite() && hi.is_finite() && (hi - lo).is_finite() && hi > lo {
        (lo, hi)
    } else {
        (-1.0, 1.0)
    }
}

/// Integer tick positions in `lo..=hi`, at most `max` of them, spaced by a
/// 1-2-5 step: layers and heads are whole numbers, so ticks never fall
/// between them.
pub(crate) fn integer_ticks(lo: f64, hi: f64, max: usize) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi < lo || max == 0 || hi - lo > 1e9 {
        return Vec::new();
    }
    let (first, last) = (lo.ceil(), hi.floor());
    if last < first {
        return Vec::new();
    }
    let mut step = 1.0;
    'find: for _ in 0..12 {
        for m in [1.0, 2.0, 5.0] {
            let s = step * m;
            if ((last / s).floor() - (first / s).ceil() + 1.0) <= max as f64 {
                step = s;
                break 'find;
            }
        }
        step *= 10.0;
    }
    let start = (first / step).ceil() * step;
    (0..=max)
        .map(|i| start + step * i as f64)
        .take_while(|&v| v <= last)
        .collect()
}

/// A linear f64 axis with exactly the given ticks (plotters' own
/// `with_key_points` on an f64 range cannot take a label formatter).
#[derive(Debug, Clone)]
pub(crate) struct Ticked {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Ticked {
    pub(crate) fn new(lo: f64, hi: f64, ticks: Vec<f64>) -> Self {
        Self { lo, hi, ticks }
    }
}

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.lo..self.hi).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Ticks are the bold points; no light grid between them.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// Tick label of an integer position ("-0" never shows).
pub(crate) fn int_label(v: f64) -> String {
    format!("{}", v.round() as i64)
}

/// `text` shortened to `max` characters with an ellipsis, for tick labels
/// that would otherwise run into each other.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let head: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_always_usable() {
        assert_eq!(padded(3.0, 3.0, 0.05), (2.5, 3.5));
        assert_eq!(padded(f64::NAN, 1.0, 0.05), (-1.0, 1.0));
        assert_eq!(padded(-f64::MAX, f64::MAX, 0.05), (-1.0, 1.0));
        let (lo, hi) = padded(0.0, 10.0, 0.1);
        assert!((lo + 1.0).abs() < 1e-12 && (hi - 11.0).abs() < 1e-12);
        assert_eq!(
            extent([f64::NAN, 2.0, -1.0, f64::INFINITY]),
            Some((-1.0, 2.0))
        );
        assert_eq!(extent([f64::NAN]), None);
    }

    #[test]
    fn ticks_are_integers_within_bounds() {
        assert_eq!(integer_ticks(0.0, 4.0, 12), vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let tens: Vec<f64> = (0..8).map(|i| f64::from(i) * 10.0).collect();
        assert_eq!(integer_ticks(-0.5, 79.5, 10), tens);
        assert_eq!(integer_ticks(-0.5, 0.5, 10), vec![0.0]);
        assert!(integer_ticks(0.2, 0.8, 10).is_empty());
        assert!(integer_ticks(f64::NAN, 1.0, 10).is_empty());
        assert!(integer_ticks(0.0, 1e6, 8).len() <= 8);
        assert_eq!(int_label(-0.0), "0");
        assert_eq!(shorten("abcdef", 4), "abc…");
    }
}
