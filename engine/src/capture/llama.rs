//! The only file that talks to llama.cpp: FFI through `llama-cpp-sys-2`.
//!
//! Why raw bindings: llama-cpp-2 0.1.160 exposes no way to set `cb_eval`, the
//! tensor callback the capture is built on, and no raw model or context
//! pointers (see DESIGN.md). This file wraps the handful of C functions we need
//! into owned, safe types (`LlamaModel`, `LlamaContext`, `GraphTensor`); every
//! `unsafe` block says why it is sound. Everything else in the engine sees only
//! these types.
#![allow(unsafe_code)]

use std::collections::VecDeque;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Mutex, Once};

use llama_cpp_sys_2 as sys;

/// Whether llama.cpp may use its fused flash-attention kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FlashAttention {
    /// llama.cpp decides (it turns flash attention on where supported).
    #[default]
    Auto,
    On,
    Off,
}

impl FlashAttention {
    fn to_sys(self) -> sys::llama_flash_attn_type {
        match self {
            FlashAttention::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttention::On => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttention::Off => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }
    }
}

// ---------------------------------------------------------------------------
// Backend initialisation and logs
// ---------------------------------------------------------------------------

/// The last llama.cpp log lines at warning level or above, so that a failed
/// load can say *why* in its error message (llama.cpp only returns NULL).
static RECENT_PROBLEMS: Mutex<VecDeque<String>> = Mutex::new(VecDeque::new());
const RECENT_PROBLEMS_KEPT: usize = 16;

/// Why llama.cpp's GPU backend found no device, as it logged it when the
/// backends started (for example "CUDA driver version is insufficient for
/// CUDA runtime version" where no NVIDIA driver is installed).
static GPU_INIT_FAILURE: Mutex<Option<String>> = Mutex::new(None);

/// llama.cpp sends log text in pieces (`GGML_LOG_LEVEL_CONT` continues the
/// previous line); we assemble whole lines before handing them to `tracing`.
static LOG_LINE: Mutex<(i32, String)> = Mutex::new((0, String::new()));

unsafe extern "C" fn log_trampoline(
    level: sys::ggml_log_level,
    text: *const c_char,
    _: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a valid NUL-terminated string that lives for
    // the duration of this call; we copy it out immediately.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let Ok(mut line) = LOG_LINE.lock() else {
        return;
    };
    if level != sys::GGML_LOG_LEVEL_CONT {
        line.0 = level as i32;
    }
    line.1.push_str(&text);
    while let Some(end) = line.1.find('\n') {
        let whole: String = line.1.drain(..=end).collect();
        emit_log_line(line.0, whole.trim_end());
    }
}

fn emit_log_line(level: i32, text: &str) {
    if text.is_empty() {
        return;
    }
    let level = level as sys::ggml_log_level;
    match level {
        sys::GGML_LOG_LEVEL_ERROR => tracing::debug!(target: "llama.cpp", "error: {text}"),
        sys::GGML_LOG_LEVEL_WARN => tracing::debug!(target: "llama.cpp", "warning: {text}"),
        sys::GGML_LOG_LEVEL_INFO => tracing::debug!(target: "llama.cpp", "{text}"),
        _ => tracing::trace!(target: "llama.cpp", "{text}"),
    }
    if level == sys::GGML_LOG_LEVEL_ERROR {
        // ggml-cuda: "ggml_cuda_init: failed to initialize CUDA: <reason>".
        if let Some((_, reason)) = text.split_once("failed to initialize CUDA: ") {
            if let Ok(mut failure) = GPU_INIT_FAILURE.lock() {
                *failure = Some(reason.trim().to_string());
            }
        }
    }
    if level == sys::GGML_LOG_LEVEL_ERROR || level == sys::GGML_LOG_LEVEL_WARN {
        if let Ok(mut recent) = RECENT_PROBLEMS.lock() {
            if recent.len() == RECENT_PROBLEMS_KEPT {
                recent.pop_front();
            }
            recent.push_back(text.to_string());
        }
    }
}

fn take_recent_problems() -> Vec<String> {
    RECENT_PROBLEMS
        .lock()
        .map(|mut r| r.drain(..).collect())
        .unwrap_or_default()
}

