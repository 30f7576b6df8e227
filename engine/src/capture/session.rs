//! Loading a model and running prompts through one reusable context.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::architectures::{attention_recipe, AttentionPlan, AttentionRecipe, RecipeInputs};
use super::llama::{self, FlashAttention, LlamaContext, LlamaModel, RawContextParams, Transfers};
use super::observer::{CaptureObserver, Dims, PrefixKeyRecorder, Recompute};
use super::request::{Activations, AttentionPath, CaptureRequest, F32Array, HiddenRequest};

/// Everything that can go wrong between a model path and captured numbers.
/// Each message names the thing and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("model file `{path}` does not exist{hint}")]
    ModelNotFound { path: PathBuf, hint: String },
    #[error(
        "model path `{0}` is a directory, not a file: pass the .gguf file inside it with --model"
    )]
    ModelIsDirectory(PathBuf),
    #[error("cannot read model file `{path}`: {source}")]
    ModelUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file `{path}` is not a GGUF file ({found}): pass a .gguf model with --model (convert other formats with llama.cpp's convert_hf_to_gguf.py)")]
    NotGguf { path: PathBuf, found: String },
    #[error("model file `{path}` has a damaged GGUF header ({reason}): download the model again")]
    CorruptGguf { path: PathBuf, reason: String },
    #[error("model file `{path}` is truncated: it has {len} bytes but its header lists tensors up to byte {expected}; the download or copy was cut short, fetch it again")]
    TruncatedGguf {
        path: PathBuf,
        len: u64,
        expected: u64,
    },
    #[error("model file `{path}` uses the architecture `{architecture}`, which this llama.cpp build (llama-cpp-sys-2 {version}) cannot run: use a model of a supported architecture, or an engine built on a newer llama.cpp")]
    UnsupportedArchitecture {
        path: PathBuf,
        architecture: String,
        version: &'static str,
    },
    #[error("llama.cpp could not load `{path}`: {reason}")]
    LoadFailed { path: PathBuf, reason: String },
    #[error("llama.cpp could not create a context of {n_ctx} tokens: {reason}; try a smaller --ctx-size")]
    ContextFailed { n_ctx: u32, reason: String },
    #[error("--n-gpu-layers {0} asks for GPU offload, but this engine was built without GPU support: rebuild with `--features cuda`, or drop the flag")]
    NoGpuSupport(i32),
    #[error("--n-gpu-layers {n_gpu_layers} asks for GPU offload, but this CUDA build of the engine finds no GPU here ({reason}): check that `nvidia-smi` lists one and that CUDA_VISIBLE_DEVICES does not hide it, or drop the flag to run on the CPU")]
    NoGpuFound { n_gpu_layers: i32, reason: String },
    #[error("`{path}` holds {weights_gb:.1} GB of weights and --n-gpu-layers {n_gpu_layers} puts them all on the GPU, but {have} only {free_gb:.1} GB free ({gpus}): pass --n-gpu-layers N to keep part of the model on the CPU (each layer takes about 1/(layers + 1) of the weights), or use a smaller quantization of the model")]
    GpuTooSmall {
        path: String,
        weights_gb: f64,
        n_gpu_layers: i32,
        gpus: String,
        have: &'static str,
        free_gb: f64,
    },
    #[error("this engine's llama.cpp was compiled for CPU features this machine lacks ({0}); rebuild it here: `cargo clean -p llama-cpp-sys-2 && cargo build --release` without GGML_AVX512 set")]
    CpuUnsupported(String),
    #[error("the prompt is empty: give some text with --prompt or --prompt-file")]
    EmptyPrompt,
    #[error("the prompt is {tokens} tokens long but the context holds {n_ctx}: pass a larger --ctx-size (at most the model's {n_ctx_train}) or shorten the prompt")]
    PromptTooLong {
        tokens: usize,
        n_ctx: usize,
        n_ctx_train: usize,
    },
    #[error("{0}")]
    ExperimentTooLong(String),
    #[error("could not tokenize the prompt: {0}")]
    Tokenize(String),
    #[error("the capture request does not fit the prompt: {0}")]
    BadRequest(String),
    #[error("recomputed attention is only verified for the architectures {supported}, and this model is `{architecture}`: pass --flash-attn off to read llama.cpp's attention directly")]
    RecomputeUnsupported {
        architecture: String,
        supported: String,
    },
    #[error(transparent)]
    FlashAttentionRefused(#[from] super::architectures::FlashAttentionRefused),
    #[error("model file `{path}` (architecture `{architecture}`) has no {missing}, which the engine captures: llama.cpp names this architecture's tensors differently, so it cannot be studied with this engine yet (report the architecture, with the model's name, to the engine's maintainers)")]
    TensorsMissing {
        path: PathBuf,
        architecture: String,
        missing: String,
    },
    #[error("llama.cpp failed while running the prompt: {0}")]
    Decode(String),
}

impl CaptureError {
    /// Whether the error is the user's input (exit code 2) rather than a fault.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            CaptureError::Decode(_) | CaptureError::ContextFailed { .. }
        )
    }
}

