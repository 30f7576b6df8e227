//! Interventions: writing into the residual stream while llama.cpp runs.
//!
//! A [`Patch`] replaces (or adds to) the output of block ℓ (`l_out-ℓ`) at
//! one token, inside the tensor callback, before block ℓ+1 reads it. It is
//! plain data; the callback writes it with `ggml_backend_tensor_set`, so it
//! works on every backend, with every layer offloaded to a GPU, and with
//! flash attention on or off (the residual stream is the same tensor either
//! way).
//!
//! [`PatchRunner`] makes a layer sweep cheap by construction. Patching the
//! last prompt token cannot change any earlier position (attention is
//! causal), so the prompt without its last token runs once, into sequence 0
//! of a unified KV cache; every patched run is a sequence that shares those
//! cells (`llama_memory_seq_cp` adds a sequence id, it copies nothing) and
//! decodes only the last prompt token, with its patch, followed by the
//! correct answer, teacher-forced. One decode serves up to `width` patched
//! runs; their greedy answers follow in a batched loop that starts where
//! each run's greedy choice first leaves the correct answer.

use super::llama::RawContextParams;
use super::llama::{BatchToken, FlashAttention, GraphObserver, GraphTensor, LlamaContext};
use super::session::{argmax, CaptureError, Model};

/// How a patch changes the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchMode {
    /// The row becomes the patch vector.
    Replace,
    /// The patch vector is added to the row (steering).
    Add,
}

/// One write into the residual stream: at the output of block `layer`.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    pub layer: usize,
    pub mode: PatchMode,
    /// `n_embd` values.
    pub vector: Vec<f32>,
}

/// A patch at one row of the batch being decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowPatch<'p> {
    pub row: usize,
    pub patch: &'p Patch,
}

/// Applies row patches as the blocks' outputs arrive.
#[derive(Debug)]
pub(crate) struct PatchObserver<'p> {
    n_layer: usize,
    n_embd: usize,
    patches: Vec<RowPatch<'p>>,
    applied: usize,
    problem: Option<String>,
    row: Vec<f32>,
}

impl<'p> PatchObserver<'p> {
    pub(crate) fn new(n_layer: usize, n_embd: usize, patches: Vec<RowPatch<'p>>) -> Self {
        PatchObserver {
            n_layer,
            n_embd,
            patches,
            applied: 0,
            problem: None,
            row: vec![0.0; n_embd],
        }
    }

    /// Ok when every patch was written.
    pub(crate) fn finish(self) -> Result<(), String> {
        if let Some(problem) = self.problem {
            return Err(problem);
        }
        if self.applied != self.patches.len() {
            let missing = self
                .patches
                .iter()
                .map(|p| p.patch.layer)
                .find(|&l| l >= self.n_layer)
                .map_or_else(
                    || "llama.cpp never produced some blocks' outputs (`l_out-N`)".to_string(),
                    |l| format!("layer {l} is past the model's {} blocks", self.n_layer),
                );
            return Err(format!(
                "only {} of {} patches were written: {missing}",
                self.applied,
                self.patches.len()
            ));
        }
        Ok(())
    }

    fn apply(&mut self, t: &GraphTensor<'_>, layer: usize) -> Result<(), String> {
        let [n_embd, n_rows, ..] = t.ne();
        let nb = t.nb();
        if n_embd != self.n_embd || nb[0] != 4 {
            return Err(format!(
                "`{}` has {n_embd} features, the model {}",
                t.name(),
                self.n_embd
            ));
        }
        for i in 0..self.patches.len() {
            let RowPatch { row, patch } = self.patches[i];
            if patch.layer != layer {
                continue;
            }
            if row >= n_rows || patch.vector.len() != n_embd {
                return Err(format!(
                    "a patch of {} values at row {row} does not fit `{}` ({n_embd} × {n_rows})",
                    patch.vector.len(),
                    t.name()
                ));
            }
            let offset = row * nb[1];
            match patch.mode {
                PatchMode::Replace => t.write_f32(offset, &patch.vector)?,
                PatchMode::Add => {
                    let mut current = std::mem::take(&mut self.row);
                    t.read_f32(offset, &mut current)?;
                    current
                        .iter_mut()
                        .zip(&patch.vector)
                        .for_each(|(x, &v)| *x += v);
                    t.write_f32(offset, &current)?;
                    self.row = current;
                }
            }
            self.applied += 1;
        }
        Ok(())
    }
}