/// Initialises llama.cpp's backends once per process and routes its logs
/// through `tracing` (they are quiet unless the user asks for `-v`).
pub(crate) fn init_backend() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: both calls are documented as process-wide initialisation,
        // safe to call once before any other llama.cpp function; the callback
        // is a plain function with 'static lifetime and no user data.
        unsafe {
            sys::llama_log_set(Some(log_trampoline), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

/// A one-line description of the llama.cpp build: the bindings' version and
/// the CPU/GPU features it was compiled with.
pub fn llama_build_info() -> String {
    init_backend();
    // SAFETY: returns a pointer to a static, NUL-terminated string.
    let info = unsafe { CStr::from_ptr(sys::llama_print_system_info()) };
    format!(
        "llama-cpp-sys-2 {} | {}",
        LLAMA_SYS_VERSION,
        info.to_string_lossy().trim()
    )
}

/// The version of the raw bindings, pinned in the workspace manifest.
pub const LLAMA_SYS_VERSION: &str = "0.1.161";

/// Whether this build can offload layers to a GPU.
pub(crate) fn supports_gpu_offload() -> bool {
    init_backend();
    // SAFETY: a pure query with no arguments.
    unsafe { sys::llama_supports_gpu_offload() }
}

/// Why this build's GPU backend has no device, in CUDA's words, when it said
/// (no driver, no GPU visible); `None` when it found one or said nothing.
pub(crate) fn gpu_init_failure() -> Option<String> {
    init_backend();
    // The backends start on the first query (here or earlier), logging why
    // they found no device.
    supports_gpu_offload();
    GPU_INIT_FAILURE.lock().ok().and_then(|f| f.clone())
}

/// One GPU llama.cpp can offload to, and its memory as the driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuMemory {
    pub description: String,
    pub free: u64,
    pub total: u64,
}

/// The GPUs of this build's backends (none in a CPU build).
pub(crate) fn gpu_memory() -> Vec<GpuMemory> {
    init_backend();
    supports_gpu_offload();
    // SAFETY: pure queries of the backend registry, which init_backend set
    // up; device handles are static for the life of the process.
    let count = unsafe { sys::ggml_backend_dev_count() };
    (0..count)
        .filter_map(|i| {
            // SAFETY: `i` is below the device count.
            let device = unsafe { sys::ggml_backend_dev_get(i) };
            if device.is_null()
                // SAFETY: a live device handle.
                || unsafe { sys::ggml_backend_dev_type(device) } != sys::GGML_BACKEND_DEVICE_TYPE_GPU
            {
                return None;
            }
            let (mut free, mut total) = (0usize, 0usize);
            // SAFETY: a live device handle and two writable integers.
            unsafe { sys::ggml_backend_dev_memory(device, &mut free, &mut total) };
            // SAFETY: a live device handle; the string lives as long as it.
            let description = unsafe { sys::ggml_backend_dev_description(device) };
            let description = if description.is_null() {
                "GPU".to_string()
            } else {
                // SAFETY: non-null, NUL-terminated, owned by the device.
                unsafe { CStr::from_ptr(description) }
                    .to_string_lossy()
                    .into_owned()
            };
            Some(GpuMemory {
                description,
                free: free as u64,
                total: total as u64,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// GGUF header check
// ---------------------------------------------------------------------------

/// What the GGUF header of a model file says, read without loading weights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GgufSummary {
    pub version: u32,
    pub architecture: Option<String>,
    pub n_tensors: usize,
    /// Bytes the file must have to hold every tensor the header lists.
    pub expected_len: u64,
}

/// Parses the GGUF metadata of `path` (no tensor data is read). Returns the
/// problems llama.cpp logged when the header cannot be parsed.
pub(crate) fn read_gguf_summary(path: &Path) -> Result<GgufSummary, Vec<String>> {
    init_backend();
    let c_path = path_to_cstring(path).map_err(|e| vec![e])?;
    take_recent_problems();
    let params = sys::gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    };
    // SAFETY: `c_path` is a valid NUL-terminated string; with `no_alloc` and a
    // null `ctx` llama.cpp allocates no tensor data. The returned context is
    // freed below on every path.
    let ctx = unsafe { sys::gguf_init_from_file(c_path.as_ptr(), params) };
    let Some(ctx) = NonNull::new(ctx) else {
        return Err(take_recent_problems());
    };
    let ctx = ctx.as_ptr();
    // SAFETY: `ctx` is a live gguf context; indices come from its own counts;
    // strings returned by `gguf_get_val_str` live as long as `ctx`, and we copy
    // them before freeing it.
    let summary = unsafe {
        let n_tensors = sys::gguf_get_n_tensors(ctx).max(0);
        let data_offset = sys::gguf_get_data_offset(ctx) as u64;
        let mut end = data_offset;
        for i in 0..n_tensors {
            let tensor_end = data_offset
                + sys::gguf_get_tensor_offset(ctx, i) as u64
                + sys::gguf_get_tensor_size(ctx, i) as u64;
            end = end.max(tensor_end);
        }
        let key = CString::new("general.architecture").unwrap_or_default();
        let id = sys::gguf_find_key(ctx, key.as_ptr());
        let architecture = (id >= 0 && sys::gguf_get_kv_type(ctx, id) == sys::GGUF_TYPE_STRING)
            .then(|| {
                CStr::from_ptr(sys::gguf_get_val_str(ctx, id))
                    .to_string_lossy()
                    .into_owned()
            });
        let version = sys::gguf_get_version(ctx);
        sys::gguf_free(ctx);
        GgufSummary {
            version,
            architecture,
            n_tensors: n_tensors as usize,
            expected_len: end,
        }
    };
    Ok(summary)
}

fn path_to_cstring(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_encoded_bytes().to_vec())
        .map_err(|_| format!("the path `{}` contains a NUL byte", path.display()))
}

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

/// A loaded model (weights, vocabulary, hyper-parameters).
#[derive(Debug)]
pub(crate) struct LlamaModel {
    ptr: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
}

// SAFETY: a llama_model is immutable after loading and llama.cpp documents it
// as shareable between contexts on several threads.
unsafe impl Send for LlamaModel {}
// SAFETY: as above; every method takes `&self` and only reads.
unsafe impl Sync for LlamaModel {}

/// Hyper-parameters read from a loaded model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawDims {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    pub n_ctx_train: usize,
    pub add_bos: bool,
}

impl LlamaModel {
    /// Loads a GGUF file. On failure returns what llama.cpp logged.
    pub(crate) fn load(path: &Path, n_gpu_layers: i32) -> Result<Self, Vec<String>> {
        init_backend();
        let c_path = path_to_cstring(path).map_err(|e| vec![e])?;
        take_recent_problems();
        // SAFETY: default params are plain data; we only change plain fields.
        let mut params = unsafe { sys::llama_model_default_params() };
        params.n_gpu_layers = n_gpu_layers;
        // SAFETY: `c_path` is NUL-terminated and outlives the call; `params` is
        // a valid struct by value. A NULL result is handled below.
        let ptr = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), params) };
        let ptr = NonNull::new(ptr).ok_or_else(take_recent_problems)?;
        // SAFETY: `ptr` is a live model; the vocab it returns lives as long as it.
        let vocab = unsafe { sys::llama_model_get_vocab(ptr.as_ptr()) };
        let Some(vocab) = NonNull::new(vocab.cast_mut()) else {
            // SAFETY: `ptr` came from llama_model_load_from_file and is freed once.
            unsafe { sys::llama_model_free(ptr.as_ptr()) };
            return Err(vec!["the model has no vocabulary".to_string()]);
        };
        Ok(LlamaModel { ptr, vocab })
    }

    pub(crate) fn dims(&self) -> RawDims {
        let m = self.ptr.as_ptr();
        let v = self.vocab.as_ptr();
        // SAFETY: pure getters on a live model and its vocab.
        unsafe {
            RawDims {
                n_layer: sys::llama_model_n_layer(m).max(0) as usize,
                n_embd: sys::llama_model_n_embd(m).max(0) as usize,
                n_head: sys::llama_model_n_head(m).max(0) as usize,
                n_head_kv: sys::llama_model_n_head_kv(m).max(0) as usize,
                n_vocab: sys::llama_vocab_n_tokens(v).max(0) as usize,
                n_ctx_train: sys::llama_model_n_ctx_train(m).max(0) as usize,
                add_bos: sys::llama_vocab_get_add_bos(v),
            }
        }
    }

    /// The begin- and end-of-sequence tokens, where the vocabulary has them.
    pub(crate) fn bos_eos(&self) -> (Option<i32>, Option<i32>) {
        let v = self.vocab.as_ptr();
        // SAFETY: pure getters on the live vocab; -1 (LLAMA_TOKEN_NULL) means none.
        let (bos, eos) = unsafe { (sys::llama_vocab_bos(v), sys::llama_vocab_eos(v)) };
        let some = |t: i32| (t >= 0).then_some(t);
        (some(bos), some(eos))
    }

    /// A human description, e.g. `llama 135M Q4_1`.
    pub(crate) fn description(&self) -> String {
        let mut buf = vec![0u8; 256];
        // SAFETY: `buf` is writable for its length; llama.cpp NUL-terminates.
        let n =
            unsafe { sys::llama_model_desc(self.ptr.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        buf.truncate(n.clamp(0, 255) as usize);
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// A metadata value as a string (`general.architecture`, ...).
    pub(crate) fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        // Chat templates run to several KB: a first try with a small buffer
        // says how long the value is (as snprintf does), a second reads it.
        let mut buf = vec![0u8; 512];
        loop {
            // SAFETY: `key` is NUL-terminated; `buf` is writable for its length.
            let n = unsafe {
                sys::llama_model_meta_val_str(
                    self.ptr.as_ptr(),
                    key.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return None;
            }
            let n = n as usize;
            if n < buf.len() {
                buf.truncate(n);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            buf = vec![0u8; n + 1];
        }
    }

    /// Tokenizes `text`; `add_special` adds BOS/EOS as the model asks,
    /// `parse_special` turns text like `<|im_start|>` into special tokens.
    pub(crate) fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<i32>, String> {
        let len = i32::try_from(text.len()).map_err(|_| "the text is over 2 GiB".to_string())?;
        let mut tokens = vec![0i32; text.len() / 2 + 8];
        for _ in 0..2 {
            // SAFETY: `text` is valid for `len` bytes (no NUL needed, the length
            // is given); `tokens` is writable for `tokens.len()` entries.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab.as_ptr(),
                    text.as_ptr().cast(),
                    len,
                    tokens.as_mut_ptr(),
                    tokens.len() as i32,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                tokens.truncate(n as usize);
                return Ok(tokens);
            }
            if n == i32::MIN {
                return Err("the text has too many tokens".to_string());
            }
            tokens.resize((-n) as usize, 0);
        }
        Err("llama.cpp could not tokenize the text".to_string())
    }

    /// The bytes a token stands for (may be part of a UTF-8 character).
    pub(crate) fn token_bytes(&self, token: i32) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        for _ in 0..2 {
            // SAFETY: `buf` is writable for its length; the vocab is live.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab.as_ptr(),
                    token,
                    buf.as_mut_ptr().cast(),
                    buf.len() as i32,
                    0,
                    true,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize((-n) as usize, 0);
        }
        Vec::new()
    }

    pub(crate) fn is_end_of_generation(&self, token: i32) -> bool {
        // SAFETY: pure query on the live vocab.
        unsafe { sys::llama_vocab_is_eog(self.vocab.as_ptr(), token) }
    }
}

impl Drop for LlamaModel {
    fn drop(&mut self) {
        // SAFETY: the pointer came from llama_model_load_from_file and every
        // context borrowing this model has been dropped (lifetimes ensure it).
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) };
    }
}

