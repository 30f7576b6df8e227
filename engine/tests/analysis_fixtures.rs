//! The analyses checked against values computed independently by
//! `tests/fixtures/analysis/generate.py` (numpy, scipy, scikit-learn; the
//! inputs are stored in the fixtures next to the expected values), plus
//! planted-effect tests on synthetic data.

use std::path::PathBuf;

use engine::analysis::attention_ratio::{attention_ratios, log2_ratio};
use engine::analysis::bench::synthetic_benchmark;
use engine::analysis::correlation::behavior_representation_correlation;
use engine::analysis::probe::{
    logistic_fold_probabilities, logistic_probe, r2_score, ridge_fold_predictions, ridge_probe,
};
use engine::analysis::resample::SeededRng;
use engine::analysis::rsa::{
    alignment, graded, prompt_level_alignment, same_label, similarity_matrix, standardized_gram,
    Comparator,
};
use engine::analysis::rsa_bootstrap::bootstrap_alignments;
use engine::analysis::rsa_permutation::{
    permutation_p_value, permutation_p_values_across_layers, permutation_p_values_with_permutations,
};
use engine::analysis::stats::{
    average_ranks, benjamini_hochberg, correlation_p_value, kendall_tau_a, pearson,
    percentile_interval, spearman, wilson_interval, zscore_features, Z_95,
};
use engine::analysis::{Embeddings, SquareMatrix};
use serde_json::Value;

/// Sums of at most a few hundred `f64` terms of size ~1 taken in another
/// order than numpy's: differences are a few ulps.
const ARITHMETIC: f64 = 1e-12;

/// p-values: scipy evaluates the t / beta distribution with Boost, we with
/// statrs' regularised incomplete beta; both are accurate to ~1e-14
/// relative, so a relative bound well above that.
const P_VALUE_RELATIVE: f64 = 1e-9;

/// scikit-learn's `Ridge` solves the primal (40 features), we the dual
/// (20 × 20 kernel): the same linear system, so only rounding differs,
/// amplified by the condition number (≤ 1e4 here) times 1e-16.
const RIDGE: f64 = 1e-9;

/// Two iterative solvers (scikit-learn's L-BFGS stopped at tol 1e-12 on its
/// per-sample objective, ours at gradient 1e-10) stop near, not at, the
/// optimum; probabilities agree to ~1e-8, checked at 1e-6.
const LOGISTIC: f64 = 1e-6;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/analysis")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).expect("fixture file is committed");
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

/// A number, or one of the strings "nan", "inf", "-inf" the generator writes.
fn number(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        other => other.as_f64().expect("fixture value is a number"),
    }
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("fixture value is an array")
        .iter()
        .map(number)
        .collect()
}

fn indices(v: &Value) -> Vec<usize> {
    numbers(v).into_iter().map(|x| x as usize).collect()
}

fn count(v: &Value) -> usize {
    v.as_u64().expect("fixture value is a count") as usize
}

fn square(v: &Value, n: usize) -> SquareMatrix {
    SquareMatrix::new(n, numbers(v)).expect("fixture matrix is n × n")
}

/// Embeddings stored as `{n, dim, data}` (float32 values written as f64).
fn embeddings(v: &Value) -> (Vec<f32>, usize, usize) {
    let data = numbers(&v["data"]).into_iter().map(|x| x as f32).collect();
    (data, count(&v["n"]), count(&v["dim"]))
}

/// `actual` within `tolerance` of `expected` (NaN matches NaN, ±∞ itself).
fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
    let same_special = (actual.is_nan() && expected.is_nan()) || actual == expected;
    assert!(
        same_special || (actual - expected).abs() <= tolerance,
        "{what}: got {actual}, expected {expected} (tolerance {tolerance})"
    );
}

fn assert_all_close(actual: &[f64], expected: &[f64], tolerance: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_close(*a, *e, tolerance, &format!("{what}[{i}]"));
    }
}

fn comparator(name: &str) -> Comparator {
    serde_json::from_value(Value::String(name.to_string())).expect("a comparator name")
}

/// The closed form against bisection on the score test
/// (`generate_wilson.py`, exact rationals): a handful of roundings in a
/// square root and two divisions.
const WILSON: f64 = 1e-14;

