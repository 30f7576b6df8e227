//! Prompting a chat model as it was trained to be prompted: each prompt
//! becomes one user turn rendered through a chat template (the model's own,
//! `tokenizer.chat_template` in its GGUF, or one given inline), with the
//! generation prompt appended, so that the answer is the assistant's turn.
//!
//! The prompt's labelled segments keep their exact text inside the rendered
//! turn: the prompt goes into the template with its segments marked (the
//! marks of `template`), and the marks are read back out of the rendered
//! text. The template's own text (role headers, special tokens, a system
//! prompt) belongs to no segment. A template that drops or alters a
//! segment's text is refused, naming the segment.

use std::collections::BTreeMap;
use std::ops::Range;

use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};

use super::template::{self, describe, Rendered};

/// The label of the whole prompt inside the rendered turn (kept apart from
/// the task's segments; a task's labels cannot contain spaces).
const WHOLE_PROMPT: &str = "the prompt";

/// How the prompts of an experiment reach a model (`capture.chat_template`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatTemplate {
    /// Plain text, as written (the default).
    None,
    /// The template stored in the model's GGUF file.
    Model,
    /// A template given in the experiment file.
    Inline(String),
}

impl ChatTemplate {
    /// `none`, `model`, or a template (text with a `{{` or `{%`).
    pub fn parse(value: &str) -> Option<ChatTemplate> {
        match value.trim() {
            "none" | "" => Some(ChatTemplate::None),
            "model" => Some(ChatTemplate::Model),
            _ if value.contains("{{") || value.contains("{%") => {
                Some(ChatTemplate::Inline(value.to_string()))
            }
            _ => None,
        }
    }
}

/// What a template may print of the model's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTokens {
    pub bos_token: String,
    pub eos_token: String,
    /// The tokenizer adds BOS itself: a BOS the template prints at the
    /// very start is dropped, so that the prompt does not start with two.
    pub tokenizer_adds_bos: bool,
}

impl ChatTokens {
    /// Tokens for checking that a template compiles, before any model.
    pub fn placeholder() -> ChatTokens {
        ChatTokens {
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            tokenizer_adds_bos: false,
        }
    }
}

/// A template ready to render turns.
#[derive(Debug)]
pub struct ChatRenderer {
    env: Environment<'static>,
    tokens: ChatTokens,
}

impl ChatRenderer {
    /// Compiles `source` (Jinja, as Hugging Face chat templates are written).
    pub fn new(source: &str, tokens: ChatTokens) -> Result<ChatRenderer, String> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Lenient);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source.to_string())
            .map_err(describe)?;
        Ok(ChatRenderer { env, tokens })
    }

    /// `text` (with `segments`) as one user turn and the generation prompt.
    /// The result's segments are the prompt's, at their places in the turn.
    pub fn render_turn(
        &self,
        text: &str,
        segments: &BTreeMap<String, Vec<Range<usize>>>,
    ) -> Result<Rendered, String> {
        let mut marked_segments = segments.clone();
        marked_segments.insert(
            WHOLE_PROMPT.to_string(),
            std::iter::once(0..text.len()).collect(),
        );
        let content = template::mark(text, &marked_segments);
        let context = minijinja::context! {
            messages => vec![minijinja::context! { role => "user", content => content }],
            add_generation_prompt => true,
            bos_token => self.tokens.bos_token.clone(),
            eos_token => self.tokens.eos_token.clone(),
        };
        let output = self
            .env
            .get_template("chat")
            .and_then(|t| t.render(context))
            .map_err(describe)?;
        let mut rendered = template::strip_segments(&output)
            .map_err(|e| format!("it breaks the prompt's segment marks ({e})"))?;
        if let Some(label) = rendered
            .segments
            .keys()
            .find(|l| !marked_segments.contains_key(*l))
        {
            return Err(format!(
                "it changes the text of the prompt (even the mark of a segment came out as `{label}`)"
            ));
        }
        for (label, ranges) in &marked_segments {
            let found = rendered.segments.get(label).map_or(0, Vec::len);
            let what = if label == WHOLE_PROMPT {
                "the prompt".to_string()
            } else {
                format!("segment `{label}`")
            };
            if found != ranges.len() {
                return Err(format!(
                    "it drops the text of {what} (the rendered turn holds it {found} times, the prompt {} times)",
                    ranges.len()
                ));
            }
            for (original, placed) in ranges.iter().zip(&rendered.segments[label]) {
                if text[original.clone()] != rendered.text[placed.clone()] {
                    return Err(format!(
                        "it changes the text of {what}: {:?} became {:?}",
                        abbreviate(&text[original.clone()]),
                        abbreviate(&rendered.text[placed.clone()])
                    ));
                }
            }
        }
        rendered.segments.remove(WHOLE_PROMPT);
        let bos = &self.tokens.bos_token;
        if self.tokens.tokenizer_adds_bos
            && !bos.is_empty()
            && rendered.text.starts_with(bos.as_str())
        {
            rendered.text.drain(..bos.len());
            for ranges in rendered.segments.values_mut() {
                for r in ranges.iter_mut() {
                    *r = r.start - bos.len()..r.end - bos.len();
                }
            }
        }
        Ok(rendered)
    }
}

