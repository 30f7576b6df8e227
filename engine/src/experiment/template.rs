//! Prompt templates with labelled segments.
//!
//! Templates are minijinja. A template marks a segment with a filter block:
//! `{% filter segment("query") %}x = 7, y ={% endfilter %}`. The filter wraps
//! its content in private-use sentinel characters; after rendering we strip
//! them and keep each segment's byte range in the final text, so every
//! segment's tokens are known exactly (see `spans`). Segments may nest and a
//! label may occur more than once.

use std::collections::BTreeMap;
use std::ops::Range;

use minijinja::{Environment, UndefinedBehavior};

const OPEN: char = '\u{E000}';
const LABEL_END: char = '\u{E001}';
const CLOSE: char = '\u{E002}';

/// A rendered prompt: the text and the byte ranges of its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub text: String,
    pub segments: BTreeMap<String, Vec<Range<usize>>>,
}

/// Renders a template with a JSON-like context.
pub fn render(template: &str, context: &serde_json::Value) -> Result<Rendered, String> {
    if contains_sentinel(&context.to_string()) || contains_sentinel(template) {
        return Err(
            "the text contains a private-use character (U+E000–U+E002) reserved for segment marks"
                .into(),
        );
    }
    let mut env = Environment::new();
    // Strict: a misspelt variable is an error, not an empty string.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let syntax = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
        .map_err(describe)?;
    env.set_syntax(syntax);
    env.add_filter(
        "segment",
        |content: String, label: String| -> Result<String, minijinja::Error> {
            if label.is_empty() || label.contains([OPEN, LABEL_END, CLOSE]) {
                return Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    "a segment needs a plain label",
                ));
            }
            Ok(format!("{OPEN}{label}{LABEL_END}{content}{CLOSE}"))
        },
    );
    env.add_template("prompt", template).map_err(describe)?;
    let marked = env
        .get_template("prompt")
        .and_then(|t| t.render(minijinja::value::Serde(context)))
        .map_err(describe)?;
    strip_segments(&marked)
}

fn contains_sentinel(text: &str) -> bool {
    text.contains([OPEN, LABEL_END, CLOSE])
}

/// A minijinja error, with its template line where the message lacks one.
pub(crate) fn describe(e: minijinja::Error) -> String {
    let mut message = e.to_string();
    if let Some(line) = e.line() {
        if !message.contains("line") {
            message = format!("template line {line}: {message}");
        }
    }
    message
}

/// The text with its segments marked again, as [`render`] marks them
/// before stripping: `strip_segments(&mark(text, segments))` gives back
/// `text` and `segments`. Segments must nest (as rendered ones do).
pub(crate) fn mark(text: &str, segments: &BTreeMap<String, Vec<Range<usize>>>) -> String {
    // Opens in order of start, the outer (longer) first; closes in order of
    // end, the inner (later-opened) first.
    let mut spans: Vec<(&str, &Range<usize>)> = segments
        .iter()
        .flat_map(|(label, ranges)| ranges.iter().map(move |r| (label.as_str(), r)))
        .collect();
    spans.sort_by(|a, b| a.1.start.cmp(&b.1.start).then(b.1.end.cmp(&a.1.end)));
    let mut out = String::with_capacity(text.len() + spans.len() * 16);
    let mut open: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut at = 0;
    let close_until = |out: &mut String, open: &mut Vec<usize>, pos: usize, at: &mut usize| {
        while let Some(&end) = open.last() {
            if end > pos {
                break;
            }
            out.push_str(&text[*at..end]);
            *at = end;
            out.push(CLOSE);
            open.pop();
        }
    };
    while next < spans.len() {
        let (label, range) = spans[next];
        close_until(&mut out, &mut open, range.start, &mut at);
        out.push_str(&text[at..range.start]);
        at = range.start;
        out.push(OPEN);
        out.push_str(label);
        out.push(LABEL_END);
        open.push(range.end);
        next += 1;
    }
    close_until(&mut out, &mut open, text.len(), &mut at);
    out.push_str(&text[at..]);
    out
}

/// Removes the sentinel marks and records where each segment ended up.
pub(crate) fn strip_segments(marked: &str) -> Result<Rendered, String> {
    let mut text = String::with_capacity(marked.len());
    let mut segments: BTreeMap<String, Vec<Range<usize>>> = BTreeMap::new();
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut chars = marked.chars();
    while let Some(c) = chars.next() {
        match c {
            OPEN => {
                let label: String = chars.by_ref().take_while(|&c| c != LABEL_END).collect();
                open.push((label, text.len()));
            }
            CLOSE => {
                let (label, start) = open.pop().ok_or("a segment closes that never opened")?;
                segments.entry(label).or_default().push(start..text.len());
            }
            c => text.push(c),
        }
    }
    if let Some((label, _)) = open.pop() {
        return Err(format!("segment `{label}` never closes"));
    }
    Ok(Rendered { text, segments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn segments_map_to_byte_ranges_of_the_final_text() {
        let t = r#"{% filter segment("a") %}Héllo{% endfilter %}, {% filter segment("b") %}{{ who }}{% endfilter %}!"#;
        let r = render(t, &json!({"who": "wörld"})).expect("render");
        assert_eq!(r.text, "Héllo, wörld!");
        assert_eq!(&r.text[r.segments["a"][0].clone()], "Héllo");
        assert_eq!(&r.text[r.segments["b"][0].clone()], "wörld");
    }

    #[test]
    fn segments_nest_and_repeat() {
        let t = r#"{% filter segment("outer") %}{% for x in xs %}{% filter segment("item") %}{{ x }}{% endfilter %};{% endfor %}{% endfilter %}"#;
        let r = render(t, &json!({"xs": [1, 22]})).expect("render");
        assert_eq!(r.text, "1;22;");
        assert_eq!(r.segments["item"], vec![0..1, 2..4]);
        assert_eq!(r.segments["outer"], vec![0..5]);
    }

    #[test]
    fn an_undefined_variable_is_an_error() {
        let err = render("{{ missing }}", &json!({})).expect_err("strict");
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn marking_again_gives_back_the_rendered_segments() {
        let t = r#"{% filter segment("outer") %}A {% for x in xs %}{% filter segment("item") %}{{ x }}{% endfilter %}{% filter segment("empty") %}{% endfilter %};{% endfor %}{% endfilter %} end"#;
        let r = render(t, &json!({"xs": [1, 22]})).expect("render");
        let again = strip_segments(&mark(&r.text, &r.segments)).expect("strip");
        assert_eq!(again, r);
    }

    #[test]
    fn sentinel_characters_in_data_are_refused() {
        assert!(render("{{ x }}", &json!({"x": "\u{E000}"})).is_err());
    }
}