fn block_output_layer(name: &str) -> Option<usize> {
    name.strip_prefix("l_out-")?.parse().ok()
}

impl GraphObserver for PatchObserver<'_> {
    fn wants(&mut self, t: &GraphTensor<'_>) -> bool {
        block_output_layer(t.name())
            .is_some_and(|l| self.patches.iter().any(|p| p.patch.layer == l))
    }

    fn observe(&mut self, t: &GraphTensor<'_>) {
        if self.problem.is_some() {
            return;
        }
        if let Some(layer) = block_output_layer(t.name()) {
            if let Err(problem) = self.apply(t, layer) {
                self.problem = Some(problem);
            }
        }
    }
}

/// One run of a sweep: a patch (or none, for the unpatched reference) and
/// whether its greedy answer is wanted.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchJob {
    pub patch: Option<Patch>,
    pub greedy: bool,
}

/// What one patched run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchedRun {
    /// Natural-log probability of the correct answer's first token that is
    /// not only whitespace ([`Model::first_content_token`]).
    pub first_token_logprob: f64,
    /// Of the whole correct answer, teacher-forced (sum over its tokens).
    pub answer_logprob: f64,
    /// The greedy answer's tokens, when the job asked for it.
    pub generated: Option<Vec<i32>>,
}

/// `log softmax(logits)[token]`, accumulated in f64.
pub(crate) fn token_logprob(logits: &[f32], token: i32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let chosen = logits
        .get(usize::try_from(token).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    f64::from(chosen - max) - sum.ln()
}

/// A context that runs layer sweeps of patches on the last prompt token.
#[derive(Debug)]
pub struct PatchRunner<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    width: usize,
}

impl<'m> PatchRunner<'m> {
    /// A context for prompts of up to `max_prompt` tokens and answers of up
    /// to `max_answer` teacher-forced and `max_new` generated tokens, running
    /// up to `width` patched runs per decode.
    pub fn new(
        model: &'m Model,
        width: usize,
        max_prompt: usize,
        max_answer: usize,
        max_new: usize,
        threads: usize,
        flash_attention: FlashAttention,
    ) -> Result<Self, CaptureError> {
        // Sequence 0 holds the prompt; llama.cpp allows 256 sequences.
        let width = width.clamp(1, 255);
        let per_run = max_answer.max(1) + max_new;
        let cells = max_prompt + width * per_run;
        let n_ctx = (cells.div_ceil(256) * 256) as u32;
        let n_batch = max_prompt.max(width * max_answer.max(1)) as u32;
        let params = RawContextParams {
            n_ctx,
            n_threads: super::session::resolve_threads(threads) as i32,
            flash_attention,
            embeddings: false,
            with_callback: true,
            n_seq_max: width as u32 + 1,
            n_batch: Some(n_batch),
        };
        let ctx = LlamaContext::new(model.llama(), params)
            .map_err(|problems| super::session::context_failed(n_ctx, &problems))?;
        Ok(PatchRunner { model, ctx, width })
    }

