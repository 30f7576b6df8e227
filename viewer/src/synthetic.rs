//! Synthetic bundles of any size, for the viewer's tests and for measuring
//! bundle size and redraw time at the scale of a 70B study (80 layers, 64
//! heads, 400 targets) without running such a model.
//!
//! The numbers are made up but shaped like real ones: similarity within a
//! condition grows with depth and more so after ICL, attention to the
//! relevant span grows after ICL, patching the 0-shot run with its own
//! k-shot state recovers most of the k-shot gain at mid depth and its
//! controls next to none, so every figure has something to show.
//! Deterministic: a fixed-seed generator (SplitMix64).

use std::collections::BTreeMap;

use crate::bundle::{
    model_array, task_array, upper_index, upper_len, BehaviorEntry, Bundle, Manifest, ModelEntry,
    PatchingEntry, ProbeEntry, PromptEntry, TaskEntry, Tensor, FORMAT, FORMAT_VERSION,
    PATCHING_MEASURES, PATCHING_METHODS, RECOVERY_FIELDS,
};

/// The size of a synthetic study.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub layers: usize,
    pub heads: usize,
    /// Target instances per task (each run 0-shot and k-shot).
    pub targets: usize,
    pub conditions: usize,
    pub seed: u64,
}

impl Spec {
    /// The scale of the study's Llama-2 70B: 80 layers × 64 heads, 400 targets.
    pub const LLAMA_70B: Spec = Spec {
        layers: 80,
        heads: 64,
        targets: 400,
        conditions: 6,
        seed: 1,
    };
    /// The size of the default report (`engine report` without arguments):
    /// the default model's 30 layers × 9 heads, and the larger task of the
    /// `paper` preset (linear regression: 9 conditions × 4 targets).
    pub const DEFAULT_SIZED: Spec = Spec {
        layers: 30,
        heads: 9,
        targets: 36,
        conditions: 9,
        seed: 1,
    };
    /// A small study for fast tests.
    pub const SMALL: Spec = Spec {
        layers: 6,
        heads: 4,
        targets: 24,
        conditions: 4,
        seed: 1,
    };
}

/// SplitMix64: tiny, fast, and fixed by its definition.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Roughly normal (sum of four uniforms, rescaled).
    fn normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * (3.0f64).sqrt()
    }
}

/// A synthetic one-model, one-task bundle of the given size.
pub fn bundle(spec: Spec) -> Bundle {
    bundle_of_models(spec, 1)
}

/// A synthetic bundle of `models` models on the same task and prompts, as
/// a report that compares models has: the first model is [`bundle`]'s, the
/// others (`synthetic-2`, …) the same study with numbers of their own
/// (seeds `spec.seed + 1`, …).
pub fn bundle_of_models(spec: Spec, models: usize) -> Bundle {
    let mut first = one_model(spec, "synthetic");
    for i in 1..models {
        let name = format!("synthetic-{}", i + 1);
        let seed = spec.seed.wrapping_add(i as u64);
        let other = one_model(Spec { seed, ..spec }, &name);
        let prefix = format!("{name}/");
        first.tensors.extend(
            other
                .tensors
                .into_iter()
                .filter(|(array, _)| array.starts_with(&prefix)),
        );
        first.manifest.models.extend(other.manifest.models);
        let patched = other
            .manifest
            .tasks
            .into_iter()
            .next()
            .and_then(|t| t.patching);
        if let (Some(all), Some(theirs)) = (first.manifest.tasks[0].patching.as_mut(), patched) {
            all.layers.extend(theirs.layers);
        }
    }
    first
}

