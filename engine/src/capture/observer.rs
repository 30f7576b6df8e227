//! The capture logic that runs inside llama.cpp's tensor callback: picks the
//! graph nodes a [`CaptureRequest`] needs and reduces them as they arrive.
//!
//! Tensor layouts (llama.cpp, ggml order: innermost dimension first):
//! - `l_out-{il}`: residual stream after block `il`, `[n_embd, n_rows]`, where
//!   `n_rows` is the token count, except in the last block, which keeps only
//!   the rows of tokens marked as outputs.
//! - `kq_soft_max-{il}` (op SOFT_MAX): `[n_kv, n_tokens, n_head]`, `n_kv`
//!   padded to a multiple of 256 with exact zeros; only with flash attention off.
//! - `Qcur-{il}` / `Kcur-{il}` (op ROPE): `[head_dim, n_head, n_tokens]` and
//!   `[head_dim, n_head_kv, n_tokens]`; query head h reads KV head
//!   `h / (n_head / n_head_kv)`.
//! - `result_norm` (renamed `result_embd_pooled` when embeddings are on):
//!   final norm, `[n_embd, n_rows]`.

use half::f16;

use super::architectures::AttentionRecipe;
use super::llama::{GraphObserver, GraphOp, GraphTensor};
use super::request::{
    AttentionKeep, AttentionPath, CaptureRequest, F32Array, HiddenRequest, Pooling,
};

/// Model and prompt sizes the observer checks every tensor against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
    /// Tokens of the whole prompt.
    pub n_tokens: usize,
    /// Position of the first token this decode computes: 0 for a whole
    /// prompt, the prefix length when a shared prefix is already in the KV
    /// cache. Request positions are prompt positions either way.
    pub offset: usize,
}

impl Dims {
    /// Tokens this decode computes.
    fn batch(&self) -> usize {
        self.n_tokens - self.offset
    }
}

/// How the recomputed path scores keys (ignored by the materialized path).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recompute<'a> {
    /// The architecture's arithmetic between `Qcur`/`Kcur` and the softmax.
    pub recipe: &'a AttentionRecipe,
    /// Round q and k to float16 before the dot product, as llama.cpp does when
    /// its KV cache is float16 (the default): this makes the recomputed rows
    /// match the materialized ones to float32 rounding instead of ~1e-3.
    pub round_to_f16: bool,
}

/// The arrays one decode filled, shaped as the request says.
#[derive(Debug)]
pub(crate) struct Captured {
    pub hidden: Option<F32Array>,
    pub attention: Option<F32Array>,
    pub final_norm: Option<F32Array>,
}

/// Gathers what a [`CaptureRequest`] asks for while llama.cpp computes.
#[derive(Debug)]
pub(crate) struct CaptureObserver<'r> {
    request: &'r CaptureRequest,
    dims: Dims,
    path: AttentionPath,
    recompute: Recompute<'r>,
    /// The RoPE'd keys of the prefix positions `0..offset`, per layer
    /// (`[offset, n_head_kv · head_dim]`), recorded when the prefix ran:
    /// the recomputed path needs them and this decode does not produce them.
    prefix_keys: Option<&'r [Vec<f32>]>,
    /// For each token position, its row among the outputs of the last block.
    output_row: Vec<Option<usize>>,
    n_outputs: usize,
    hidden: Option<F32Array>,
    attention: Option<F32Array>,
    final_norm: Option<F32Array>,
    queries: Vec<f32>,
    keys: Vec<f32>,
    q_layer: Option<(usize, usize, usize)>,
    k_layer: Option<(usize, usize, usize)>,
    hidden_seen: Vec<bool>,
    attention_seen: Vec<bool>,
    final_seen: bool,
    problem: Option<String>,
    scratch: Vec<f32>,
}

/// Splits `l_out-12` into (`l_out`, Some(12)); `result_norm` into (`result_norm`, None).
fn parse_name(name: &str) -> (&str, Option<usize>) {
    match name.rsplit_once('-') {
        Some((base, layer)) => match layer.parse() {
            Ok(il) => (base, Some(il)),
            Err(_) => (name, None),
        },
        None => (name, None),
    }
}