#[test]
fn wilson_intervals_match_the_score_test_by_bisection() {
    let f = fixture("wilson");
    assert_close(Z_95, number(&f["z"]), 1e-15, "z for 95%");
    for case in f["cases"].as_array().expect("cases") {
        let (k, n) = (count(&case["successes"]), count(&case["n"]));
        let (low, high) = wilson_interval(k, n, number(&case["z"]));
        assert_close(
            low,
            number(&case["low"]),
            WILSON,
            &format!("low end of {k}/{n}"),
        );
        assert_close(
            high,
            number(&case["high"]),
            WILSON,
            &format!("high end of {k}/{n}"),
        );
    }
    assert!(
        wilson_interval(0, 0, Z_95).0.is_nan(),
        "no trials, no interval"
    );
}

#[test]
fn average_ranks_match_scipy_rankdata() {
    let f = fixture("stats");
    assert_eq!(
        average_ranks(&numbers(&f["x"])),
        numbers(&f["average_ranks_x"])
    );
}

#[test]
fn pearson_and_spearman_match_scipy_with_their_p_values() {
    let f = fixture("stats");
    let (x, y) = (numbers(&f["x"]), numbers(&f["y"]));
    type Coefficient = fn(&[f64], &[f64]) -> f64;
    let coefficients: [(Coefficient, &str, &str); 2] = [
        (pearson, "pearson_r", "pearson_p"),
        (spearman, "spearman_rho", "spearman_p"),
    ];
    for (coefficient, value_key, p_key) in coefficients {
        let value = coefficient(&x, &y);
        assert_close(value, number(&f[value_key]), ARITHMETIC, value_key);
        let expected = number(&f[p_key]);
        let p = correlation_p_value(value, x.len());
        assert_close(p, expected, P_VALUE_RELATIVE * expected, p_key);
    }
}

#[test]
fn kendall_tau_a_matches_pair_signs_in_numpy() {
    let f = fixture("stats");
    let tau = kendall_tau_a(&numbers(&f["x"]), &numbers(&f["y"]));
    assert_close(tau, number(&f["kendall_tau_a"]), ARITHMETIC, "tau-a");
}

#[test]
fn benjamini_hochberg_matches_scipy_false_discovery_control() {
    let f = fixture("stats");
    let adjusted = benjamini_hochberg(&numbers(&f["p_values"]));
    assert_all_close(
        &adjusted,
        &numbers(&f["benjamini_hochberg"]),
        ARITHMETIC,
        "BH",
    );
}

#[test]
fn zscores_match_numpy_and_a_constant_feature_becomes_zero() {
    let f = fixture("stats");
    let (data, n, dim) = embeddings(&f["features"]);
    let z = zscore_features(Embeddings::new(&data, n, dim).expect("valid shape")).expect("finite");
    assert_all_close(&z, &numbers(&f["zscored"]), ARITHMETIC, "z-scores");
}

#[test]
fn percentile_interval_matches_numpy_percentile() {
    let f = fixture("stats");
    let (low, high) = percentile_interval(
        &numbers(&f["percentile_values"]),
        number(&f["percentile_level"]),
    );
    let expected = numbers(&f["percentile_interval"]);
    assert_close(low, expected[0], ARITHMETIC, "low");
    assert_close(high, expected[1], ARITHMETIC, "high");
}

#[test]
fn similarity_matrix_matches_numpy_on_fixture() {
    let f = fixture("rsa");
    let (data, n, dim) = embeddings(&f["embeddings"]);
    let s =
        similarity_matrix(Embeddings::new(&data, n, dim).expect("valid shape")).expect("finite");
    assert_all_close(
        s.data(),
        &numbers(&f["similarity"]),
        ARITHMETIC,
        "similarity",
    );
}

#[test]
fn hypothesis_matrices_match_the_fixture() {
    let f = fixture("rsa");
    let n = count(&f["embeddings"]["n"]);
    let labels = indices(&f["labels"]);
    assert_eq!(
        same_label(&labels),
        square(&f["hypotheses"]["same_label"], n)
    );
    assert_eq!(
        graded(&numbers(&f["values"])),
        square(&f["hypotheses"]["graded"], n)
    );
}

