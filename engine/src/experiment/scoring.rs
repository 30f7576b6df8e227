//! Scoring one generated answer against its target instance.
//!
//! - Numbers (linear regression): the first number in the answer (up to the
//!   first newline); error = |ŷ − y|. No number means unparseable: counted in
//!   the unparseable rate, left out of the mean error.
//! - Keywords (reading comprehension): correct when the answer (up to the
//!   first newline, case-insensitive) contains one of the activity's keywords
//!   and none of the distractor activity's.

use super::tasks::{Instance, Scoring};

/// The score of one answer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Score {
    /// 1 when correct (exact number, or the right activity), else 0.
    pub correct: bool,
    /// |ŷ − y| for numeric tasks; None when unparseable or not numeric.
    pub error: Option<f64>,
    /// The answer held no number (numeric tasks only).
    pub unparseable: bool,
}

/// The part of a generation that is the answer: up to the first newline.
pub fn answer_text(generated: &str) -> &str {
    generated.split('\n').next().unwrap_or("").trim()
}

pub fn score(scoring: Scoring, instance: &Instance, generated: &str) -> Score {
    let answer = answer_text(generated);
    match scoring {
        Scoring::Number => {
            let expected = instance.numeric_answer();
            match (first_number(answer), expected) {
                (Some(y_hat), Some(y)) => Score {
                    correct: (y_hat - y).abs() < 1e-9,
                    error: Some((y_hat - y).abs()),
                    unparseable: false,
                },
                _ => Score {
                    correct: false,
                    error: None,
                    unparseable: true,
                },
            }
        }
        Scoring::Keywords => {
            let lower = answer.to_lowercase();
            let has = |words: &[String]| {
                words
                    .iter()
                    .any(|w| !w.is_empty() && lower.contains(&w.to_lowercase()))
            };
            Score {
                correct: has(&instance.keywords) && !has(&instance.forbidden),
                error: None,
                unparseable: false,
            }
        }
    }
}

/// The first number in `text`: an optional minus sign, digits, an optional
/// decimal part (`-12`, `3.5`); thousands separators are not read.
pub fn first_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(u8::is_ascii_digit)?;
    let negative = start > 0 && bytes[start - 1] == b'-';
    let mut end = start;
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
    }
    if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
        end += 1;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
    }
    let value: f64 = text[start..end].parse().ok()?;
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn instance(answer: &str, keywords: &[&str], forbidden: &[&str]) -> Instance {
        Instance {
            id: 0,
            condition: 0,
            params: BTreeMap::new(),
            context: serde_json::json!({}),
            answer: answer.into(),
            keywords: keywords.iter().map(|s| s.to_string()).collect(),
            forbidden: forbidden.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_number_is_read() {
        assert_eq!(first_number(" 23\nx = 4"), Some(23.0));
        assert_eq!(first_number("y = -4.5 or so"), Some(-4.5));
        assert_eq!(first_number("about 7."), Some(7.0));
        assert_eq!(first_number("no idea"), None);
    }

    #[test]
    fn numeric_answers_score_their_absolute_error() {
        let target = instance("23", &[], &[]);
        assert_eq!(
            score(Scoring::Number, &target, " 23\n"),
            Score {
                correct: true,
                error: Some(0.0),
                unparseable: false
            }
        );
        assert_eq!(
            score(Scoring::Number, &target, " 20, y = 23"),
            Score {
                correct: false,
                error: Some(3.0),
                unparseable: false
            }
        );
        assert!(score(Scoring::Number, &target, " twenty").unparseable);
        // Only the first line is the answer.
        assert!(score(Scoring::Number, &target, "\n23").unparseable);
    }

    #[test]
    fn keyword_answers_must_name_the_asked_activity_only() {
        let target = instance("reading a book", &["read", "book"], &["cook", "dinner"]);
        assert!(score(Scoring::Keywords, &target, " Reading a book.\nQuestion").correct);
        assert!(!score(Scoring::Keywords, &target, " Cooking dinner.").correct);
        assert!(!score(Scoring::Keywords, &target, " reading and cooking").correct);
    }
}