/// Why `--n-gpu-layers` cannot work with these GPUs, checked before llama.cpp
/// tries (it may abort the process when an allocation fails): every layer
/// on the GPU (`-1`, or more layers than any model has) with more bytes of
/// weights than all the GPUs have free. Partial offload is left to
/// llama.cpp, which needs the model's layer count to place it.
pub(crate) fn gpu_too_small(
    path: &Path,
    weights: u64,
    n_gpu_layers: i32,
    gpus: &[llama::GpuMemory],
) -> Option<CaptureError> {
    /// More layers than any llama.cpp model has (Llama-2 70B: 80 blocks):
    /// llama.cpp then offloads every layer, as with -1.
    const EVERY_LAYER: i32 = 1000;
    let everything = !(0..EVERY_LAYER).contains(&n_gpu_layers);
    if !everything || gpus.is_empty() {
        return None;
    }
    let free: u64 = gpus.iter().map(|g| g.free).sum();
    (weights > free).then(|| {
        let names: Vec<String> = gpus
            .iter()
            .map(|g| {
                format!(
                    "{}: {:.1} of {:.1} GB",
                    g.description,
                    g.free as f64 / 1e9,
                    g.total as f64 / 1e9
                )
            })
            .collect();
        CaptureError::GpuTooSmall {
            path: path.display().to_string(),
            weights_gb: weights as f64 / 1e9,
            n_gpu_layers,
            gpus: names.join(", "),
            have: if gpus.len() == 1 {
                "the GPU has"
            } else {
                "the GPUs have"
            },
            free_gb: free as f64 / 1e9,
        }
    })
}

/// The recipe of a capture that recomputes nothing.
const NO_RECIPE: AttentionRecipe = AttentionRecipe {
    q_scale: None,
    kq_scale: None,
    soft_cap: None,
    sliding_window: None,
};

/// Where and how to load a model.
#[derive(Debug, Clone)]
pub struct ModelOptions {
    pub path: PathBuf,
    /// Layers to offload to the GPU (0 = CPU only, -1 = all).
    pub n_gpu_layers: i32,
}

/// What a loaded model is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub file_len: u64,
    pub gguf_version: u32,
    pub architecture: String,
    pub description: String,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub adds_bos: bool,
    /// Whether the engine can recompute this model's attention (its
    /// architecture is verified and its metadata says how).
    pub recomputable: bool,
    /// The chat template in the GGUF (`tokenizer.chat_template`), if any.
    pub chat_template: Option<String>,
    /// The text of the begin- and end-of-sequence tokens (what a chat
    /// template prints as `bos_token` and `eos_token`).
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
}

impl ModelInfo {
    /// The attention plan of this model when the user asked for
    /// `flash_attention` ([`super::plan_attention`], which this follows
    /// unless the file's metadata leaves the recomputation unknown).
    pub fn plan_attention(
        &self,
        flash_attention: FlashAttention,
    ) -> Result<AttentionPlan, CaptureError> {
        let plan = super::architectures::plan_attention(&self.architecture, flash_attention)?;
        if plan.path == AttentionPath::Recomputed && !self.recomputable {
            if flash_attention == FlashAttention::On {
                return Err(super::architectures::FlashAttentionRefused {
                    architecture: self.architecture.clone(),
                }
                .into());
            }
            return Ok(AttentionPlan {
                path: AttentionPath::Materialized,
                flash_attention: FlashAttention::Off,
                reason: format!(
                    "`{}`: llama.cpp's own attention probabilities, flash attention off (this file's sliding-window metadata is not one the engine can repeat)",
                    self.architecture
                ),
            });
        }
        Ok(plan)
    }
}

/// A loaded model.
#[derive(Debug)]
pub struct Model {
    inner: LlamaModel,
    info: ModelInfo,
    /// How llama.cpp scores attention, where the engine recomputes it.
    recipe: Option<AttentionRecipe>,
}