/// The fixture's similarity matrix and its two hypotheses by name.
fn rsa_inputs(f: &Value) -> (SquareMatrix, Vec<(&'static str, SquareMatrix)>) {
    let n = count(&f["embeddings"]["n"]);
    let hypotheses = ["same_label", "graded"]
        .into_iter()
        .map(|name| (name, square(&f["hypotheses"][name], n)))
        .collect();
    (square(&f["similarity"], n), hypotheses)
}

#[test]
fn rsa_alignment_matches_scipy_on_fixture() {
    let f = fixture("rsa");
    let (s, hypotheses) = rsa_inputs(&f);
    for (name, h) in &hypotheses {
        for c in ["spearman", "pearson", "kendall_tau_a"] {
            let got = alignment(&s, h, comparator(c)).expect("same size");
            let expected = number(&f["alignment"][format!("{name}/{c}")]);
            assert_close(got, expected, ARITHMETIC, &format!("{name}/{c}"));
        }
    }
}

#[test]
fn prompt_level_alignment_matches_scipy_and_is_nan_for_a_constant_row() {
    let f = fixture("rsa");
    let (s, hypotheses) = rsa_inputs(&f);
    for (name, h) in &hypotheses {
        for c in ["spearman", "pearson", "kendall_tau_a"] {
            let got = prompt_level_alignment(&s, h, comparator(c)).expect("same size");
            let expected = numbers(&f["prompt_level_alignment"][format!("{name}/{c}")]);
            assert_all_close(&got, &expected, ARITHMETIC, &format!("{name}/{c}"));
        }
    }
    // Prompt 11 is alone with its label: its same-label row is constant.
    let same =
        prompt_level_alignment(&s, &hypotheses[0].1, Comparator::Spearman).expect("same size");
    assert!(same[11].is_nan());
}

/// Every permutation of `0..n` (n! of them).
fn all_permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for shorter in all_permutations(n - 1) {
        for position in 0..n {
            let mut p = shorter.clone();
            p.insert(position, n - 1);
            out.push(p);
        }
    }
    out
}

#[test]
fn permutation_p_value_over_all_permutations_matches_python_enumeration() {
    let f = fixture("permutation");
    let n = count(&f["n"]);
    let (s, h) = (square(&f["similarity"], n), square(&f["hypothesis"], n));
    let permutations = all_permutations(n);
    for c in ["spearman", "pearson", "kendall_tau_a"] {
        let case = &f["cases"][c];
        assert_eq!(permutations.len(), count(&case["permutations"]));
        let p = permutation_p_values_with_permutations(
            std::slice::from_ref(&s),
            &h,
            comparator(c),
            &permutations,
        )
        .expect("valid permutations");
        assert_close(
            p[0],
            number(&case["p_with_all_permutations"]),
            ARITHMETIC,
            c,
        );
    }
}

#[test]
fn seeded_permutation_p_value_converges_to_the_exact_p() {
    let f = fixture("permutation");
    let n = count(&f["n"]);
    let (s, h) = (square(&f["similarity"], n), square(&f["hypothesis"], n));
    let draws = 20_000;
    for c in ["spearman", "pearson"] {
        let exact = number(&f["cases"][c]["exact_p"]);
        let p = permutation_p_value(&s, &h, comparator(c), draws, 3).expect("valid input");
        // Monte Carlo: within 4 standard errors of the exact p.
        let standard_error = (exact * (1.0 - exact) / draws as f64).sqrt();
        assert!(
            (p - exact).abs() < 4.0 * standard_error,
            "{c}: {p} vs exact {exact}"
        );
    }
}

#[test]
fn permutation_p_values_across_layers_equal_those_of_each_layer() {
    let f = fixture("rsa");
    let (s, hypotheses) = rsa_inputs(&f);
    let h = &hypotheses[1].1;
    let flipped = SquareMatrix::from_fn(s.n(), |i, j| -s.get(i, j));
    let layers = [s.clone(), flipped.clone()];
    for c in [
        Comparator::Spearman,
        Comparator::Pearson,
        Comparator::KendallTauA,
    ] {
        let together =
            permutation_p_values_across_layers(&layers, h, c, 200, 11).expect("valid input");
        let one = permutation_p_value(&s, h, c, 200, 11).expect("valid input");
        let other = permutation_p_value(&flipped, h, c, 200, 11).expect("valid input");
        assert_eq!(together, vec![one, other], "{c:?}");
    }
}

