//! Text normalisation: the tokens the scorer compares (also used by the triage bot, so both
//! read a customer's words the same way).
//!
//! Lower-cased words (letters and digits), English stop words dropped, and a light suffix
//! stemmer so that "returns", "returned" and "returning" all become "return", "charge" and
//! "charged" one token. Deterministic and bounded: only the first [`MAX_INPUT_CHARS`]
//! characters and [`MAX_TOKENS`] tokens count.
//!
//! ```
//! use switchboard_bot_faq::text::{contains_phrase, tokens};
//!
//! let words = tokens("I was charged twice for my deliveries!");
//! assert_eq!(words, ["charg", "twic", "delivery"]); // stems, not dictionary words
//! assert!(contains_phrase(&words, &tokens("charge twice")));
//! ```

/// Characters of a text considered; the rest is ignored.
pub const MAX_INPUT_CHARS: usize = 2000;

/// Tokens of a text considered; the rest are ignored.
pub const MAX_TOKENS: usize = 256;

/// English words that carry no topic. Sorted, for binary search.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been",
    "before", "being", "but", "by", "can", "could", "d", "did", "do", "does", "doing", "for",
    "from", "get", "got", "had", "has", "have", "hello", "hey", "hi", "how", "i", "if", "in",
    "into", "is", "it", "its", "just", "ll", "m", "may", "me", "might", "my", "of", "on", "or",
    "our", "please", "re", "s", "shall", "should", "so", "some", "t", "than", "thank", "thanks",
    "that", "the", "their", "them", "then", "there", "these", "they", "this", "those", "to", "us",
    "ve", "want", "was", "we", "were", "what", "when", "where", "which", "who", "why", "will",
    "with", "would", "you", "your",
];

/// The normalised tokens of `text`, in order (repeats kept), stop words removed.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in text
        .chars()
        .take(MAX_INPUT_CHARS)
        .chain(std::iter::once(' '))
    {
        if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
            continue;
        }
        if !word.is_empty() {
            if STOP_WORDS.binary_search(&word.as_str()).is_err() {
                out.push(stem(&word));
                if out.len() == MAX_TOKENS {
                    break;
                }
            }
            word.clear();
        }
    }
    out
}

/// The distinct tokens of `text`, sorted.
pub fn token_set(text: &str) -> Vec<String> {
    let mut set = tokens(text);
    set.sort_unstable();
    set.dedup();
    set
}

/// A light English suffix stemmer. Applied to the text and the FAQ alike, so it only needs to
/// map a word's common forms to one token, not to produce a dictionary word.
fn stem(word: &str) -> String {
    let n = word.chars().count();
    let strip = |suffix: &str| word.strip_suffix(suffix).map(str::to_owned);
    let stemmed = if n > 4 && word.ends_with("ies") {
        strip("ies").map(|w| format!("{w}y"))
    } else if n > 5 && word.ends_with("ing") {
        strip("ing").map(|w| undouble(&w))
    } else if n > 4 && word.ends_with("ed") {
        strip("ed").map(|w| undouble(&w))
    } else if n > 4
        && (word.ends_with("sses")
            || word.ends_with("xes")
            || word.ends_with("ches")
            || word.ends_with("shes"))
    {
        strip("es")
    } else if n > 3 && word.ends_with('s') && !word.ends_with("ss") && !word.ends_with("us") {
        strip("s")
    } else {
        None
    };
    let mut stemmed = stemmed.unwrap_or_else(|| word.to_owned());
    // "charge" and "charg(ed)": a final silent e goes, as the suffixes above took it.
    if stemmed.chars().count() > 4 && stemmed.ends_with('e') && !stemmed.ends_with("ee") {
        stemmed.pop();
    }
    stemmed
}

/// "shipp" -> "ship", "stopp" -> "stop": a doubled final consonant left by a removed suffix.
fn undouble(word: &str) -> String {
    let mut chars = word.chars().rev();
    match (chars.next(), chars.next()) {
        (Some(a), Some(b)) if a == b && !"aeioulsz".contains(a) && a.is_alphabetic() => {
            let mut w = word.to_owned();
            w.pop();
            w
        }
        _ => word.to_owned(),
    }
}

/// Whether `phrase` (tokens) occurs in `tokens` as a contiguous run.
pub fn contains_phrase(tokens: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && tokens.windows(phrase.len()).any(|w| w == phrase)
}

/// `text` made safe to quote in a one-line note: control characters become spaces, runs of
/// whitespace one space, and at most `max` characters are kept (then `…`).
pub fn quote(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if count > 0 {
            out.push(' ');
            count += 1;
        }
        for c in word.chars() {
            if count >= max {
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_for_binary_search() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tokens_are_lowercased_stemmed_and_without_stop_words() {
        assert_eq!(
            tokens("What are your Opening HOURS?"),
            vec!["open".to_owned(), "hour".to_owned()]
        );
        assert_eq!(tokens("I'm returning 2 boxes"), ["return", "2", "box"]);
        assert_eq!(tokens("shipped, shipping, ships"), ["ship", "ship", "ship"]);
        assert_eq!(tokens("deliveries delivery"), ["delivery", "delivery"]);
        assert_eq!(
            tokens("status address addresses"),
            ["status", "address", "address"]
        );
        assert_eq!(
            tokens("charge charged charging charges"),
            ["charg", "charg", "charg", "charg"]
        );
        assert_eq!(
            tokens("close closed closing cases case"),
            ["clos", "clos", "clos", "case", "case"]
        );
        assert!(tokens("the and of").is_empty());
    }

    #[test]
    fn tokens_are_bounded() {
        let long = "word ".repeat(100_000);
        assert!(tokens(&long).len() <= MAX_TOKENS);
        let one_long_word = "x".repeat(100_000);
        assert!(tokens(&one_long_word).concat().chars().count() <= MAX_INPUT_CHARS);
    }

    #[test]
    fn phrases_match_contiguous_tokens_only() {
        let t = tokens("can I send it back tomorrow");
        assert!(contains_phrase(&t, &tokens("send back")));
        assert!(!contains_phrase(&t, &tokens("back send")));
        assert!(!contains_phrase(&t, &[]));
    }

    #[test]
    fn quotes_are_one_line_and_bounded() {
        assert_eq!(quote("  a\n\tb\u{7}c  ", 10), "a b c");
        assert_eq!(quote("abcdef", 3), "abc…");
    }
}