// ---------------------------------------------------------------------------
// Graph tensors and the evaluation callback
// ---------------------------------------------------------------------------

/// The operations the capture distinguishes (names alone are not unique:
/// `Qcur-0` names the matmul, the reshape and the RoPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GraphOp {
    Rope,
    SoftMax,
    Other,
}

/// A read-only view of one node of llama.cpp's compute graph, valid during
/// one callback.
#[derive(Debug)]
pub(crate) struct GraphTensor<'a> {
    raw: &'a sys::ggml_tensor,
    /// The context's running count of what left the graph (see [`Transfers`]).
    transfers: &'a std::cell::Cell<Transfers>,
}

/// What the tensor callback took out of llama.cpp's graph since a context
/// was made: each observed node is a graph split (on a GPU, a
/// synchronisation of the device), each copy one `ggml_backend_tensor_get`
/// (on a GPU, a device-to-host copy). `engine bench` prints them per forward.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfers {
    /// Graph nodes the observer asked for.
    pub observed: u64,
    /// Reads of a node's data.
    pub copies: u64,
    /// Bytes those reads moved.
    pub bytes: u64,
}

impl std::ops::Sub for Transfers {
    type Output = Transfers;
    fn sub(self, earlier: Transfers) -> Transfers {
        Transfers {
            observed: self.observed - earlier.observed,
            copies: self.copies - earlier.copies,
            bytes: self.bytes - earlier.bytes,
        }
    }
}