#[test]
fn bootstrap_alignments_match_the_expanded_sample_in_numpy() {
    let f = fixture("bootstrap");
    let n = count(&f["n"]);
    let (s, h) = (square(&f["similarity"], n), square(&f["hypothesis"], n));
    let groups = indices(&f["groups"]);
    let draws: Vec<Vec<usize>> = f["draws"]
        .as_array()
        .expect("draws")
        .iter()
        .map(indices)
        .collect();
    let level = number(&f["level"]);
    for c in ["spearman", "pearson", "kendall_tau_a"] {
        let expected = &f["expected"][c];
        let got =
            bootstrap_alignments(&s, &h, comparator(c), &groups, &draws).expect("valid draws");
        assert_all_close(&got, &numbers(&expected["alignments"]), ARITHMETIC, c);
        let (low, high) = percentile_interval(&got, level);
        let interval = numbers(&expected["interval"]);
        assert_close(low, interval[0], ARITHMETIC, &format!("{c} low"));
        assert_close(high, interval[1], ARITHMETIC, &format!("{c} high"));
    }
}

#[test]
fn ridge_predictions_match_sklearn_on_a_fixed_split() {
    let f = &fixture("probe")["ridge"];
    let (data, n, dim) = embeddings(&f["embeddings"]);
    let g =
        standardized_gram(Embeddings::new(&data, n, dim).expect("valid shape")).expect("finite");
    let (y, folds) = (numbers(&f["y"]), indices(&f["folds"]));
    for case in f["cases"].as_object().expect("cases").values() {
        let predictions =
            ridge_fold_predictions(&g, &y, &folds, number(&case["alpha"])).expect("valid input");
        assert_all_close(
            &predictions,
            &numbers(&case["predictions"]),
            RIDGE,
            "ridge predictions",
        );
        assert_close(
            r2_score(&y, &predictions),
            number(&case["r2"]),
            RIDGE,
            "ridge R²",
        );
    }
}

#[test]
fn logistic_probabilities_match_sklearn_on_a_fixed_split() {
    let f = &fixture("probe")["logistic"];
    let (data, n, dim) = embeddings(&f["embeddings"]);
    let g =
        standardized_gram(Embeddings::new(&data, n, dim).expect("valid shape")).expect("finite");
    let (labels, folds) = (indices(&f["labels"]), indices(&f["folds"]));
    let classes = count(&f["n_classes"]);
    for case in f["cases"].as_object().expect("cases").values() {
        let c = number(&case["c"]);
        let probabilities =
            logistic_fold_probabilities(&g, &labels, classes, &folds, c).expect("valid input");
        let flat: Vec<f64> = probabilities.concat();
        assert_all_close(
            &flat,
            &numbers(&case["probabilities"]),
            LOGISTIC,
            &format!("C = {c}"),
        );
    }
}