impl Model {
    /// Checks the file, then loads it with llama.cpp.
    pub fn load(options: &ModelOptions) -> Result<Model, CaptureError> {
        let path = options.path.clone();
        if options.n_gpu_layers != 0 && !llama::supports_gpu_offload() {
            return Err(if cfg!(feature = "cuda") {
                CaptureError::NoGpuFound {
                    n_gpu_layers: options.n_gpu_layers,
                    reason: no_gpu_reason(llama::gpu_init_failure()),
                }
            } else {
                CaptureError::NoGpuSupport(options.n_gpu_layers)
            });
        }
        let missing = super::cpu::missing_features(&llama::llama_build_info());
        if !missing.is_empty() {
            return Err(CaptureError::CpuUnsupported(missing.join(", ")));
        }
        let summary = check_gguf_file(&path)?;
        let file_len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        // Asking a GPU for its memory starts its driver: only when offloading.
        if options.n_gpu_layers != 0 {
            if let Some(refusal) = gpu_too_small(
                &path,
                summary.expected_len,
                options.n_gpu_layers,
                &llama::gpu_memory(),
            ) {
                return Err(refusal);
            }
        }
        let inner = LlamaModel::load(&path, options.n_gpu_layers).map_err(|problems| {
            let unknown_arch = problems
                .iter()
                .any(|p| p.contains("unknown model architecture"));
            match (&summary.architecture, unknown_arch) {
                (Some(architecture), true) => CaptureError::UnsupportedArchitecture {
                    path: path.clone(),
                    architecture: architecture.clone(),
                    version: llama::LLAMA_SYS_VERSION,
                },
                _ => CaptureError::LoadFailed {
                    path: path.clone(),
                    reason: problems.last().cloned().unwrap_or_else(|| {
                        "no reason given (run with -v for llama.cpp's log)".into()
                    }),
                },
            }
        })?;
        let dims = inner.dims();
        let architecture = summary
            .architecture
            .clone()
            .unwrap_or_else(|| "unknown".to_string());
        let meta = |key: &str| inner.meta(key);
        let (bos, eos) = inner.bos_eos();
        let recipe = attention_recipe(&RecipeInputs {
            architecture: &architecture,
            n_layer: dims.n_layer,
            n_embd: dims.n_embd,
            n_head: dims.n_head,
            meta: &meta,
        });
        match &recipe {
            Some(r) => tracing::info!(
                "{architecture}: llama.cpp scores attention as q × {} · k, times {}, soft-cap {}, \
                 sliding window {} (what a recomputation repeats)",
                r.q_scale.map_or("1".to_string(), |s| s.to_string()),
                r.kq_scale.map_or("1/√head_dim".to_string(), |s| s.to_string()),
                r.soft_cap.map_or("none".to_string(), |c| c.to_string()),
                r.sliding_window.as_ref().map_or("none".to_string(), |w| format!(
                    "{} tokens on layers {:?}",
                    w.window,
                    (0..dims.n_layer).filter(|&il| w.applies_to(il)).collect::<Vec<_>>()
                )),
            ),
            None => tracing::info!(
                "{architecture}: the engine does not recompute this architecture's attention; it reads llama.cpp's softmax"
            ),
        }
        let info = ModelInfo {
            path,
            file_len,
            gguf_version: summary.version,
            description: inner.description(),
            architecture,
            n_layer: dims.n_layer,
            n_embd: dims.n_embd,
            n_head: dims.n_head,
            n_head_kv: dims.n_head_kv,
            n_vocab: dims.n_vocab,
            n_ctx_train: dims.n_ctx_train,
            adds_bos: dims.add_bos,
            recomputable: recipe.is_some(),
            chat_template: inner.meta("tokenizer.chat_template"),
            bos_token: bos.map(|t| String::from_utf8_lossy(&inner.token_bytes(t)).into_owned()),
            eos_token: eos.map(|t| String::from_utf8_lossy(&inner.token_bytes(t)).into_owned()),
        };
        Ok(Model {
            inner,
            info,
            recipe,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Tokenizes text as the model expects (its own BOS rule). With
    /// `parse_special`, text such as `<|im_start|>` becomes special tokens.
    pub fn tokenize(&self, text: &str, parse_special: bool) -> Result<Vec<i32>, CaptureError> {
        if text.is_empty() {
            return Err(CaptureError::EmptyPrompt);
        }
        self.inner
            .tokenize(text, true, parse_special)
            .map_err(CaptureError::Tokenize)
    }

    /// Tokenizes text that continues a prompt (an answer): no BOS, and
    /// special-token text stays plain text.
    pub fn tokenize_continuation(&self, text: &str) -> Result<Vec<i32>, CaptureError> {
        if text.is_empty() {
            return Err(CaptureError::EmptyPrompt);
        }
        self.inner
            .tokenize(text, false, false)
            .map_err(CaptureError::Tokenize)
    }

    /// The index of the first token of `answer` that is not only
    /// whitespace (0 when all are): the token whose log-probability says
    /// which answer the model gives. Tokenizers that split numbers into
    /// digits start ` 23` with a lone space, which every answer shares.
    pub fn first_content_token(&self, answer: &[i32]) -> usize {
        answer
            .iter()
            .position(|&t| {
                !self
                    .inner
                    .token_bytes(t)
                    .iter()
                    .all(u8::is_ascii_whitespace)
            })
            .unwrap_or(0)
    }

    /// The raw bytes of a token (may hold part of a UTF-8 character).
    pub fn token_bytes(&self, token: i32) -> Vec<u8> {
        self.inner.token_bytes(token)
    }

    /// A token's text, with invalid UTF-8 replaced.
    pub fn token_text(&self, token: i32) -> String {
        String::from_utf8_lossy(&self.inner.token_bytes(token)).into_owned()
    }

    /// The text of a token sequence (bytes joined before decoding UTF-8, so
    /// characters split across tokens come out whole).
    pub fn detokenize(&self, tokens: &[i32]) -> String {
        let bytes: Vec<u8> = tokens
            .iter()
            .flat_map(|&t| self.inner.token_bytes(t))
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn is_end_of_generation(&self, token: i32) -> bool {
        self.inner.is_end_of_generation(token)
    }

    pub(super) fn llama(&self) -> &LlamaModel {
        &self.inner
    }

    fn recipe(&self) -> Result<&AttentionRecipe, CaptureError> {
        self.recipe
            .as_ref()
            .ok_or_else(|| CaptureError::RecomputeUnsupported {
                architecture: self.info.architecture.clone(),
                supported: super::architectures::recomputed_list(),
            })
    }
}

/// The architecture a GGUF file names (`general.architecture`), read from
/// its header alone; `None` when the file cannot be read as GGUF (loading
/// it then says why).
pub fn model_architecture(path: &Path) -> Option<String> {
    check_gguf_file(path).ok()?.architecture
}

/// Why a CUDA build has no GPU, from what CUDA said when it started (the
/// driver is loaded at run time, so a machine without one gets this too).
fn no_gpu_reason(cuda: Option<String>) -> String {
    match cuda {
        Some(reason) if reason.contains("driver version is insufficient") => format!(
            "CUDA says \"{reason}\": the NVIDIA driver is missing, or older than this engine's CUDA"
        ),
        Some(reason) => format!("CUDA says \"{reason}\""),
        None => "llama.cpp's CUDA backend lists no device".to_string(),
    }
}

/// Checks that `path` is a complete GGUF file before llama.cpp sees it, so
/// that each problem gets its own clear message.
fn check_gguf_file(path: &Path) -> Result<llama::GgufSummary, CaptureError> {
    let meta = std::fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => CaptureError::ModelNotFound {
            path: path.to_path_buf(),
            hint: String::new(),
        },
        _ => CaptureError::ModelUnreadable {
            path: path.to_path_buf(),
            source,
        },
    })?;
    if meta.is_dir() {
        return Err(CaptureError::ModelIsDirectory(path.to_path_buf()));
    }
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|source| CaptureError::ModelUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let n = read_up_to(&mut file, &mut magic).map_err(|source| CaptureError::ModelUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    if n < 4 || &magic != b"GGUF" {
        let found = match n {
            0 => "the file is empty".to_string(),
            1..=3 => format!("the file has only {n} bytes"),
            _ => format!(
                "it starts with {:?}, not \"GGUF\"",
                String::from_utf8_lossy(&magic)
            ),
        };
        return Err(CaptureError::NotGguf {
            path: path.to_path_buf(),
            found,
        });
    }
    let summary = llama::read_gguf_summary(path).map_err(|problems| CaptureError::CorruptGguf {
        path: path.to_path_buf(),
        reason: problems
            .iter()
            .rev()
            .find(|p| !p.contains("failed to read"))
            .or(problems.last())
            .cloned()
            .unwrap_or_else(|| "it could not be parsed".into()),
    })?;
    if meta.len() < summary.expected_len {
        return Err(CaptureError::TruncatedGguf {
            path: path.to_path_buf(),
            len: meta.len(),
            expected: summary.expected_len,
        });
    }
    Ok(summary)
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// How to create a [`Session`].
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// Tokens the context holds; also the largest prompt.
    pub n_ctx: u32,
    /// CPU threads (0 = all cores).
    pub threads: usize,
    pub flash_attention: FlashAttention,
    /// Also compute llama.cpp's embeddings output (for checking the capture).
    pub embeddings: bool,
    /// How to obtain attention; `None` picks the materialized path when flash
    /// attention is off and the recomputed one otherwise.
    pub attention_path: Option<AttentionPath>,
    /// Install llama.cpp's tensor callback (needed for any capture). Off only
    /// for baseline timings.
    pub with_callback: bool,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions {
            n_ctx: 2048,
            threads: 0,
            flash_attention: FlashAttention::Auto,
            embeddings: false,
            attention_path: None,
            with_callback: true,
        }
    }
}

/// One context that runs many prompts, one after the other. Clearing the KV
/// cache between prompts gives bit-identical results to a fresh context, at
/// a fraction of the cost of creating one.
#[derive(Debug)]
pub struct Session<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    options: ContextOptions,
    /// Tokens now in the KV cache (after a capture or a generation step).
    position: usize,
    last_logits: Vec<f32>,
    /// The last generated token, not yet run: a generation ends without
    /// running its final token, whose logits nobody reads, unless another
    /// generation step follows.
    pending: Option<i32>,
    /// The shared prefix at the start of the KV cache, if the last capture
    /// ran one (see [`Session::capture_after_prefix`]).
    prefix: Option<KeptPrefix>,
}

/// A shared prefix kept in the KV cache at positions `0..tokens.len()`.
#[derive(Debug)]
struct KeptPrefix {
    tokens: Vec<i32>,
    /// Its RoPE'd keys per layer, when they were recorded (recomputed path).
    keys: Option<Vec<Vec<f32>>>,
}

impl<'m> Session<'m> {
    pub fn new(model: &'m Model, options: ContextOptions) -> Result<Self, CaptureError> {
        let n_ctx_train = model.info.n_ctx_train.max(1);
        if options.n_ctx == 0 || options.n_ctx as usize > n_ctx_train {
            return Err(CaptureError::BadRequest(format!(
                "--ctx-size {} is out of range: it must be between 1 and the model's training context, {n_ctx_train}",
                options.n_ctx
            )));
        }
        let params = RawContextParams {
            n_ctx: options.n_ctx,
            n_threads: resolve_threads(options.threads) as i32,
            flash_attention: options.flash_attention,
            embeddings: options.embeddings,
            with_callback: options.with_callback,
            n_seq_max: 1,
            n_batch: None,
        };
        let ctx = LlamaContext::new(&model.inner, params)
            .map_err(|problems| context_failed(options.n_ctx, &problems))?;
        Ok(Session {
            model,
            ctx,
            options,
            position: 0,
            last_logits: Vec::new(),
            pending: None,
            prefix: None,
        })
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    pub(super) fn ctx(&self) -> &LlamaContext<'m> {
        &self.ctx
    }

