//! Greedy answers of several captured prompts, generated together: one
//! decode runs the next token of every prompt still answering.
//!
//! Where a decode is bound by reading the weights (a GPU, a large model on
//! a CPU) a batch of answer tokens costs about what one token does; where it
//! is bound by arithmetic (a 135M model on two CPU cores: 70 ms for 8
//! tokens, 9 ms for one) it gains little. The prompts are captured one by
//! one as always; each capture's KV cache is copied ([`AnswerBatch::push`])
//! into its own sequence of a small second context. Every operation but attention works
//! on each token's row alone; attention reads all cells of the shared cache,
//! and the mask keeps each token to its own sequence's cells.
//!
//! An answer's tokens therefore do not depend on the prompts beside it,
//! except through rounding where a kernel's order of summation follows the
//! cache layout or the batch width (on the CPU: the softmax without flash
//! attention, and flash attention's split path for a single query over 512
//! cells or more; on a GPU, kernels chosen by batch width). That can change
//! a greedy answer only at a near-tie. The batches are fixed by the
//! experiment, so a run and its resumed and sharded versions give the same
//! bytes.

use super::llama::{BatchToken, FlashAttention, LlamaContext, RawContextParams};
use super::session::{greedy_choice, CaptureError, GreedyAnswer, GreedyChoice, Model, Session};

/// Where the answer of one captured prompt starts.
#[derive(Debug, Clone, Copy)]
struct AnswerStart {
    /// Tokens in the prompt's cache.
    position: usize,
    /// The greedy choice after the prompt (from its last logits), with
    /// its top-two gap.
    first: GreedyChoice,
    /// The capture context's size: the answer stops there, as it would
    /// have in the capture context.
    limit: usize,
}

/// A context that generates the answers of up to `width` prompts at once.
#[derive(Debug)]
pub struct AnswerBatch<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    width: usize,
    /// The prompts pushed since the last generation, in sequence order.
    starts: Vec<AnswerStart>,
}

impl<'m> AnswerBatch<'m> {
    /// A context for up to `width` answers at once, whose prompts and
    /// answers together take at most `cells` tokens.
    pub fn new(
        model: &'m Model,
        width: usize,
        cells: usize,
        threads: usize,
        flash_attention: FlashAttention,
    ) -> Result<Self, CaptureError> {
        let width = width.max(1);
        let n_ctx = cells.max(1) as u32;
        let params = RawContextParams {
            n_ctx,
            n_threads: super::session::resolve_threads(threads) as i32,
            flash_attention,
            embeddings: false,
            with_callback: false,
            n_seq_max: width as u32,
            n_batch: Some(width as u32),
        };
        let ctx = LlamaContext::new(model.llama(), params)
            .map_err(|problems| super::session::context_failed(n_ctx, &problems))?;
        Ok(AnswerBatch {
            model,
            ctx,
            width,
            starts: Vec::with_capacity(width),
        })
    }

    /// How many answers one generation holds at most.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Adds the prompt that `session` captured last: its KV cache is copied
    /// into the next sequence (through the host, one prompt at a time).
    /// The session is left as it was.
    pub fn push(&mut self, session: &Session<'_>) -> Result<(), CaptureError> {
        if self.starts.len() == self.width {
            return Err(CaptureError::BadRequest(format!(
                "an answer batch holds {} prompts; generate their answers before adding another",
                self.width
            )));
        }
        let (position, logits) = session.answer_point()?;
        let start = AnswerStart {
            position,
            first: greedy_choice(logits),
            limit: session.n_ctx(),
        };
        if self.starts.is_empty() {
            self.ctx.clear();
        }
        let state = session
            .ctx()
            .sequence_state(0)
            .map_err(CaptureError::Decode)?;
        self.ctx
            .load_sequence_state(self.starts.len() as i32, &state)
            .map_err(CaptureError::Decode)?;
        self.starts.push(start);
        Ok(())
    }

    /// Greedy-generates the answer of every pushed prompt, in push order,
    /// exactly as [`Session::continue_greedy_until`] would right after its
    /// capture: up to `max_new` tokens, stopping before an end-of-generation
    /// token and after one for which `stop` is true; the final token is
    /// never run. Each answer keeps the top-two logit gap of its choices
    /// (see [`GreedyAnswer::gaps`]). Afterwards the batch is empty.
    pub fn generate(
        &mut self,
        max_new: usize,
        stop: impl Fn(i32) -> bool,
    ) -> Result<Vec<GreedyAnswer>, CaptureError> {
        let starts = std::mem::take(&mut self.starts);
        // The last token of an answer is never run.
        let cells: usize = starts
            .iter()
            .map(|s| (s.position + max_new.saturating_sub(1)).min(s.limit))
            .sum();
        if cells > self.ctx.n_ctx() {
            return Err(CaptureError::BadRequest(format!(
                "these {} answers need {cells} cells, more than the answer context's {}",
                starts.len(),
                self.ctx.n_ctx()
            )));
        }
        struct Answer {
            position: usize,
            next: GreedyChoice,
            greedy: GreedyAnswer,
            done: bool,
        }
        let mut answers: Vec<Answer> = starts
            .iter()
            .map(|s| Answer {
                position: s.position,
                next: s.first,
                greedy: GreedyAnswer::default(),
                done: max_new == 0,
            })
            .collect();
        loop {
            let mut batch = Vec::new();
            for (seq, (answer, start)) in answers.iter_mut().zip(&starts).enumerate() {
                if answer.done {
                    continue;
                }
                let GreedyChoice { token: next, gap } = answer.next;
                let greedy = &mut answer.greedy;
                if self.model.is_end_of_generation(next) {
                    greedy.gaps.push(gap);
                    answer.done = true;
                    continue;
                }
                if answer.position >= start.limit {
                    answer.done = true;
                    continue;
                }
                greedy.tokens.push(next);
                greedy.gaps.push(gap);
                if greedy.tokens.len() == max_new || stop(next) {
                    answer.done = true;
                    continue;
                }
                batch.push(BatchToken {
                    token: next,
                    pos: answer.position,
                    seq: seq as i32,
                });
            }
            if batch.is_empty() {
                break;
            }
            self.ctx
                .decode_tokens(&batch, None)
                .map_err(CaptureError::Decode)?;
            for (i, token) in batch.iter().enumerate() {
                let logits = self.ctx.logits(i as i32).ok_or_else(|| {
                    CaptureError::Decode("llama.cpp returned no logits while answering".into())
                })?;
                let answer = &mut answers[token.seq as usize];
                answer.next = greedy_choice(logits);
                answer.position += 1;
            }
        }
        Ok(answers.into_iter().map(|a| a.greedy).collect())
    }
}