#[test]
fn attention_ratios_match_the_hand_made_attention_matrix() {
    let f = fixture("attention");
    let shape = indices(&f["shape"]);
    let (layers, heads, tokens) = (shape[0], shape[1], shape[2]);
    let attention = numbers(&f["attention"]);
    let query = count(&f["query"]);
    let span = |name: &str| {
        let s = indices(&f[name]);
        s[0]..s[1]
    };
    let (relevant_span, distractor_span) = (span("relevant_span"), span("distractor_span"));
    let mass = |span: &std::ops::Range<usize>| -> Vec<Vec<f64>> {
        (0..layers)
            .map(|l| {
                (0..heads)
                    .map(|h| {
                        let row = ((l * heads + h) * tokens + query) * tokens;
                        attention[row + span.start..row + span.end].iter().sum()
                    })
                    .collect()
            })
            .collect()
    };
    let ratios = attention_ratios(
        &mass(&relevant_span),
        &mass(&distractor_span),
        relevant_span.len(),
        distractor_span.len(),
    )
    .expect("valid shapes");
    let rows = |name: &str| -> Vec<f64> {
        f[name]
            .as_array()
            .expect("rows")
            .iter()
            .flat_map(numbers)
            .collect()
    };
    assert_all_close(
        &ratios.per_head.concat(),
        &rows("per_head"),
        ARITHMETIC,
        "per head",
    );
    assert_all_close(
        &ratios.per_head_length_normalized.concat(),
        &rows("per_head_length_normalized"),
        ARITHMETIC,
        "length-normalised",
    );
    assert_all_close(
        &ratios.mean_of_heads,
        &numbers(&f["mean_of_heads"]),
        ARITHMETIC,
        "mean of heads",
    );
    assert_all_close(
        &ratios.ratio_of_sums,
        &numbers(&f["ratio_of_sums"]),
        ARITHMETIC,
        "ratio of sums",
    );
    let log2: Vec<f64> = ratios
        .per_head
        .concat()
        .into_iter()
        .map(log2_ratio)
        .collect();
    assert_all_close(&log2, &rows("log2_per_head"), ARITHMETIC, "log2");
    assert_eq!(
        ratios.per_head[1][2],
        f64::INFINITY,
        "the head without distractor mass"
    );
}

#[test]
fn behavior_correlation_matches_scipy_and_skips_nan_pairs() {
    let f = fixture("correlation");
    let behavior = numbers(&f["delta_behavior"]);
    let measures: Vec<Vec<f64>> = f["delta_measures"]
        .as_array()
        .expect("measures")
        .iter()
        .map(numbers)
        .collect();
    let got = behavior_representation_correlation(&behavior, &measures).expect("same lengths");
    for (layer, (g, e)) in got
        .iter()
        .zip(f["expected"].as_array().expect("expected"))
        .enumerate()
    {
        assert_eq!(g.n, count(&e["n"]), "layer {layer} n");
        assert_close(
            g.pearson_r,
            number(&e["pearson_r"]),
            ARITHMETIC,
            "pearson r",
        );
        assert_close(
            g.spearman_rho,
            number(&e["spearman_rho"]),
            ARITHMETIC,
            "spearman rho",
        );
        for (p, key) in [(g.pearson_p, "pearson_p"), (g.spearman_p, "spearman_p")] {
            let expected = number(&e[key]);
            assert_close(p, expected, P_VALUE_RELATIVE * expected, key);
        }
    }
}

/// `n` prompts in `dim` features: `strength · pattern[label] + noise`,
/// noise uniform in [−1, 1).
fn planted_embeddings(labels: &[usize], dim: usize, strength: f32, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    let n_labels = labels.iter().max().map_or(0, |m| m + 1);
    let patterns: Vec<Vec<f32>> = (0..n_labels)
        .map(|_| (0..dim).map(|_| rng.symmetric_unit_f32()).collect())
        .collect();
    let mut data = Vec::with_capacity(labels.len() * dim);
    for &label in labels {
        for p in &patterns[label] {
            data.push(strength * p + rng.symmetric_unit_f32());
        }
    }
    data
}

#[test]
fn planted_label_aligns_near_one_and_an_unrelated_label_near_zero() {
    let n = 80;
    let activity: Vec<usize> = (0..n).map(|i| i % 4).collect();
    let person: Vec<usize> = (0..n).map(|i| (i / 4) % 5).collect();
    let data = planted_embeddings(&activity, 512, 3.0, 1);
    let s =
        similarity_matrix(Embeddings::new(&data, n, 512).expect("valid shape")).expect("finite");
    // Pearson can reach 1 against a two-valued hypothesis; rank coefficients
    // are capped by its ties, so Spearman is checked against that cap.
    let planted = alignment(&s, &same_label(&activity), Comparator::Pearson).expect("same size");
    assert!(planted > 0.95, "planted: {planted}");
    let unrelated = alignment(&s, &same_label(&person), Comparator::Pearson).expect("same size");
    assert!(unrelated.abs() < 0.05, "unrelated: {unrelated}");
    let h = same_label(&activity).upper_triangle();
    let separating: Vec<f64> = h
        .iter()
        .enumerate()
        .map(|(p, v)| v + 1e-9 * p as f64)
        .collect();
    let cap = spearman(&separating, &h);
    let rank_planted =
        alignment(&s, &same_label(&activity), Comparator::Spearman).expect("same size");
    assert!(
        rank_planted > 0.99 * cap,
        "spearman {rank_planted} of its cap {cap}"
    );
    let p = permutation_p_value(&s, &same_label(&activity), Comparator::Spearman, 999, 5)
        .expect("valid input");
    assert!(
        (p - 0.001).abs() < 1e-12,
        "the planted label beats every permutation: {p}"
    );
}

