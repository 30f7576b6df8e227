//! The patching figures' key numbers in words, for the static report: at
//! the layer where each method recovers most, how much of the k-shot gain
//! it recovers (with its interval when the engine's bootstrap is there),
//! what its control recovers at the same layer, and the raw means behind
//! the fraction.

use super::patching::{Patching, Recovery};

/// The sentences under the recovered-fraction figure, for `measure` (an
/// index into the entry's measures) of a task with `shots` demonstrations.
pub fn recovery_sentences(
    patching: &Patching,
    measure: usize,
    shots: usize,
    behavior_metric: &str,
) -> Vec<String> {
    let name = patching
        .entry
        .measures
        .get(measure)
        .map_or("", String::as_str);
    let quantity = measure_phrase(name, behavior_metric);
    let unit = if name.ends_with("logprob") {
        " nats"
    } else {
        ""
    };
    let level = 100.0 * patching.entry.confidence;
    let replace = patching.method("replace");
    let Some(layer) = patching.peak(replace, measure) else {
        let any = patching.at(replace, measure, 0);
        return vec![no_gain(&any, shots, &quantity, unit)];
    };
    let block = patching.layers[layer];
    let own = patching.at(replace, measure, layer);
    let control = patching.at(patching.method("replace-control"), measure, layer);
    let mut lines = vec![
        format!(
            "Replacing the last token's state at layer {block} with its own {shots}-shot state recovers {}{} of the {shots}-shot gain in {quantity}; the other-condition control recovers {}.",
            percent(own.fraction),
            interval(&own, level),
            percent(control.fraction)
        ),
        format!(
            "There, the mean {quantity} is {}{unit} at 0-shot, {} at {shots}-shot and {} patched.",
            signed(own.mean_zero_shot),
            signed(own.mean_k_shot),
            signed(own.mean_patched)
        ),
    ];
    let vector = patching.method("task-vector");
    if patching.entry.methods.iter().any(|m| m == "task-vector") {
        if let Some(layer) = patching.peak(vector, measure) {
            let added = patching.at(vector, measure, layer);
            let random = patching.at(patching.method("task-vector-control"), measure, layer);
            lines.push(format!(
                "Adding the task vector (×{}) recovers most at layer {}: {}{}; a random vector of the same norm recovers {}.",
                patching.entry.scale,
                patching.layers[layer],
                percent(added.fraction),
                interval(&added, level),
                percent(random.fraction)
            ));
        }
    }
    lines
}

/// The sentence under the per-condition figure: where each condition's
/// recovery peaks.
pub fn condition_sentences(
    patching: &Patching,
    measure: usize,
    condition_names: &[String],
) -> Vec<String> {
    let rows = patching.by_condition.get(measure);
    let peaks: Vec<String> = patching
        .conditions
        .iter()
        .enumerate()
        .filter_map(|(row, &c)| {
            let values = rows?.get(row)?;
            let (layer, fraction) = values
                .iter()
                .enumerate()
                .filter(|(_, f)| f.is_finite())
                .fold(None, |best: Option<(usize, f64)>, (l, &f)| match best {
                    Some((_, b)) if b >= f => best,
                    _ => Some((l, f)),
                })?;
            Some(format!(
                "{} {} at layer {}",
                condition_names.get(c).map_or("?", String::as_str),
                percent(fraction),
                patching.layers[layer]
            ))
        })
        .collect();
    if peaks.is_empty() {
        vec!["No condition has a defined recovery.".to_string()]
    } else {
        vec![format!(
            "Largest recovery with the own state, per condition: {}.",
            peaks.join("; ")
        )]
    }
}

/// Why there is no fraction: demonstrations did not change the measure.
fn no_gain(any: &Recovery, shots: usize, quantity: &str, unit: &str) -> String {
    if any.mean_zero_shot.is_finite() && any.mean_k_shot.is_finite() {
        format!(
            "Demonstrations do not change the mean {quantity} (0-shot {}{unit}, {shots}-shot {}), so there is no gain to recover.",
            signed(any.mean_zero_shot),
            signed(any.mean_k_shot)
        )
    } else {
        format!("No target has a defined {quantity} before and after patching.")
    }
}

