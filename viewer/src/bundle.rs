//! The report bundle: one zstd-compressed safetensors file holding every
//! array a report shows, with a JSON manifest in the safetensors metadata.
//!
//! Defined once, here: the engine writes it, the browser viewer and
//! `engine inspect` read it with this same code (the pure-Rust `ruzstd`
//! decoder, which builds for wasm32). The layout of the arrays, their names,
//! shapes and meaning are documented in `docs/bundle.md`.
//!
//! Why safetensors: it is the ecosystem's standard tensor container, so a
//! Python reader needs three lines (`zstandard` + `safetensors.numpy`).

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

/// The manifest's `format` field: what kind of file this is.
pub const FORMAT: &str = "icl-lens-report-bundle";
/// The layout version this code writes and reads. Bump it when a tensor's
/// meaning or shape changes; readers refuse other versions by name.
pub const FORMAT_VERSION: u32 = 1;
/// The safetensors metadata key holding the JSON manifest.
pub const MANIFEST_KEY: &str = "manifest";
/// The file name of a report's bundle.
pub const FILE_NAME: &str = "bundle.safetensors.zst";
/// Largest decompressed bundle accepted. A 70B-sized study (80 layers, 64
/// heads, 400 prompts per state, two tasks) is about 230 MB; the limit keeps
/// a hostile or damaged file from exhausting a browser tab's memory (wasm32
/// has 4 GiB at most).
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;
/// The four bytes every zstd frame starts with.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Why a bundle could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a report bundle: the file does not start with the zstd magic number (is it a `{FILE_NAME}` file?)")]
    BadMagic,
    #[error("the bundle is damaged or truncated: {0}")]
    Corrupt(String),
    #[error("the bundle is larger than {limit} bytes once decompressed; refusing to read it (damaged or hostile file?)")]
    TooLarge { limit: u64 },
    #[error("not a report bundle: its safetensors metadata has no `{MANIFEST_KEY}` entry")]
    NoManifest,
    #[error("the bundle's manifest is not valid: {0}")]
    BadManifest(String),
    #[error("this bundle was written in format version {found}; this viewer reads version {supported} — open it with a matching engine version, or regenerate the report")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("the bundle has no array `{0}`")]
    MissingTensor(String),
    #[error("array `{name}` has shape {found:?}; expected {expected}")]
    BadShape {
        name: String,
        found: Vec<usize>,
        expected: String,
    },
    #[error("cannot write the bundle: {0}")]
    Write(String),
}