impl GraphTensor<'_> {
    pub(crate) fn name(&self) -> &str {
        let bytes: &[u8] = bytemuck_name(&self.raw.name);
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        std::str::from_utf8(&bytes[..end]).unwrap_or("")
    }

    pub(crate) fn op(&self) -> GraphOp {
        match self.raw.op {
            sys::GGML_OP_ROPE => GraphOp::Rope,
            sys::GGML_OP_SOFT_MAX => GraphOp::SoftMax,
            _ => GraphOp::Other,
        }
    }

    pub(crate) fn is_f32(&self) -> bool {
        self.raw.type_ == sys::GGML_TYPE_F32
    }

    /// Elements per dimension, innermost first (ggml's `ne`).
    pub(crate) fn ne(&self) -> [usize; 4] {
        self.raw.ne.map(|n| n.max(0) as usize)
    }

    /// Byte strides per dimension (ggml's `nb`).
    pub(crate) fn nb(&self) -> [usize; 4] {
        self.raw.nb
    }

    /// Copies `dst.len()` float32 values starting at `byte_offset` into `dst`.
    /// Works on every backend (CPU or GPU memory).
    pub(crate) fn read_f32(&self, byte_offset: usize, dst: &mut [f32]) -> Result<(), String> {
        if !self.is_f32() {
            return Err(format!("tensor `{}` is not float32", self.name()));
        }
        let size = std::mem::size_of_val(dst);
        // SAFETY: `raw` is a live tensor for the duration of the callback.
        let nbytes = unsafe { sys::ggml_nbytes(self.raw) };
        let has_buffer = !self.raw.buffer.is_null()
            // SAFETY: `view_src`, when set, points at a live tensor of the same graph.
            || (!self.raw.view_src.is_null() && unsafe { !(*self.raw.view_src).buffer.is_null() });
        if !has_buffer || byte_offset % 4 != 0 || byte_offset.saturating_add(size) > nbytes {
            return Err(format!(
                "cannot read {size} bytes at offset {byte_offset} of tensor `{}` ({nbytes} bytes)",
                self.name()
            ));
        }
        if size == 0 {
            return Ok(());
        }
        let mut count = self.transfers.get();
        count.copies += 1;
        count.bytes += size as u64;
        self.transfers.set(count);
        // SAFETY: the tensor has a backend buffer, the range lies inside it
        // (checked above), and `dst` is writable for `size` bytes.
        unsafe {
            sys::ggml_backend_tensor_get(self.raw, dst.as_mut_ptr().cast(), byte_offset, size)
        };
        Ok(())
    }
}

