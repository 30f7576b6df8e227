//! `engine capture`: one prompt in, every layer out, as NumPy arrays.

use std::path::Path;

use crate::capture::{
    Activations, AttentionKeep, AttentionPath, AttentionRequest, CaptureRequest, FlashAttention,
    HiddenRequest, Model, Session,
};
use crate::cli::{BadInput, CaptureArgs};
use crate::commands::say;
use crate::npz::{write_npz, NpyArray};

pub(crate) fn run(args: &CaptureArgs, quiet: bool) -> anyhow::Result<()> {
    let prompt = read_prompt(args)?;
    if let Some(out) = &args.out {
        check_output_path(out)?;
    }
    let model = Model::load(&args.model.model_options()?)?;
    let tokens = model.tokenize(&prompt, args.parse_special)?;
    let info = model.info().clone();
    let mut context = args.model.context_options(tokens.len(), info.n_ctx_train);
    if args.attention && args.model.runtime.flash_attn == FlashAttention::Auto {
        // The materialized path is llama.cpp's own softmax: the reference.
        context.flash_attention = FlashAttention::Off;
        context.attention_path = Some(AttentionPath::Materialized);
    }
    let mut session = Session::new(&model, context)?;
    let request = CaptureRequest {
        hidden: HiddenRequest::All,
        attention: args.attention.then(|| AttentionRequest {
            queries: (0..tokens.len()).collect(),
            keep: AttentionKeep::Rows,
        }),
        final_norm: true,
        all_logits: false,
    };
    let activations = session.capture(&tokens, &request)?;
    let token_text: Vec<String> = tokens.iter().map(|&t| model.token_text(t)).collect();

    if !quiet {
        say!(
            "model   {} ({}, {} layers, {} heads, {} features)",
            info.path.display(),
            info.description,
            info.n_layer,
            info.n_head,
            info.n_embd
        )?;
        say!(
            "prompt  {} tokens: {}",
            tokens.len(),
            abbreviate(&token_text)
        )?;
        say!("next token, most likely first:")?;
        for (rank, (token, prob)) in top_probabilities(&activations, args.top)
            .into_iter()
            .enumerate()
        {
            say!(
                "  {:>2}. {:<20} p = {prob:.4}  (id {token})",
                rank + 1,
                format!("{:?}", model.token_text(token))
            )?;
        }
    }
    if let Some(out) = &args.out {
        let bytes = write_capture(out, &activations, &token_text, info.n_layer)?;
        if !quiet {
            say!("wrote   {} ({:.1} MB)", out.display(), bytes as f64 / 1e6)?;
        }
    }
    Ok(())
}

fn read_prompt(args: &CaptureArgs) -> anyhow::Result<String> {
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(text), _) => text.clone(),
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            BadInput(format!(
                "cannot read the prompt file `{}`: {e}",
                path.display()
            ))
        })?,
        (None, None) => {
            return Err(
                BadInput("give a prompt with --prompt TEXT or --prompt-file FILE".into()).into(),
            )
        }
    };
    if prompt.is_empty() {
        return Err(crate::capture::CaptureError::EmptyPrompt.into());
    }
    Ok(prompt)
}

/// Checks before any model work that the output can be written.
fn check_output_path(out: &Path) -> anyhow::Result<()> {
    if out.is_dir() {
        return Err(BadInput(format!(
            "--out `{}` is a directory: name a file such as capture.npz",
            out.display()
        ))
        .into());
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(BadInput(format!(
                "the folder `{}` for --out does not exist: create it first",
                parent.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Softmax of the last logits, top `n`.
fn top_probabilities(activations: &Activations, n: usize) -> Vec<(i32, f64)> {
    let logits = &activations.logits_last;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    activations
        .top_next(n)
        .into_iter()
        .map(|(token, logit)| (token, f64::from(logit - max).exp() / total))
        .collect()
}

fn abbreviate(pieces: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut text: Vec<String> = pieces
        .iter()
        .take(SHOWN)
        .map(|p| format!("{p:?}"))
        .collect();
    if pieces.len() > SHOWN {
        text.push(format!("… ({} more)", pieces.len() - SHOWN));
    }
    text.join(" ")
}

/// Writes the capture as `.npz`; returns the file size.
pub(crate) fn write_capture(
    out: &Path,
    a: &Activations,
    token_text: &[String],
    n_layer: usize,
) -> anyhow::Result<u64> {
    let n_tokens = a.tokens.len();
    let token_shape = [n_tokens];
    let logits_shape = [a.logits_last.len()];
    let mut arrays = vec![
        (
            "tokens",
            NpyArray::I32 {
                shape: &token_shape,
                data: &a.tokens,
            },
        ),
        ("token_text", NpyArray::Str { data: token_text }),
    ];
    if let Some(h) = &a.hidden {
        debug_assert_eq!(h.shape[0], n_layer);
        arrays.push((
            "hidden",
            NpyArray::F32 {
                shape: &h.shape,
                data: &h.data,
            },
        ));
    }
    if let Some(att) = &a.attention {
        arrays.push((
            "attention",
            NpyArray::F32 {
                shape: &att.shape,
                data: &att.data,
            },
        ));
    }
    if let Some(f) = &a.final_norm {
        arrays.push((
            "final_norm",
            NpyArray::F32 {
                shape: &f.shape,
                data: &f.data,
            },
        ));
    }
    arrays.push((
        "logits_last",
        NpyArray::F32 {
            shape: &logits_shape,
            data: &a.logits_last,
        },
    ));
    crate::atomic::write_atomically(out, |w| write_npz(w, &arrays).map(|_| ()))?;
    Ok(std::fs::metadata(out).map(|m| m.len()).unwrap_or(0))
}