/// One array, always little-endian f32 (NaN marks "no value").
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` filled with NaN.
    pub fn nan(shape: &[usize]) -> Tensor {
        Tensor {
            shape: shape.to_vec(),
            data: vec![f32::NAN; shape.iter().product()],
        }
    }

    /// Row-major offset of `index` (same length as the shape).
    ///
    /// # Panics
    /// When the index has the wrong rank or is out of bounds (a programming
    /// error: shapes are checked when a bundle is opened).
    pub fn offset(&self, index: &[usize]) -> usize {
        assert_eq!(index.len(), self.shape.len(), "tensor index rank");
        let mut offset = 0;
        for (&i, &n) in index.iter().zip(&self.shape) {
            assert!(i < n, "tensor index {i} out of bounds {n}");
            offset = offset * n + i;
        }
        offset
    }

    pub fn get(&self, index: &[usize]) -> f64 {
        f64::from(self.data[self.offset(index)])
    }

    pub fn set(&mut self, index: &[usize], value: f64) {
        let offset = self.offset(index);
        self.data[offset] = value as f32;
    }

    /// The contiguous block of the remaining axes at `prefix` (the leading
    /// indices): with all but the last index, one run of the last axis.
    ///
    /// # Panics
    /// When the prefix is longer than the shape or out of bounds.
    pub fn lane(&self, prefix: &[usize]) -> &[f32] {
        let (start, len) = self.block(prefix);
        &self.data[start..start + len]
    }

    pub fn lane_mut(&mut self, prefix: &[usize]) -> &mut [f32] {
        let (start, len) = self.block(prefix);
        &mut self.data[start..start + len]
    }

    fn block(&self, prefix: &[usize]) -> (usize, usize) {
        assert!(prefix.len() <= self.shape.len(), "tensor prefix rank");
        let rest = &self.shape[prefix.len()..];
        let len: usize = rest.iter().product();
        let mut offset = 0;
        for (&i, &n) in prefix.iter().zip(&self.shape) {
            assert!(i < n, "tensor index {i} out of bounds {n}");
            offset = offset * n + i;
        }
        (offset * len, len)
    }
}

/// Everything needed to read the arrays and to reproduce the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub engine_version: String,
    /// Git revision of the engine's checkout, when known.
    pub engine_revision: Option<String>,
    /// The day the report was made (`SOURCE_DATE_EPOCH` when set, so that
    /// rebuilding a report reproduces the bundle byte for byte).
    pub created: String,
    pub title: String,
    /// llama.cpp's build as the engine linked it (version, commit, backends).
    pub llama_cpp: String,
    pub seed: u64,
    /// The fully resolved experiment (every option, defaults filled in).
    pub experiment: serde_json::Value,
    /// Rank comparators of the RSA, in the order of the `alignment` arrays;
    /// the first is the headline one.
    pub comparators: Vec<String>,
    pub models: Vec<ModelEntry>,
    pub tasks: Vec<TaskEntry>,
    pub prompts: Vec<PromptEntry>,
    /// The top-two logit gap below which an answer's greedy choice is a
    /// near-tie (the `answer_gap` arrays); absent in older bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_tie_gap: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEntry {
    /// Short name used in array names and figure titles (unique).
    pub name: String,
    pub file_name: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub architecture: String,
    /// llama.cpp's description, e.g. "llama ?B Q4_1".
    pub description: String,
    pub quantization: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Block indices analysed: the `layer` axis of every array of this model.
    pub layers: Vec<usize>,
    /// How its attention was read: `recomputed` (from the RoPE'd queries
    /// and keys) or `materialized` (llama.cpp's own probabilities, flash
    /// attention off). Absent in bundles written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_path: Option<String>,
    /// The chat template every prompt was rendered through, when one was;
    /// absent for plain-text prompts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<ChatEntry>,
    /// What `engine report --check-rounding` found, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounding_check: Option<RoundingEntry>,
}

/// A sample of prompts rerun with the other attention setting (flash
/// attention on ↔ off, a change of rounding only), against the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundingEntry {
    /// e.g. "flash attention off instead of auto".
    pub other_setting: String,
    pub prompts: usize,
    pub answers_changed: usize,
    pub scores_changed: usize,
    /// The largest relative change of a pooled hidden state.
    pub largest_embedding_change: f64,
    /// The largest relative change of an attention mass, when compared.
    pub largest_attention_change: Option<f64>,
}

/// How the prompts of a chat model were rendered: each prompt one user
/// turn through `template`, the assistant's turn opened for the answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatEntry {
    /// `model` (the template in the model's GGUF) or `experiment` (the
    /// experiment's `capture.chat_template`).
    pub origin: String,
    pub template: String,
    /// What the template printed as `bos_token` and `eos_token`.
    pub bos_token: String,
    pub eos_token: String,
    /// The tokenizer adds BOS itself (a BOS the template printed first was dropped).
    pub tokenizer_adds_bos: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEntry {
    pub name: String,
    pub kind: String,
    /// Demonstrations in the k-shot prompts; the `state` axis is `[0, shots]`.
    pub shots: usize,
    pub conditions: Vec<String>,
    /// Condition of every target, in the order of the `target` axis.
    pub target_conditions: Vec<usize>,
    pub hypotheses: Vec<String>,
    pub probes: Vec<ProbeEntry>,
    /// `(relevant, distractor)` segment names when the task measures attention.
    pub attention: Option<(String, String)>,
    pub behavior: BehaviorEntry,
    /// Names of the representation measures correlated with behaviour, in
    /// the order of the `correlation` arrays.
    pub measures: Vec<String>,
    /// The ICL-patching analysis of the task ("Putting the in-context state
    /// back"), when it ran; absent in bundles written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patching: Option<PatchingEntry>,
    /// k-shot prompts per target, one per demonstration draw and order
    /// (`[robustness]`): the `draw` axis of `alignment_draws`. Left out for
    /// one draw, so that single-draw bundles keep their bytes.
    #[serde(default = "one_draw", skip_serializing_if = "is_one_draw")]
    pub draws: usize,
    /// The headline findings compared across draws, when there are several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub robustness: Option<RobustnessEntry>,
}

/// What the `robustness` arrays of a task hold: one row per headline
/// finding, [`ROBUSTNESS_FIELDS`] then the value in each draw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RobustnessEntry {
    /// Model name → its findings, in the order of its array's rows (each
    /// says where it was read, such as "at layer 12").
    pub findings: BTreeMap<String, Vec<String>>,
    /// Confidence level of the between-draw and within-draw intervals.
    pub confidence: f64,
}

/// The first fields of a `robustness` row; the draws' values follow.
/// `within_*` are the within-draw bootstrap interval's ends averaged over
/// draws (NaN where the finding has none); `sign_kept` is 1 when every draw
/// has the same sign.
pub const ROBUSTNESS_FIELDS: [&str; 8] = [
    "mean",
    "min",
    "max",
    "between_low",
    "between_high",
    "within_low",
    "within_high",
    "sign_kept",
];

fn one_draw() -> usize {
    1
}

fn is_one_draw(draws: &usize) -> bool {
    *draws == 1
}

fn is_first_draw(draw: &usize) -> bool {
    *draw == 0
}

/// What the `patching*` arrays of a task hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchingEntry {
    /// The `method` axis: `replace` (the target's own k-shot state written
    /// over its 0-shot state), `replace-control` (the k-shot state of a
    /// target of another condition), `task-vector` (the leave-one-out mean
    /// of k-shot − 0-shot added, times `scale`), `task-vector-control` (a
    /// random vector of the task vector's norm added).
    pub methods: Vec<String>,
    /// The `measure` axis: `first_token_logprob` and `answer_logprob`
    /// (teacher-forced log-probability of the correct answer's first token
    /// that is not only whitespace, and of the whole answer, natural log), then `behavior` (the greedy
    /// answer scored as the task's `behavior` array is; NaN where no greedy
    /// answer was generated).
    pub measures: Vec<String>,
    /// Model name → the block indices patched: the `layer` axis of that
    /// model's `patching` and `patching_recovery` arrays.
    pub layers: BTreeMap<String, Vec<usize>>,
    /// The factor the task vector is multiplied by.
    pub scale: f64,
    /// Confidence level of the recovery intervals.
    pub confidence: f64,
}

/// The `patching` methods, in the order of the `method` axis.
pub const PATCHING_METHODS: [&str; 4] = [
    "replace",
    "replace-control",
    "task-vector",
    "task-vector-control",
];

/// The `patching` measures, in the order of the `measure` axis.
pub const PATCHING_MEASURES: [&str; 3] = ["first_token_logprob", "answer_logprob", "behavior"];

/// The last axis of `patching_recovery`.
pub const RECOVERY_FIELDS: [&str; 6] = [
    "fraction",
    "ci_low",
    "ci_high",
    "mean_patched",
    "mean_zero_shot",
    "mean_k_shot",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeEntry {
    pub param: String,
    /// "ridge" or "logistic".
    pub probe: String,
    /// "r2" or "accuracy".
    pub metric: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviorEntry {
    /// What a behaviour value is, e.g. "absolute error" or "correct".
    pub metric: String,
    pub higher_is_better: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptEntry {
    pub id: usize,
    pub task: usize,
    pub target: usize,
    pub shots: usize,
    /// The demonstration draw a k-shot prompt shows (0 for the first draw
    /// and for every 0-shot prompt; then left out).
    #[serde(default, skip_serializing_if = "is_first_draw")]
    pub draw: usize,
    pub text: String,
    /// Segment name → byte ranges `[start, end)` in `text`.
    pub segments: BTreeMap<String, Vec<(usize, usize)>>,
}

/// A decoded (or to-be-written) bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Bundle {
    pub manifest: Manifest,
    pub tensors: BTreeMap<String, Tensor>,
}

impl Bundle {
    /// The uncompressed safetensors bytes (the engine compresses them).
    /// Deterministic: tensors in name order, one metadata entry.
    pub fn to_safetensors(&self) -> Result<Vec<u8>, BundleError> {
        let manifest =
            serde_json::to_string(&self.manifest).map_err(|e| BundleError::Write(e.to_string()))?;
        let bytes: Vec<(&String, Vec<u8>, &Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let raw: Vec<u8> = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
                (name, raw, &t.shape)
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, raw, shape)| {
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), raw)
                    .map(|view| (name.as_str(), view))
                    .map_err(|e| BundleError::Write(format!("array `{name}`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let metadata = std::collections::HashMap::from([(MANIFEST_KEY.to_string(), manifest)]);
        safetensors::serialize(views, Some(metadata)).map_err(|e| BundleError::Write(e.to_string()))
    }

    /// Decodes a compressed bundle: zstd (every frame), then safetensors,
    /// then the manifest, refusing other formats and versions.
    pub fn decode(compressed: &[u8]) -> Result<Bundle, BundleError> {
        let raw = decompress(compressed, MAX_DECOMPRESSED_BYTES)?;
        Bundle::from_safetensors(&raw)
    }

    /// Reads uncompressed safetensors bytes.
    pub fn from_safetensors(raw: &[u8]) -> Result<Bundle, BundleError> {
        let (_, metadata) = safetensors::SafeTensors::read_metadata(raw)
            .map_err(|e| BundleError::Corrupt(format!("safetensors header: {e}")))?;
        let manifest_json = metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(MANIFEST_KEY))
            .ok_or(BundleError::NoManifest)?;
        let manifest = parse_manifest(manifest_json)?;
        let tensors = safetensors::SafeTensors::deserialize(raw)
            .map_err(|e| BundleError::Corrupt(format!("safetensors: {e}")))?;
        let mut out = BTreeMap::new();
        for (name, view) in tensors.iter() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(BundleError::Corrupt(format!(
                    "array `{name}` is {:?}; bundles hold f32 only",
                    view.dtype()
                )));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.insert(
                name.to_string(),
                Tensor {
                    shape: view.shape().to_vec(),
                    data,
                },
            );
        }
        Ok(Bundle {
            manifest,
            tensors: out,
        })
    }

    /// The array `name`, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<&Tensor, BundleError> {
        self.tensors
            .get(name)
            .ok_or_else(|| BundleError::MissingTensor(name.to_string()))
    }

    /// The array `name`, checked to have `shape`.
    pub fn tensor_shaped(&self, name: &str, shape: &[usize]) -> Result<&Tensor, BundleError> {
        let t = self.tensor(name)?;
        if t.shape != shape {
            return Err(BundleError::BadShape {
                name: name.to_string(),
                found: t.shape.clone(),
                expected: format!("{shape:?}"),
            });
        }
        Ok(t)
    }
}

/// Checks format and version before reading the rest, so that a future
/// bundle is refused with its version rather than a confusing field error.
fn parse_manifest(json: &str) -> Result<Manifest, BundleError> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| BundleError::BadManifest(e.to_string()))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(BundleError::BadManifest(format!(
            "its format is not `{FORMAT}`"
        )));
    }
    let version = value
        .get("version")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| BundleError::BadManifest("it has no version".into()))?;
    if version != u64::from(FORMAT_VERSION) {
        return Err(BundleError::UnsupportedVersion {
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
        });
    }
    serde_json::from_value(value).map_err(|e| BundleError::BadManifest(e.to_string()))
}

/// Decompresses every zstd frame of `compressed`, refusing more than
/// `limit` bytes of output.
pub fn decompress(compressed: &[u8], limit: u64) -> Result<Vec<u8>, BundleError> {
    if compressed.len() < 4 || compressed[..4] != ZSTD_MAGIC {
        return Err(BundleError::BadMagic);
    }
    let mut input = compressed;
    let mut out = Vec::new();
    // ruzstd's streaming decoder reads one frame; concatenated frames are
    // legal zstd, so loop until the input is used up.
    while !input.is_empty() {
        let decoder = ruzstd::decoding::StreamingDecoder::new(&mut input)
            .map_err(|e| BundleError::Corrupt(format!("zstd frame header: {e}")))?;
        let remaining = limit.saturating_sub(out.len() as u64);
        let read = decoder
            .take(remaining + 1)
            .read_to_end(&mut out)
            .map_err(|e| BundleError::Corrupt(format!("zstd data: {e}")))?;
        if out.len() as u64 > limit {
            return Err(BundleError::TooLarge { limit });
        }
        if read == 0 && !input.is_empty() && input.len() < 4 {
            return Err(BundleError::Corrupt(
                "trailing bytes after the last frame".into(),
            ));
        }
    }
    Ok(out)
}

/// Array names: `{model}/{task}/{array}` for per-model arrays and
/// `{task}/{array}` for arrays shared by the models.
pub fn model_array(model: &str, task: &str, array: &str) -> String {
    format!("{model}/{task}/{array}")
}

pub fn task_array(task: &str, array: &str) -> String {
    format!("{task}/{array}")
}

/// Number of entries in the strict upper triangle of an `n × n` matrix.
pub fn upper_len(n: usize) -> usize {
    n * n.saturating_sub(1) / 2
}

/// Position of `(i, j)`, `i < j`, in the row-major strict upper triangle.
pub fn upper_index(n: usize, i: usize, j: usize) -> usize {
    debug_assert!(i < j && j < n);
    i * (2 * n - i - 1) / 2 + (j - i - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            engine_version: "0.1.0".into(),
            engine_revision: None,
            created: "2026-11-26".into(),
            title: "test".into(),
            llama_cpp: "b0".into(),
            seed: 7,
            experiment: serde_json::json!({"name": "test"}),
            comparators: vec!["spearman".into()],
            models: vec![],
            tasks: vec![],
            prompts: vec![],
            near_tie_gap: None,
        }
    }

    fn bundle() -> Bundle {
        let mut tensors = BTreeMap::new();
        tensors.insert(
            "m/t/rsm".to_string(),
            Tensor {
                shape: vec![2, 3],
                data: vec![1.0, 2.0, f32::NAN, -4.0, 5.5, 0.0],
            },
        );
        Bundle {
            manifest: manifest(),
            tensors,
        }
    }

    fn compress(raw: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(raw, ruzstd::encoding::CompressionLevel::Fastest)
    }

    #[test]
    fn a_bundle_survives_a_round_trip() {
        let b = bundle();
        let decoded =
            Bundle::decode(&compress(&b.to_safetensors().expect("writes"))).expect("reads");
        assert_eq!(decoded.manifest, b.manifest);
        let t = decoded.tensor("m/t/rsm").expect("present");
        assert_eq!(t.shape, vec![2, 3]);
        assert!(t.data[2].is_nan());
        assert_eq!(t.get(&[1, 1]), 5.5);
    }

    #[test]
    fn writing_is_deterministic() {
        let a = bundle().to_safetensors().expect("writes");
        let b = bundle().to_safetensors().expect("writes");
        assert_eq!(a, b);
    }

    #[test]
    fn concatenated_frames_are_all_read() {
        let raw = bundle().to_safetensors().expect("writes");
        let (first, second) = raw.split_at(raw.len() / 2);
        let mut two = compress(first);
        two.extend(compress(second));
        assert_eq!(
            decompress(&two, MAX_DECOMPRESSED_BYTES).expect("reads"),
            raw
        );
    }

    #[test]
    fn a_file_that_is_not_zstd_is_refused_by_magic() {
        let err = Bundle::decode(b"<html>not a bundle</html>").expect_err("refused");
        assert!(matches!(err, BundleError::BadMagic), "{err}");
    }

    #[test]
    fn a_truncated_bundle_is_a_clear_error() {
        let full = compress(&bundle().to_safetensors().expect("writes"));
        for cut in [5, full.len() / 2, full.len() - 1] {
            let err = Bundle::decode(&full[..cut]).expect_err("refused");
            assert!(
                matches!(err, BundleError::Corrupt(_)),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn an_oversized_bundle_is_refused_before_it_is_all_decompressed() {
        let zeros = vec![0u8; 1 << 20];
        let err = decompress(&compress(&zeros), 1000).expect_err("refused");
        assert!(
            matches!(err, BundleError::TooLarge { limit: 1000 }),
            "{err}"
        );
    }

    #[test]
    fn a_future_version_is_refused_naming_both_versions() {
        let mut b = bundle();
        b.manifest.version = FORMAT_VERSION + 1;
        let err =
            Bundle::decode(&compress(&b.to_safetensors().expect("writes"))).expect_err("refused");
        let message = err.to_string();
        assert!(matches!(err, BundleError::UnsupportedVersion { .. }));
        assert!(
            message.contains(&format!("version {}", FORMAT_VERSION + 1)),
            "{message}"
        );
        assert!(
            message.contains(&format!("version {FORMAT_VERSION}")),
            "{message}"
        );
    }

    #[test]
    fn upper_triangle_indices_are_row_major() {
        let n = 5;
        let mut k = 0;
        for i in 0..n {
            for j in i + 1..n {
                assert_eq!(upper_index(n, i, j), k);
                k += 1;
            }
        }
        assert_eq!(k, upper_len(n));
    }
}
