//! Paired prompts: every target instance once without demonstrations
//! (0-shot) and once with k solved demonstrations of other instances
//! (k-shot). Same target, same query; only the demonstrations differ.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::json;

use super::config::{Demonstrations, RobustnessOptions};
use super::tasks::Task;
use super::template;
use crate::analysis::resample::named_rng;

/// One prompt of the experiment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Prompt {
    /// Index among all prompts of the experiment.
    pub id: usize,
    /// Index of the task in the experiment.
    pub task: usize,
    /// The target instance (index within the task).
    pub target: usize,
    /// 0 without demonstrations, k with.
    pub shots: usize,
    /// The instances shown as demonstrations, in order.
    pub demonstrations: Vec<usize>,
    /// Which demonstration draw a k-shot prompt shows (0 for the 0-shot
    /// prompt, which every draw shares): draw `d` in order `o` is
    /// `d * robustness.orders + o`; 0 is the draw a single-draw run makes.
    #[serde(skip_serializing_if = "is_first_draw")]
    pub draw: usize,
    pub text: String,
    /// Byte ranges of each labelled segment in `text`.
    pub segments: BTreeMap<String, Vec<Range<usize>>>,
}

fn is_first_draw(draw: &usize) -> bool {
    *draw == 0
}

/// The demonstrations of each target instance of `task`, in instance order.
/// They are drawn from instances of *other* conditions, so that the target's
/// own answer (its line, its activity) is never demonstrated.
pub fn choose_demonstrations(task: &Task, seed: u64) -> Result<Vec<Vec<usize>>, String> {
    draw_sets(task, seed, "")
}

/// One draw of every target's demonstrations, from the streams named after
/// the task and `suffix` (empty for the first draw).
fn draw_sets(task: &Task, seed: u64, suffix: &str) -> Result<Vec<Vec<usize>>, String> {
    let k = task.shots;
    let mut chosen = Vec::with_capacity(task.instances.len());
    match task.demonstrations {
        Demonstrations::PerInstance => {
            let mut rng = named_rng(seed, &format!("demonstrations/{}{suffix}", task.name));
            for target in &task.instances {
                let mut pool: Vec<usize> = task
                    .instances
                    .iter()
                    .filter(|i| i.condition != target.condition)
                    .map(|i| i.id)
                    .collect();
                if pool.len() < k {
                    return Err(too_few(task, pool.len()));
                }
                rng.shuffle(&mut pool);
                chosen.push(pool[..k].to_vec());
            }
        }
        Demonstrations::Fixed => {
            let mut order: Vec<usize> = (0..task.instances.len()).collect();
            named_rng(seed, &format!("fixed-demonstrations/{}{suffix}", task.name))
                .shuffle(&mut order);
            for target in &task.instances {
                let set: Vec<usize> = order
                    .iter()
                    .copied()
                    .filter(|&i| task.instances[i].condition != target.condition)
                    .take(k)
                    .collect();
                if set.len() < k {
                    return Err(too_few(task, set.len()));
                }
                chosen.push(set);
            }
        }
    }
    Ok(chosen)
}

/// Distinct sets of `k` out of `n` (saturating: only compared with small
/// draw counts).
pub fn distinct_sets(n: usize, k: usize) -> u128 {
    if k > n {
        return 0;
    }
    let mut c: u128 = 1;
    for i in 0..k.min(n - k) {
        c = c.saturating_mul((n - i) as u128) / (i as u128 + 1);
        if c > u64::MAX as u128 {
            return u128::MAX;
        }
    }
    c
}

/// `k!`, saturating.
pub fn orderings(k: usize) -> u128 {
    (1..=k as u128).fold(1u128, |acc, i| acc.saturating_mul(i))
}

/// The fewest distinct demonstration sets any target of `task` can be
/// shown: the bound on `robustness.draws`.
pub fn fewest_distinct_sets(task: &Task) -> u128 {
    (0..task.conditions.len())
        .filter(|&c| task.instances.iter().any(|i| i.condition == c))
        .map(|c| {
            let others = task.instances.iter().filter(|i| i.condition != c).count();
            distinct_sets(others, task.shots)
        })
        .min()
        .unwrap_or(1)
}

/// Tries before a draw that repeats an earlier one is given up on; far
/// beyond what a draw count within [`fewest_distinct_sets`] needs.
const DRAW_ATTEMPTS: usize = 100_000;