    /// The cache length and next-token logits right after the last
    /// capture, where its answer starts.
    pub(super) fn answer_point(&self) -> Result<(usize, &[f32]), CaptureError> {
        if self.last_logits.is_empty() || self.pending.is_some() {
            return Err(CaptureError::BadRequest(
                "an answer starts right after a capture; capture the prompt first".into(),
            ));
        }
        Ok((self.position, &self.last_logits))
    }

    /// The next-token logits the session holds, as llama.cpp returned them:
    /// those of the last capture's last token, or, after a generation, those
    /// its last greedy choice was made from (a generation's final token is
    /// not run). Empty before any capture.
    pub fn last_logits(&self) -> &[f32] {
        &self.last_logits
    }

    /// What the capture has taken out of llama.cpp's graph so far: nodes
    /// observed (graph splits; device synchronisations on a GPU), copies and
    /// bytes. The difference over one capture is its cost in transfers.
    pub fn transfers(&self) -> Transfers {
        self.ctx.transfers()
    }

    /// The options this session was created with.
    pub fn options(&self) -> &ContextOptions {
        &self.options
    }

    pub fn n_ctx(&self) -> usize {
        self.ctx.n_ctx()
    }

    /// The longest prompt this session can capture in one piece.
    pub fn max_prompt_tokens(&self) -> usize {
        self.ctx.max_batch()
    }

    /// The attention path this session uses.
    pub fn attention_path(&self) -> AttentionPath {
        self.options
            .attention_path
            .unwrap_or(match self.options.flash_attention {
                FlashAttention::Off => AttentionPath::Materialized,
                FlashAttention::On | FlashAttention::Auto => AttentionPath::Recomputed,
            })
    }

