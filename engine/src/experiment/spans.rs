//! From byte ranges of the prompt text to token ranges.
//!
//! Each token covers the bytes its piece spells; we walk the pieces along the
//! text to find where each token starts. A token belongs to the segment that
//! contains its *anchor*: its first byte that is not whitespace (a token that
//! is all whitespace anchors at its first byte). So when BPE merges across a
//! boundary, the merged token goes to the segment where its visible text
//! starts, and no token is ever in two sibling segments. Tokens before the
//! text that spell none of it (a BOS the tokenizer adds) have no anchor and
//! belong to no segment.

use std::ops::Range;

/// Byte offset of each token's anchor in `text`, given each token's bytes.
/// Pieces at the start that do not spell the text (a BOS token) have none
/// (`None`, which sorts before every offset); a leading space that
/// SentencePiece adds to the first word is not part of the text.
pub fn token_anchors(text: &str, pieces: &[Vec<u8>]) -> Result<Vec<Option<usize>>, String> {
    let bytes = text.as_bytes();
    let mut offset = 0;
    let mut anchors = Vec::with_capacity(pieces.len());
    for (i, piece) in pieces.iter().enumerate() {
        let rest = &bytes[offset..];
        let matched = if rest.starts_with(piece) {
            piece.as_slice()
        } else if piece.first() == Some(&b' ') && rest.starts_with(&piece[1..]) && offset == 0 {
            // SentencePiece prefixes the first word with a space the text lacks.
            &piece[1..]
        } else if piece.is_empty() || offset == 0 && i == 0 {
            &[]
        } else {
            return Err(format!(
                "token {i} ({:?}) does not match the prompt text at byte {offset}",
                String::from_utf8_lossy(piece)
            ));
        };
        let lead = matched
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        anchors.push(if matched.is_empty() && offset == 0 {
            None
        } else if lead < matched.len() {
            Some(offset + lead)
        } else {
            Some(offset)
        });
        offset += matched.len();
    }
    if offset != bytes.len() {
        return Err(format!(
            "the tokens spell {offset} of the prompt's {} bytes",
            bytes.len()
        ));
    }
    Ok(anchors)
}

/// The tokens whose anchors lie in `bytes` (empty when none do).
pub fn tokens_in(anchors: &[Option<usize>], bytes: &Range<usize>) -> Range<usize> {
    let start = anchors.partition_point(|&a| a < Some(bytes.start));
    let end = anchors.partition_point(|&a| a < Some(bytes.end));
    start..end.max(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(parts: &[&str]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.as_bytes().to_vec()).collect()
    }

    #[test]
    fn anchors_skip_leading_whitespace() {
        let anchors =
            token_anchors("Hi there\nx", &pieces(&["Hi", " there", "\n", "x"])).expect("align");
        assert_eq!(anchors, vec![Some(0), Some(3), Some(8), Some(9)]);
    }

    #[test]
    fn a_token_merged_across_a_boundary_goes_where_its_text_starts() {
        // Segments "Hel" (0..3) and "lo world" (3..11); BPE gives "Hello" | " world".
        let anchors = token_anchors("Hello world", &pieces(&["Hello", " world"])).expect("align");
        assert_eq!(tokens_in(&anchors, &(0..3)), 0..1);
        assert_eq!(tokens_in(&anchors, &(3..11)), 1..2);
        // A segment that only holds the tail of a merged token has no token of its own.
        assert_eq!(tokens_in(&anchors, &(3..5)), 1..1);
    }

    #[test]
    fn sentencepiece_leading_space_is_not_text_and_bos_belongs_to_no_segment() {
        let anchors = token_anchors("Hi you", &pieces(&["<s>", " Hi", " you"])).expect("align");
        assert_eq!(anchors, vec![None, Some(0), Some(3)]);
        assert_eq!(tokens_in(&anchors, &(0..2)), 1..2);
        assert_eq!(tokens_in(&anchors, &(0..6)), 1..3);
    }

    #[test]
    fn pieces_that_do_not_spell_the_text_are_an_error() {
        assert!(token_anchors("abc", &pieces(&["ab", "d"])).is_err());
    }
}