    /// Runs every job on `prompt` (its last token patched as the job says)
    /// followed by `answer`: the teacher-forced log-probabilities of the
    /// answer, and the greedy answer where asked (up to `max_new` tokens,
    /// stopping before an end-of-generation token and after one for which
    /// `stop` is true, as the capture's answers do). Results in job order.
    pub fn run(
        &mut self,
        prompt: &[i32],
        answer: &[i32],
        jobs: &[PatchJob],
        max_new: usize,
        stop: impl Fn(i32) -> bool,
    ) -> Result<Vec<PatchedRun>, CaptureError> {
        let n = prompt.len();
        let m = answer.len();
        let info = self.model.info();
        if n == 0 || m == 0 {
            return Err(CaptureError::BadRequest(
                "a patched run needs a prompt and an answer of at least one token".into(),
            ));
        }
        if let Some(bad) = jobs
            .iter()
            .filter_map(|j| j.patch.as_ref())
            .find(|p| p.layer >= info.n_layer || p.vector.len() != info.n_embd)
        {
            return Err(CaptureError::BadRequest(format!(
                "a patch at layer {} with {} values does not fit a model of {} blocks of width {}",
                bad.layer,
                bad.vector.len(),
                info.n_layer,
                info.n_embd
            )));
        }
        let per_run = m + max_new;
        if n - 1 + self.width * per_run > self.ctx.n_ctx() || self.width * m > self.ctx.max_batch()
        {
            return Err(CaptureError::BadRequest(format!(
                "a {n}-token prompt with a {m}-token answer does not fit the patching context of {} cells",
                self.ctx.n_ctx()
            )));
        }
        self.ctx.clear();
        if n > 1 {
            let mut outputs = vec![false; n - 1];
            outputs[n - 2] = true;
            self.ctx
                .decode(&prompt[..n - 1], 0, &outputs, None)
                .map_err(CaptureError::Decode)?;
        }
        // Runs with greedy answers share decodes, so that the answer steps
        // (one decode per token) serve as many of them as a decode holds.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by_key(|&j| !jobs[j].greedy);
        let mut results: Vec<Option<PatchedRun>> = vec![None; jobs.len()];
        for chunk in order.chunks(self.width) {
            let chunk_jobs: Vec<&PatchJob> = chunk.iter().map(|&j| &jobs[j]).collect();
            let runs = self.run_chunk(prompt, answer, &chunk_jobs, max_new, &stop)?;
            for (&j, run) in chunk.iter().zip(runs) {
                results[j] = Some(run);
            }
            for seq in 1..=chunk.len() {
                self.ctx.forget_from(seq as i32, 0);
            }
        }
        Ok(results.into_iter().flatten().collect())
    }

    fn run_chunk(
        &mut self,
        prompt: &[i32],
        answer: &[i32],
        jobs: &[&PatchJob],
        max_new: usize,
        stop: &impl Fn(i32) -> bool,
    ) -> Result<Vec<PatchedRun>, CaptureError> {
        let n = prompt.len();
        let m = answer.len();
        let last = prompt[n - 1];
        let scored = self.model.first_content_token(answer);
        let mut batch = Vec::with_capacity(jobs.len() * m);
        let mut row_patches = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let seq = i as i32 + 1;
            if n > 1 {
                self.ctx.copy_sequence(0, seq);
            }
            if let Some(patch) = &job.patch {
                row_patches.push(RowPatch {
                    row: batch.len(),
                    patch,
                });
            }
            // The last prompt token, then the answer but its final token
            // (whose logits nobody reads).
            batch.push(BatchToken {
                token: last,
                pos: n - 1,
                seq,
            });
            for (k, &token) in answer[..m - 1].iter().enumerate() {
                batch.push(BatchToken {
                    token,
                    pos: n + k,
                    seq,
                });
            }
        }
        let info = self.model.info();
        let mut observer = PatchObserver::new(info.n_layer, info.n_embd, row_patches);
        let observer_ref: Option<&mut dyn GraphObserver> = if observer.patches.is_empty() {
            None
        } else {
            Some(&mut observer)
        };
        self.ctx
            .decode_tokens(&batch, observer_ref)
            .map_err(CaptureError::Decode)?;
        observer.finish().map_err(CaptureError::Decode)?;

