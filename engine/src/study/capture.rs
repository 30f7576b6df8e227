//! Running every prompt of an experiment through one model: tokenize, map
//! segments to tokens, capture the reduced activations the analyses need,
//! generate the answer from the same cache, score it. Each prompt runs once.

use std::io::Write;
use std::ops::Range;
use std::time::Instant;

use crate::capture::{
    AnswerBatch, AttentionKeep, AttentionRequest, CaptureError, CaptureRequest, GreedyAnswer,
    HiddenRequest, Model, Pooling, Session,
};
use crate::experiment::scoring::{self, Score};
use crate::experiment::{spans, Demonstrations, Experiment, PoolingChoice, Prompt};

/// What one prompt left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptRecord {
    pub prompt: usize,
    pub n_tokens: usize,
    /// Token ranges of the prompt's segments (first occurrence of each).
    pub token_spans: Vec<(String, Range<usize>)>,
    /// `[n_layers_kept, n_embd]`: the pooled embedding of each analysed layer.
    pub embedding: Vec<f32>,
    /// `[n_layers_kept, n_head, 2]`: attention mass from the last prompt
    /// token on the relevant and the distractor span (tasks that have them).
    pub attention_mass: Option<Vec<f32>>,
    /// Token counts of the relevant and distractor spans.
    pub span_lengths: Option<(usize, usize)>,
    pub generated: String,
    /// The top-two logit gap of each greedy choice of the answer, in order:
    /// one per generated token, and one more for the end-of-generation
    /// token when that ended the answer. A small one is a near-tie that
    /// rounding could flip ([`super::near_ties`]).
    pub answer_gaps: Vec<f32>,
    pub score: Score,
    /// `[n_patched_layers, n_embd]`: the last prompt token's residual stream
    /// at each layer the experiment patches (only when patching is on).
    pub last_state: Option<Vec<f32>>,
    /// Teacher-forced log-probabilities of the correct answer after the
    /// prompt: its first token, the whole answer (only when patching is on).
    pub answer_logprobs: Option<(f64, f64)>,
}

/// The tokens of every prompt, checked against the model's context.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub tokens: Vec<Vec<i32>>,
    pub anchors: Vec<Vec<Option<usize>>>,
    /// The correct answer of each prompt's target as it continues the
    /// prompt (see [`answer_continuation`]).
    pub answers: Vec<Vec<i32>>,
}

/// The text of the correct answer as a continuation of a prompt: a space,
/// then the answer, as the built-in templates show demonstrations
/// (`y = 23`, `Answer: reading a book`).
pub fn answer_continuation(answer: &str) -> String {
    format!(" {}", answer.trim())
}

/// Tokenizes every prompt and maps segments to tokens, before any capture.
pub fn tokenize_all(model: &Model, experiment: &Experiment) -> Result<Tokenized, CaptureError> {
    let mut tokens = Vec::with_capacity(experiment.prompts.len());
    let mut anchors = Vec::with_capacity(experiment.prompts.len());
    let mut answers = Vec::with_capacity(experiment.prompts.len());
    // A chat template's markers (`<|im_start|>`, `[INST]`) are special
    // tokens; plain prompts stay plain text.
    let parse_special = experiment.chat != crate::experiment::chat::ChatTemplate::None;
    for p in &experiment.prompts {
        let instance = &experiment.tasks[p.task].instances[p.target];
        answers.push(model.tokenize_continuation(&answer_continuation(&instance.answer))?);
        let t = model.tokenize(&p.text, parse_special)?;
        let pieces: Vec<Vec<u8>> = t.iter().map(|&id| model.token_bytes(id)).collect();
        let a = spans::token_anchors(&p.text, &pieces).map_err(|e| {
            CaptureError::BadRequest(format!("prompt {} cannot be mapped to tokens: {e}", p.id))
        })?;
        tokens.push(t);
        anchors.push(a);
    }
    Ok(Tokenized {
        tokens,
        anchors,
        answers,
    })
}