impl GraphTensor<'_> {
    /// Overwrites `src.len()` float32 values starting at `byte_offset` with
    /// `src`, before any later node of the graph reads them. Works on every
    /// backend (CPU or GPU memory): llama.cpp's maintainers confirm the eval
    /// callback may modify the tensor it is shown, through
    /// `ggml_backend_tensor_set`, never through a host pointer.
    pub(crate) fn write_f32(&self, byte_offset: usize, src: &[f32]) -> Result<(), String> {
        if !self.is_f32() {
            return Err(format!("tensor `{}` is not float32", self.name()));
        }
        let size = std::mem::size_of_val(src);
        // SAFETY: `raw` is a live tensor for the duration of the callback.
        let nbytes = unsafe { sys::ggml_nbytes(self.raw) };
        // A view has no buffer of its own; writing through it is refused so
        // that a patch never lands in memory another node owns.
        if self.raw.buffer.is_null()
            || !self.raw.view_src.is_null()
            || byte_offset % 4 != 0
            || byte_offset.saturating_add(size) > nbytes
        {
            return Err(format!(
                "cannot write {size} bytes at offset {byte_offset} of tensor `{}` ({nbytes} bytes)",
                self.name()
            ));
        }
        if size == 0 {
            return Ok(());
        }
        // SAFETY: the tensor owns a backend buffer and the range lies inside
        // it (checked above); `src` is readable for `size` bytes. The graph
        // node is computed and not yet read by later nodes (the scheduler
        // stops after a node the callback asked for), and ggml copies the
        // bytes before returning. The cast drops `const` from the tensor
        // struct only: ggml writes the buffer it points to, not the struct.
        unsafe {
            sys::ggml_backend_tensor_set(
                std::ptr::from_ref(self.raw).cast_mut(),
                src.as_ptr().cast(),
                byte_offset,
                size,
            )
        };
        Ok(())
    }
}

fn bytemuck_name(name: &[c_char; 64]) -> &[u8] {
    // SAFETY: c_char and u8 have the same size and alignment; the slice covers
    // exactly the array.
    unsafe { std::slice::from_raw_parts(name.as_ptr().cast::<u8>(), name.len()) }
}

/// Receives graph nodes while llama.cpp computes them.
pub(crate) trait GraphObserver {
    /// Whether the node's data is wanted (llama.cpp then stops there, syncs,
    /// and calls [`GraphObserver::observe`]). Ask for as little as possible.
    fn wants(&mut self, tensor: &GraphTensor<'_>) -> bool;
    /// The node's data is ready.
    fn observe(&mut self, tensor: &GraphTensor<'_>);
}

/// Lives at a fixed heap address for the life of a context; llama.cpp holds a
/// pointer to it as `cb_eval_user_data`.
struct CallbackSlot {
    /// Points at a `&mut dyn GraphObserver` on the stack of `decode`, or null.
    observer: *mut c_void,
    panicked: Option<String>,
    transfers: std::cell::Cell<Transfers>,
}

unsafe extern "C" fn eval_trampoline(
    t: *mut sys::ggml_tensor,
    ask: bool,
    user_data: *mut c_void,
) -> bool {
    // Returning false in the data phase cancels the computation and leaves
    // garbage behind, so every data-phase path returns true.
    let answer_if_idle = !ask;
    if user_data.is_null() || t.is_null() {
        return answer_if_idle;
    }
    // SAFETY: `user_data` is the `CallbackSlot` owned by the context that is
    // decoding; it is only touched through this raw pointer while llama_decode
    // runs, on this thread (the callback runs on the decoding thread).
    let slot = unsafe { &mut *user_data.cast::<CallbackSlot>() };
    if slot.observer.is_null() || slot.panicked.is_some() {
        return answer_if_idle;
    }
    // SAFETY: `observer` was set by `decode` from a live `&mut dyn
    // GraphObserver` that outlives the llama_decode call it is set around.
    let observer = unsafe { &mut *slot.observer.cast::<&mut dyn GraphObserver>() };
    // SAFETY: llama.cpp passes a live tensor valid for this call.
    let tensor = GraphTensor {
        raw: unsafe { &*t },
        transfers: &slot.transfers,
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if ask {
            let wanted = observer.wants(&tensor);
            if wanted {
                let mut count = slot.transfers.get();
                count.observed += 1;
                slot.transfers.set(count);
            }
            wanted
        } else {
            observer.observe(&tensor);
            true
        }
    }));
    match result {
        Ok(answer) => answer || !ask,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            slot.panicked = Some(message);
            answer_if_idle
        }
    }
}

