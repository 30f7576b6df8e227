//! Every figure kind rendered to SVG: from small realistic data, twice (the
//! bytes must match), from empty and non-finite data (no panic), and from
//! the largest inputs a report holds (80 layers × 64 heads, 400 items).

use std::time::Instant;

mod fixtures;

use fixtures::{
    behavior, curves, heatmap, matrices, realistic, recovery, recovery_by_condition, scatter,
};

use super::*;
use crate::figures::{BehaviorByCondition, LayerCurves, LayerHeatmap, MatrixPanels, Scatter};

fn svg(figure: &Figure) -> String {
    let (w, h) = figure_size(figure);
    match render_svg(figure, w, h) {
        Ok(svg) => svg,
        Err(e) => panic!("{figure:?} failed to render: {e}"),
    }
}

#[test]
fn every_figure_renders_with_title_and_axis_labels() {
    for figure in realistic() {
        let out = svg(&figure);
        assert!(out.starts_with("<svg") && out.trim_end().ends_with("</svg>"));
        let expected: Vec<&str> = match &figure {
            Figure::Behavior(d) if d.proportions => {
                vec![&d.title, &d.y_label, "condition 8", "95% Wilson interval"]
            }
            Figure::Behavior(d) => vec![&d.title, &d.y_label, "condition", "congruent", "4-shot"],
            Figure::Matrices(d) => vec![&d.title, "item", "hypothesis", "similarity"],
            Figure::Recovery(d) => vec![
                &d.title,
                &d.y_label,
                "layer (block index)",
                "its own 4-shot state",
                "control: random vector, same norm",
            ],
            Figure::RecoveryByCondition(d) => vec![
                &d.title,
                &d.value_label,
                "layer (block index)",
                "condition",
                "incongruent",
            ],
            Figure::Alignment(d)
            | Figure::Probe(d)
            | Figure::AttentionRatio(d)
            | Figure::Correlation(d) => {
                vec![
                    &d.title,
                    &d.y_label,
                    "layer (block index)",
                    "0-shot",
                    "significant",
                ]
            }
            Figure::AttentionChange(d) => vec![
                &d.title,
                &d.value_label,
                "layer (block index)",
                "head",
                "n/a",
            ],
            Figure::Scatter(d) => vec![
                &d.title,
                &d.x_label,
                &d.y_label,
                "neutral",
                "Pearson r",
                "least-squares fit",
            ],
        };
        for text in expected {
            // The title may be set on two lines.
            if as_drawn(text).contains(&drawn_title(&out)) {
                continue;
            }
            assert!(
                out.contains(text),
                "{text:?} missing from the SVG of {figure:?}"
            );
        }
    }
}

#[test]
fn every_figure_exports_a_png_at_twice_the_size_byte_identical() {
    for figure in realistic() {
        let (w, h) = figure_size(&figure);
        let png = render_png(&figure, w, h, PNG_SCALE).expect("renders");
        assert_eq!(png, render_png(&figure, w, h, PNG_SCALE).expect("again"));
        let mut reader = ::png::Decoder::new(png.as_slice())
            .read_info()
            .expect("a PNG");
        let mut pixels = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut pixels).expect("decodes");
        assert_eq!((frame.width, frame.height), (2 * w, 2 * h));
        // Drawn, not blank: the title's ink on top, and colour somewhere.
        let row =
            |y: u32| &pixels[(3 * y * frame.width) as usize..(3 * (y + 1) * frame.width) as usize];
        let title_ink = (10..60).any(|y| row(y).iter().any(|&v| v < 100));
        assert!(title_ink, "no title in the PNG of {figure:?}");
        let coloured = pixels
            .chunks(3)
            .any(|p| p.iter().max().unwrap_or(&0) - p.iter().min().unwrap_or(&0) > 60);
        assert!(coloured, "no colour in the PNG of {figure:?}");
    }
}