/// How a measure reads in a sentence.
fn measure_phrase(measure: &str, behavior_metric: &str) -> String {
    match measure {
        "answer_logprob" => "answer log-probability".to_string(),
        "first_token_logprob" => "log-probability of the answer's first token".to_string(),
        "behavior" => format!("behaviour ({behavior_metric})"),
        other => other.replace('_', " "),
    }
}

/// A fraction as a whole percentage, "−5%" with a true minus sign.
fn percent(fraction: f64) -> String {
    if fraction.is_finite() {
        minus(format!("{:.0}%", 100.0 * fraction))
    } else {
        "n/a".to_string()
    }
}

/// " (95% CI 41–88%)", or nothing without an interval.
fn interval(r: &Recovery, level: f64) -> String {
    if !(r.ci_low.is_finite() && r.ci_high.is_finite()) {
        return String::new();
    }
    let (lo, hi) = (100.0 * r.ci_low, 100.0 * r.ci_high);
    let range = if lo >= 0.0 {
        format!("{lo:.0}–{hi:.0}%")
    } else {
        format!("{} to {}", percent(r.ci_low), percent(r.ci_high))
    };
    format!(" ({level:.0}% CI {})", minus(range))
}

/// A mean with one decimal and a true minus sign.
fn signed(x: f64) -> String {
    if x.is_finite() {
        minus(format!("{x:.1}"))
    } else {
        "n/a".to_string()
    }
}

fn minus(text: String) -> String {
    text.replace('-', "−")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{bundle, Spec};
    use crate::view::{headline_measure, Derived, Selection};

    #[test]
    fn the_headline_sentence_names_layer_share_interval_and_control() {
        let b = bundle(Spec::SMALL);
        let derived = Derived::for_selection(&b, &Selection::default(), None).expect("derive");
        let patching = derived.patching.expect("patched");
        let lines = recovery_sentences(&patching, headline_measure(), 4, "correct");
        assert_eq!(lines.len(), 3, "{lines:?}");
        let peak = patching.layers[patching.peak(0, headline_measure()).expect("peak")];
        assert!(
            lines[0].starts_with(&format!(
                "Replacing the last token's state at layer {peak} "
            )),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("(95% CI "), "{}", lines[0]);
        assert!(lines[0].contains(
            "of the 4-shot gain in answer log-probability; the other-condition control recovers "
        ));
        assert!(
            lines[1].contains(" nats at 0-shot, ") && lines[1].contains('−'),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("Adding the task vector (×1) recovers most at layer "));
        // Minus signs are true minus signs, and every number is defined.
        let ascii_minus = |l: &String| l.contains(" -") || l.contains("(-");
        assert!(
            lines
                .iter()
                .all(|l| !l.contains("NaN") && !l.contains("n/a") && !ascii_minus(l)),
            "{lines:?}"
        );
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(percent(0.643), "64%");
        assert_eq!(percent(-0.05), "−5%");
        assert_eq!(percent(f64::NAN), "n/a");
        assert_eq!(signed(-3.21), "−3.2");
        let r = |lo: f64, hi: f64| Recovery {
            ci_low: lo,
            ci_high: hi,
            ..Recovery::of(&[1.0], &[0.0], &[2.0])
        };
        assert_eq!(interval(&r(0.41, 0.88), 95.0), " (95% CI 41–88%)");
        assert_eq!(interval(&r(-0.12, 0.4), 95.0), " (95% CI −12% to 40%)");
        assert_eq!(interval(&r(f64::NAN, 0.4), 95.0), "");
    }

    #[test]
    fn without_a_gain_the_text_says_there_is_nothing_to_recover() {
        let mut b = bundle(Spec::SMALL);
        let name = crate::bundle::model_array("synthetic", "reading", "patching_recovery");
        let stored = b.tensors.get_mut(&name).expect("recovery");
        for lane in stored.data.chunks_mut(6) {
            lane[0] = f32::NAN;
            lane[4] = -3.0;
            lane[5] = -3.0;
        }
        let derived = Derived::for_selection(&b, &Selection::default(), None).expect("derive");
        let lines = recovery_sentences(
            derived.patching.as_ref().expect("patched"),
            headline_measure(),
            4,
            "correct",
        );
        assert_eq!(
            lines,
            vec!["Demonstrations do not change the mean answer log-probability (0-shot −3.0 nats, 4-shot −3.0), so there is no gain to recover."]
        );
    }
}
