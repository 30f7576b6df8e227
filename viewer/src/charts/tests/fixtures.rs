//! Small realistic figure data for the chart tests.

use crate::figures::{
    BehaviorByCondition, Figure, LayerCurves, LayerHeatmap, MatrixPanels, Scatter, Series,
};

pub(super) fn curves(title: &str, y_label: &str, layers: usize) -> LayerCurves {
    let series = (0..2)
        .map(|s| Series {
            label: if s == 0 {
                "0-shot".into()
            } else {
                "4-shot".into()
            },
            colour: s,
            points: (0..layers)
                .map(|l| (l as f64, 0.1 * s as f64 + (l as f64 / 4.0).sin() * 0.3))
                .collect(),
            band: (0..layers)
                .map(|l| {
                    (
                        l as f64,
                        (l as f64 / 4.0).sin() * 0.3 - 0.1,
                        (l as f64 / 4.0).sin() * 0.3 + 0.1,
                    )
                })
                .collect(),
            significant: (0..layers)
                .filter(|l| s == 1 && l % 3 == 0)
                .map(|l| l as f64)
                .collect(),
            dashed: false,
        })
        .collect();
    LayerCurves {
        title: title.into(),
        y_label: y_label.into(),
        y_range: Some((-1.0, 1.0)),
        references: vec![0.0],
        selected_layer: Some(layers / 2),
        series,
    }
}

pub(super) fn behavior() -> BehaviorByCondition {
    let vals = |k: f64| {
        (0..24)
            .map(|i| ((i * 7) % 11) as f64 * k)
            .collect::<Vec<_>>()
    };
    BehaviorByCondition {
        title: "Absolute error by condition".into(),
        y_label: "absolute error".into(),
        proportions: false,
        conditions: vec!["congruent".into(), "incongruent".into(), "neutral".into()],
        groups: vec![
            ("0-shot".into(), vec![vals(1.0), vals(1.5), vals(0.8)]),
            (
                "4-shot".into(),
                vec![vals(0.5), vals(1.0), vec![2.0, f64::NAN]],
            ),
        ],
    }
}

/// Correct (1) / wrong (0) behaviour of nine conditions: proportions.
pub(super) fn correctness() -> BehaviorByCondition {
    let vals = |shift: usize| {
        (0..8)
            .map(|i| f64::from(u8::from((i + shift) % 3 != 0)))
            .collect::<Vec<_>>()
    };
    BehaviorByCondition {
        title: "Correct answers by condition".into(),
        y_label: "proportion correct".into(),
        proportions: true,
        conditions: (0..9).map(|c| format!("condition {c}")).collect(),
        groups: vec![
            ("0-shot".into(), (0..9).map(vals).collect()),
            ("4-shot".into(), (0..9).map(|c| vals(c + 1)).collect()),
        ],
    }
}

pub(super) fn matrices(n: usize) -> MatrixPanels {
    let cond: Vec<usize> = (0..n).map(|i| i * 3 / n.max(1)).collect();
    let hyp = (0..n * n)
        .map(|k| {
            if cond[k / n] == cond[k % n] {
                1.0
            } else {
                -0.5
            }
        })
        .collect();
    // Block structure plus a deterministic ripple, like a real similarity matrix.
    let sim = (0..n * n)
        .map(|k| {
            let (r, c) = (k / n, k % n);
            let block = if cond[r] == cond[c] { 0.6 } else { 0.1 };
            (block + 0.3 * ((r * 7 + c * 3) as f64 / 11.0).sin()).clamp(-1.0, 1.0)
        })
        .collect();
    MatrixPanels {
        title: "Similarity at layer 12".into(),
        panels: vec![
            ("hypothesis".into(), n, hyp),
            ("0-shot".into(), n, sim),
            ("4-shot".into(), n, vec![0.3; n * n]),
        ],
        row_condition: cond,
    }
}