#[test]
fn rendering_is_deterministic() {
    for figure in realistic() {
        assert_eq!(svg(&figure), svg(&figure));
    }
}

#[test]
fn empty_and_non_finite_data_render() {
    let nan = f64::NAN;
    let mut flat = curves("flat", "score", 1);
    flat.y_range = None;
    flat.references.clear();
    let mut all_nan = curves("all NaN", "score", 5);
    for s in &mut all_nan.series {
        s.points.iter_mut().for_each(|p| p.1 = nan);
        s.band.iter_mut().for_each(|b| (b.1, b.2) = (nan, nan));
    }
    let no_series = LayerCurves {
        series: vec![],
        ..curves("none", "score", 3)
    };
    let mut bad_range = curves("bad range", "score", 4);
    bad_range.y_range = Some((nan, f64::INFINITY));
    bad_range.references = vec![5.0, nan];
    let mut one_cell = heatmap(1, 1);
    one_cell.values = vec![0.0];
    one_cell.limit = 0.0;
    let figures = vec![
        Figure::Probe(flat),
        Figure::Alignment(all_nan),
        Figure::Correlation(no_series),
        Figure::AttentionRatio(bad_range),
        Figure::Behavior(BehaviorByCondition {
            conditions: vec![],
            groups: vec![],
            ..behavior()
        }),
        Figure::Behavior(BehaviorByCondition {
            groups: vec![("0-shot".into(), vec![vec![nan]])],
            ..behavior()
        }),
        Figure::Behavior(BehaviorByCondition {
            groups: vec![("0-shot".into(), vec![vec![3.0]])],
            ..behavior()
        }),
        Figure::Matrices(MatrixPanels {
            panels: vec![],
            ..matrices(3)
        }),
        Figure::Matrices(matrices(0)),
        Figure::Matrices(MatrixPanels {
            panels: vec![("short".into(), 5, vec![nan, 1.0])],
            ..matrices(1)
        }),
        Figure::Matrices(MatrixPanels {
            panels: vec![("huge n".into(), 1_000_000, vec![0.5; 4])],
            ..matrices(1)
        }),
        Figure::AttentionChange(heatmap(0, 0)),
        Figure::AttentionChange(LayerHeatmap {
            values: vec![nan; 12],
            ..heatmap(3, 4)
        }),
        Figure::AttentionChange(LayerHeatmap {
            values: vec![1.0],
            limit: nan,
            ..heatmap(3, 4)
        }),
        Figure::AttentionChange(one_cell),
        Figure::Recovery(LayerCurves {
            series: vec![],
            ..recovery()
        }),
        Figure::RecoveryByCondition(LayerHeatmap {
            values: vec![nan; 12],
            ..recovery_by_condition()
        }),
        Figure::RecoveryByCondition(LayerHeatmap {
            rows: 0,
            row_names: vec![],
            ..recovery_by_condition()
        }),
        Figure::RecoveryByCondition(LayerHeatmap {
            row_names: vec!["only one name".into()],
            ..recovery_by_condition()
        }),
        Figure::Scatter(Scatter {
            points: vec![],
            fit: None,
            ..scatter()
        }),
        Figure::Scatter(Scatter {
            points: vec![(1.0, 2.0, 9)],
            fit: Some((nan, 0.0)),
            ..scatter()
        }),
        Figure::Scatter(Scatter {
            points: vec![(nan, 2.0, 0), (1.0, f64::INFINITY, 1)],
            ..scatter()
        }),
    ];
    for figure in &figures {
        let out = svg(figure);
        assert!(out.contains("</svg>"));
    }
    // Crowded figures: long title, many legend entries, many panels.
    let long = "a very long title ".repeat(20);
    let crowded = vec![
        Figure::Scatter(Scatter {
            title: long.clone(),
            condition_names: (0..200).map(|i| format!("condition {i}")).collect(),
            ..scatter()
        }),
        Figure::Matrices(MatrixPanels {
            title: long,
            panels: (0..40)
                .map(|i| (format!("panel {i}"), 3, vec![0.5; 9]))
                .collect(),
            ..matrices(3)
        }),
        Figure::Behavior(BehaviorByCondition {
            conditions: (0..60).map(|i| format!("condition number {i}")).collect(),
            ..behavior()
        }),
    ];
    for figure in &crowded {
        let out = svg(figure);
        assert!(out.contains("</svg>"));
    }
    // Degenerate canvas sizes draw (at most) the background.
    for figure in realistic().into_iter().chain(crowded) {
        for (w, h) in [
            (0, 0),
            (1, 1),
            (50, 400),
            (400, 50),
            (120, 90),
            (150, 100),
            (300, 120),
        ] {
            if let Err(e) = render_svg(&figure, w, h) {
                panic!("{w}×{h}: {e}");
            }
        }
    }
}