fn segment_tokens(
    p: &Prompt,
    anchors: &[Option<usize>],
    label: &str,
) -> Result<Range<usize>, CaptureError> {
    let bytes = p
        .segments
        .get(label)
        .and_then(|r| r.first())
        .ok_or_else(|| {
            CaptureError::BadRequest(format!("prompt {} has no segment `{label}`", p.id))
        })?;
    let range = spans::tokens_in(anchors, bytes);
    if range.is_empty() {
        return Err(CaptureError::BadRequest(format!(
            "segment `{label}` of prompt {} holds no token of its own (it is merged into a neighbour's token)",
            p.id
        )));
    }
    Ok(range)
}

/// The tokens at the start of prompt `index` that other prompts share and
/// that run once, their KV cache kept (0: the prompt runs whole): the
/// instruction and demonstrations of a k-shot prompt of a task with fixed
/// demonstrations, when the experiment reuses prefixes. Depends only on the
/// prompt, its task's options and the tokenizer, never on which prompts ran
/// before, so that resumed and sharded runs capture the same numbers.
pub fn shared_prefix_len(experiment: &Experiment, tokenized: &Tokenized, index: usize) -> usize {
    let p = &experiment.prompts[index];
    let task = &experiment.tasks[p.task];
    if !experiment.file.capture.reuse_prefix
        || task.demonstrations != Demonstrations::Fixed
        || p.shots == 0
    {
        return 0;
    }
    let Some(end) = p
        .segments
        .get("demonstrations")
        .and_then(|ranges| ranges.iter().map(|r| r.end).max())
    else {
        return 0;
    };
    let anchors = &tokenized.anchors[index];
    let n = tokenized.tokens[index].len();
    // The first token that starts at or after the end of the demonstrations.
    let split = spans::tokens_in(anchors, &(0..end)).end.min(n);
    // The analyses read the pooled and the attending tokens: they must run
    // after the prefix.
    let read_from = match &experiment.pooling {
        PoolingChoice::Last => n - 1,
        PoolingChoice::Mean(label) | PoolingChoice::Max(label) => {
            match segment_tokens(p, anchors, label) {
                Ok(range) => range.start,
                Err(_) => 0,
            }
        }
    };
    if split > read_from || split >= n {
        0
    } else {
        split
    }
}

/// The text that prompt `index` may share with others as a kept prefix:
/// its instruction and demonstrations, when its task has fixed
/// demonstrations and the experiment reuses prefixes. Whether the prefix is
/// actually kept is decided on tokens ([`shared_prefix_len`]); this only
/// groups prompts, so it needs no tokenizer.
fn prefix_text(experiment: &Experiment, index: usize) -> Option<&str> {
    let p = &experiment.prompts[index];
    let task = &experiment.tasks[p.task];
    if !experiment.file.capture.reuse_prefix
        || task.demonstrations != Demonstrations::Fixed
        || p.shots == 0
    {
        return None;
    }
    let end = p
        .segments
        .get("demonstrations")?
        .iter()
        .map(|r| r.end)
        .max()?;
    p.text.get(..end)
}

/// The order in which to capture `prompts`: as given, except that prompts
/// that may share a prefix follow the first of them, so that each prefix
/// runs once. Any order gives the same numbers; this one gives the fewest
/// decodes. Prompts of different demonstration draws are never grouped, so
/// that adding a draw leaves the earlier draws' order (and batches) alone.
pub fn capture_order(experiment: &Experiment, prompts: &[usize]) -> Vec<usize> {
    let mut first_with: std::collections::HashMap<(usize, &str), usize> = Default::default();
    let mut keyed: Vec<(usize, usize)> = prompts
        .iter()
        .enumerate()
        .map(|(position, &p)| {
            let draw = experiment.prompts[p].draw;
            let group = match prefix_text(experiment, p) {
                Some(text) => *first_with.entry((draw, text)).or_insert(position),
                None => position,
            };
            (group, p)
        })
        .collect();
    // Stable: within a group, and between groups, the given order stays.
    keyed.sort_by_key(|&(group, _)| group);
    keyed.into_iter().map(|(_, p)| p).collect()
}

