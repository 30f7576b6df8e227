//! The few numbers a person reads first, in sentences, from the tables.

use super::analyze::{ModelRun, StudyResults};
use super::export::Table;
use crate::experiment::{Experiment, Scoring};

/// Rows of `table` whose first columns equal `prefix`.
fn rows<'t>(table: &'t Table, prefix: &[&str]) -> impl Iterator<Item = &'t Vec<String>> {
    let prefix: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    table
        .rows
        .iter()
        .filter(move |r| r.iter().zip(&prefix).all(|(a, b)| a == b))
}

fn column(table: &Table, name: &str) -> usize {
    table.header.iter().position(|h| *h == name).unwrap_or(0)
}

fn value(row: &[String], index: usize) -> f64 {
    row.get(index)
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn percent(x: f64) -> String {
    if x.is_nan() {
        "n/a".into()
    } else {
        // `+ 0.0` turns a negative zero (from rounding -0.3%) into "0%".
        format!("{:.0}%", (100.0 * x).round() + 0.0)
    }
}

/// A mean error to two decimals, or what it means when no answer had one.
fn mean_error(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "none (no parseable answer)".to_string()
    }
}

impl StudyResults {
    /// A short text summary: behaviour before and after ICL, where alignment
    /// gains most, the attention ratio change, and the best probe layers.
    pub fn summary(&self, experiment: &Experiment, runs: &[ModelRun]) -> Vec<String> {
        let mut lines = Vec::new();
        for run in runs {
            for task in &experiment.tasks {
                let (z, k) = ("0".to_string(), task.shots.to_string());
                let behavior = |shots: &str| {
                    rows(&self.behavior, &[&run.name, &task.name, shots, "all"])
                        .next()
                        .cloned()
                        .unwrap_or_default()
                };
                let (b0, bk) = (behavior(&z), behavior(&k));
                let b = &self.behavior;
                let accuracy = column(b, "accuracy");
                let line = match task.scoring {
                    Scoring::Number => format!(
                        "{} · {}: mean error {} → {} (0-shot → {}-shot), exact answers {} → {}, unparseable {} → {}",
                        run.name,
                        task.name,
                        mean_error(value(&b0, column(b, "mean_error"))),
                        mean_error(value(&bk, column(b, "mean_error"))),
                        task.shots,
                        percent(value(&b0, accuracy)),
                        percent(value(&bk, accuracy)),
                        percent(value(&b0, column(b, "unparseable_rate"))),
                        percent(value(&bk, column(b, "unparseable_rate"))),
                    ),
                    Scoring::Keywords => format!(
                        "{} · {}: accuracy {} → {} (0-shot → {}-shot)",
                        run.name,
                        task.name,
                        percent(value(&b0, accuracy)),
                        percent(value(&bk, accuracy)),
                        task.shots
                    ),
                };
                lines.push(line);
                lines.extend(self.near_tie_line(run, task));
                lines.extend(self.alignment_gain(run, task, &z, &k, experiment));
                lines.extend(self.attention_change(run, task, &z, &k));
                lines.extend(self.best_probes(run, task, &z, &k));
                lines.extend(self.best_patching_layers(run, task));
                lines.extend(self.robustness_line(run, task, experiment));
            }
        }
        lines
    }

    /// How many answers turn on a near-tie at 0-shot and k-shot (first
    /// draw), and the behaviour without them.
    fn near_tie_line(&self, run: &ModelRun, task: &crate::experiment::Task) -> Vec<String> {
        let t = &self.near_ties;
        if t.header.is_empty() {
            return Vec::new();
        }
        let state = |shots: &str| {
            rows(t, &[&run.name, &task.name, shots, "0"])
                .next()
                .cloned()
                .unwrap_or_default()
        };
        let (z, k) = (state("0"), state(&task.shots.to_string()));
        if z.is_empty() || k.is_empty() {
            return Vec::new();
        }
        let (ties, n) = (column(t, "near_ties"), column(t, "n"));
        let without = match task.scoring {
            Scoring::Number => {
                let c = column(t, "mean_error_without_near_ties");
                format!(
                    "mean error {} → {}",
                    mean_error(value(&z, c)),
                    mean_error(value(&k, c))
                )
            }
            Scoring::Keywords => {
                let c = column(t, "accuracy_without_near_ties");
                format!(
                    "accuracy {} → {}",
                    percent(value(&z, c)),
                    percent(value(&k, c))
                )
            }
        };
        vec![format!(
            "    near-ties (top-two logit gap < {}): {} of {} answers at 0-shot, {} of {} at {}-shot; without them {without}",
            z[column(t, "threshold")],
            z[ties],
            z[n],
            k[ties],
            k[n],
            task.shots
        )]
    }

    /// How many headline findings keep their sign in every draw of
    /// demonstrations, and which do not (with several draws).
    fn robustness_line(
        &self,
        run: &ModelRun,
        task: &crate::experiment::Task,
        experiment: &Experiment,
    ) -> Vec<String> {
        let t = &self.robustness;
        if t.header.is_empty() {
            return Vec::new();
        }
        let (finding, layer) = (column(t, "finding"), column(t, "layer"));
        let (kept, headline) = (column(t, "sign_kept"), column(t, "headline"));
        let rows: Vec<_> = rows(t, &[&run.name, &task.name])
            .filter(|r| r[headline] == "true")
            .collect();
        let flipped: Vec<String> = rows
            .iter()
            .filter(|r| r[kept] != "true")
            .map(|r| match r[layer].as_str() {
                "" | "mean" => r[finding].clone(),
                l => format!("{} at layer {l}", r[finding]),
            })
            .collect();
        let draws = experiment.file.robustness.variants();
        let mut line = format!(
            "    across {draws} draws of demonstrations, {} of {} headline findings keep their sign",
            rows.len() - flipped.len(),
            rows.len()
        );
        if !flipped.is_empty() {
            line.push_str(&format!("; not: {}", flipped.join("; ")));
        }
        vec![line]
    }