// ---------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------

/// How to create a context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawContextParams {
    pub n_ctx: u32,
    pub n_threads: i32,
    pub flash_attention: FlashAttention,
    pub embeddings: bool,
    /// Install the tensor callback. Off only for baseline timings, to show
    /// what llama.cpp costs with no capture machinery at all.
    pub with_callback: bool,
    /// Sequences the context holds at once. With more than one, they share
    /// one KV cache (a saved sequence loads only into a cache with as many
    /// streams as the one it came from, and capture contexts have one); each
    /// token attends to its own sequence's cells only, through the mask.
    pub n_seq_max: u32,
    /// Tokens per decode; `None`: the whole context, so that a prompt runs
    /// in one physical batch.
    pub n_batch: Option<u32>,
}

/// One token of a multi-sequence decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchToken {
    pub token: i32,
    pub pos: usize,
    pub seq: i32,
}

/// An inference context (KV cache, compute buffers) over a borrowed model.
#[derive(Debug)]
pub(crate) struct LlamaContext<'m> {
    ptr: NonNull<sys::llama_context>,
    slot: NonNull<CallbackSlot>,
    /// The context borrows the model: it must not outlive it.
    _model: std::marker::PhantomData<&'m LlamaModel>,
    n_vocab: usize,
    n_embd: usize,
}

impl std::fmt::Debug for CallbackSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSlot")
            .field("busy", &!self.observer.is_null())
            .finish()
    }
}

// SAFETY: a context is used from one thread at a time (`&mut self` for every
// call that computes); moving it between threads is allowed by llama.cpp.
unsafe impl Send for LlamaContext<'_> {}

impl<'m> LlamaContext<'m> {
    pub(crate) fn new(model: &'m LlamaModel, p: RawContextParams) -> Result<Self, Vec<String>> {
        let slot = Box::new(CallbackSlot {
            observer: std::ptr::null_mut(),
            panicked: None,
            transfers: std::cell::Cell::new(Transfers::default()),
        });
        let slot = NonNull::from(Box::leak(slot));
        // SAFETY: default params are plain data; we set plain fields only.
        let mut params = unsafe { sys::llama_context_default_params() };
        params.n_ctx = p.n_ctx;
        // One physical batch holds the whole prompt, so each layer's tensors
        // arrive in one piece in the callback.
        let n_batch = p.n_batch.unwrap_or(p.n_ctx);
        params.n_batch = n_batch;
        params.n_ubatch = n_batch;
        params.n_seq_max = p.n_seq_max.max(1);
        params.kv_unified = p.n_seq_max > 1;
        params.n_threads = p.n_threads;
        params.n_threads_batch = p.n_threads;
        params.flash_attn_type = p.flash_attention.to_sys();
        // Sliding-window layers keep every cell, as the other layers do: a
        // smaller cache drops cells outside the window, so a kept prefix
        // could not be reused and llama.cpp's softmax rows would not be in
        // position order. No effect on models without sliding windows.
        params.swa_full = true;
        params.embeddings = p.embeddings;
        if p.embeddings {
            params.pooling_type = sys::LLAMA_POOLING_TYPE_NONE;
        }
        params.no_perf = true;
        if p.with_callback {
            params.cb_eval = Some(eval_trampoline);
            params.cb_eval_user_data = slot.as_ptr().cast();
        }
        take_recent_problems();
        // SAFETY: the model is live and outlives the context ('m); the
        // callback user data points at `slot`, which is freed only in Drop
        // after the context.
        let ptr = unsafe { sys::llama_init_from_model(model.ptr.as_ptr(), params) };
        let Some(ptr) = NonNull::new(ptr) else {
            // SAFETY: `slot` came from Box::leak above and nothing else holds it.
            drop(unsafe { Box::from_raw(slot.as_ptr()) });
            return Err(take_recent_problems());
        };
        let dims = model.dims();
        Ok(LlamaContext {
            ptr,
            slot,
            _model: std::marker::PhantomData,
            n_vocab: dims.n_vocab,
            n_embd: dims.n_embd,
        })
    }

    pub(crate) fn n_ctx(&self) -> usize {
        // SAFETY: pure getter on a live context.
        unsafe { sys::llama_n_ctx(self.ptr.as_ptr()) as usize }
    }

    /// What the tensor callback has taken out of the graph since this
    /// context was made.
    pub(crate) fn transfers(&self) -> Transfers {
        // SAFETY: the slot lives as long as the context, and no decode runs
        // while `&self` is borrowed here (decoding needs `&mut self`).
        unsafe { self.slot.as_ref() }.transfers.get()
    }