fn abbreviate(text: &str) -> String {
    const KEEP: usize = 40;
    if text.chars().count() <= KEEP {
        text.to_string()
    } else {
        let head: String = text.chars().take(KEEP).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    const LLAMA2: &str = "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'].strip() + ' [/INST]' }}{% else %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    fn tokens(adds_bos: bool) -> ChatTokens {
        ChatTokens {
            bos_token: "<s>".into(),
            eos_token: "</s>".into(),
            tokenizer_adds_bos: adds_bos,
        }
    }

    fn prompt() -> (String, BTreeMap<String, Vec<Range<usize>>>) {
        let text = "x = 3, y = 7\nx = 4, y =".to_string();
        let mut segments = BTreeMap::new();
        segments.insert(
            "demonstrations".to_string(),
            std::iter::once(0..12).collect(),
        );
        segments.insert(
            "query".to_string(),
            std::iter::once(13..text.len()).collect(),
        );
        (text, segments)
    }

    #[test]
    fn chatml_keeps_every_segment_and_appends_the_assistant_turn() {
        let (text, segments) = prompt();
        let r = ChatRenderer::new(CHATML, tokens(false))
            .expect("compile")
            .render_turn(&text, &segments)
            .expect("render");
        assert!(r.text.starts_with("<|im_start|>system\n"), "{}", r.text);
        assert!(r
            .text
            .ends_with("x = 4, y =<|im_end|>\n<|im_start|>assistant\n"));
        assert_eq!(&r.text[r.segments["query"][0].clone()], "x = 4, y =");
        assert_eq!(
            &r.text[r.segments["demonstrations"][0].clone()],
            "x = 3, y = 7"
        );
        assert!(!r.segments.contains_key(WHOLE_PROMPT));
    }

    #[test]
    fn llama2_inst_template_with_python_methods_and_its_bos_dropped_when_the_tokenizer_adds_one() {
        let (text, segments) = prompt();
        let with_bos = ChatRenderer::new(LLAMA2, tokens(false))
            .expect("compile")
            .render_turn(&text, &segments)
            .expect("render");
        assert_eq!(with_bos.text, format!("<s>[INST] {text} [/INST]"));
        let without = ChatRenderer::new(LLAMA2, tokens(true))
            .expect("compile")
            .render_turn(&text, &segments)
            .expect("render");
        assert_eq!(without.text, format!("[INST] {text} [/INST]"));
        assert_eq!(
            &without.text[without.segments["query"][0].clone()],
            "x = 4, y ="
        );
    }

    #[test]
    fn a_template_that_drops_or_changes_a_segment_is_refused_naming_it() {
        let (text, segments) = prompt();
        let drops = "{{ messages[0]['content'][:3] }}";
        let err = ChatRenderer::new(drops, tokens(false))
            .expect("compile")
            .render_turn(&text, &segments)
            .expect_err("drops");
        assert!(err.contains("segment"), "{err}");
        let changes = "{{ messages[0]['content'] | upper }}";
        let err = ChatRenderer::new(changes, tokens(false))
            .expect("compile")
            .render_turn(&text, &segments)
            .expect_err("changes");
        assert!(err.contains("changes the text of the prompt"), "{err}");
        let trims = "{{ messages[0]['content'] | replace('y = 7', 'y = 8') }}";
        let err = ChatRenderer::new(trims, tokens(false))
            .expect("compile")
            .render_turn(&text, &segments)
            .expect_err("changes");
        assert!(
            err.contains("changes the text of segment `demonstrations`"),
            "{err}"
        );
        let raises = "{{ raise_exception('Conversation roles must alternate') }}";
        let err = ChatRenderer::new(raises, tokens(false))
            .expect("compile")
            .render_turn(&text, &segments)
            .expect_err("raises");
        assert!(err.contains("Conversation roles must alternate"), "{err}");
        assert!(ChatRenderer::new("{% for %}", tokens(false)).is_err());
    }

    #[test]
    fn the_key_takes_none_model_or_a_template() {
        assert_eq!(ChatTemplate::parse("none"), Some(ChatTemplate::None));
        assert_eq!(ChatTemplate::parse("model"), Some(ChatTemplate::Model));
        assert!(matches!(
            ChatTemplate::parse("USER: {{ x }}"),
            Some(ChatTemplate::Inline(_))
        ));
        assert_eq!(ChatTemplate::parse("chatml"), None);
    }
}