    /// Runs a two-token prompt with a request for every tensor the study
    /// reads (each layer's hidden state and attention, by this session's
    /// path), so that a model whose graph names them differently is refused
    /// before any real capture, naming what is missing.
    pub fn check_graph(&mut self) -> Result<(), CaptureError> {
        let mut tokens = self.model.tokenize("Hello world", false)?;
        tokens.truncate(2);
        let n = tokens.len();
        let request = CaptureRequest {
            hidden: HiddenRequest::Pooled(vec![super::Pooling::Token(n - 1)]),
            attention: Some(super::AttentionRequest {
                queries: vec![n - 1],
                keep: super::AttentionKeep::SpanMass(std::iter::once(0..n).collect()),
            }),
            final_norm: false,
            all_logits: false,
        };
        match self.capture(&tokens, &request) {
            Err(CaptureError::Decode(problem)) if problem.contains("never produced") => {
                Err(CaptureError::TensorsMissing {
                    path: self.model.info.path.clone(),
                    architecture: self.model.info.architecture.clone(),
                    missing: problem
                        .split_once("never produced ")
                        .map_or(problem.clone(), |(_, what)| what.to_string()),
                })
            }
            Err(e) => Err(e),
            Ok(_) => Ok(()),
        }
    }

    /// Tokenizes and captures `text`.
    pub fn capture_text(
        &mut self,
        text: &str,
        request: &CaptureRequest,
    ) -> Result<Activations, CaptureError> {
        let tokens = self.model.tokenize(text, false)?;
        self.capture(&tokens, request)
    }

    /// Runs `tokens` from an empty cache and returns what `request` asks for.
    /// Afterwards the cache holds the prompt, so [`Session::continue_greedy`]
    /// can generate the answer without running the prompt again.
    pub fn capture(
        &mut self,
        tokens: &[i32],
        request: &CaptureRequest,
    ) -> Result<Activations, CaptureError> {
        self.run_capture(tokens, 0, request)
    }

    /// Like [`Session::capture`], but runs the first `prefix_len` tokens as
    /// a separate decode and keeps them in the KV cache: when the next call
    /// starts with the same prefix, only the rest of its prompt runs.
    ///
    /// The numbers of a prompt do not depend on whether its prefix was
    /// reused or run just now (the prefix always runs alone, from an empty
    /// cache, so the cache holds the same values either way). With flash
    /// attention off they equal those of a single decode of the whole
    /// prompt (bit for bit on the CPU); with it on, the kernel's float16
    /// rounding depends on how the keys are split, and the numbers move
    /// about as far as switching flash attention off moves them. The request may not read anything before
    /// `prefix_len` but attention keys: no pooled position, query, final
    /// norm or per-token logits there.
    pub fn capture_after_prefix(
        &mut self,
        tokens: &[i32],
        prefix_len: usize,
        request: &CaptureRequest,
    ) -> Result<Activations, CaptureError> {
        self.run_capture(tokens, prefix_len, request)
    }

    /// Whether the last capture left `prefix` in the cache, ready to reuse.
    pub fn holds_prefix(&self, prefix: &[i32]) -> bool {
        self.prefix.as_ref().is_some_and(|p| p.tokens == prefix)
    }

    fn run_capture(
        &mut self,
        tokens: &[i32],
        prefix_len: usize,
        request: &CaptureRequest,
    ) -> Result<Activations, CaptureError> {
        let n = tokens.len();
        self.validate(tokens, request)?;
        let info = &self.model.info;
        let path = self.attention_path();
        let recipe = match (&request.attention, path) {
            (Some(_), AttentionPath::Recomputed) => self.model.recipe()?,
            _ => &NO_RECIPE,
        };
        if prefix_len > 0 {
            check_after_prefix(n, prefix_len, request)?;
        }
        let n_layer = info.n_layer;
        let dims = Dims {
            n_layer,
            n_embd: info.n_embd,
            n_head: info.n_head,
            n_tokens: n,
            offset: prefix_len,
        };
        let recompute = Recompute {
            recipe,
            round_to_f16: true,
        };
        if !self.options.with_callback && *request != CaptureRequest::default() {
            return Err(CaptureError::BadRequest(
                "this session was created without the tensor callback".into(),
            ));
        }
        let needs_keys = request.attention.is_some() && path == AttentionPath::Recomputed;
        self.pending = None;
        if prefix_len > 0 {
            self.start_from_prefix(&tokens[..prefix_len], needs_keys)?;
        } else {
            self.ctx.clear();
            self.prefix = None;
        }
        self.position = prefix_len;
        let outputs = output_mask(n, request);
        let prefix_keys = self.prefix.as_ref().and_then(|p| p.keys.as_deref());
        let mut observer = CaptureObserver::new(
            request,
            dims,
            path,
            recompute,
            &outputs[prefix_len..],
            prefix_keys,
        );
        // A request for nothing but logits runs without observer: the
        // callback then declines every node at once.
        let wants_nothing = *request == CaptureRequest::default();
        let observer_ref: Option<&mut dyn super::llama::GraphObserver> = if wants_nothing {
            None
        } else {
            Some(&mut observer)
        };
        self.ctx
            .decode(
                &tokens[prefix_len..],
                prefix_len,
                &outputs[prefix_len..],
                observer_ref,
            )
            .map_err(CaptureError::Decode)?;
        self.position = n;
        let captured = observer.finish().map_err(CaptureError::Decode)?;
        let logits_last = self.last_token_logits()?;
        let logits_all = if request.all_logits {
            let mut all = F32Array::zeros(&[n, info.n_vocab]);
            for i in 0..n {
                let row = self.ctx.logits(i as i32).ok_or_else(|| {
                    CaptureError::Decode(format!("llama.cpp returned no logits for token {i}"))
                })?;
                all.data[i * info.n_vocab..(i + 1) * info.n_vocab].copy_from_slice(row);
            }
            Some(all)
        } else {
            None
        };
        self.last_logits = logits_last.clone();
        Ok(Activations {
            tokens: tokens.to_vec(),
            hidden: captured.hidden,
            attention: captured.attention,
            final_norm: captured.final_norm,
            logits_last,
            logits_all,
        })
    }