impl<'r> CaptureObserver<'r> {
    pub(crate) fn new(
        request: &'r CaptureRequest,
        dims: Dims,
        path: AttentionPath,
        recompute: Recompute<'r>,
        outputs: &[bool],
        prefix_keys: Option<&'r [Vec<f32>]>,
    ) -> Self {
        let mut output_row = vec![None; dims.n_tokens];
        let mut n_outputs = 0;
        for (i, &is_output) in outputs.iter().enumerate() {
            if is_output {
                output_row[dims.offset + i] = Some(n_outputs);
                n_outputs += 1;
            }
        }
        let hidden = match &request.hidden {
            HiddenRequest::None => None,
            HiddenRequest::All => {
                Some(F32Array::zeros(&[dims.n_layer, dims.n_tokens, dims.n_embd]))
            }
            HiddenRequest::Pooled(pools) => {
                Some(F32Array::zeros(&[pools.len(), dims.n_layer, dims.n_embd]))
            }
        };
        let attention = request.attention.as_ref().map(|a| {
            let last = match &a.keep {
                AttentionKeep::Rows => dims.n_tokens,
                AttentionKeep::SpanMass(spans) => spans.len(),
            };
            F32Array::zeros(&[dims.n_layer, dims.n_head, a.queries.len(), last])
        });
        let final_norm = request
            .final_norm
            .then(|| F32Array::zeros(&[dims.n_tokens, dims.n_embd]));
        CaptureObserver {
            request,
            dims,
            path,
            recompute,
            prefix_keys,
            output_row,
            n_outputs,
            hidden,
            attention,
            final_norm,
            queries: Vec::new(),
            keys: Vec::new(),
            q_layer: None,
            k_layer: None,
            hidden_seen: vec![false; dims.n_layer],
            attention_seen: vec![false; dims.n_layer],
            final_seen: false,
            problem: None,
            scratch: Vec::new(),
        }
    }

