//! The capture cache: every captured prompt saved on disk as soon as it is
//! done, so that an interrupted run (Ctrl-C, a crash, a full disk, a killed
//! cluster job) resumes where it stopped and a finished run re-renders in
//! seconds.
//!
//! One folder per model file, named by the file's SHA-256; one file per
//! prompt, named by a hash of everything its capture depends on: the cache
//! format, the model's hash, the prompt's text and segments, the capture
//! options, the analysed layers, the attention path and the prompts its
//! answer is generated beside. Change any of them
//! and only the affected prompts are captured again. Scores are not cached:
//! they are recomputed from the cached answer, so a change to scoring rules
//! costs nothing. Every file is written atomically (temporary file, then
//! rename), so a file that exists is complete; a damaged one is ignored and
//! captured again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::capture::PromptRecord;
use crate::capture::ModelInfo;
use crate::experiment::{scoring, Experiment};

/// Bump when what a cached record means changes.
/// 2: the answer's generation stops after its first newline.
/// 3: answers are generated in batches (`capture.answer_batch`).
/// 4: records keep each answer choice's top-two logit gap.
pub const CACHE_FORMAT: u32 = 4;
/// The first bytes of a cached record.
const MAGIC: &[u8; 8] = b"ICLREC1\n";

/// The cache of one model.
#[derive(Debug, Clone)]
pub struct PromptCache {
    dir: PathBuf,
    model_sha256: String,
}

/// What is stored of a record besides its arrays.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    prompt: usize,
    n_tokens: usize,
    token_spans: Vec<(String, usize, usize)>,
    span_lengths: Option<(usize, usize)>,
    generated: String,
    embedding: usize,
    attention: Option<usize>,
    /// Floats of the last token's state (patching only; absent otherwise,
    /// so that records without patching keep their bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_state: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer_logprobs: Option<(f64, f64)>,
    /// Floats of the answer's top-two logit gaps, stored raw after the
    /// others: JSON would write an infinite gap (a vocabulary of one) as
    /// `null`, and raw bits come back identical by construction.
    answer_gaps: usize,
}

/// The capture settings outside the experiment that change the numbers.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureSettings {
    /// `auto`, `on` or `off`: recomputed vs llama.cpp's own attention.
    pub flash_attention: String,
    /// GPU and CPU kernels round differently.
    pub n_gpu_layers: i32,
}

