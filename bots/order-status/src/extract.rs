//! Finding an order number in a customer's message.

/// The longest order number accepted, in characters.
pub const MAX_ORDER_ID_CHARS: usize = 32;

/// Characters of a message searched for an order number; the rest is ignored.
pub const MAX_SCAN_CHARS: usize = 2000;

/// Words allowed between "order" and its number: "order number 42", "order no. 42",
/// "my order is 42".
const FILLERS: &[&str] = &["id", "is", "no", "nr", "num", "number"];

/// The order number in `text`, if it names one: after the word "order" ("order 42",
/// "Order #42", "order no. A-17", "my order number is 1234", "order:42") or marked with `#`
/// ("#A-1234"). An order number is 1 to [`MAX_ORDER_ID_CHARS`] ASCII letters, digits, `-` and
/// `_`, with at least one digit; it is returned as written, without the `#` and surrounding
/// punctuation. The first one found wins; only the first [`MAX_SCAN_CHARS`] characters are
/// searched.
///
/// ```
/// use switchboard_bot_order_status::order_id;
///
/// assert_eq!(order_id("Hi, where is my order 42?").as_deref(), Some("42"));
/// assert_eq!(order_id("Any news on #A-1234").as_deref(), Some("A-1234"));
/// assert_eq!(order_id("I would rather get a refund."), None);
/// ```
#[must_use]
pub fn order_id(text: &str) -> Option<String> {
    let scanned: String = text.chars().take(MAX_SCAN_CHARS).collect();
    let words: Vec<&str> = scanned.split_whitespace().collect();
    for (i, word) in words.iter().enumerate() {
        if let Some(rest) = word.strip_prefix('#')
            && let Some(id) = candidate(rest)
        {
            return Some(id);
        }
        let lower = word.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix("order")
            && let Some(glued) = rest.strip_prefix(['#', ':'])
            && !glued.is_empty()
        {
            // "order#42", "order:42": the number as written (same byte length).
            if let Some(id) = word.get(word.len() - glued.len()..).and_then(candidate) {
                return Some(id);
            }
            continue;
        }
        if bare(&lower) != "order" {
            continue;
        }
        let next = words
            .iter()
            .skip(i + 1)
            .take(4)
            .find(|w| !FILLERS.contains(&bare(&w.to_ascii_lowercase())));
        if let Some(id) = next.and_then(|w| candidate(w.trim_start_matches('#'))) {
            return Some(id);
        }
    }
    None
}

/// A word without surrounding punctuation.
fn bare(word: &str) -> &str {
    word.trim_matches(|c: char| !c.is_alphanumeric())
}

/// `word` as an order number, if it is one once surrounding punctuation is trimmed.
fn candidate(word: &str) -> Option<String> {
    let id = word.trim_matches(|c: char| c.is_ascii_punctuation());
    is_valid_order_id(id).then(|| id.to_owned())
}

/// Whether `id` is an order number: 1 to [`MAX_ORDER_ID_CHARS`] ASCII letters, digits, `-`
/// and `_`, with at least one digit.
pub(crate) fn is_valid_order_id(id: &str) -> bool {
    (1..=MAX_ORDER_ID_CHARS).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && id.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_numbers_are_found_after_order() {
        for (text, id) in [
            ("order 42", "42"),
            ("Hi, where is my order 42?", "42"),
            ("ORDER #42!", "42"),
            ("Order no. A-17, please", "A-17"),
            ("my order number is 1234.", "1234"),
            ("order nr: 99", "99"),
            ("order:42", "42"),
            ("Order#B7", "B7"),
            ("(order 2026-0042)", "2026-0042"),
            ("status of order\n\t555", "555"),
        ] {
            assert_eq!(order_id(text).as_deref(), Some(id), "{text:?}");
        }
    }

    #[test]
    fn hash_marked_numbers_are_found() {
        assert_eq!(order_id("#A-1234").as_deref(), Some("A-1234"));
        assert_eq!(order_id("Any news on #a_99?").as_deref(), Some("a_99"));
        assert_eq!(
            order_id("#help with #77 please").as_deref(),
            Some("77"),
            "a # word without a digit is skipped"
        );
    }

    #[test]
    fn texts_without_an_order_number_give_none() {
        for text in [
            "",
            "I would rather get a refund.",
            "order status please",
            "I ordered 3 items",
            "I have 3 orders",
            "order",
            "#",
            "order #",
            "where is ABC-123",
            "order 日本42",
        ] {
            assert_eq!(order_id(text), None, "{text:?}");
        }
    }

    #[test]
    fn the_first_order_number_wins() {
        assert_eq!(order_id("order 1 and order 2").as_deref(), Some("1"));
        assert_eq!(order_id("order status for #9").as_deref(), Some("9"));
    }

    #[test]
    fn order_numbers_and_the_scan_are_bounded() {
        let long = format!("order {}", "1".repeat(MAX_ORDER_ID_CHARS + 1));
        assert_eq!(order_id(&long), None);
        let max = "1".repeat(MAX_ORDER_ID_CHARS);
        assert_eq!(order_id(&format!("order {max}")), Some(max));
        let far = format!("{} order 42", "x".repeat(MAX_SCAN_CHARS));
        assert_eq!(order_id(&far), None);
    }

    #[test]
    fn valid_ids_need_a_digit_and_safe_characters() {
        assert!(is_valid_order_id("42"));
        assert!(is_valid_order_id("A-1_2"));
        assert!(!is_valid_order_id(""));
        assert!(!is_valid_order_id("abc"));
        assert!(!is_valid_order_id("../42"));
        assert!(!is_valid_order_id("4 2"));
        assert!(!is_valid_order_id("42é"));
    }
}