#[test]
fn ridge_probe_recovers_a_planted_slope() {
    // 40 target instances, each as two prompts (0-shot and k-shot copies).
    let (n, dim) = (80, 300);
    let slope: Vec<f64> = (0..n).map(|i| ((i % 40) % 5) as f64).collect();
    let groups: Vec<usize> = (0..n).map(|i| i % 40).collect();
    let mut rng = SeededRng::new(2);
    let direction: Vec<f32> = (0..dim).map(|_| rng.symmetric_unit_f32()).collect();
    let mut data = Vec::with_capacity(n * dim);
    for &a in &slope {
        for d in &direction {
            data.push(a as f32 * d + 0.3 * rng.symmetric_unit_f32());
        }
    }
    let x = Embeddings::new(&data, n, dim).expect("valid shape");
    let probe =
        ridge_probe(x, &slope, &groups, 5, &[1.0, 10.0, 100.0, 1000.0], 9).expect("valid input");
    assert!(probe.r2 > 0.98, "R² = {}", probe.r2);
    assert_eq!(probe.alphas_chosen.len(), 5);
    for i in 0..40 {
        assert_eq!(
            probe.folds[i],
            probe.folds[i + 40],
            "instance {i}'s copies split across folds"
        );
    }
}

#[test]
fn logistic_probe_decodes_a_planted_activity_and_not_an_unrelated_one() {
    let n = 90;
    let activity: Vec<usize> = (0..n).map(|i| i % 3).collect();
    let person: Vec<usize> = (0..n).map(|i| (i / 3) % 3).collect();
    let groups: Vec<usize> = (0..n).map(|i| i % 45).collect();
    let data = planted_embeddings(&activity, 200, 0.5, 3);
    let x = Embeddings::new(&data, n, 200).expect("valid shape");
    let cs = [1e-4, 1e-3, 1e-2];
    let decoded = logistic_probe(x, &activity, 3, &groups, 5, &cs, 4).expect("valid input");
    assert!(
        decoded.accuracy > 0.9,
        "activity accuracy {}",
        decoded.accuracy
    );
    let mean_confidence = decoded.true_class_probability.iter().sum::<f64>() / n as f64;
    assert!(
        mean_confidence > 0.5,
        "mean true-class probability {mean_confidence}"
    );
    let unrelated = logistic_probe(x, &person, 3, &groups, 5, &cs, 4).expect("valid input");
    assert!(
        unrelated.accuracy < 0.6,
        "person accuracy {}",
        unrelated.accuracy
    );
}

#[test]
fn a_class_absent_from_a_training_fold_gets_probability_zero_there() {
    // Class 2 exists only in fold 0, so the model fitted without fold 0
    // has never seen it.
    let labels = [0, 1, 2, 2, 0, 1, 0, 1, 0, 1, 0, 1];
    let folds = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
    let data = planted_embeddings(&labels, 16, 1.0, 6);
    let g =
        standardized_gram(Embeddings::new(&data, 12, 16).expect("valid shape")).expect("finite");
    let probabilities =
        logistic_fold_probabilities(&g, &labels, 3, &folds, 0.1).expect("valid input");
    for (row, fold) in probabilities.iter().zip(folds) {
        assert_close(row.iter().sum(), 1.0, ARITHMETIC, "probabilities sum to 1");
        if fold == 0 {
            assert_eq!(row[2], 0.0);
        }
    }
}