    /// Leaves exactly `prefix` in the cache: kept from the last capture when
    /// it ran the same prefix (and recorded its keys, when they are needed),
    /// else run now, alone, from an empty cache.
    fn start_from_prefix(&mut self, prefix: &[i32], needs_keys: bool) -> Result<(), CaptureError> {
        let reusable = self
            .prefix
            .as_ref()
            .is_some_and(|p| p.tokens == prefix && (p.keys.is_some() || !needs_keys));
        if reusable && self.ctx.truncate(prefix.len()) {
            return Ok(());
        }
        self.ctx.clear();
        self.prefix = None;
        let mut outputs = vec![false; prefix.len()];
        // llama.cpp wants at least one output per decode.
        outputs[prefix.len() - 1] = true;
        let keys = if needs_keys {
            let mut recorder = PrefixKeyRecorder::new(self.model.info.n_layer, prefix.len());
            self.ctx
                .decode(prefix, 0, &outputs, Some(&mut recorder))
                .map_err(CaptureError::Decode)?;
            Some(recorder.finish().map_err(CaptureError::Decode)?)
        } else {
            self.ctx
                .decode(prefix, 0, &outputs, None)
                .map_err(CaptureError::Decode)?;
            None
        };
        self.prefix = Some(KeptPrefix {
            tokens: prefix.to_vec(),
            keys,
        });
        Ok(())
    }

    /// The teacher-forced log-probabilities of `answer` right after the last
    /// capture: of its first token that is not only whitespace
    /// ([`Model::first_content_token`]) and of the whole answer (its tokens
    /// but the last run after the prompt, in one decode). The answer's cells are forgotten afterwards, so the
    /// greedy answer is generated from the prompt exactly as without this.
    pub fn answer_logprobs(&mut self, answer: &[i32]) -> Result<(f64, f64), CaptureError> {
        let (position, logits) = self.answer_point()?;
        let Some(&first) = answer.first() else {
            return Err(CaptureError::BadRequest(
                "the answer to score has no tokens".into(),
            ));
        };
        let scored = self.model.first_content_token(answer);
        let mut first_lp = super::patching::token_logprob(logits, first);
        let mut total = first_lp;
        let rest = &answer[..answer.len() - 1];
        if !rest.is_empty() {
            if position + rest.len() > self.n_ctx() {
                return Err(CaptureError::BadRequest(format!(
                    "the prompt and its {}-token answer do not fit the context of {}",
                    answer.len(),
                    self.n_ctx()
                )));
            }
            self.ctx
                .decode(rest, position, &vec![true; rest.len()], None)
                .map_err(CaptureError::Decode)?;
            for (k, &token) in answer[1..].iter().enumerate() {
                let row = self.ctx.logits(k as i32).ok_or_else(|| {
                    CaptureError::Decode("llama.cpp returned no logits for the answer".into())
                })?;
                let lp = super::patching::token_logprob(row, token);
                if k + 1 == scored {
                    first_lp = lp;
                }
                total += lp;
            }
            if !self.ctx.truncate(position) {
                return Err(CaptureError::Decode(
                    "llama.cpp could not forget the scored answer's tokens".into(),
                ));
            }
        }
        Ok((first_lp, total))
    }

    /// The next-token logits of `tokens` run whole from an empty cache,
    /// with `patch` written at the last token: the plain way to patch, which
    /// the cheap [`super::PatchRunner`] must agree with.
    pub fn patched_next_token_logits(
        &mut self,
        tokens: &[i32],
        patch: &super::patching::Patch,
    ) -> Result<Vec<f32>, CaptureError> {
        let n = tokens.len();
        self.validate(tokens, &CaptureRequest::default())?;
        let info = &self.model.info;
        // The last block keeps only the rows of outputs, here the last token.
        let row = if patch.layer + 1 == info.n_layer {
            0
        } else {
            n - 1
        };
        let patches = vec![super::patching::RowPatch { row, patch }];
        let mut observer = super::patching::PatchObserver::new(info.n_layer, info.n_embd, patches);
        self.pending = None;
        self.prefix = None;
        self.ctx.clear();
        let mut outputs = vec![false; n];
        outputs[n - 1] = true;
        self.ctx
            .decode(tokens, 0, &outputs, Some(&mut observer))
            .map_err(CaptureError::Decode)?;
        observer.finish().map_err(CaptureError::Decode)?;
        self.position = n;
        let logits = self.last_token_logits()?;
        self.last_logits = logits.clone();
        Ok(logits)
    }

    /// The logits of the last output of the last decode.
    fn last_token_logits(&self) -> Result<Vec<f32>, CaptureError> {
        self.ctx.logits(-1).map(<[f32]>::to_vec).ok_or_else(|| {
            CaptureError::Decode("llama.cpp returned no logits for the last token".into())
        })
    }

    /// llama.cpp's own embeddings output (final norm) for token `i` of the
    /// last capture; only with `embeddings: true`.
    pub fn llama_embeddings(&self, i: usize) -> Option<Vec<f32>> {
        self.ctx.embeddings(i as i32).map(<[f32]>::to_vec)
    }

    /// Greedy-generates up to `max_new` tokens after the last capture, from
    /// its cache (the prompt is not run again). Stops at an end-of-generation
    /// token, which is not returned.
    pub fn continue_greedy(&mut self, max_new: usize) -> Result<Vec<i32>, CaptureError> {
        Ok(self.continue_greedy_until(max_new, |_| false)?.tokens)
    }