    /// Per patching method: the layer whose patch recovers the largest
    /// fraction of the k-shot gain in answer log-probability, with its
    /// interval and the raw means.
    fn best_patching_layers(&self, run: &ModelRun, task: &crate::experiment::Task) -> Vec<String> {
        let table = &self.patching_recovery;
        if table.header.is_empty() {
            return Vec::new();
        }
        let (layer, fraction) = (column(table, "layer"), column(table, "fraction"));
        let (low, high) = (column(table, "ci_low"), column(table, "ci_high"));
        let mut lines = Vec::new();
        for method in viewer::bundle::PATCHING_METHODS {
            let best = rows(table, &[&run.name, &task.name, method, "answer_logprob"])
                .filter(|r| value(r, fraction).is_finite())
                .max_by(|a, b| value(a, fraction).total_cmp(&value(b, fraction)));
            let Some(best) = best else { continue };
            lines.push(format!(
                "{} · {}: patching ({method}) recovers most at layer {}: {} of the k-shot gain in answer log-probability (CI {} to {}); 0-shot {:.2}, patched {:.2}, k-shot {:.2} nats",
                run.name,
                task.name,
                best[layer],
                percent(value(best, fraction)),
                percent(value(best, low)),
                percent(value(best, high)),
                value(best, column(table, "mean_zero_shot")),
                value(best, column(table, "mean_patched")),
                value(best, column(table, "mean_k_shot")),
            ));
        }
        lines
    }

    fn alignment_gain(
        &self,
        run: &ModelRun,
        task: &crate::experiment::Task,
        z: &str,
        k: &str,
        e: &Experiment,
    ) -> Vec<String> {
        let t = &self.rsa_alignment;
        let comparator = e
            .file
            .analysis
            .comparators
            .first()
            .cloned()
            .unwrap_or_default();
        let (layer, v_col) = (column(t, "layer"), column(t, "value"));
        let mut lines = Vec::new();
        for h in &task.hypotheses {
            let before: Vec<_> = rows(t, &[&run.name, &task.name, z])
                .filter(|r| r[4] == h.name && r[5] == comparator)
                .collect();
            let after: Vec<_> = rows(t, &[&run.name, &task.name, k])
                .filter(|r| r[4] == h.name && r[5] == comparator)
                .collect();
            let best = before
                .iter()
                .zip(&after)
                .map(|(a, b)| {
                    (
                        value(b, v_col) - value(a, v_col),
                        a[layer].clone(),
                        value(a, v_col),
                        value(b, v_col),
                    )
                })
                .filter(|g| g.0.is_finite())
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((gain, at, v0, vk)) = best {
                lines.push(format!(
                    "    alignment with “{}” ({comparator}) gains most at layer {at}: {v0:+.3} → {vk:+.3} ({gain:+.3})",
                    h.name
                ));
            }
        }
        lines
    }

    fn attention_change(
        &self,
        run: &ModelRun,
        task: &crate::experiment::Task,
        z: &str,
        k: &str,
    ) -> Vec<String> {
        let t = &self.attention_ratio;
        let log2 = column(t, "log2_ratio");
        let mean_over_layers = |shots: &str| {
            let values: Vec<f64> = rows(t, &[&run.name, &task.name, shots])
                .filter(|r| r[4] == "mean")
                .map(|r| value(r, log2))
                .filter(|v| v.is_finite())
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        };
        match (mean_over_layers(z), mean_over_layers(k)) {
            (Some(a), Some(b)) => vec![format!(
                "    attention ratio relevant/distractor from the last token (geometric mean, averaged over layers and heads): {:.2} → {:.2}",
                a.exp2(),
                b.exp2()
            )],
            _ => Vec::new(),
        }
    }

    fn best_probes(
        &self,
        run: &ModelRun,
        task: &crate::experiment::Task,
        z: &str,
        k: &str,
    ) -> Vec<String> {
        let t = &self.probe;
        let (layer, metric, v_col) = (column(t, "layer"), column(t, "metric"), column(t, "value"));
        task.probes
            .iter()
            .filter_map(|p| {
                let best = |shots: &str| {
                    rows(t, &[&run.name, &task.name, shots])
                        .filter(|r| r[4] == p.param)
                        .max_by(|a, b| value_of(a, v_col).total_cmp(&value_of(b, v_col)))
                        .map(|r| (r[layer].clone(), value_of(r, v_col), r[metric].clone()))
                };
                let ((l0, v0, m), (lk, vk, _)) = (best(z)?, best(k)?);
                Some(format!(
                    "    best {} probe of {}: {m} {v0:.2} at layer {l0} → {vk:.2} at layer {lk}",
                    if p.numeric { "ridge" } else { "logistic" },
                    p.param
                ))
            })
            .collect()
    }
}

fn value_of(row: &[String], index: usize) -> f64 {
    let v = value(row, index);
    if v.is_nan() {
        f64::NEG_INFINITY
    } else {
        v
    }
}