pub(super) fn heatmap(layers: usize, heads: usize) -> LayerHeatmap {
    LayerHeatmap {
        title: "Change in attention ratio".into(),
        value_label: "Δ log2 attention ratio".into(),
        layers: (0..layers).collect(),
        row_label: "head".into(),
        rows: heads,
        row_names: Vec::new(),
        values: (0..layers * heads)
            .map(|k| {
                if k % 17 == 0 {
                    f64::NAN
                } else {
                    ((k * 13 % 29) as f64 - 14.0) / 7.0
                }
            })
            .collect(),
        limit: 2.0,
        selected_layer: Some(layers / 2),
        selected_row: Some(1),
    }
}

pub(super) fn scatter() -> Scatter {
    Scatter {
        title: "Behaviour vs alignment at layer 12".into(),
        x_label: "alignment".into(),
        y_label: "absolute error".into(),
        points: (0..30)
            .map(|i| {
                (
                    i as f64 / 30.0,
                    1.0 - i as f64 / 40.0 + (i % 3) as f64 * 0.05,
                    i % 3,
                )
            })
            .collect(),
        condition_names: vec!["congruent".into(), "incongruent".into(), "neutral".into()],
        fit: Some((-0.7, 1.05)),
        note: "Pearson r = -0.91 (p < 0.001)".into(),
    }
}

/// The recovered fraction of the four patching methods, peaking mid-depth.
pub(super) fn recovery() -> LayerCurves {
    let methods = [
        ("its own 4-shot state", 0, false, 0.8),
        ("control: another condition's 4-shot state", 0, true, 0.06),
        ("task vector added (×1)", 4, false, 0.5),
        ("control: random vector, same norm", 4, true, 0.0),
    ];
    let series = methods
        .into_iter()
        .map(|(label, colour, dashed, height)| {
            let at = |l: usize| height * (-((l as f64 - 14.0) / 7.0).powi(2)).exp();
            Series {
                label: label.into(),
                colour,
                points: (0..30).map(|l| (l as f64, at(l))).collect(),
                band: (0..30)
                    .map(|l| (l as f64, at(l) - 0.1, at(l) + 0.1))
                    .collect(),
                significant: vec![],
                dashed,
            }
        })
        .collect();
    LayerCurves {
        title:
            "SmolLM2 · reading-comprehension: 4-shot gain recovered by patching (answer log-prob)"
                .into(),
        y_label: "fraction of the gain recovered".into(),
        y_range: Some((-0.2, 1.2)),
        references: vec![0.0, 1.0],
        selected_layer: Some(14),
        series,
    }
}

/// The recovered fraction per condition, one row each.
pub(super) fn recovery_by_condition() -> LayerHeatmap {
    let names = ["congruent", "incongruent", "neutral"];
    LayerHeatmap {
        title: "SmolLM2 · reading-comprehension: 4-shot gain recovered per condition by the own state (answer log-prob)".into(),
        value_label: "fraction of the gain recovered".into(),
        layers: (0..4).map(|l| 4 * l).collect(),
        row_label: "condition".into(),
        rows: names.len(),
        row_names: names.map(String::from).to_vec(),
        values: (0..12).map(|k| (k % 5) as f64 * 0.3 - 0.2).collect(),
        limit: 1.0,
        selected_layer: Some(8),
        selected_row: None,
    }
}

pub(super) fn realistic() -> Vec<Figure> {
    vec![
        Figure::Behavior(behavior()),
        Figure::Behavior(correctness()),
        Figure::Matrices(matrices(24)),
        Figure::Alignment(curves("Hypothesis alignment", "alignment (Spearman ρ)", 32)),
        Figure::Probe(curves("Probe accuracy", "accuracy", 32)),
        Figure::AttentionRatio(curves("Attention ratio", "log2 attention ratio", 32)),
        Figure::AttentionChange(heatmap(32, 8)),
        Figure::Correlation(curves("Behaviour ↔ alignment", "Pearson r", 32)),
        Figure::Scatter(scatter()),
        Figure::Recovery(recovery()),
        Figure::RecoveryByCondition(recovery_by_condition()),
    ]
}