        struct Answer {
            seq: i32,
            position: usize,
            next: i32,
            tokens: Vec<i32>,
            done: bool,
        }
        let mut results = Vec::with_capacity(jobs.len());
        let mut answers: Vec<Option<Answer>> = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter().enumerate() {
            let first_row = i * m;
            let mut first = 0.0;
            let mut total = 0.0;
            let mut greedy = job.greedy.then(|| Answer {
                seq: i as i32 + 1,
                position: n,
                next: 0,
                tokens: Vec::new(),
                done: max_new == 0,
            });
            for (k, &token) in answer.iter().enumerate() {
                let logits = self.ctx.logits((first_row + k) as i32).ok_or_else(|| {
                    CaptureError::Decode("llama.cpp returned no logits for a patched run".into())
                })?;
                let lp = token_logprob(logits, token);
                if k == scored {
                    first = lp;
                }
                total += lp;
                // The greedy answer follows the teacher-forced rows while it
                // agrees with the correct answer: those rows are its own.
                if let Some(g) = greedy.as_mut().filter(|g| !g.done && g.position == n + k) {
                    g.next = argmax(logits);
                    if self.model.is_end_of_generation(g.next) {
                        g.done = true;
                        continue;
                    }
                    g.tokens.push(g.next);
                    if g.tokens.len() == max_new || stop(g.next) {
                        g.done = true;
                    } else if g.next == token && k + 1 < m {
                        g.position += 1;
                    }
                }
            }
            results.push(PatchedRun {
                first_token_logprob: first,
                answer_logprob: total,
                generated: None,
            });
            answers.push(greedy);
        }
        // Each unfinished greedy answer continues from its last agreeing
        // position: the teacher-forced cells after it are forgotten, and its
        // latest token runs there.
        for a in answers.iter_mut().flatten() {
            if !a.done {
                let at = n + a.tokens.len() - 1;
                self.ctx.forget_from(a.seq, at);
                a.position = at;
            }
        }
        loop {
            let mut step = Vec::new();
            let mut owners = Vec::new();
            for (i, a) in answers.iter_mut().enumerate() {
                let Some(a) = a.as_mut().filter(|a| !a.done) else {
                    continue;
                };
                let token = *a.tokens.last().unwrap_or(&a.next);
                step.push(BatchToken {
                    token,
                    pos: a.position,
                    seq: a.seq,
                });
                owners.push(i);
            }
            if step.is_empty() {
                break;
            }
            self.ctx
                .decode_tokens(&step, None)
                .map_err(CaptureError::Decode)?;
            for (row, &i) in owners.iter().enumerate() {
                let logits = self.ctx.logits(row as i32).ok_or_else(|| {
                    CaptureError::Decode("llama.cpp returned no logits while answering".into())
                })?;
                let next = argmax(logits);
                let Some(a) = answers[i].as_mut() else {
                    continue;
                };
                a.position += 1;
                if self.model.is_end_of_generation(next) {
                    a.done = true;
                    continue;
                }
                a.tokens.push(next);
                if a.tokens.len() == max_new || stop(next) {
                    a.done = true;
                }
            }
        }
        for (result, a) in results.iter_mut().zip(answers) {
            result.generated = a.map(|a| a.tokens);
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_logprob_is_log_softmax() {
        let logits = [1.0f32, 2.0, 3.0];
        let z: f64 = [1.0f64, 2.0, 3.0].iter().map(|x| x.exp()).sum();
        assert!((token_logprob(&logits, 2) - (3.0 - z.ln())).abs() < 1e-12);
        assert_eq!(token_logprob(&logits, 7), f64::NEG_INFINITY);
    }

    #[test]
    fn block_outputs_are_recognised_by_name() {
        assert_eq!(block_output_layer("l_out-12"), Some(12));
        assert_eq!(block_output_layer("l_out"), None);
        assert_eq!(block_output_layer("ffn_out-3"), None);
    }
}
