//! Running every prompt of an experiment through one model: tokenize, map
//! segments to tokens, capture the reduced activations the analyses need,
//! generate the answer from the same cache, score it. Each prompt runs once.

use std::io::Write;
use std::ops::Range;
use std::time::Instant;

use crate::capture::{
    AttentionKeep, AttentionRequest, CaptureError, CaptureRequest, HiddenRequest, Model, Pooling,
    Session,
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
    pub score: Score,
}

/// The tokens of every prompt, checked against the model's context.
#[derive(Debug, Clone)]
pub struct Tokenized {
    pub tokens: Vec<Vec<i32>>,
    pub anchors: Vec<Vec<usize>>,
}

/// Tokenizes every prompt and maps segments to tokens, before any capture.
pub fn tokenize_all(model: &Model, experiment: &Experiment) -> Result<Tokenized, CaptureError> {
    let mut tokens = Vec::with_capacity(experiment.prompts.len());
    let mut anchors = Vec::with_capacity(experiment.prompts.len());
    for p in &experiment.prompts {
        let t = model.tokenize(&p.text, false)?;
        let pieces: Vec<Vec<u8>> = t.iter().map(|&id| model.token_bytes(id)).collect();
        let a = spans::token_anchors(&p.text, &pieces).map_err(|e| {
            CaptureError::BadRequest(format!("prompt {} cannot be mapped to tokens: {e}", p.id))
        })?;
        tokens.push(t);
        anchors.push(a);
    }
    Ok(Tokenized { tokens, anchors })
}

fn segment_tokens(
    p: &Prompt,
    anchors: &[usize],
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

/// The order in which to capture `prompts`: as given, except that prompts
/// sharing a prefix follow the first of them, so that each prefix runs
/// once. Any order gives the same numbers; this one gives the fewest decodes.
pub fn capture_order(
    experiment: &Experiment,
    tokenized: &Tokenized,
    prompts: &[usize],
) -> Vec<usize> {
    let mut first_with: std::collections::HashMap<&[i32], usize> = Default::default();
    let mut keyed: Vec<(usize, usize)> = prompts
        .iter()
        .enumerate()
        .map(|(position, &p)| {
            let len = shared_prefix_len(experiment, tokenized, p);
            let group = if len == 0 {
                position
            } else {
                *first_with
                    .entry(&tokenized.tokens[p][..len])
                    .or_insert(position)
            };
            (group, p)
        })
        .collect();
    // Stable: within a group, and between groups, the given order stays.
    keyed.sort_by_key(|&(group, _)| group);
    keyed.into_iter().map(|(_, p)| p).collect()
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

/// Captures, generates and scores every prompt. `progress` receives a line
/// now and then (None for quiet).
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
    let all: Vec<usize> = (0..total).collect();
    for p in capture_order(experiment, tokenized, &all) {
        records.push(capture_prompt(session, experiment, tokenized, p, layers)?);
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

/// Captures, generates and scores prompt `index` of the experiment.
pub fn capture_prompt(
    session: &mut Session<'_>,
    experiment: &Experiment,
    tokenized: &Tokenized,
    index: usize,
    layers: &[usize],
) -> Result<PromptRecord, CaptureError> {
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
    let request = CaptureRequest {
        hidden: HiddenRequest::Pooled(vec![pooling]),
        attention: attention_spans.as_ref().map(|(r, d)| AttentionRequest {
            queries: vec![n - 1],
            keep: AttentionKeep::SpanMass(vec![r.clone(), d.clone()]),
        }),
        final_norm: false,
        all_logits: false,
    };
    let prefix_len = shared_prefix_len(experiment, tokenized, index);
    let activations = session.capture_after_prefix(tokens, prefix_len, &request)?;
    // The answer is the first line: generation stops after a newline.
    let generated_tokens = session
        .continue_greedy_until(experiment.file.capture.max_new_tokens, |token| {
            model.token_bytes(token).contains(&b'\n')
        })?;
    let generated = model.detokenize(&generated_tokens);
    let score = scoring::score(task.scoring, &task.instances[p.target], &generated);

    let hidden = activations
        .hidden
        .ok_or_else(|| CaptureError::Decode("no hidden states captured".into()))?;
    let mut embedding = Vec::with_capacity(layers.len() * info.n_embd);
    for &layer in layers {
        embedding.extend_from_slice(hidden.row(&[0, layer]));
    }
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
    Ok(PromptRecord {
        prompt: p.id,
        n_tokens: n,
        token_spans,
        embedding,
        attention_mass,
        span_lengths: attention_spans.map(|(r, d)| (r.len(), d.len())),
        generated,
        score,
    })
}