/// The demonstrations of every target in every draw and order:
/// `[variant][target]`, variant `d * orders + o` being draw `d` shown in
/// order `o`. Draw 0 in order 0 is [`choose_demonstrations`] itself, so a
/// single-draw experiment is unchanged; each later draw has its own seeded
/// stream and differs, as a set, from every earlier draw of the same
/// target; each later order is a distinct permutation of the drawn order,
/// the same for every target of the draw (so that fixed demonstrations
/// still share one prefix).
pub fn choose_variants(
    task: &Task,
    seed: u64,
    draws: usize,
    orders: usize,
) -> Result<Vec<Vec<Vec<usize>>>, String> {
    let first = choose_demonstrations(task, seed)?;
    let as_set = |demos: &[usize]| {
        let mut set = demos.to_vec();
        set.sort_unstable();
        set
    };
    let mut seen: Vec<Vec<Vec<usize>>> = first.iter().map(|d| vec![as_set(d)]).collect();
    let mut sets = vec![first];
    for d in 1..draws {
        let mut found = None;
        for attempt in 0..DRAW_ATTEMPTS {
            let draw = redraw(task, seed, d, attempt)?;
            let fresh = draw
                .iter()
                .zip(&seen)
                .all(|(demos, earlier)| !earlier.contains(&as_set(demos)));
            if fresh {
                found = Some(draw);
                break;
            }
        }
        let draw = found.ok_or_else(|| {
            format!(
                "could not draw {draws} distinct sets of demonstrations for task `{}` in {DRAW_ATTEMPTS} tries: ask for fewer draws",
                task.name
            )
        })?;
        for (demos, earlier) in draw.iter().zip(&mut seen) {
            earlier.push(as_set(demos));
        }
        sets.push(draw);
    }
    let mut variants = Vec::with_capacity(draws * orders);
    for (d, set) in sets.into_iter().enumerate() {
        let permutations = demonstration_orders(task, seed, d, orders);
        for permutation in &permutations {
            variants.push(
                set.iter()
                    .map(|demos| permutation.iter().map(|&i| demos[i]).collect())
                    .collect(),
            );
        }
    }
    Ok(variants)
}

/// Draw `d` (≥ 1) of every target's demonstrations, from its own streams
/// (`attempt` > 0 when an earlier attempt repeated an earlier draw).
fn redraw(task: &Task, seed: u64, d: usize, attempt: usize) -> Result<Vec<Vec<usize>>, String> {
    let suffix = if attempt == 0 {
        format!("/draw-{d}")
    } else {
        format!("/draw-{d}/attempt-{attempt}")
    };
    draw_sets(task, seed, &suffix)
}

/// The `orders` orders draw `d` is shown in, as permutations of positions
/// `0..k`: the drawn order first, then distinct random permutations.
/// `orders` must be at most `k!` (checked with the experiment).
fn demonstration_orders(task: &Task, seed: u64, d: usize, orders: usize) -> Vec<Vec<usize>> {
    let k = task.shots;
    let mut permutations = vec![(0..k).collect::<Vec<usize>>()];
    let mut rng = named_rng(
        seed,
        &format!("demonstration-orders/{}/draw-{d}", task.name),
    );
    while permutations.len() < orders.min(orderings(k).min(usize::MAX as u128) as usize) {
        let p = rng.permutation(k);
        if !permutations.contains(&p) {
            permutations.push(p);
        }
    }
    permutations
}

fn too_few(task: &Task, available: usize) -> String {
    format!(
        "asks for {} demonstrations, but a target has only {available} instances of other conditions to draw them from",
        task.shots
    )
}

/// Renders the 0-shot prompts of every target, then the k-shot prompts of
/// each draw in turn (see [`choose_variants`]), with ids starting at
/// `first_id`.
pub fn build_prompts(
    task: &Task,
    task_index: usize,
    seed: u64,
    first_id: usize,
    robustness: &RobustnessOptions,
) -> Result<Vec<Prompt>, String> {
    let variants = choose_variants(task, seed, robustness.draws, robustness.orders)?;
    let mut prompts = Vec::with_capacity((1 + variants.len()) * task.instances.len());
    let zero_shot = vec![Vec::new(); task.instances.len()];
    let states = std::iter::once((0, 0, &zero_shot))
        .chain(variants.iter().enumerate().map(|(v, d)| (task.shots, v, d)));
    for (shots, draw, demonstrations) in states {
        for (target, demos) in task.instances.iter().zip(demonstrations) {
            let shown: &[usize] = if shots == 0 { &[] } else { demos };
            let context = json!({
                "target": target.context,
                "demonstrations": shown.iter().map(|&d| &task.instances[d].context).collect::<Vec<_>>(),
            });
            let rendered = template::render(&task.template, &context).map_err(|e| {
                format!(
                    "its template does not render for instance {}: {e}",
                    target.id
                )
            })?;
            prompts.push(Prompt {
                id: first_id + prompts.len(),
                task: task_index,
                target: target.id,
                shots,
                demonstrations: shown.to_vec(),
                draw,
                text: rendered.text,
                segments: rendered.segments,
            });
        }
    }
    Ok(prompts)
}