    /// The arrays gathered, or what went wrong (a missing layer, a layout
    /// that does not match the model).
    pub(crate) fn finish(self) -> Result<Captured, String> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        if self.hidden.is_some() {
            if let Some(il) = self.hidden_seen.iter().position(|seen| !seen) {
                return Err(format!(
                    "llama.cpp never produced the hidden state of layer {il} (`l_out-{il}`)"
                ));
            }
        }
        if self.attention.is_some() {
            if let Some(il) = self.attention_seen.iter().position(|seen| !seen) {
                return Err(match self.path {
                    AttentionPath::Materialized => format!(
                        "llama.cpp never produced the attention probabilities of layer {il} \
                         (`kq_soft_max-{il}`); they exist only with flash attention off (--flash-attn off)"
                    ),
                    AttentionPath::Recomputed => format!(
                        "llama.cpp never produced the RoPE'd queries and keys of layer {il} (`Qcur-{il}`, `Kcur-{il}`)"
                    ),
                });
            }
        }
        if self.final_norm.is_some() && !self.final_seen {
            return Err("llama.cpp never produced the final norm (`result_norm`)".to_string());
        }
        Ok(Captured {
            hidden: self.hidden,
            attention: self.attention,
            final_norm: self.final_norm,
        })
    }

    fn fail(&mut self, problem: String) {
        self.problem.get_or_insert(problem);
    }

    /// The row of prompt position `p` in a tensor with `n_rows` rows (every
    /// token of this decode, or only the outputs in the last block).
    fn row_of(&self, p: usize, n_rows: usize) -> Option<usize> {
        if p < self.dims.offset {
            None
        } else if n_rows == self.dims.batch() {
            Some(p - self.dims.offset)
        } else if n_rows == self.n_outputs {
            self.output_row[p]
        } else {
            None
        }
    }

    /// Reads `n` consecutive rows of length `width` from a 2-D tensor into
    /// the scratch buffer (one copy when rows are contiguous).
    fn read_rows(
        &mut self,
        t: &GraphTensor<'_>,
        first: usize,
        n: usize,
        width: usize,
    ) -> Result<(), String> {
        let nb = t.nb();
        self.scratch.resize(n * width, 0.0);
        if nb[0] != 4 {
            return Err(format!(
                "tensor `{}` is not contiguous in its first dimension",
                t.name()
            ));
        }
        if nb[1] == width * 4 {
            t.read_f32(first * nb[1], &mut self.scratch[..n * width])
        } else {
            for r in 0..n {
                t.read_f32(
                    (first + r) * nb[1],
                    &mut self.scratch[r * width..(r + 1) * width],
                )?;
            }
            Ok(())
        }
    }

    fn observe_hidden(&mut self, t: &GraphTensor<'_>, il: usize) -> Result<(), String> {
        let [n_embd, n_rows, ..] = t.ne();
        if n_embd != self.dims.n_embd {
            return Err(format!(
                "`{}` has {n_embd} features, the model {}",
                t.name(),
                self.dims.n_embd
            ));
        }
        let request = self.request;
        match &request.hidden {
            HiddenRequest::None => {}
            HiddenRequest::All => {
                if self.dims.offset != 0 || n_rows != self.dims.n_tokens {
                    return Err(format!(
                        "`{}` has {n_rows} rows; all {} tokens must be outputs",
                        t.name(),
                        self.dims.n_tokens
                    ));
                }
                self.read_rows(t, 0, n_rows, n_embd)?;
                if let Some(hidden) = self.hidden.as_mut() {
                    let start = hidden.offset(&[il, 0, 0]);
                    hidden.data[start..start + n_rows * n_embd].copy_from_slice(&self.scratch);
                }
            }
            HiddenRequest::Pooled(pools) => {
                for (k, pool) in pools.iter().enumerate() {
                    let positions = pool.positions();
                    let first = self.row_of(positions.start, n_rows).ok_or_else(|| {
                        format!(
                            "token {} is not among the rows of `{}`",
                            positions.start,
                            t.name()
                        )
                    })?;
                    self.read_rows(t, first, positions.len(), n_embd)?;
                    let pooled = pool_rows(pool, &self.scratch, n_embd);
                    if let Some(hidden) = self.hidden.as_mut() {
                        let start = hidden.offset(&[k, il, 0]);
                        hidden.data[start..start + n_embd].copy_from_slice(&pooled);
                    }
                }
            }
        }
        self.hidden_seen[il] = true;
        Ok(())
    }

    fn observe_softmax(&mut self, t: &GraphTensor<'_>, il: usize) -> Result<(), String> {
        let [n_kv, n_tokens, n_head, n_stream] = t.ne();
        let d = self.dims;
        if n_kv < d.n_tokens || n_tokens != d.batch() || n_head != d.n_head || n_stream != 1 {
            return Err(format!(
                "`{name}` has shape [{n_kv}, {n_tokens}, {n_head}, {n_stream}], expected [≥{t}, {b}, {h}, 1]",
                name = t.name(),
                t = d.n_tokens,
                b = d.batch(),
                h = d.n_head
            ));
        }
        let nb = t.nb();
        let Some(request) = self.request.attention.as_ref() else {
            return Ok(());
        };
        // Padded and masked entries are exact zeros, and a kept prefix fills
        // cells 0..offset in position order (see `truncate`): the first
        // n_tokens entries of a row are the whole causal row.
        let queries = &request.queries;
        let consecutive = queries.windows(2).all(|w| w[1] == w[0] + 1);
        if consecutive && queries.len() > 1 && nb[1] == n_kv * 4 {
            // Consecutive rows are one block per head: one copy each (on a
            // GPU, a device-to-host copy costs its latency whatever its
            // size, and a full capture of 500 tokens would otherwise take
            // 500 per head and layer), padding included, then sliced.
            let first = queries[0] - d.offset;
            let mut block = std::mem::take(&mut self.scratch);
            block.resize(queries.len() * n_kv, 0.0);
            for h in 0..n_head {
                t.read_f32(first * nb[1] + h * nb[2], &mut block)?;
                for qi in 0..queries.len() {
                    let row = &block[qi * n_kv..qi * n_kv + d.n_tokens];
                    self.store_row(il, h, qi, row);
                }
            }
            self.scratch = block;
        } else {
            let mut row = vec![0.0f32; d.n_tokens];
            for h in 0..n_head {
                for (qi, &q) in queries.iter().enumerate() {
                    t.read_f32((q - d.offset) * nb[1] + h * nb[2], &mut row)?;
                    self.store_row(il, h, qi, &row);
                }
            }
        }
        self.attention_seen[il] = true;
        Ok(())
    }

    fn observe_rope(
        &mut self,
        t: &GraphTensor<'_>,
        il: usize,
        is_query: bool,
    ) -> Result<(), String> {
        let [head_dim, heads, n_tokens, _] = t.ne();
        let nb = t.nb();
        let offset = self.dims.offset;
        if n_tokens != self.dims.batch() || nb[0] != 4 || nb[1] != head_dim * 4 {
            return Err(format!(
                "`{}` has an unexpected layout ({head_dim} × {heads} × {n_tokens})",
                t.name()
            ));
        }
        let width = head_dim * heads;
        if is_query {
            let Some(request) = self.request.attention.as_ref() else {
                return Ok(());
            };
            self.queries.resize(request.queries.len() * width, 0.0);
            for (qi, &q) in request.queries.iter().enumerate() {
                t.read_f32(
                    (q - offset) * nb[2],
                    &mut self.queries[qi * width..(qi + 1) * width],
                )?;
            }
            self.q_layer = Some((il, head_dim, heads));
        } else {
            self.keys.clear();
            if offset > 0 {
                let prefix = self
                    .prefix_keys
                    .and_then(|layers| layers.get(il))
                    .filter(|keys| keys.len() == offset * width)
                    .ok_or_else(|| {
                        format!("the keys of the {offset} prefix tokens of layer {il} were not recorded")
                    })?;
                self.keys.extend_from_slice(prefix);
            }
            self.keys.resize((offset + n_tokens) * width, 0.0);
            read_token_rows(t, &mut self.keys[offset * width..], width)?;
            self.k_layer = Some((il, head_dim, heads));
        }
        if let (Some((ql, hd, n_head)), Some((kl, hd_k, n_head_kv))) = (self.q_layer, self.k_layer)
        {
            if ql == il && kl == il {
                if hd != hd_k
                    || n_head != self.dims.n_head
                    || n_head_kv == 0
                    || n_head % n_head_kv != 0
                {
                    return Err(format!("layer {il}: queries and keys do not fit ({n_head} heads, {n_head_kv} KV heads)"));
                }
                self.recompute_layer(il, hd, n_head_kv);
                self.q_layer = None;
                self.k_layer = None;
                self.attention_seen[il] = true;
            }
        }
        Ok(())
    }

    /// The attention rows of layer `il` from the stored queries and keys,
    /// as llama.cpp computes them: q (times the recipe's factor) and k
    /// rounded to float16, scores q·k · scale, soft-capped where the
    /// architecture caps them, masked outside the causal prefix (and the
    /// sliding window, in the layers that slide), softmax.
    fn recompute_layer(&mut self, il: usize, head_dim: usize, n_head_kv: usize) {
        let Some(request) = self.request.attention.as_ref() else {
            return;
        };
        let d = self.dims;
        let group = d.n_head / n_head_kv;
        let recipe = self.recompute.recipe;
        let scale = recipe.kq_scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
        let q_scale = recipe.q_scale;
        let soft_cap = recipe.soft_cap;
        let window = recipe
            .sliding_window
            .as_ref()
            .filter(|w| w.applies_to(il))
            .map(|w| w.window);
        let round_to_f16 = self.recompute.round_to_f16;
        let round = |x: f32| {
            if round_to_f16 {
                f16::from_f32(x).to_f32()
            } else {
                x
            }
        };
        let keys: Vec<f32> = self.keys.iter().map(|&x| round(x)).collect();
        let q_width = head_dim * d.n_head;
        let k_width = head_dim * n_head_kv;
        let mut row = vec![0.0f32; d.n_tokens];
        let mut q = vec![0.0f32; head_dim];
        for h in 0..d.n_head {
            let g = h / group;
            for (qi, &pos) in request.queries.iter().enumerate() {
                let q_start = qi * q_width + h * head_dim;
                for (dst, &src) in q.iter_mut().zip(&self.queries[q_start..q_start + head_dim]) {
                    *dst = round(match q_scale {
                        Some(factor) => src * factor,
                        None => src,
                    });
                }
                row.iter_mut().for_each(|x| *x = 0.0);
                // llama.cpp masks key j of query p when p − j ≥ window.
                let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let mut max = f32::NEG_INFINITY;
                for (j, score) in row.iter_mut().enumerate().take(pos + 1).skip(first) {
                    let k = &keys[j * k_width + g * head_dim..j * k_width + (g + 1) * head_dim];
                    let dot: f64 = q
                        .iter()
                        .zip(k)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    let mut s = dot as f32;
                    if let Some(cap) = soft_cap {
                        s = (s * (1.0 / cap)).tanh() * cap;
                    }
                    *score = s * scale;
                    max = max.max(*score);
                }
                let mut sum = 0.0f64;
                for score in row.iter_mut().take(pos + 1).skip(first) {
                    *score = (*score - max).exp();
                    sum += f64::from(*score);
                }
                let inv = (1.0 / sum) as f32;
                row.iter_mut()
                    .take(pos + 1)
                    .skip(first)
                    .for_each(|x| *x *= inv);
                self.store_row(il, h, qi, &row);
            }
        }
    }

    fn store_row(&mut self, il: usize, h: usize, qi: usize, row: &[f32]) {
        let (Some(request), Some(attention)) =
            (self.request.attention.as_ref(), self.attention.as_mut())
        else {
            return;
        };
        let start = attention.offset(&[il, h, qi, 0]);
        match &request.keep {
            AttentionKeep::Rows => attention.data[start..start + row.len()].copy_from_slice(row),
            AttentionKeep::SpanMass(spans) => {
                for (s, span) in spans.iter().enumerate() {
                    let end = span.end.min(row.len());
                    let mass: f64 = row[span.start.min(end)..end]
                        .iter()
                        .map(|&p| f64::from(p))
                        .sum();
                    attention.data[start + s] = mass as f32;
                }
            }
        }
    }

    fn observe_final_norm(&mut self, t: &GraphTensor<'_>) -> Result<(), String> {
        let [n_embd, n_rows, ..] = t.ne();
        if n_embd != self.dims.n_embd || self.dims.offset != 0 || n_rows != self.dims.n_tokens {
            return Err(format!(
                "`{}` has shape [{n_embd}, {n_rows}]; all tokens must be outputs",
                t.name()
            ));
        }
        self.read_rows(t, 0, n_rows, n_embd)?;
        if let Some(out) = self.final_norm.as_mut() {
            out.data.copy_from_slice(&self.scratch);
        }
        self.final_seen = true;
        Ok(())
    }
}