    /// Like [`Session::continue_greedy`], and also stops after the first
    /// token for which `stop` is true (returned), e.g. one holding a newline
    /// when only the first line is the answer. Keeps the top-two logit gap
    /// of every choice (see [`GreedyAnswer::gaps`]).
    pub fn continue_greedy_until(
        &mut self,
        max_new: usize,
        stop: impl Fn(i32) -> bool,
    ) -> Result<GreedyAnswer, CaptureError> {
        if self.last_logits.is_empty() {
            return Err(CaptureError::BadRequest(
                "generation needs a captured prompt first".into(),
            ));
        }
        if let Some(token) = self.pending.take() {
            self.step(token)?;
        }
        let mut answer = GreedyAnswer::default();
        while answer.tokens.len() < max_new {
            let next = greedy_choice(&self.last_logits);
            if self.model.is_end_of_generation(next.token) {
                answer.gaps.push(next.gap);
                break;
            }
            if self.position >= self.n_ctx() {
                break;
            }
            answer.tokens.push(next.token);
            answer.gaps.push(next.gap);
            if answer.tokens.len() == max_new || stop(next.token) {
                self.pending = Some(next.token);
                break;
            }
            self.step(next.token)?;
        }
        Ok(answer)
    }

    /// Runs one generated token and keeps its next-token logits.
    fn step(&mut self, token: i32) -> Result<(), CaptureError> {
        self.ctx
            .decode(&[token], self.position, &[true], None)
            .map_err(CaptureError::Decode)?;
        self.position += 1;
        self.last_logits = self
            .ctx
            .logits(-1)
            .ok_or_else(|| {
                CaptureError::Decode("llama.cpp returned no logits while generating".into())
            })?
            .to_vec();
        Ok(())
    }

    fn validate(&self, tokens: &[i32], request: &CaptureRequest) -> Result<(), CaptureError> {
        let n = tokens.len();
        if n == 0 {
            return Err(CaptureError::EmptyPrompt);
        }
        if n > self.max_prompt_tokens() {
            return Err(CaptureError::PromptTooLong {
                tokens: n,
                n_ctx: self.max_prompt_tokens(),
                n_ctx_train: self.model.info.n_ctx_train,
            });
        }
        let bad = |what: String| Err(CaptureError::BadRequest(what));
        if let HiddenRequest::Pooled(pools) = &request.hidden {
            for pool in pools {
                let r = pool.positions();
                if r.is_empty() || r.end > n {
                    return bad(format!(
                        "pooling {pool:?} must cover at least one of the prompt's {n} tokens"
                    ));
                }
            }
        }
        if let Some(attention) = &request.attention {
            if attention.queries.is_empty() {
                return bad("attention needs at least one query token".into());
            }
            if let Some(q) = attention.queries.iter().find(|&&q| q >= n) {
                return bad(format!("query token {q} is past the prompt's {n} tokens"));
            }
            if let super::AttentionKeep::SpanMass(spans) = &attention.keep {
                if let Some(s) = spans.iter().find(|s| s.start > s.end || s.end > n) {
                    return bad(format!("key span {s:?} is outside the prompt's {n} tokens"));
                }
            }
        }
        Ok(())
    }
}

/// Checks that a request continuing a kept prefix of `prefix_len` tokens
/// reads nothing of the prefix but attention keys.
fn check_after_prefix(
    n: usize,
    prefix_len: usize,
    request: &CaptureRequest,
) -> Result<(), CaptureError> {
    let bad = |what: &str| {
        Err(CaptureError::BadRequest(format!(
            "{what} cannot be captured after a kept prefix of {prefix_len} tokens; capture the whole prompt instead"
        )))
    };
    if prefix_len >= n {
        return Err(CaptureError::BadRequest(format!(
            "a shared prefix of {prefix_len} tokens leaves nothing of the {n}-token prompt to run"
        )));
    }
    if request.hidden == HiddenRequest::All || request.final_norm || request.all_logits {
        return bad("every token's hidden state, final norm or logits");
    }
    if let HiddenRequest::Pooled(pools) = &request.hidden {
        if pools.iter().any(|p| p.positions().start < prefix_len) {
            return bad("a pooling over prefix tokens");
        }
    }
    if let Some(attention) = &request.attention {
        if attention.queries.iter().any(|&q| q < prefix_len) {
            return bad("attention from a prefix token");
        }
    }
    Ok(())
}

/// Tokens whose last-block rows (and logits) llama.cpp must compute: all of
/// them when every token is wanted, else the pooled positions and the last.
fn output_mask(n: usize, request: &CaptureRequest) -> Vec<bool> {
    if request.all_logits || request.final_norm || request.hidden == HiddenRequest::All {
        return vec![true; n];
    }
    let mut outputs = vec![false; n];
    outputs[n - 1] = true;
    if let HiddenRequest::Pooled(pools) = &request.hidden {
        for pool in pools {
            outputs[pool.positions()].iter_mut().for_each(|o| *o = true);
        }
    }
    outputs
}

/// llama.cpp could not create a context of `n_ctx` cells: the last
/// problem it logged says why.
pub(super) fn context_failed(n_ctx: u32, problems: &[String]) -> CaptureError {
    CaptureError::ContextFailed {
        n_ctx,
        reason: problems
            .last()
            .cloned()
            .unwrap_or_else(|| "no reason given".into()),
    }
}

/// `threads`, or every core for 0.
pub(super) fn resolve_threads(threads: usize) -> usize {
    if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    }
}

/// A greedy answer, and how narrowly each of its choices was made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GreedyAnswer {
    /// The generated tokens; an end-of-generation token that ended the
    /// answer is not among them.
    pub tokens: Vec<i32>,
    /// The top-two logit gap of each greedy choice that shaped the answer,
    /// in order: one per token, and one more for the end-of-generation
    /// token when that ended the answer (an answer stopped by its length,
    /// by `stop` or by the context has one per token). A gap of 0 is an
    /// exact tie.
    pub gaps: Vec<f32>,
}