/// One model's bundle (see [`bundle`]).
fn one_model(spec: Spec, model: &str) -> Bundle {
    let mut rng = Rng(spec.seed);
    let Spec {
        layers,
        heads,
        targets,
        conditions,
        ..
    } = spec;
    let task = "reading";
    let condition_of: Vec<usize> = (0..targets).map(|t| t % conditions.max(1)).collect();
    let person_of: Vec<usize> = (0..targets).map(|t| (t / conditions.max(1)) % 5).collect();
    let mut tensors = BTreeMap::new();
    let mut put = |name: String, t: Tensor| {
        tensors.insert(name, t);
    };

    let mut hypotheses = Tensor::nan(&[2, targets, targets]);
    for i in 0..targets {
        for j in 0..targets {
            hypotheses.set(
                &[0, i, j],
                f64::from(u8::from(condition_of[i] == condition_of[j])),
            );
            hypotheses.set(
                &[1, i, j],
                f64::from(u8::from(person_of[i] == person_of[j])),
            );
        }
    }
    put(task_array(task, "hypotheses"), hypotheses);

    let mut behavior = Tensor::nan(&[2, targets]);
    let mut improvement = Tensor::nan(&[targets]);
    let mut skill = Vec::with_capacity(targets);
    for t in 0..targets {
        skill.push(rng.uniform());
        let zero = f64::from(u8::from(rng.uniform() < 0.3));
        let k = f64::from(u8::from(rng.uniform() < 0.3 + 0.5 * skill[t]));
        behavior.set(&[0, t], zero);
        behavior.set(&[1, t], k);
        improvement.set(&[t], k - zero);
    }

    let u = upper_len(targets);
    let mut rsm = Tensor::nan(&[2, layers, u]);
    for s in 0..2 {
        for l in 0..layers {
            let depth = (l as f64 + 1.0) / layers.max(1) as f64;
            let strength = depth * (0.3 + 0.3 * s as f64);
            let lane = rsm.lane_mut(&[s, l]);
            for i in 0..targets {
                for j in i + 1..targets {
                    let same = if condition_of[i] == condition_of[j] {
                        strength
                    } else {
                        0.0
                    };
                    let v = (same + 0.2 * rng.normal()).clamp(-1.0, 1.0);
                    lane[upper_index(targets, i, j)] = v as f32;
                }
            }
        }
    }
    put(model_array(model, task, "rsm"), rsm);

    let comparators = ["spearman", "pearson"];
    let mut alignment = Tensor::nan(&[2, 2, comparators.len(), layers, 5]);
    for s in 0..2 {
        for h in 0..2 {
            for c in 0..comparators.len() {
                for l in 0..layers {
                    let depth = (l as f64 + 1.0) / layers.max(1) as f64;
                    let v = if h == 0 {
                        depth * (0.2 + 0.2 * s as f64)
                    } else {
                        0.02 * rng.normal()
                    };
                    let p = if v > 0.1 { 0.001 } else { 0.5 };
                    for (f, x) in [v, p, p, v - 0.05, v + 0.05].into_iter().enumerate() {
                        alignment.set(&[s, h, c, l, f], x);
                    }
                }
            }
        }
    }
    put(model_array(model, task, "alignment"), alignment);

    let mut probe = Tensor::nan(&[2, 2, layers]);
    for s in 0..2 {
        for p in 0..2 {
            for l in 0..layers {
                let depth = (l as f64 + 1.0) / layers.max(1) as f64;
                probe.set(
                    &[s, p, l],
                    (0.3 + 0.5 * depth + 0.1 * s as f64 - 0.2 * p as f64).min(1.0),
                );
            }
        }
    }
    put(model_array(model, task, "probe"), probe);

    let mut mass = Tensor::nan(&[2, layers, heads, targets, 2]);
    let mut spans = Tensor::nan(&[2, targets, 2]);
    for s in 0..2 {
        for t in 0..targets {
            spans.set(&[s, t, 0], 7.0);
            spans.set(&[s, t, 1], 7.0);
        }
        for l in 0..layers {
            for h in 0..heads {
                let lane = mass.lane_mut(&[s, l, h]);
                for t in 0..targets {
                    let bias = 1.0 + 0.5 * s as f64 * skill[t];
                    let r = 0.05 * rng.uniform() * bias;
                    let d = 0.05 * rng.uniform();
                    lane[2 * t] = r as f32;
                    lane[2 * t + 1] = d as f32;
                }
            }
        }
    }
    put(model_array(model, task, "attention_mass"), mass);
    put(model_array(model, task, "span_lengths"), spans);
    put(model_array(model, task, "behavior"), behavior);
    put(model_array(model, task, "improvement"), improvement);

    let measures = vec![
        "alignment: same activity".to_string(),
        "attention ratio (log2)".to_string(),
    ];
    let mut delta = Tensor::nan(&[measures.len(), layers, targets]);
    for m in 0..measures.len() {
        for l in 0..layers {
            let lane = delta.lane_mut(&[m, l]);
            for (t, value) in lane.iter_mut().enumerate() {
                *value = (skill[t] * (l as f64 / layers.max(1) as f64) + 0.3 * rng.normal()) as f32;
            }
        }
    }
    put(model_array(model, task, "measure_delta"), delta);

    let conditions_names: Vec<String> = (0..conditions).map(|c| format!("activity {c}")).collect();
    let prompts = (0..2 * targets)
        .map(|i| PromptEntry {
            id: i,
            task: 0,
            target: i % targets,
            shots: if i < targets { 0 } else { 4 },
            draw: 0,
            text: format!("Synthetic prompt {i}."),
            segments: BTreeMap::new(),
        })
        .collect();
    let mut bundle = Bundle {
        manifest: Manifest {
            format: FORMAT.to_string(),
            version: FORMAT_VERSION,
            engine_version: "synthetic".to_string(),
            engine_revision: None,
            created: "2026-01-01".to_string(),
            title: format!("synthetic study: {layers} layers, {heads} heads, {targets} targets"),
            llama_cpp: "none".to_string(),
            seed: spec.seed,
            experiment: serde_json::json!({ "name": "synthetic" }),
            comparators: comparators.iter().map(|c| c.to_string()).collect(),
            models: vec![ModelEntry {
                name: model.to_string(),
                file_name: "synthetic.gguf".to_string(),
                sha256: String::new(),
                size_bytes: 0,
                architecture: "llama".to_string(),
                description: "synthetic".to_string(),
                quantization: "none".to_string(),
                n_layer: layers,
                n_embd: 8192,
                n_head: heads,
                n_head_kv: heads / 8,
                layers: (0..layers).collect(),
                attention_path: None,
                chat: None,
                rounding_check: None,
            }],
            tasks: vec![TaskEntry {
                name: task.to_string(),
                kind: "reading-comprehension".to_string(),
                shots: 4,
                conditions: conditions_names,
                target_conditions: condition_of,
                hypotheses: vec!["same activity".to_string(), "same person".to_string()],
                probes: vec![
                    ProbeEntry {
                        param: "activity".to_string(),
                        probe: "logistic".to_string(),
                        metric: "accuracy".to_string(),
                    },
                    ProbeEntry {
                        param: "person".to_string(),
                        probe: "logistic".to_string(),
                        metric: "accuracy".to_string(),
                    },
                ],
                attention: Some(("relevant".to_string(), "distractor".to_string())),
                behavior: BehaviorEntry {
                    metric: "correct".to_string(),
                    higher_is_better: true,
                },
                measures,
                patching: None,
                draws: 1,
                robustness: None,
            }],
            prompts,
            near_tie_gap: None,
        },
        tensors,
    };
    fill_summaries(&mut bundle);
    // A stream of its own, so that the other arrays are those of a bundle
    // without patching.
    fill_patching(&mut bundle, &mut Rng(spec.seed ^ 0x7061_7463_6869_6e67));
    bundle
}