/// The answer batches of the experiment: its prompts in capture order, cut
/// into runs of `capture.answer_batch` prompts of one task and one
/// demonstration draw (the 0-shot prompts go with the first draw). They
/// depend on the experiment alone, never on what is cached or which shard
/// runs, so a prompt is always answered beside the same prompts (on a GPU,
/// the batch can change the rounding of an answer's logits); and a task's
/// batches do not change when another task, or another draw, is added.
pub fn answer_batches(experiment: &Experiment) -> Vec<Vec<usize>> {
    let width = experiment.file.capture.answer_batch.max(1);
    let all: Vec<usize> = (0..experiment.prompts.len()).collect();
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut group = None;
    for p in capture_order(experiment, &all) {
        let prompt = &experiment.prompts[p];
        let this_group = (prompt.task, prompt.draw);
        match batches.last_mut() {
            Some(batch) if group == Some(this_group) && batch.len() < width => batch.push(p),
            _ => batches.push(vec![p]),
        }
        group = Some(this_group);
    }
    batches
}

/// A context for the experiment's answer batches, beside `session`; `None`
/// when each answer is generated alone (`capture.answer_batch = 1`).
pub fn answer_context<'m>(
    session: &Session<'m>,
    experiment: &Experiment,
    tokenized: &Tokenized,
) -> Result<Option<AnswerBatch<'m>>, CaptureError> {
    let batches = answer_batches(experiment);
    let width = batches.iter().map(Vec::len).max().unwrap_or(0);
    if experiment.file.capture.answer_batch <= 1 || width <= 1 {
        return Ok(None);
    }
    // The largest batch's prompts and answers, rounded up as llama.cpp
    // rounds its caches.
    let max_new = experiment.file.capture.max_new_tokens;
    let cells = batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|&p| tokenized.tokens[p].len() + max_new)
                .sum::<usize>()
        })
        .max()
        .unwrap_or(0)
        .div_ceil(256)
        * 256;
    let options = session.options();
    AnswerBatch::new(
        session.model(),
        width,
        cells,
        options.threads,
        options.flash_attention,
    )
    .map(Some)
}

/// How many prompt tokens llama.cpp runs when `order` is captured in one
/// session: each prompt's own tokens, plus each prefix where it changes.
pub fn tokens_to_run(experiment: &Experiment, tokenized: &Tokenized, order: &[usize]) -> usize {
    let mut kept: &[i32] = &[];
    let mut total = 0;
    for &p in order {
        let tokens = &tokenized.tokens[p];
        let len = shared_prefix_len(experiment, tokenized, p);
        if len > 0 && kept != &tokens[..len] {
            kept = &tokens[..len];
            total += len;
        }
        total += tokens.len() - len;
    }
    total
}

/// Captures, generates and scores every prompt, in answer batches.
/// `progress` receives a line now and then (None for quiet).
pub fn capture_all(
    session: &mut Session<'_>,
    experiment: &Experiment,
    tokenized: &Tokenized,
    layers: &[usize],
    mut progress: Option<&mut dyn Write>,
) -> Result<Vec<PromptRecord>, CaptureError> {
    let started = Instant::now();
    let total = experiment.prompts.len();
    let mut records = Vec::with_capacity(total);
    let mut next_report = 0;
    let mut answers = answer_context(session, experiment, tokenized)?;
    for batch in answer_batches(experiment) {
        records.extend(capture_batch(
            session,
            answers.as_mut(),
            experiment,
            tokenized,
            &batch,
            layers,
        )?);
        let done = records.len();
        if let Some(out) = progress.as_mut() {
            if done >= next_report || done == total {
                let elapsed = started.elapsed().as_secs_f64();
                let rate = done as f64 / elapsed.max(1e-9);
                let eta = (total - done) as f64 / rate.max(1e-9);
                let _ = writeln!(out, "  captured {done:>4}/{total} prompts  {rate:5.2} prompts/s  about {eta:.0} s left");
                next_report = done + total.div_ceil(10);
            }
        }
    }
    records.sort_by_key(|r| r.prompt);
    Ok(records)
}