    /// The longest batch one decode accepts. llama.cpp aborts the whole
    /// process on a longer one, so callers check against this first.
    pub(crate) fn max_batch(&self) -> usize {
        // SAFETY: pure getters on a live context.
        let (batch, ubatch) = unsafe {
            (
                sys::llama_n_batch(self.ptr.as_ptr()),
                sys::llama_n_ubatch(self.ptr.as_ptr()),
            )
        };
        (batch.min(ubatch) as usize).min(self.n_ctx())
    }

    /// Forgets every token (KV cache). Bit-identical to a fresh context.
    pub(crate) fn clear(&mut self) {
        // SAFETY: the memory handle belongs to this live context.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.ptr.as_ptr()), true) };
    }

    /// Forgets the tokens at positions `from_pos..` and keeps those before,
    /// so that the next decode continues from a shared prefix. The freed
    /// cells are the first free ones, so the kept prefix stays in cells
    /// `0..from_pos` in position order. Returns false when llama.cpp cannot
    /// remove part of a sequence (recurrent memories); then clear instead.
    pub(crate) fn truncate(&mut self, from_pos: usize) -> bool {
        // SAFETY: the memory handle belongs to this live context; p1 = -1
        // means "to the end".
        unsafe {
            sys::llama_memory_seq_rm(
                sys::llama_get_memory(self.ptr.as_ptr()),
                0,
                from_pos as i32,
                -1,
            )
        }
    }

    /// The KV cache of sequence `seq`, as bytes that
    /// [`LlamaContext::load_sequence_state`] puts back into any sequence of
    /// a context of the same model.
    pub(crate) fn sequence_state(&self, seq: i32) -> Result<Vec<u8>, String> {
        // SAFETY: size query on a live context.
        let size = unsafe { sys::llama_state_seq_get_size(self.ptr.as_ptr(), seq) };
        let mut bytes = vec![0u8; size];
        // SAFETY: `bytes` has room for `size` bytes, as llama.cpp asked.
        let written = unsafe {
            sys::llama_state_seq_get_data(self.ptr.as_ptr(), bytes.as_mut_ptr(), size, seq)
        };
        if written == 0 || written > size {
            return Err(format!(
                "llama.cpp could not copy out sequence {seq} ({written} of {size} bytes)"
            ));
        }
        bytes.truncate(written);
        Ok(bytes)
    }

    /// Makes sequence `dst` share every cell of sequence `src` (the cells
    /// are not copied: in a unified cache they gain a second sequence id).
    pub(crate) fn copy_sequence(&mut self, src: i32, dst: i32) {
        // SAFETY: the memory handle belongs to this live context; p0 = p1 =
        // -1 means every position.
        unsafe {
            sys::llama_memory_seq_cp(sys::llama_get_memory(self.ptr.as_ptr()), src, dst, -1, -1)
        };
    }

    /// Forgets the positions `from_pos..` of sequence `seq`. Returns false
    /// when llama.cpp cannot remove part of a sequence (recurrent memories).
    pub(crate) fn forget_from(&mut self, seq: i32, from_pos: usize) -> bool {
        // SAFETY: the memory handle belongs to this live context; p1 = -1
        // means "to the end".
        unsafe {
            sys::llama_memory_seq_rm(
                sys::llama_get_memory(self.ptr.as_ptr()),
                seq,
                from_pos as i32,
                -1,
            )
        }
    }

    /// Puts a sequence saved by [`LlamaContext::sequence_state`] into
    /// sequence `seq`, which must be empty; its cells go to the start of
    /// the sequence's stream, in position order.
    pub(crate) fn load_sequence_state(&mut self, seq: i32, state: &[u8]) -> Result<(), String> {
        take_recent_problems();
        // SAFETY: `state` is a live slice of `state.len()` bytes; llama.cpp
        // validates its contents and returns 0 on any mismatch.
        let read = unsafe {
            sys::llama_state_seq_set_data(self.ptr.as_ptr(), state.as_ptr(), state.len(), seq)
        };
        if read == 0 {
            return Err(format!(
                "llama.cpp could not load a saved sequence into sequence {seq}: {}",
                take_recent_problems().join("; ")
            ));
        }
        Ok(())
    }

    /// Runs one decode of tokens from any sequences, each an output: the
    /// logits of `tokens[i]` are then `logits(i)`. The observer, if any,
    /// sees the graph nodes it asks for; rows follow the order of `tokens`
    /// (the context must have a unified cache to decode several sequences,
    /// or llama.cpp reorders them).
    pub(crate) fn decode_tokens(
        &mut self,
        tokens: &[BatchToken],
        observer: Option<&mut dyn GraphObserver>,
    ) -> Result<(), String> {
        if tokens.is_empty() || tokens.len() > self.max_batch() {
            return Err(format!(
                "cannot decode {} tokens in a batch of at most {}",
                tokens.len(),
                self.max_batch()
            ));
        }
        let outputs = vec![true; tokens.len()];
        self.run_batch(tokens, &outputs, observer)
    }