/// Copies every token's row of a `[head_dim, heads, n_tokens]` tensor into
/// `dst` (`n_tokens × width`, row-major), in one read when rows are packed.
fn read_token_rows(t: &GraphTensor<'_>, dst: &mut [f32], width: usize) -> Result<(), String> {
    let nb = t.nb();
    if nb[2] == width * 4 {
        t.read_f32(0, dst)
    } else {
        for (j, row) in dst.chunks_exact_mut(width).enumerate() {
            t.read_f32(j * nb[2], row)?;
        }
        Ok(())
    }
}

/// Records the RoPE'd keys (`Kcur-N`) of every layer while a shared prefix
/// runs, for the recomputed attention of the prompts that continue it.
#[derive(Debug)]
pub(crate) struct PrefixKeyRecorder {
    n_layer: usize,
    n_tokens: usize,
    keys: Vec<Vec<f32>>,
    problem: Option<String>,
}

impl PrefixKeyRecorder {
    pub(crate) fn new(n_layer: usize, n_tokens: usize) -> Self {
        PrefixKeyRecorder {
            n_layer,
            n_tokens,
            keys: vec![Vec::new(); n_layer],
            problem: None,
        }
    }

    /// The keys of every layer, or what went wrong.
    pub(crate) fn finish(self) -> Result<Vec<Vec<f32>>, String> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        if let Some(il) = self.keys.iter().position(Vec::is_empty) {
            return Err(format!(
                "llama.cpp never produced the RoPE'd keys of layer {il} (`Kcur-{il}`) while running the shared prefix"
            ));
        }
        Ok(self.keys)
    }
}