impl PromptCache {
    /// The cache of the model with hash `model_sha256` under `root`.
    pub fn open(root: &Path, model_sha256: &str) -> anyhow::Result<PromptCache> {
        let short = model_sha256.get(..16).unwrap_or(model_sha256);
        let dir = root.join(short);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the capture cache `{}`", dir.display()))?;
        Ok(PromptCache {
            dir,
            model_sha256: model_sha256.to_string(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key of prompt `index` of `experiment`, answered in `batch`.
    pub fn key(
        &self,
        experiment: &Experiment,
        index: usize,
        batch: &[usize],
        layers: &[usize],
        settings: &CaptureSettings,
    ) -> String {
        let p = &experiment.prompts[index];
        let task = &experiment.tasks[p.task];
        // The prompts answered together: on a GPU they can change the
        // rounding of each other's answers.
        let answered_with: Vec<String> = batch
            .iter()
            .map(|&q| crate::fingerprint::sha256_hex(experiment.prompts[q].text.as_bytes()))
            .collect();
        let mut identity = serde_json::json!({
            "format": CACHE_FORMAT,
            "model": self.model_sha256,
            "text": p.text,
            "segments": p.segments,
            "attention": task.attention_segments,
            // Decides whether the prompt's prefix runs apart (reuse_prefix).
            "demonstrations": task.demonstrations,
            "capture": experiment.file.capture,
            "layers": layers,
            "settings": settings,
            "answered_with": answered_with,
        });
        // What patching adds to a record: the last token's state at the
        // patched layers and the answer's log-probabilities. Without
        // patching the key stays what it was.
        if experiment.file.patching.enabled {
            identity["patching_states"] = serde_json::json!({
                "layers": experiment.file.patching.layers,
                "answer": crate::study::capture::answer_continuation(&task.instances[p.target].answer),
            });
        }
        crate::fingerprint::sha256_hex(identity.to_string().as_bytes())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.rec"))
    }

    pub fn contains(&self, key: &str) -> bool {
        self.path(key).is_file()
    }

    /// The cached record of `key` for prompt `prompt`, its score
    /// recomputed; `None` when absent or unreadable (then it is captured
    /// again). Two prompts of identical text answered beside the same
    /// prompts share a key (their captures are the same), so the record
    /// takes the index asked for, not the one it was written with.
    pub fn get(&self, key: &str, experiment: &Experiment, prompt: usize) -> Option<PromptRecord> {
        let bytes = std::fs::read(self.path(key)).ok()?;
        match decode(&bytes, experiment, prompt) {
            Some(record) => Some(record),
            None => {
                tracing::warn!(
                    "ignoring a damaged cache entry {}",
                    self.path(key).display()
                );
                None
            }
        }
    }

    pub fn put(&self, key: &str, record: &PromptRecord) -> anyhow::Result<()> {
        let path = self.path(key);
        let bytes = encode(record)?;
        Ok(crate::atomic::write_atomically(&path, |w| {
            w.write_all(&bytes)
        })?)
    }

    /// The model's description, saved so that a fully cached run needs no
    /// model at all.
    /// The model's description saved by an earlier run; `None` when there
    /// is none, or it predates a field (the model is then loaded once).
    pub fn model_info(&self) -> Option<ModelInfo> {
        let text = std::fs::read_to_string(self.dir.join("model.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn put_model_info(&self, info: &ModelInfo) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(info)?;
        let path = self.dir.join("model.json");
        Ok(crate::atomic::write_atomically(&path, |w| {
            w.write_all(text.as_bytes())
        })?)
    }
}

fn encode(record: &PromptRecord) -> anyhow::Result<Vec<u8>> {
    let header = Header {
        prompt: record.prompt,
        n_tokens: record.n_tokens,
        token_spans: record
            .token_spans
            .iter()
            .map(|(name, r)| (name.clone(), r.start, r.end))
            .collect(),
        span_lengths: record.span_lengths,
        generated: record.generated.clone(),
        embedding: record.embedding.len(),
        attention: record.attention_mass.as_ref().map(Vec::len),
        last_state: record.last_state.as_ref().map(Vec::len),
        answer_logprobs: record.answer_logprobs,
        answer_gaps: record.answer_gaps.len(),
    };
    let json = serde_json::to_vec(&header)?;
    let mut out = Vec::with_capacity(16 + json.len() + 4 * record.embedding.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for x in record
        .embedding
        .iter()
        .chain(record.attention_mass.iter().flatten())
        .chain(record.last_state.iter().flatten())
        .chain(&record.answer_gaps)
    {
        out.extend_from_slice(&x.to_le_bytes());
    }
    Ok(out)
}

fn decode(bytes: &[u8], experiment: &Experiment, index: usize) -> Option<PromptRecord> {
    let mut input = bytes;
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).ok()?;
    if &magic != MAGIC {
        return None;
    }
    let mut len = [0u8; 8];
    input.read_exact(&mut len).ok()?;
    let len = usize::try_from(u64::from_le_bytes(len)).ok()?;
    let json = input.get(..len)?;
    let header: Header = serde_json::from_slice(json).ok()?;
    let data = &input[len..];
    let floats = header.embedding
        + header.attention.unwrap_or(0)
        + header.last_state.unwrap_or(0)
        + header.answer_gaps;
    if data.len() != 4 * floats {
        return None;
    }
    let values: Vec<f32> = data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (embedding, rest) = values.split_at(header.embedding);
    let (attention, rest) = rest.split_at(header.attention.unwrap_or(0));
    let (last_state, answer_gaps) = rest.split_at(header.last_state.unwrap_or(0));
    let prompt = experiment.prompts.get(index)?;
    let task = &experiment.tasks[prompt.task];
    let score = scoring::score(
        task.scoring,
        &task.instances[prompt.target],
        &header.generated,
    );
    Some(PromptRecord {
        prompt: index,
        n_tokens: header.n_tokens,
        token_spans: header
            .token_spans
            .into_iter()
            .map(|(name, start, end)| (name, start..end))
            .collect(),
        embedding: embedding.to_vec(),
        attention_mass: header.attention.map(|_| attention.to_vec()),
        span_lengths: header.span_lengths,
        generated: header.generated,
        answer_gaps: answer_gaps.to_vec(),
        score,
        last_state: header.last_state.map(|_| last_state.to_vec()),
        answer_logprobs: header.answer_logprobs,
    })
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};
    use crate::experiment::{scoring, Experiment};
    use crate::study::PromptRecord;

    /// A record of prompt 1 of `experiment` with every optional part.
    fn record(experiment: &Experiment, answer_gaps: Vec<f32>) -> PromptRecord {
        let p = &experiment.prompts[1];
        let task = &experiment.tasks[p.task];
        let generated = " 17\n".to_string();
        PromptRecord {
            prompt: 1,
            n_tokens: 42,
            token_spans: vec![("query".into(), 30..41)],
            embedding: vec![0.5, -1.25, 3.0e-8],
            attention_mass: Some(vec![0.25, 0.75]),
            span_lengths: Some((11, 4)),
            score: scoring::score(task.scoring, &task.instances[p.target], &generated),
            generated,
            answer_gaps,
            last_state: Some(vec![-7.5, 1.0e30]),
            answer_logprobs: Some((-0.125, -2.5)),
        }
    }

    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn a_record_comes_back_with_its_answer_gaps_bit_for_bit() {
        let experiment = Experiment::preset("linear-regression").expect("preset");
        // Gaps that a decimal round trip could bend: the smallest
        // subnormal, a tie, a value with all 24 bits, an infinite gap (a
        // vocabulary of one) and the largest float.
        let gaps = vec![
            f32::from_bits(1),
            0.0,
            0.1,
            std::f32::consts::PI / 7.0,
            f32::INFINITY,
            f32::MAX,
        ];
        let original = record(&experiment, gaps.clone());
        let decoded = decode(
            &encode(&original).expect("encode"),
            &experiment,
            original.prompt,
        )
        .expect("decode");
        assert_eq!(bits(&decoded.answer_gaps), bits(&gaps));
        assert_eq!(decoded, original);
    }

    #[test]
    fn a_record_without_patching_or_gaps_comes_back_whole() {
        let experiment = Experiment::preset("linear-regression").expect("preset");
        let original = PromptRecord {
            attention_mass: None,
            span_lengths: None,
            last_state: None,
            answer_logprobs: None,
            ..record(&experiment, Vec::new())
        };
        let decoded = decode(
            &encode(&original).expect("encode"),
            &experiment,
            original.prompt,
        )
        .expect("decode");
        assert_eq!(decoded, original);
    }

    #[test]
    fn a_record_cut_short_is_refused() {
        let experiment = Experiment::preset("linear-regression").expect("preset");
        let bytes = encode(&record(&experiment, vec![0.5, 2.0])).expect("encode");
        assert!(decode(&bytes[..bytes.len() - 4], &experiment, 0).is_none());
    }
}
