//! Exports a user can take to Python or R: tidy CSV files of every result
//! and, on request, the pooled embeddings as safetensors.
//!
//! Every file is written atomically (temporary file, then rename).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;

use super::analyze::ModelRun;
use super::capture::PromptRecord;
use crate::atomic::write_atomically;
use crate::experiment::Experiment;

/// A CSV table: a header and rows of already formatted cells.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub header: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(row.len(), self.header.len());
        self.rows.push(row);
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        write_atomically(path, |out| {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(&self.header)?;
            for row in &self.rows {
                writer.write_record(row)?;
            }
            writer.flush()?;
            Ok(())
        })
        .with_context(|| format!("could not write `{}`", path.display()))
    }
}

/// Formats a number for CSV: shortest round-trip form, empty for NaN.
pub fn num(x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        format!("{x}")
    }
}

/// One row per model and prompt: what was asked, what came back, the score.
pub fn prompts_table(experiment: &Experiment, model: &str, records: &[PromptRecord]) -> Table {
    let mut table = Table::new(&[
        "model",
        "prompt_id",
        "target_id",
        "task",
        "condition",
        "params",
        "shots",
        "demonstrations",
        "n_tokens",
        "prompt",
        "answer",
        "generated",
        "correct",
        "error",
        "unparseable",
    ]);
    for record in records {
        let p = &experiment.prompts[record.prompt];
        let task = &experiment.tasks[p.task];
        let target = &task.instances[p.target];
        let params: BTreeMap<_, _> = target.params.iter().collect();
        table.push(vec![
            model.to_string(),
            p.id.to_string(),
            p.target.to_string(),
            task.name.clone(),
            task.conditions[target.condition].clone(),
            serde_json::to_string(&params).unwrap_or_default(),
            p.shots.to_string(),
            p.demonstrations
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" "),
            record.n_tokens.to_string(),
            p.text.clone(),
            target.answer.clone(),
            record.generated.clone(),
            u8::from(record.score.correct).to_string(),
            record.score.error.map(num).unwrap_or_default(),
            u8::from(record.score.unparseable).to_string(),
        ]);
    }
    // Which demonstration draw each k-shot prompt shows, only when there
    // are several (one-draw tables keep their columns).
    if experiment.file.robustness.variants() > 1 {
        table.header.push("draw");
        for (row, record) in table.rows.iter_mut().zip(records) {
            row.push(experiment.prompts[record.prompt].draw.to_string());
        }
    }
    table
}

/// Writes `[layers, prompts, n_embd]` pooled embeddings per task and ICL
/// state, with the prompt ids and layer indices beside them. Tensor names:
/// `{model}/{task}/k{shots}/embeddings`, `.../prompt_ids`, `{model}/layers`.
pub fn write_embeddings(
    path: &Path,
    experiment: &Experiment,
    runs: &[ModelRun],
) -> anyhow::Result<()> {
    use safetensors::tensor::{Dtype, TensorView};
    let mut buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for ModelRun {
        name: model,
        info,
        layers,
        records,
        ..
    } in runs
    {
        let dim = info.n_embd;
        let layer_bytes: Vec<u8> = layers
            .iter()
            .flat_map(|&l| (l as i64).to_le_bytes())
            .collect();
        buffers.push((
            format!("{model}/layers"),
            Dtype::I64,
            vec![layers.len()],
            layer_bytes,
        ));
        for (t, task) in experiment.tasks.iter().enumerate() {
            // The 0-shot prompts, then each demonstration draw's k-shot
            // prompts (the first as `k{shots}`, later ones `k{shots}-draw{d}`).
            let draws = experiment.file.robustness.variants();
            let states = std::iter::once((0, 0)).chain((0..draws).map(|d| (task.shots, d)));
            for (shots, draw) in states {
                // Target order, the same rows the analyses use.
                let chosen = super::behavior::draw_records(experiment, records, t, shots, draw);
                let mut data = Vec::with_capacity(layers.len() * chosen.len() * dim * 4);
                for li in 0..layers.len() {
                    for r in &chosen {
                        for x in &r.embedding[li * dim..(li + 1) * dim] {
                            data.extend_from_slice(&x.to_le_bytes());
                        }
                    }
                }
                let prefix = match draw {
                    0 => format!("{model}/{}/k{shots}", task.name),
                    d => format!("{model}/{}/k{shots}-draw{d}", task.name),
                };
                buffers.push((
                    format!("{prefix}/embeddings"),
                    Dtype::F32,
                    vec![layers.len(), chosen.len(), dim],
                    data,
                ));
                let ids: Vec<u8> = chosen
                    .iter()
                    .flat_map(|r| (r.prompt as i64).to_le_bytes())
                    .collect();
                buffers.push((
                    format!("{prefix}/prompt_ids"),
                    Dtype::I64,
                    vec![chosen.len()],
                    ids,
                ));
            }
        }
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, dtype, shape, data)| {
            Ok((name.clone(), TensorView::new(*dtype, shape.clone(), data)?))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    // One metadata key, so the header is the same bytes on every run.
    let about = serde_json::json!({
        "what": "pooled per-layer embeddings; rows follow prompt_ids (see prompts.csv)",
        "pooling": experiment.file.capture.pooling,
        "experiment": experiment.file.name,
    });
    let metadata = std::collections::HashMap::from([("about".to_string(), about.to_string())]);
    let bytes = safetensors::serialize(views, Some(metadata))?;
    Ok(write_atomically(path, |out| {
        std::io::Write::write_all(out, &bytes)
    })?)
}