    /// Runs `tokens` at positions `first_pos..` of sequence 0. `outputs[i]`
    /// asks for logits (and last-layer rows) of token i. The observer, if
    /// any, sees the graph nodes it asks for.
    pub(crate) fn decode(
        &mut self,
        tokens: &[i32],
        first_pos: usize,
        outputs: &[bool],
        observer: Option<&mut dyn GraphObserver>,
    ) -> Result<(), String> {
        if tokens.is_empty()
            || tokens.len() != outputs.len()
            || tokens.len() > self.max_batch()
            || first_pos + tokens.len() > self.n_ctx()
        {
            return Err(format!(
                "cannot decode {} tokens at position {first_pos} in a context of {}",
                tokens.len(),
                self.n_ctx()
            ));
        }
        let batch: Vec<BatchToken> = tokens
            .iter()
            .enumerate()
            .map(|(i, &token)| BatchToken {
                token,
                pos: first_pos + i,
                seq: 0,
            })
            .collect();
        self.run_batch(&batch, outputs, observer)
    }

    /// One `llama_decode` of `tokens` (sizes checked by the caller), with
    /// the observer installed in the callback slot while it runs.
    fn run_batch(
        &mut self,
        tokens: &[BatchToken],
        outputs: &[bool],
        observer: Option<&mut dyn GraphObserver>,
    ) -> Result<(), String> {
        let n = tokens.len();
        // SAFETY: allocates a batch for `n` tokens with one sequence id each;
        // freed below on every path.
        let mut batch = unsafe { sys::llama_batch_init(n as i32, 0, 1) };
        // SAFETY: every array of `batch` has room for `n` entries (allocated
        // above), and `seq_id[i]` for one id.
        unsafe {
            for (i, (t, &output)) in tokens.iter().zip(outputs).enumerate() {
                *batch.token.add(i) = t.token;
                *batch.pos.add(i) = t.pos as i32;
                *batch.n_seq_id.add(i) = 1;
                **batch.seq_id.add(i) = t.seq;
                *batch.logits.add(i) = i8::from(output);
            }
        }
        batch.n_tokens = n as i32;

        let mut observer = observer;
        // SAFETY: `slot` is live for the life of the context; we are the only
        // user (no decode is in flight: `&mut self`).
        let slot = unsafe { &mut *self.slot.as_ptr() };
        slot.panicked = None;
        slot.observer = match observer.as_mut() {
            Some(o) => (o as *mut &mut dyn GraphObserver).cast(),
            None => std::ptr::null_mut(),
        };
        // SAFETY: the batch is fully initialised for `n` tokens; the context is
        // live; the observer pointer in `slot` stays valid until we reset it
        // right after the call.
        let status = unsafe { sys::llama_decode(self.ptr.as_ptr(), batch) };
        // SAFETY: as above, the decode has returned.
        let slot = unsafe { &mut *self.slot.as_ptr() };
        slot.observer = std::ptr::null_mut();
        // SAFETY: the batch came from llama_batch_init and is freed once.
        unsafe { sys::llama_batch_free(batch) };
        if let Some(panic) = slot.panicked.take() {
            return Err(format!(
                "the capture failed while llama.cpp was running: {panic}"
            ));
        }
        decode_status(status)
    }

    /// Logits for batch index `i` of the last decode (which must have been
    /// marked as an output); `-1` is the last output.
    pub(crate) fn logits(&self, i: i32) -> Option<&[f32]> {
        // SAFETY: returns NULL for an index that was not an output, else a
        // pointer to `n_vocab` floats owned by the context, valid until the
        // next decode (which needs `&mut self`, so the borrow prevents it).
        let ptr = unsafe { sys::llama_get_logits_ith(self.ptr.as_ptr(), i) };
        // SAFETY: see above.
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr, self.n_vocab) })
    }

    /// llama.cpp's own per-token embeddings output (final norm) for batch
    /// index `i`, when the context was created with embeddings on.
    pub(crate) fn embeddings(&self, i: i32) -> Option<&[f32]> {
        // SAFETY: same contract as `logits`, with `n_embd` floats.
        let ptr = unsafe { sys::llama_get_embeddings_ith(self.ptr.as_ptr(), i) };
        // SAFETY: see above.
        (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr, self.n_embd) })
    }
}

/// `llama_decode`'s status as a result.
fn decode_status(status: i32) -> Result<(), String> {
    match status {
        0 => Ok(()),
        1 => Err("llama.cpp found no room in the KV cache for the batch".to_string()),
        2 => Err("llama.cpp aborted the computation".to_string()),
        s => Err(format!(
            "llama_decode failed with status {s}: {}",
            take_recent_problems().join("; ")
        )),
    }
}

impl Drop for LlamaContext<'_> {
    fn drop(&mut self) {
        // SAFETY: the context came from llama_init_from_model and is freed
        // once; the slot is freed after it, as llama.cpp may call the callback
        // until the context is gone.
        unsafe {
            sys::llama_free(self.ptr.as_ptr());
            drop(Box::from_raw(self.slot.as_ptr()));
        }
    }
}