/// Captures the prompts of one answer batch one by one, then generates
/// their answers together (or each right after its capture, without an
/// answer context), and scores them. Records come in `batch` order.
pub fn capture_batch(
    session: &mut Session<'_>,
    answers: Option<&mut AnswerBatch<'_>>,
    experiment: &Experiment,
    tokenized: &Tokenized,
    batch: &[usize],
    layers: &[usize],
) -> Result<Vec<PromptRecord>, CaptureError> {
    let model = session.model();
    let max_new = experiment.file.capture.max_new_tokens;
    // The answer is the first line: generation stops after a newline.
    let stop = |token: i32| model.token_bytes(token).contains(&b'\n');
    let Some(answers) = answers else {
        return batch
            .iter()
            .map(|&p| {
                let read = read_prompt(session, experiment, tokenized, p, layers)?;
                let read = read.with_answer_logprobs(session, experiment, tokenized)?;
                let answer = session.continue_greedy_until(max_new, stop)?;
                Ok(read.into_record(experiment, model, answer))
            })
            .collect();
    };
    let mut reads = Vec::with_capacity(batch.len());
    let mut records = Vec::with_capacity(batch.len());
    for (i, &p) in batch.iter().enumerate() {
        let read = read_prompt(session, experiment, tokenized, p, layers)?;
        reads.push(read.with_answer_logprobs(session, experiment, tokenized)?);
        answers.push(session)?;
        if reads.len() == answers.width() || i + 1 == batch.len() {
            let generated = answers.generate(max_new, stop)?;
            for (read, answer) in reads.drain(..).zip(generated) {
                records.push(read.into_record(experiment, model, answer));
            }
        }
    }
    Ok(records)
}

/// What the capture of a prompt keeps, before its answer.
#[derive(Debug)]
struct Read {
    prompt: usize,
    n_tokens: usize,
    token_spans: Vec<(String, Range<usize>)>,
    embedding: Vec<f32>,
    attention_mass: Option<Vec<f32>>,
    span_lengths: Option<(usize, usize)>,
    last_state: Option<Vec<f32>>,
    answer_logprobs: Option<(f64, f64)>,
}

impl Read {
    /// Scores the correct answer teacher-forced after the prompt, when
    /// patching needs it; the session is left ready to generate.
    fn with_answer_logprobs(
        mut self,
        session: &mut Session<'_>,
        experiment: &Experiment,
        tokenized: &Tokenized,
    ) -> Result<Read, CaptureError> {
        if experiment.file.patching.enabled {
            self.answer_logprobs = Some(session.answer_logprobs(&tokenized.answers[self.prompt])?);
        }
        Ok(self)
    }

    /// The record of this prompt with its greedy `answer`, scored.
    fn into_record(
        self,
        experiment: &Experiment,
        model: &Model,
        answer: GreedyAnswer,
    ) -> PromptRecord {
        let generated = model.detokenize(&answer.tokens);
        let p = &experiment.prompts[self.prompt];
        let task = &experiment.tasks[p.task];
        let score = scoring::score(task.scoring, &task.instances[p.target], &generated);
        PromptRecord {
            prompt: self.prompt,
            n_tokens: self.n_tokens,
            token_spans: self.token_spans,
            embedding: self.embedding,
            attention_mass: self.attention_mass,
            span_lengths: self.span_lengths,
            generated,
            answer_gaps: answer.gaps,
            score,
            last_state: self.last_state,
            answer_logprobs: self.answer_logprobs,
        }
    }
}