/// The engine's summary arrays (`attention_ratio`, `correlation`), computed
/// here the way the viewer recomputes them, so that a synthetic bundle is
/// self-consistent.
fn fill_summaries(bundle: &mut Bundle) {
    let selection = crate::view::Selection::default();
    let Ok(derived) = crate::view::Derived::for_selection(bundle, &selection, None) else {
        return;
    };
    let model = &bundle.manifest.models[0];
    let task = &bundle.manifest.tasks[0];
    let (layers, heads) = (model.layers.len(), model.n_head);
    let mut ratio = Tensor::nan(&[2, layers, heads + 1, 2]);
    for s in 0..2 {
        for l in 0..layers {
            for h in 0..=heads {
                ratio.set(&[s, l, h, 0], derived.log2_ratio[s][l][h]);
            }
        }
    }
    let mut correlation = Tensor::nan(&[task.measures.len(), layers, 5]);
    for (m, rows) in derived.correlation.iter().enumerate() {
        for (l, row) in rows.iter().enumerate() {
            for (f, &v) in row.iter().enumerate() {
                correlation.set(&[m, l, f], v);
            }
        }
    }
    let (ratio_name, correlation_name) = (
        model_array(&model.name, &task.name, "attention_ratio"),
        model_array(&model.name, &task.name, "correlation"),
    );
    bundle.tensors.insert(ratio_name, ratio);
    bundle.tensors.insert(correlation_name, correlation);
}