#[test]
fn no_data_note_is_shown() {
    let figure = Figure::Scatter(Scatter {
        points: vec![],
        ..scatter()
    });
    let out = svg(&figure);
    assert!(out.contains("no data") && out.contains("alignment") && out.contains("absolute error"));
}

#[test]
fn big_inputs_render_quickly_and_stay_small() {
    let start = Instant::now();
    let big_heatmap = svg(&Figure::AttentionChange(heatmap(80, 64)));
    let heatmap_time = start.elapsed();
    let start = Instant::now();
    let big_matrices = svg(&Figure::Matrices(matrices(400)));
    let matrices_time = start.elapsed();
    assert!(big_heatmap.contains("</svg>") && big_matrices.contains("</svg>"));
    // At most 150×150 cells per panel, whatever n is.
    let rects = big_matrices.matches("<rect").count();
    assert!(rects < 3 * 150 * 150 + 200, "{rects} rectangles");
    // Generous bounds: the machine running the tests may be busy.
    assert!(
        heatmap_time.as_millis() < 2000,
        "heatmap took {heatmap_time:?}"
    );
    assert!(
        matrices_time.as_millis() < 2000,
        "matrices took {matrices_time:?}"
    );
}

/// The patching figures of the synthetic study, as the viewer computes them
/// (every condition, then a subset).
fn synthetic_patching_figures() -> Vec<Figure> {
    use crate::view::{figures, Derived, Selection};
    let bundle = crate::synthetic::bundle(crate::synthetic::Spec::SMALL);
    let mut out = Vec::new();
    for conditions in [vec![], vec![1, 3]] {
        for patching_measure in 0..3 {
            let selection = Selection {
                conditions: conditions.clone(),
                patching_measure,
                ..Selection::default()
            };
            let derived = Derived::for_selection(&bundle, &selection, None).expect("derive");
            out.extend(
                figures(&bundle, &derived, &selection)
                    .expect("figures")
                    .into_iter()
                    .filter(|(id, _)| id.starts_with("recovery"))
                    .map(|(_, f)| f),
            );
        }
    }
    out
}

#[test]
fn patching_figures_of_the_synthetic_study_draw_whole_titles() {
    let drawn = synthetic_patching_figures();
    assert_eq!(drawn.len(), 12, "two figures, three measures, two subsets");
    for figure in &drawn {
        let out = svg(figure);
        assert_eq!(out, svg(figure), "deterministic");
        let (title, texts): (&str, Vec<&str>) = match figure {
            Figure::Recovery(d) => {
                assert_eq!(d.series.len(), 4);
                (
                    &d.title,
                    vec![&d.y_label, "other condition", "task vector added"],
                )
            }
            Figure::RecoveryByCondition(d) => (&d.title, vec!["condition", "activity 1"]),
            other => panic!("not a patching figure: {other:?}"),
        };
        assert!(
            as_drawn(title).contains(&drawn_title(&out)),
            "title cut short: {title}"
        );
        assert!(!out.contains('…'), "something was shortened in {title}");
        assert!(!out.contains("no data"), "{title}");
        for text in texts {
            let text = text.replace('\'', "&apos;");
            assert!(
                out.contains(&text) || out.contains(text.replace("&apos;", "'").as_str()),
                "{text:?} missing from {title}"
            );
        }
    }
    // Every condition: the engine's bootstrap band; a subset: none.
    let bands = |f: &Figure| match f {
        Figure::Recovery(d) => d.series.iter().any(|s| !s.band.is_empty()),
        _ => false,
    };
    assert!(bands(&drawn[0]) && !bands(&drawn[6]));
}

