//! From a study's results to the report bundle (the format itself is
//! defined in [`viewer::bundle`]): the manifest that makes the report
//! reproducible, and the compressed, atomically written file.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use viewer::bundle::{
    BehaviorEntry, Bundle, Manifest, ModelEntry, ProbeEntry, PromptEntry, TaskEntry, FORMAT,
    FORMAT_VERSION,
};

use crate::errors::BadInput;
use crate::experiment::{Experiment, Scoring};
use crate::study::{ModelRun, StudyResults};

/// zstd level for bundles: level 10 compresses the default study's bundle
/// within a few percent of level 19 at a tenth of the time (the arrays are
/// mostly float noise, which no level compresses much).
const ZSTD_LEVEL: i32 = 10;

/// What the manifest records beyond the experiment and the models.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// `YYYY-MM-DD`; see [`report_date`].
    pub created: String,
    pub engine_revision: Option<String>,
}

impl Provenance {
    pub fn current() -> Provenance {
        Provenance {
            created: report_date(),
            engine_revision: option_env!("ENGINE_GIT_REVISION").map(str::to_string),
        }
    }
}

/// Today's date (UTC), or the date of `SOURCE_DATE_EPOCH` when set, the
/// reproducible-builds convention, so that a rebuilt report can be
/// byte-identical to the published one.
pub fn report_date() -> String {
    let seconds = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    civil_date(seconds.div_euclid(86_400))
}

/// Days since 1970-01-01 → `YYYY-MM-DD` (Howard Hinnant's civil-from-days).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

pub use crate::fingerprint::{file_sha256, hex};

/// The quantization named in llama.cpp's model description
/// ("llama ?B Q4_1" → "Q4_1"), or the whole description.
fn quantization(description: &str) -> String {
    description
        .split_whitespace()
        .last()
        .unwrap_or(description)
        .to_string()
}

fn model_entry(run: &ModelRun) -> ModelEntry {
    let info = &run.info;
    ModelEntry {
        name: run.name.clone(),
        file_name: info
            .path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: run.sha256.clone(),
        size_bytes: info.file_len,
        architecture: info.architecture.clone(),
        description: info.description.clone(),
        quantization: quantization(&info.description),
        n_layer: info.n_layer,
        n_embd: info.n_embd,
        n_head: info.n_head,
        n_head_kv: info.n_head_kv,
        layers: run.layers.clone(),
        attention_path: Some(
            match run.attention.path {
                crate::capture::AttentionPath::Recomputed => "recomputed",
                crate::capture::AttentionPath::Materialized => "materialized",
            }
            .to_string(),
        ),
        chat: run.chat.clone(),
        rounding_check: None,
    }
}

fn task_entries(experiment: &Experiment, results: &StudyResults) -> Vec<TaskEntry> {
    experiment
        .tasks
        .iter()
        .enumerate()
        .map(|(t, task)| {
            // Targets in the order of the arrays: the 0-shot prompts by target.
            let mut targets: Vec<usize> = experiment
                .prompts
                .iter()
                .filter(|p| p.task == t && p.shots == 0)
                .map(|p| p.target)
                .collect();
            targets.sort_unstable();
            let numeric = task.scoring == Scoring::Number;
            TaskEntry {
                name: task.name.clone(),
                kind: task.kind.clone(),
                shots: task.shots,
                conditions: task.conditions.clone(),
                target_conditions: targets
                    .iter()
                    .map(|&i| task.instances[i].condition)
                    .collect(),
                hypotheses: task.hypotheses.iter().map(|h| h.name.clone()).collect(),
                probes: task
                    .probes
                    .iter()
                    .map(|p| ProbeEntry {
                        param: p.param.clone(),
                        probe: if p.numeric { "ridge" } else { "logistic" }.to_string(),
                        metric: if p.numeric { "r2" } else { "accuracy" }.to_string(),
                    })
                    .collect(),
                attention: task.attention_segments.clone(),
                behavior: BehaviorEntry {
                    metric: if numeric { "absolute error" } else { "correct" }.to_string(),
                    higher_is_better: !numeric,
                },
                measures: results
                    .measures
                    .get(&task.name)
                    .cloned()
                    .unwrap_or_default(),
                patching: results.patching_entries.get(&task.name).cloned(),
                draws: experiment.file.robustness.variants(),
                robustness: results.robustness_entries.get(&task.name).cloned(),
            }
        })
        .collect()
}

/// The bundle of a study: every array of `results` and the manifest.
pub fn build_bundle(
    experiment: &Experiment,
    runs: &[ModelRun],
    results: &StudyResults,
    provenance: &Provenance,
) -> anyhow::Result<Bundle> {
    let models = runs.iter().map(model_entry).collect();
    let prompts = experiment
        .prompts
        .iter()
        .map(|p| PromptEntry {
            id: p.id,
            task: p.task,
            target: p.target,
            shots: p.shots,
            draw: p.draw,
            text: p.text.clone(),
            segments: p
                .segments
                .iter()
                .map(|(name, ranges)| {
                    (
                        name.clone(),
                        ranges.iter().map(|r| (r.start, r.end)).collect(),
                    )
                })
                .collect(),
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT.to_string(),
        version: FORMAT_VERSION,
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        engine_revision: provenance.engine_revision.clone(),
        created: provenance.created.clone(),
        title: experiment.file.name.clone(),
        llama_cpp: crate::capture::llama_build_info().trim().to_string(),
        seed: experiment.file.seed,
        experiment: serde_json::to_value(&experiment.file)?,
        comparators: experiment.file.analysis.comparators.clone(),
        models,
        tasks: task_entries(experiment, results),
        prompts,
        near_tie_gap: Some(f64::from(crate::study::near_ties::NEAR_TIE_LOGIT_GAP)),
    };
    Ok(Bundle {
        manifest,
        tensors: results.arrays.clone(),
    })
}

/// The bundle's file bytes: safetensors, compressed.
pub fn encode_bundle(bundle: &Bundle) -> anyhow::Result<Vec<u8>> {
    let raw = bundle.to_safetensors()?;
    zstd::bulk::compress(&raw, ZSTD_LEVEL).context("cannot compress the bundle")
}

/// Compresses and writes `bundle` to `path` atomically (a temporary file,
/// then a rename); returns the compressed size in bytes.
pub fn write_bundle(path: &Path, bundle: &Bundle) -> anyhow::Result<u64> {
    let compressed = encode_bundle(bundle)?;
    crate::atomic::write_atomically(path, |w| w.write_all(&compressed))?;
    Ok(compressed.len() as u64)
}

/// Reads a bundle file, with errors that name the file (bad input, exit 2).
pub fn read_bundle(path: &Path) -> anyhow::Result<Bundle> {
    let bytes = std::fs::read(path).map_err(|e| {
        BadInput(format!(
            "cannot read the bundle `{}`: {e} — pass the `{}` file of a report",
            path.display(),
            viewer::bundle::FILE_NAME
        ))
    })?;
    Bundle::decode(&bytes)
        .map_err(|e| BadInput(format!("cannot open `{}`: {e}", path.display())).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_match_known_days() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(19_723), "2024-01-01");
        assert_eq!(civil_date(20_783), "2026-11-26");
        assert_eq!(civil_date(11_016), "2000-02-29");
    }

    #[test]
    fn quantization_is_the_last_word_of_the_description() {
        assert_eq!(quantization("llama ?B Q4_1"), "Q4_1");
        assert_eq!(quantization(""), "");
    }
}