impl GraphObserver for PrefixKeyRecorder {
    fn wants(&mut self, t: &GraphTensor<'_>) -> bool {
        let (base, layer) = parse_name(t.name());
        base == "Kcur" && t.op() == GraphOp::Rope && layer.is_some_and(|il| il < self.n_layer)
    }

    fn observe(&mut self, t: &GraphTensor<'_>) {
        let (_, Some(il)) = parse_name(t.name()) else {
            return;
        };
        let [head_dim, heads, n_tokens, _] = t.ne();
        let nb = t.nb();
        if n_tokens != self.n_tokens || nb[0] != 4 || nb[1] != head_dim * 4 {
            self.problem.get_or_insert(format!(
                "`{}` has an unexpected layout ({head_dim} × {heads} × {n_tokens})",
                t.name()
            ));
            return;
        }
        let width = head_dim * heads;
        let mut keys = vec![0.0; n_tokens * width];
        match read_token_rows(t, &mut keys, width) {
            Ok(()) => self.keys[il] = keys,
            Err(problem) => {
                self.problem.get_or_insert(problem);
            }
        }
    }
}

/// Reduces `rows` (`n × width`, row-major) as `pool` says. Means accumulate
/// in f64 so that long spans do not lose precision.
pub(crate) fn pool_rows(pool: &Pooling, rows: &[f32], width: usize) -> Vec<f32> {
    let n = rows.len() / width.max(1);
    match pool {
        Pooling::Token(_) => rows[..width].to_vec(),
        Pooling::Mean(_) => {
            let mut sum = vec![0.0f64; width];
            for row in rows.chunks_exact(width) {
                sum.iter_mut()
                    .zip(row)
                    .for_each(|(s, &x)| *s += f64::from(x));
            }
            sum.iter().map(|s| (s / n as f64) as f32).collect()
        }
        Pooling::Max(_) => {
            let mut max = vec![f32::NEG_INFINITY; width];
            for row in rows.chunks_exact(width) {
                max.iter_mut().zip(row).for_each(|(m, &x)| *m = m.max(x));
            }
            max
        }
    }
}

