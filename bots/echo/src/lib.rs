//! The echo bot's logic: answer a text message with the same text.
//!
//! ```
//! use switchboard_bot_echo::echo_reply;
//!
//! assert_eq!(echo_reply("  hello  ").as_deref(), Some("hello"));
//! assert_eq!(echo_reply(" \n\t "), None);
//! ```
//!
//! The reply is bounded: a long message is cut to [`MAX_ECHO_CHARS`] characters, the last of
//! which is an ellipsis. [`EchoBot`] wires it up as a bot of the SDK (`switchboard`); the
//! binary `switchboard-bot-echo` runs it.

mod bot;

pub use bot::EchoBot;

/// The longest reply, in characters (Unicode scalar values), the ellipsis included.
pub const MAX_ECHO_CHARS: usize = 1000;

/// The ellipsis that ends a truncated reply.
pub const ELLIPSIS: char = '…';

/// The reply to `text`: the text without surrounding whitespace, or `None` when nothing is left
/// (nothing to echo). Longer than [`MAX_ECHO_CHARS`] characters, it is cut to
/// `MAX_ECHO_CHARS - 1` characters followed by [`ELLIPSIS`].
#[must_use]
pub fn echo_reply(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        None => Some(text.to_owned()),
        Some(_) => {
            let keep: String = text.chars().take(MAX_ECHO_CHARS - 1).collect();
            let mut reply = keep.trim_end().to_owned();
            reply.push(ELLIPSIS);
            Some(reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_echoed_without_surrounding_whitespace() {
        assert_eq!(
            echo_reply("  Where is my order?\n").as_deref(),
            Some("Where is my order?")
        );
        assert_eq!(echo_reply("a").as_deref(), Some("a"));
    }

    #[test]
    fn empty_or_whitespace_gets_no_reply() {
        assert_eq!(echo_reply(""), None);
        assert_eq!(echo_reply(" \t\r\n \u{3000}"), None);
    }

    #[test]
    fn text_at_the_limit_is_kept_whole() {
        let text = "é".repeat(MAX_ECHO_CHARS);
        assert_eq!(echo_reply(&text), Some(text));
    }

    #[test]
    fn long_text_is_truncated_with_an_ellipsis() {
        let text = "é".repeat(MAX_ECHO_CHARS + 1);
        let reply = echo_reply(&text).unwrap();
        assert_eq!(reply.chars().count(), MAX_ECHO_CHARS);
        assert!(reply.ends_with(ELLIPSIS));
        assert!(reply.starts_with(&"é".repeat(MAX_ECHO_CHARS - 1)));

        let huge = "word ".repeat(1_000_000);
        let reply = echo_reply(&huge).unwrap();
        assert!(reply.chars().count() <= MAX_ECHO_CHARS);
        assert!(reply.ends_with("word…"));
    }
}
