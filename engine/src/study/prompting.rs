//! The prompts as one model sees them: the experiment's plain text, or
//! each prompt rendered as a chat turn through the model's template
//! (`capture.chat_template`). Everything downstream (tokens, segment
//! spans, kept prefixes, the cache key) reads the prompts of this
//! per-model experiment, so a chat-rendered prompt is captured, cached and
//! analysed exactly like a plain one.

use std::borrow::Cow;

use viewer::bundle::ChatEntry;

use crate::capture::ModelInfo;
use crate::errors::BadInput;
use crate::experiment::chat::{ChatRenderer, ChatTemplate, ChatTokens};
use crate::experiment::Experiment;

/// The experiment with the prompts as model `name` sees them, and the chat
/// template used (`None` for plain text).
pub fn prompts_for_model<'e>(
    experiment: &'e Experiment,
    name: &str,
    info: &ModelInfo,
) -> Result<(Cow<'e, Experiment>, Option<ChatEntry>), BadInput> {
    let (origin, template) = match &experiment.chat {
        ChatTemplate::None => return Ok((Cow::Borrowed(experiment), None)),
        ChatTemplate::Inline(source) => ("experiment", source.clone()),
        ChatTemplate::Model => match &info.chat_template {
            Some(source) if !source.trim().is_empty() => ("model", source.clone()),
            _ => {
                return Err(BadInput(format!(
                    "capture.chat_template = \"model\", but model `{name}` ({}) has no chat template in its GGUF (no `tokenizer.chat_template`; base models usually have none): give the template inline in capture.chat_template, or set it to \"none\" to prompt with plain text",
                    info.path.display()
                )))
            }
        },
    };
    let entry = ChatEntry {
        origin: origin.to_string(),
        template,
        bos_token: info.bos_token.clone().unwrap_or_default(),
        eos_token: info.eos_token.clone().unwrap_or_default(),
        tokenizer_adds_bos: info.adds_bos,
    };
    let source = match origin {
        "model" => format!("the chat template in `{}`", info.path.display()),
        _ => "capture.chat_template".to_string(),
    };
    let renderer =
        chat_renderer(&entry).map_err(|e| BadInput(format!("{source} does not compile: {e}")))?;
    let mut rendered = experiment.clone();
    for p in &mut rendered.prompts {
        let turn = renderer.render_turn(&p.text, &p.segments).map_err(|e| {
            BadInput(format!(
                "{source} cannot render prompt {} (task `{}`) for model `{name}`: {e}",
                p.id, experiment.tasks[p.task].name
            ))
        })?;
        p.text = turn.text;
        p.segments = turn.segments;
    }
    Ok((Cow::Owned(rendered), Some(entry)))
}

/// The renderer of a recorded chat template (the report re-renders its
/// example prompts with it).
pub fn chat_renderer(entry: &ChatEntry) -> Result<ChatRenderer, String> {
    ChatRenderer::new(
        &entry.template,
        ChatTokens {
            bos_token: entry.bos_token.clone(),
            eos_token: entry.eos_token.clone(),
            tokenizer_adds_bos: entry.tokenizer_adds_bos,
        },
    )
}