/// Peak resident memory of this process in KiB (Linux `VmHWM`).
fn peak_resident_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The study's scale: run alone with
/// `cargo test --release -p engine --test analysis_fixtures -- --ignored --nocapture`.
#[test]
#[ignore = "takes tens of seconds; run explicitly to measure"]
fn full_scale_benchmark_reports_its_timings() {
    let report = synthetic_benchmark(80, 400, 8192, 1000, 7).expect("valid sizes");
    let json = serde_json::to_string_pretty(&report).expect("serialisable report");
    println!("{json}");
    if let Some(kib) = peak_resident_kib() {
        println!(
            "peak resident memory: {:.2} GiB",
            kib as f64 / (1024.0 * 1024.0)
        );
    }
}

/// A float32 vector stored as float64 in a fixture.
fn f32_vector(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| number(x) as f32)
        .collect()
}

#[test]
fn recovered_fraction_matches_numpy_on_fixture() {
    use engine::analysis::patching::recovered_fraction_with_samples;
    let f = fixture("patching");
    let cases = f["recovery"].as_array().expect("cases");
    assert_eq!(cases.len(), 3);
    for case in cases {
        let values = |key: &str| -> Vec<f64> {
            case[key]
                .as_array()
                .expect("values")
                .iter()
                .map(number)
                .collect()
        };
        let samples: Vec<Vec<usize>> = case["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|s| {
                s.as_array()
                    .expect("sample")
                    .iter()
                    .map(|i| i.as_u64().expect("index") as usize)
                    .collect()
            })
            .collect();
        let (r, n) = recovered_fraction_with_samples(
            &values("patched"),
            &values("zero_shot"),
            &values("k_shot"),
            &samples,
            number(&case["confidence"]),
        );
        let e = &case["expected"];
        assert_eq!(n as u64, e["n"].as_u64().expect("n"));
        for (ours, key) in [
            (r.fraction, "fraction"),
            (r.ci_low, "ci_low"),
            (r.ci_high, "ci_high"),
            (r.mean_patched, "mean_patched"),
            (r.mean_zero_shot, "mean_zero_shot"),
            (r.mean_k_shot, "mean_k_shot"),
        ] {
            let theirs = number(&e[key]);
            assert!(
                (ours - theirs).abs() <= ARITHMETIC * theirs.abs().max(1.0),
                "{key}: {ours} vs numpy {theirs}"
            );
        }
    }
}

#[test]
fn task_vectors_match_numpy_and_never_include_the_target_itself() {
    use engine::analysis::patching::leave_one_out_task_vector;
    let f = fixture("patching");
    let tv = &f["task_vector"];
    let rows = |key: &str| -> Vec<Vec<f32>> {
        tv[key]
            .as_array()
            .expect("rows")
            .iter()
            .map(f32_vector)
            .collect()
    };
    let (zero, mut k) = (rows("zero_shot"), rows("k_shot"));
    let scale = number(&tv["scale"]);
    let expected = rows("expected");
    for (t, want) in expected.iter().enumerate() {
        let z: Vec<&[f32]> = zero.iter().map(Vec::as_slice).collect();
        let kk: Vec<&[f32]> = k.iter().map(Vec::as_slice).collect();
        let got = leave_one_out_task_vector(&z, &kk, t, scale).expect("other targets");
        // The mean is taken in f64 and rounded once to f32, as numpy does.
        assert_eq!(&got, want, "target {t}");
    }
    // Changing only target 2's own k-shot state leaves its task vector alone
    // (and changes every other target's).
    let before: Vec<Vec<f32>> = (0..k.len())
        .map(|t| {
            let z: Vec<&[f32]> = zero.iter().map(Vec::as_slice).collect();
            let kk: Vec<&[f32]> = k.iter().map(Vec::as_slice).collect();
            leave_one_out_task_vector(&z, &kk, t, scale).expect("vector")
        })
        .collect();
    k[2].iter_mut().for_each(|x| *x += 100.0);
    for (t, old) in before.iter().enumerate() {
        let z: Vec<&[f32]> = zero.iter().map(Vec::as_slice).collect();
        let kk: Vec<&[f32]> = k.iter().map(Vec::as_slice).collect();
        let new = leave_one_out_task_vector(&z, &kk, t, scale).expect("vector");
        if t == 2 {
            assert_eq!(
                &new, old,
                "target 2's own state leaked into its task vector"
            );
        } else {
            assert_ne!(&new, old, "target {t} ignores target 2");
        }
    }
}