impl GraphObserver for CaptureObserver<'_> {
    fn wants(&mut self, t: &GraphTensor<'_>) -> bool {
        let (base, layer) = parse_name(t.name());
        let in_range = layer.is_some_and(|il| il < self.dims.n_layer);
        let attention = self.request.attention.is_some();
        match (base, t.op()) {
            ("l_out", _) => in_range && self.hidden.is_some(),
            ("kq_soft_max", GraphOp::SoftMax) => {
                in_range && attention && self.path == AttentionPath::Materialized
            }
            ("Qcur" | "Kcur", GraphOp::Rope) => {
                in_range && attention && self.path == AttentionPath::Recomputed
            }
            ("result_norm" | "result_embd_pooled", _) => self.final_norm.is_some(),
            _ => false,
        }
    }

    fn observe(&mut self, t: &GraphTensor<'_>) {
        if self.problem.is_some() {
            return;
        }
        let (base, layer) = parse_name(t.name());
        let result = match (base, layer) {
            ("l_out", Some(il)) => self.observe_hidden(t, il),
            ("kq_soft_max", Some(il)) => self.observe_softmax(t, il),
            ("Qcur", Some(il)) => self.observe_rope(t, il, true),
            ("Kcur", Some(il)) => self.observe_rope(t, il, false),
            ("result_norm" | "result_embd_pooled", None) => self.observe_final_norm(t),
            _ => Ok(()),
        };
        if let Err(problem) = result {
            self.fail(problem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_base_and_layer() {
        assert_eq!(parse_name("l_out-12"), ("l_out", Some(12)));
        assert_eq!(parse_name("kq_soft_max-0"), ("kq_soft_max", Some(0)));
        assert_eq!(parse_name("result_norm"), ("result_norm", None));
        assert_eq!(parse_name("Qcur-3 (reshaped)"), ("Qcur-3 (reshaped)", None));
    }

    #[test]
    fn mean_and_max_pooling_reduce_rows() {
        let rows = [1.0, -2.0, 3.0, 4.0, 5.0, -6.0];
        assert_eq!(
            pool_rows(&Pooling::Mean(0..3), &rows, 2),
            vec![3.0, -4.0 / 3.0]
        );
        assert_eq!(pool_rows(&Pooling::Max(0..3), &rows, 2), vec![5.0, 4.0]);
        assert_eq!(
            pool_rows(&Pooling::Token(1), &rows[2..4], 2),
            vec![3.0, 4.0]
        );
    }
}