/// The greedy choice of one row of logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GreedyChoice {
    /// The index of the largest logit (the lowest index on ties).
    pub token: i32,
    /// The largest logit minus the second largest (0 on a tie; infinite
    /// for a vocabulary of one, where nothing competes).
    pub gap: f32,
}

/// The greedy choice of `logits` and its top-two gap, in one pass.
pub(crate) fn greedy_choice(logits: &[f32]) -> GreedyChoice {
    let Some((&first, rest)) = logits.split_first() else {
        return GreedyChoice {
            token: 0,
            gap: f32::INFINITY,
        };
    };
    let (mut best, mut top, mut second) = (0, first, f32::NEG_INFINITY);
    for (i, &l) in rest.iter().enumerate() {
        // Strictly greater: on a tie the first index stays the choice, and
        // the equal logit becomes the second.
        if l > top {
            (best, second, top) = (i + 1, top, l);
        } else if l > second {
            second = l;
        }
    }
    // Equal infinities would subtract to NaN; they are a tie.
    let gap = if top == second { 0.0 } else { top - second };
    GreedyChoice {
        token: best as i32,
        gap,
    }
}

/// The index of the largest logit (the lowest index on ties).
pub(crate) fn argmax(logits: &[f32]) -> i32 {
    greedy_choice(logits).token
}

#[cfg(test)]
mod tests {
    use super::{argmax, gpu_too_small, greedy_choice, llama, GreedyChoice};
    use std::path::Path;

    #[test]
    fn the_gap_is_the_largest_logit_minus_the_second() {
        let choice = greedy_choice(&[0.5, 3.25, -1.0, 2.0]);
        assert_eq!(
            choice,
            GreedyChoice {
                token: 1,
                gap: 1.25
            }
        );
    }

    #[test]
    fn a_tie_has_gap_zero_and_the_first_index_wins() {
        assert_eq!(greedy_choice(&[1.0, 4.0, 2.0, 4.0]).token, 1);
        assert_eq!(
            greedy_choice(&[1.0, 4.0, 2.0, 4.0]).gap.to_bits(),
            0.0f32.to_bits()
        );
        // The tie may come before or after a smaller logit, or be the first.
        assert_eq!(greedy_choice(&[7.0, 7.0]).token, 0);
        assert_eq!(greedy_choice(&[7.0, 7.0]).gap, 0.0);
        assert_eq!(greedy_choice(&[f32::INFINITY, 0.0, f32::INFINITY]).gap, 0.0);
    }

    #[test]
    fn negative_logits_give_a_positive_gap() {
        let choice = greedy_choice(&[-9.5, -3.0, -4.5, -30.0]);
        assert_eq!(choice.token, 1);
        assert_eq!(choice.gap, 1.5);
    }

    #[test]
    fn the_second_largest_may_come_before_or_after_the_largest() {
        // The second largest is found both when it is overtaken and when it
        // follows the largest.
        assert_eq!(greedy_choice(&[2.0, 5.0, 1.0]).gap, 3.0);
        assert_eq!(greedy_choice(&[5.0, 1.0, 2.0]).gap, 3.0);
    }

    #[test]
    fn a_vocabulary_of_one_has_no_competitor() {
        assert_eq!(
            greedy_choice(&[-2.0]),
            GreedyChoice {
                token: 0,
                gap: f32::INFINITY
            }
        );
    }

    #[test]
    fn the_gap_is_computed_in_f32_exactly_as_top1_minus_top2() {
        let logits = [13.718_39f32, -0.1, 13.718_38, 2.0];
        assert_eq!(
            greedy_choice(&logits).gap.to_bits(),
            (logits[0] - logits[2]).to_bits()
        );
    }

    #[test]
    fn a_model_larger_than_the_gpus_free_memory_is_refused_only_when_every_layer_goes_there() {
        let gpu = |free: u64| llama::GpuMemory {
            description: "NVIDIA H200".into(),
            free,
            total: 150_000_000_000,
        };
        let path = Path::new("llama-70b.Q4_0.gguf");
        let weights = 38_900_000_000;
        let message = gpu_too_small(path, weights, -1, &[gpu(20_000_000_000)])
            .expect("refused")
            .to_string();
        assert!(
            message.contains("`llama-70b.Q4_0.gguf` holds 38.9 GB of weights")
                && message
                    .contains("the GPU has only 20.0 GB free (NVIDIA H200: 20.0 of 150.0 GB)")
                && message.contains("--n-gpu-layers N"),
            "{message}"
        );
        assert!(gpu_too_small(path, weights, 9999, &[gpu(20_000_000_000)]).is_some());
        let two = [gpu(20_000_000_000), gpu(20_000_000_000)];
        assert!(
            gpu_too_small(path, weights, -1, &two).is_none(),
            "two GPUs hold it"
        );
        assert!(
            gpu_too_small(path, weights, 40, &[gpu(1)]).is_none(),
            "part of it: llama.cpp places it"
        );
        assert!(gpu_too_small(path, weights, 0, &[gpu(1)]).is_none());
        assert!(
            gpu_too_small(path, weights, -1, &[]).is_none(),
            "a CPU build has no GPU"
        );
        let error = gpu_too_small(path, weights, -1, &[gpu(1)]).expect("refused");
        assert!(error.is_bad_input());
    }

    #[test]
    fn argmax_is_the_greedy_choice() {
        for logits in [&[1.0f32, 3.0, 3.0, 2.0][..], &[-1.0, -1.0], &[0.0]] {
            assert_eq!(argmax(logits), greedy_choice(logits).token);
        }
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
    }
}