/// The patching analysis: `patching`, `patching_reference` and (computed
/// the way the viewer recomputes it) `patching_recovery`, with a made-up
/// interval. Every patched layer but the greedy answers of every other one
/// (NaN there, as when the engine skips them).
fn fill_patching(bundle: &mut Bundle, rng: &mut Rng) {
    let model = bundle.manifest.models[0].clone();
    let task = &bundle.manifest.tasks[0];
    let (p, n_conditions) = (task.target_conditions.len(), task.conditions.len().max(1));
    let conditions = task.target_conditions.clone();
    let Ok(behavior) = bundle
        .tensor(&model_array(&model.name, &task.name, "behavior"))
        .cloned()
    else {
        return;
    };
    let n = model.layers.len();
    let step = n.div_ceil(20).max(1);
    let layers: Vec<usize> = model.layers.iter().copied().step_by(step).collect();
    let (n_methods, n_measures) = (PATCHING_METHODS.len(), PATCHING_MEASURES.len());

    // Per target and log-probability measure: 0-shot and k-shot values.
    let mut reference = Tensor::nan(&[2, p, n_measures]);
    for t in 0..p {
        let zero = -3.2 + 0.8 * rng.normal();
        let gain = 2.1 + 0.6 * rng.normal();
        for (q, share) in [(0, 0.4), (1, 1.0)] {
            reference.set(&[0, t, q], share * zero);
            reference.set(&[1, t, q], share * (zero + gain));
        }
        reference.set(&[0, t, 2], behavior.get(&[0, t]));
        reference.set(&[1, t, 2], behavior.get(&[1, t]));
    }
    // How much of the gain each method recovers at relative depth `d`:
    // the own state peaks mid-depth, the task vector a little earlier and
    // lower, the controls stay near 0.
    let bump = |d: f64, centre: f64, width: f64| (-((d - centre) / width).powi(2)).exp();
    let share = |method: usize, d: f64, condition: usize| {
        let strength = 0.7 + 0.3 * condition as f64 / n_conditions as f64;
        match method {
            0 => strength * (0.05 + 0.8 * bump(d, 0.55, 0.25)),
            1 => 0.06 * bump(d, 0.55, 0.25),
            2 => strength * 0.55 * bump(d, 0.4, 0.2),
            _ => 0.0,
        }
    };
    let mut patched = Tensor::nan(&[n_methods, layers.len(), p, n_measures]);
    for m in 0..n_methods {
        for (l, &block) in layers.iter().enumerate() {
            let d = block as f64 / (n.max(2) - 1) as f64;
            for (t, &condition) in conditions.iter().enumerate() {
                let r = share(m, d, condition);
                for q in 0..2 {
                    let (z, k) = (reference.get(&[0, t, q]), reference.get(&[1, t, q]));
                    patched.set(&[m, l, t, q], z + r * (k - z) + 0.3 * rng.normal());
                }
                let answered = if rng.uniform() < r { 1 } else { 0 };
                if l % 2 == 0 {
                    patched.set(&[m, l, t, 2], reference.get(&[answered, t, 2]));
                }
            }
        }
    }
    let entry = PatchingEntry {
        methods: PATCHING_METHODS.map(String::from).to_vec(),
        measures: PATCHING_MEASURES.map(String::from).to_vec(),
        layers: BTreeMap::from([(model.name.clone(), layers.clone())]),
        scale: 1.0,
        confidence: 0.95,
    };
    let task_name = task.name.clone();
    bundle.manifest.tasks[0].patching = Some(entry);
    let name = |array: &str| model_array(&model.name, &task_name, array);
    bundle.tensors.insert(name("patching"), patched);
    bundle.tensors.insert(name("patching_reference"), reference);

    let all: Vec<usize> = (0..p).collect();
    let selection = crate::view::Selection::default();
    let Ok(Some(recovery)) = crate::view::recompute_recovery(bundle, &selection, &all) else {
        return;
    };
    let mut stored = Tensor::nan(&[n_methods, n_measures, layers.len(), RECOVERY_FIELDS.len()]);
    for (m, per_method) in recovery.iter().enumerate() {
        for (q, per_measure) in per_method.iter().enumerate() {
            for (l, r) in per_measure.iter().enumerate() {
                let half = 0.1 + 0.1 * rng.uniform();
                let fields = [
                    r.fraction,
                    r.fraction - half,
                    r.fraction + half,
                    r.mean_patched,
                    r.mean_zero_shot,
                    r.mean_k_shot,
                ];
                stored
                    .lane_mut(&[m, q, l])
                    .copy_from_slice(&fields.map(|v| v as f32));
            }
        }
    }
    bundle.tensors.insert(name("patching_recovery"), stored);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{figures, Derived, Selection};

    #[test]
    fn a_two_model_bundle_adds_a_second_model_with_numbers_of_its_own() {
        let one = bundle(Spec::SMALL);
        let two = bundle_of_models(Spec::SMALL, 2);
        let names: Vec<&str> = two
            .manifest
            .models
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["synthetic", "synthetic-2"]);
        // NaN is not equal to itself: arrays are compared bit for bit.
        let bits = |t: &Tensor| {
            (
                t.shape.clone(),
                t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            )
        };
        for (array, tensor) in &one.tensors {
            let same = two.tensors.get(array).map(bits) == Some(bits(tensor));
            assert!(same, "{array} of the first model");
        }
        let rsm = |model: &str| two.tensors.get(&model_array(model, "reading", "rsm"));
        assert!(rsm("synthetic-2").is_some() && rsm("synthetic-2") != rsm("synthetic"));
        let patching = two.manifest.tasks[0].patching.as_ref().expect("patched");
        assert_eq!(patching.layers.len(), 2, "both models' patched layers");
        // The viewer draws the second model as it draws the first.
        let selection = Selection {
            model: 1,
            ..Selection::default()
        }
        .clamp(&two);
        let derived = Derived::for_selection(&two, &selection, None).expect("derive");
        assert!(figures(&two, &derived, &selection).expect("figures").len() >= 8);
    }
}