/// Captures prompt `index` of the experiment (from its kept prefix, when
/// it has one) and keeps what the analyses read.
fn read_prompt(
    session: &mut Session<'_>,
    experiment: &Experiment,
    tokenized: &Tokenized,
    index: usize,
    layers: &[usize],
) -> Result<Read, CaptureError> {
    let model = session.model();
    let info = model.info().clone();
    let p = &experiment.prompts[index];
    let (tokens, anchors) = (&tokenized.tokens[index], &tokenized.anchors[index]);
    let task = &experiment.tasks[p.task];
    let n = tokens.len();
    let pooling = match &experiment.pooling {
        PoolingChoice::Last => Pooling::Token(n - 1),
        PoolingChoice::Mean(label) => Pooling::Mean(segment_tokens(p, anchors, label)?),
        PoolingChoice::Max(label) => Pooling::Max(segment_tokens(p, anchors, label)?),
    };
    let attention_spans = match &task.attention_segments {
        Some((relevant, distractor)) => Some((
            segment_tokens(p, anchors, relevant)?,
            segment_tokens(p, anchors, distractor)?,
        )),
        None => None,
    };
    // Patching reads the last prompt token's state at the patched layers.
    let patch_layers = if experiment.file.patching.enabled {
        Some(
            experiment
                .patching_layers(info.n_layer)
                .map_err(|e| CaptureError::BadRequest(e.to_string()))?,
        )
    } else {
        None
    };
    let mut pools = vec![pooling];
    if patch_layers.is_some() && pools[0] != Pooling::Token(n - 1) {
        pools.push(Pooling::Token(n - 1));
    }
    let last_pool = pools.len() - 1;
    let request = CaptureRequest {
        hidden: HiddenRequest::Pooled(pools),
        attention: attention_spans.as_ref().map(|(r, d)| AttentionRequest {
            queries: vec![n - 1],
            keep: AttentionKeep::SpanMass(vec![r.clone(), d.clone()]),
        }),
        final_norm: false,
        all_logits: false,
    };
    let prefix_len = shared_prefix_len(experiment, tokenized, index);
    let activations = session.capture_after_prefix(tokens, prefix_len, &request)?;

    let hidden = activations
        .hidden
        .ok_or_else(|| CaptureError::Decode("no hidden states captured".into()))?;
    let mut embedding = Vec::with_capacity(layers.len() * info.n_embd);
    for &layer in layers {
        embedding.extend_from_slice(hidden.row(&[0, layer]));
    }
    let last_state = patch_layers.map(|patched| {
        let mut state = Vec::with_capacity(patched.len() * info.n_embd);
        for &layer in &patched {
            state.extend_from_slice(hidden.row(&[last_pool, layer]));
        }
        state
    });
    let attention_mass = activations.attention.map(|a| {
        let mut kept = Vec::with_capacity(layers.len() * info.n_head * 2);
        for &layer in layers {
            for head in 0..info.n_head {
                kept.extend_from_slice(a.row(&[layer, head, 0]));
            }
        }
        kept
    });
    let mut token_spans: Vec<(String, Range<usize>)> = p
        .segments
        .iter()
        .filter_map(|(label, ranges)| {
            ranges
                .first()
                .map(|b| (label.clone(), spans::tokens_in(anchors, b)))
        })
        .collect();
    token_spans.sort_by(|a, b| a.1.start.cmp(&b.1.start).then(a.0.cmp(&b.0)));
    Ok(Read {
        prompt: p.id,
        n_tokens: n,
        token_spans,
        embedding,
        attention_mass,
        span_lengths: attention_spans.map(|(r, d)| (r.len(), d.len())),
        last_state,
        answer_logprobs: None,
    })
}