#[test]
fn patching_figures_without_data_say_so() {
    let nan = f64::NAN;
    let mut all_nan = recovery();
    for s in &mut all_nan.series {
        s.points.iter_mut().for_each(|p| p.1 = nan);
        s.band.clear();
    }
    let empty = LayerHeatmap {
        values: vec![nan; 12],
        ..recovery_by_condition()
    };
    for figure in [
        Figure::Recovery(all_nan),
        Figure::RecoveryByCondition(empty),
    ] {
        let out = svg(&figure);
        assert!(out.contains("no data"), "{figure:?}");
    }
}
/// The title as drawn, given that a long one breaks after "model · task"
/// without its colon.
fn as_drawn(title: &str) -> [String; 2] {
    [title.to_string(), title.replacen(": ", " ", 1)]
}

#[test]
fn long_titles_wrap_whole_and_are_never_shortened() {
    let long = "SmolLM2-135M-Instruct.Q4_1 · linear-regression: behaviour improvement vs change in alignment with “same slope” (12 of 24 targets)";
    let mut figures = realistic();
    for figure in &mut figures {
        match figure {
            Figure::Behavior(d) => d.title = long.into(),
            Figure::Matrices(d) => d.title = long.into(),
            Figure::Alignment(d)
            | Figure::Probe(d)
            | Figure::AttentionRatio(d)
            | Figure::Correlation(d)
            | Figure::Recovery(d) => d.title = long.into(),
            Figure::AttentionChange(d) | Figure::RecoveryByCondition(d) => d.title = long.into(),
            Figure::Scatter(d) => d.title = long.into(),
        }
    }
    for figure in &figures {
        let out = svg(figure);
        let drawn = drawn_title(&out);
        assert!(
            as_drawn(long).contains(&drawn),
            "{drawn:?} is not the whole title"
        );
        assert!(!drawn.contains('…'));
        // Where it does not fit on one line: the owner, then the subject.
        if drawn != long {
            assert!(
                out.contains(">\nSmolLM2-135M-Instruct.Q4_1 · linear-regression\n<"),
                "{out}"
            );
        }
    }
    // A narrow figure: more lines, still every word.
    let narrow = render_svg(&figures[0], 300, 420).expect("renders");
    assert!(as_drawn(long).contains(&drawn_title(&narrow)));
    // One word wider than the figure: smaller type, never cut.
    let word = "x".repeat(90);
    let lines = title_lines(&format!("a: {word}"), |l| l.len() <= 40);
    assert_eq!(lines, vec!["a".to_string(), word.clone()]);
    assert_eq!(title_lines("short: title", |_| true), vec!["short: title"]);
    assert_eq!(
        title_lines("m · t: one two three four", |l| l.len() <= 9),
        vec!["m · t", "one two", "three", "four"]
    );
}

#[test]
fn nine_conditions_get_nine_distinct_marks() {
    let mut data = scatter();
    data.condition_names = (0..9).map(|c| format!("condition {c}")).collect();
    data.points = (0..27)
        .map(|i| (f64::from(i), f64::from(i % 5), (i % 9) as usize))
        .collect();
    let out = svg(&Figure::Scatter(data));
    // Conditions 7 and 8 take the palette's first colours again, as squares.
    assert!(out.contains("<polygon") || out.contains("<rect"), "{out}");
    assert!(out.contains("condition 8"));
}
