//! Near-ties: greedy choices whose top two logits are so close that a
//! change of rounding alone (another kernel, flash attention on or off, the
//! prompts an answer is batched beside, a GPU) could flip them, and with
//! them the rest of the answer. An answer "turns on a near-tie" when any
//! of its choices does; its words then say more about the arithmetic than
//! about the model.
//!
//! Gaps are those of [`crate::capture::GreedyAnswer::gaps`], kept in each
//! [`super::PromptRecord::answer_gaps`]: the largest logit minus the second
//! largest, in f32, at each greedy choice.

/// The top-two logit gap below which a greedy choice is a near-tie.
///
/// Switching flash attention on or off changes only how llama.cpp rounds
/// (its CPU kernel keeps queries and partial sums in float16), the largest
/// such change the engine offers. Measured on SmolLM2-135M-Instruct (Q4_1,
/// CPU) over every prompt of the `paper` preset, at each choice of the
/// flash-off greedy answer, teacher-forced with flash attention on and off
/// (`measure_flash_rounding_on_every_paper_prompt` in
/// engine/tests/near_ties.rs): single logits move by up to 1.76 (typically
/// 0.7), but mostly together; the top-two gap, which decides whether a
/// choice flips, moves by up to 0.73 (typically 0.07). Batching answers
/// with flash attention off moved gaps by up to 0.12.
///
/// 1.0 is the round number above the largest gap change of flash
/// attention and about 8 times batching's. It is not 5 to 10 times the
/// largest change of a single logit: that would be 10 to 20, more than
/// almost every answer's narrowest gap, so every answer would count as a
/// near-tie.
pub const NEAR_TIE_LOGIT_GAP: f32 = 1.0;

/// The narrowest gap of an answer's choices; infinite for an answer of no
/// choices, which no rounding can change.
pub fn min_gap(gaps: &[f32]) -> f32 {
    gaps.iter().copied().fold(f32::INFINITY, f32::min)
}

/// Whether some choice of the answer was closer than `threshold`
/// (usually [`NEAR_TIE_LOGIT_GAP`]).
pub fn is_near_tie(gaps: &[f32], threshold: f32) -> bool {
    min_gap(gaps) < threshold
}

#[cfg(test)]
mod tests {
    use super::{is_near_tie, min_gap, NEAR_TIE_LOGIT_GAP};

    #[test]
    fn the_narrowest_choice_decides() {
        assert_eq!(min_gap(&[3.0, 0.25, 7.5]), 0.25);
        assert!(is_near_tie(&[3.0, 0.25, 7.5], 0.5));
        assert!(!is_near_tie(&[3.0, 0.75, 7.5], 0.5));
    }

    #[test]
    fn an_exact_tie_is_a_near_tie() {
        assert!(is_near_tie(&[4.0, 0.0], NEAR_TIE_LOGIT_GAP));
    }

    #[test]
    fn an_answer_of_no_choices_is_no_near_tie() {
        assert_eq!(min_gap(&[]), f32::INFINITY);
        assert!(!is_near_tie(&[], NEAR_TIE_LOGIT_GAP));
    }

    #[test]
    fn a_gap_at_the_threshold_is_not_below_it() {
        assert!(!is_near_tie(&[0.5], 0.5));
    }
}
