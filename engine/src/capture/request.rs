//! What a capture keeps ([`CaptureRequest`]) and what it returns ([`Activations`]).

use std::ops::Range;

/// A dense float32 array in row-major order with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl F32Array {
    pub fn zeros(shape: &[usize]) -> Self {
        F32Array {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Row-major offset of the element at `index` (one entry per dimension).
    pub fn offset(&self, index: &[usize]) -> usize {
        debug_assert_eq!(index.len(), self.shape.len());
        index.iter().zip(&self.shape).fold(0, |acc, (&i, &n)| {
            debug_assert!(i < n, "index {i} out of range {n}");
            acc * n + i
        })
    }

    pub fn get(&self, index: &[usize]) -> f32 {
        self.data[self.offset(index)]
    }

    /// The contiguous slice that fixes every index but the last.
    pub fn row(&self, leading: &[usize]) -> &[f32] {
        let last = self.shape.last().copied().unwrap_or(1);
        let mut index = leading.to_vec();
        index.push(0);
        let start = self.offset(&index);
        &self.data[start..start + last]
    }
}

/// How to reduce a layer's hidden states to one vector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pooling {
    /// The hidden state of one token position.
    Token(usize),
    /// The mean over a range of token positions.
    Mean(Range<usize>),
    /// The element-wise maximum over a range of token positions (the study's max-pooling).
    Max(Range<usize>),
}

impl Pooling {
    /// The token positions this pooling reads.
    pub fn positions(&self) -> Range<usize> {
        match self {
            Pooling::Token(p) => *p..*p + 1,
            Pooling::Mean(r) | Pooling::Max(r) => r.clone(),
        }
    }
}

/// Which hidden states (residual stream after each block) to keep.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HiddenRequest {
    #[default]
    None,
    /// Every token of every layer: `[n_layer, n_tokens, n_embd]`.
    All,
    /// One vector per pooling per layer: `[n_pools, n_layer, n_embd]`.
    Pooled(Vec<Pooling>),
}

/// What to keep of each attention row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttentionKeep {
    /// The whole row over the causal prefix: `[n_layer, n_head, n_queries, n_tokens]`.
    Rows,
    /// The attention mass (sum of probabilities) on each key span:
    /// `[n_layer, n_head, n_queries, n_spans]`.
    SpanMass(Vec<Range<usize>>),
}

/// How attention probabilities are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionPath {
    /// Read llama.cpp's own softmax output (`kq_soft_max-N`). Needs flash
    /// attention off, which is slower on long prompts. The reference.
    Materialized,
    /// Recompute the asked rows from the RoPE'd queries and keys (`Qcur-N`,
    /// `Kcur-N`): softmax(q·k/√d) over the causal prefix. Works with flash
    /// attention on, and only costs the rows asked for.
    Recomputed,
}

/// Which attention rows to keep and how to reduce them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionRequest {
    /// Query (attending) token positions.
    pub queries: Vec<usize>,
    pub keep: AttentionKeep,
}

/// Everything one capture keeps.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CaptureRequest {
    pub hidden: HiddenRequest,
    pub attention: Option<AttentionRequest>,
    /// The final normalised hidden state of every token (`[n_tokens, n_embd]`),
    /// the same numbers llama.cpp returns as embeddings.
    pub final_norm: bool,
    /// Logits of every token instead of only the last (`[n_tokens, n_vocab]`).
    pub all_logits: bool,
}

/// What one capture returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Activations {
    /// The prompt's token ids.
    pub tokens: Vec<i32>,
    /// Hidden states, shaped as [`HiddenRequest`] says.
    pub hidden: Option<F32Array>,
    /// Attention, shaped as [`AttentionKeep`] says.
    pub attention: Option<F32Array>,
    /// `[n_tokens, n_embd]`
    pub final_norm: Option<F32Array>,
    /// `[n_vocab]`: the next-token logits after the last prompt token.
    pub logits_last: Vec<f32>,
    /// `[n_tokens, n_vocab]`, only when asked.
    pub logits_all: Option<F32Array>,
}

impl Activations {
    /// Token ids of the `n` most likely next tokens, most likely first.
    pub fn top_next(&self, n: usize) -> Vec<(i32, f32)> {
        let mut ranked: Vec<(i32, f32)> = self
            .logits_last
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as i32, l))
            .collect();
        // Ties broken by token id so the order is deterministic.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(n);
        ranked
    }
}
