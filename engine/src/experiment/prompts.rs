//! Paired prompts: every target instance once without demonstrations
//! (0-shot) and once with k solved demonstrations of other instances
//! (k-shot). Same target, same query; only the demonstrations differ.

use std::collections::BTreeMap;
use std::ops::Range;

use serde_json::json;

use super::config::Demonstrations;
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
    pub text: String,
    /// Byte ranges of each labelled segment in `text`.
    pub segments: BTreeMap<String, Vec<Range<usize>>>,
}

/// The demonstrations of each target instance of `task`, in instance order.
/// They are drawn from instances of *other* conditions, so that the target's
/// own answer (its line, its activity) is never demonstrated.
pub fn choose_demonstrations(task: &Task, seed: u64) -> Result<Vec<Vec<usize>>, String> {
    let k = task.shots;
    let mut chosen = Vec::with_capacity(task.instances.len());
    match task.demonstrations {
        Demonstrations::PerInstance => {
            let mut rng = named_rng(seed, &format!("demonstrations/{}", task.name));
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
            named_rng(seed, &format!("fixed-demonstrations/{}", task.name)).shuffle(&mut order);
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

fn too_few(task: &Task, available: usize) -> String {
    format!(
        "asks for {} demonstrations, but a target has only {available} instances of other conditions to draw them from",
        task.shots
    )
}

/// Renders the 0-shot prompts of every target, then the k-shot prompts, with
/// ids starting at `first_id`.
pub fn build_prompts(
    task: &Task,
    task_index: usize,
    seed: u64,
    first_id: usize,
) -> Result<Vec<Prompt>, String> {
    let demonstrations = choose_demonstrations(task, seed)?;
    let mut prompts = Vec::with_capacity(2 * task.instances.len());
    for shots in [0, task.shots] {
        for (target, demos) in task.instances.iter().zip(&demonstrations) {
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
                text: rendered.text,
                segments: rendered.segments,
            });
        }
    }
    Ok(prompts)
}
