//! Where answers occur: gold spans inside a retrieved block (for the reader's marginal over all
//! matching spans, as ORQA trains) and whether a block contains an answer at all (retrieval
//! recall, and which beam documents the retriever's loss rewards).

use super::qa::normalize_answer;

/// Every `[start, end)` in `tokens` equal to one of `answers` (token sequences), at most
/// `max_width` long (ORQA: 10), sorted by start then end.
pub fn answer_spans(tokens: &[u32], answers: &[Vec<u32>], max_width: usize) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    for answer in answers
        .iter()
        .filter(|a| !a.is_empty() && a.len() <= max_width)
    {
        for start in 0..tokens.len().saturating_sub(answer.len() - 1) {
            if tokens[start..start + answer.len()] == answer[..] {
                spans.push((start, start + answer.len()));
            }
        }
    }
    spans.sort_unstable();
    spans.dedup();
    spans
}

/// Whether any answer occurs in `text` as a whole-word sequence after SQuAD normalisation
/// (so "the Paris," contains "Paris" but "Parisian" does not).
pub fn contains_answer(text: &str, answers: &[String]) -> bool {
    let words: Vec<String> = normalize_answer(text)
        .split(' ')
        .map(str::to_string)
        .collect();
    answers.iter().any(|a| {
        let normalized = normalize_answer(a);
        let needle: Vec<&str> = normalized.split(' ').filter(|w| !w.is_empty()).collect();
        !needle.is_empty()
            && words
                .windows(needle.len())
                .any(|w| w.iter().zip(&needle).all(|(x, y)| x == y))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_of_every_answer_within_the_width() {
        let tokens = [5, 1, 2, 5, 1, 2, 9];
        let spans = answer_spans(
            &tokens,
            &[vec![1, 2], vec![5], vec![9, 9], (0..20).collect()],
            10,
        );
        assert_eq!(spans, [(0, 1), (1, 3), (3, 4), (4, 6)]);
        assert!(answer_spans(&tokens, &[vec![1, 2]], 1).is_empty());
    }

    #[test]
    fn answers_match_whole_normalised_words() {
        let answers = ["Paris".to_string(), "the Loire Valley".to_string()];
        assert!(contains_answer("It flows past Paris, France.", &answers));
        assert!(contains_answer("in loire valley", &answers));
        assert!(!contains_answer("a Parisian cafe", &answers));
    }
}
