//! Restoring pseudonym tokens in model output, also when a token is split across stream chunks.
//! Only the longest suffix that could still become a known token is held back; everything else
//! is released at once, and whatever is held is flushed at the end. Tokens the model changed only
//! in case or in whitespace inside the brackets are restored; unknown tokens are left untouched.

use super::actions::{Pseudonyms, TOKEN_CLOSE, TOKEN_OPEN};

/// Slack for whitespace a model may put inside the brackets.
const WHITESPACE_SLACK: usize = 8;

/// Un-masks one stream of text (one message's content, or one tool call's arguments).
pub struct Unmasker {
    held: String,
    /// The text is JSON (tool arguments): restored values are escaped for a JSON string.
    json: bool,
}

impl Default for Unmasker {
    fn default() -> Self {
        Self::new()
    }
}

impl Unmasker {
    pub fn new() -> Self {
        Self {
            held: String::new(),
            json: false,
        }
    }

    /// For text that is itself JSON, such as tool-call arguments.
    pub fn json() -> Self {
        Self {
            held: String::new(),
            json: true,
        }
    }

    /// Takes the next piece of text; returns what can be released now.
    pub fn push(&mut self, pseudonyms: &Pseudonyms, chunk: &str) -> String {
        self.held.push_str(chunk);
        let split = hold_point(pseudonyms, &self.held);
        let rest = self.held.split_off(split);
        let ready = std::mem::replace(&mut self.held, rest);
        restore_with(pseudonyms, &ready, self.json)
    }

    /// Releases whatever is still held (the end of the stream).
    pub fn finish(&mut self, pseudonyms: &Pseudonyms) -> String {
        restore_with(pseudonyms, &std::mem::take(&mut self.held), self.json)
    }

    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }
}

/// Where the text that might still grow into a token begins (the text length when nothing is
/// held).
fn hold_point(pseudonyms: &Pseudonyms, text: &str) -> usize {
    let Some(open) = text.rfind(TOKEN_OPEN) else {
        return text.len();
    };
    let tail = &text[open + TOKEN_OPEN.len_utf8()..];
    if tail.contains(TOKEN_CLOSE) || !within_hold_limit(pseudonyms, tail.len()) {
        return text.len();
    }
    let name = canonical(tail);
    if pseudonyms.could_complete(&name) {
        open
    } else {
        text.len()
    }
}

/// Whether a token's inner text of `len` bytes is short enough to be a (possibly re-spaced)
/// known token.
fn within_hold_limit(pseudonyms: &Pseudonyms, len: usize) -> bool {
    len + TOKEN_OPEN.len_utf8() <= pseudonyms.longest_token() + WHITESPACE_SLACK
}

/// A token's inner name as the model wrote it, trimmed and upper-cased.
fn canonical(inner: &str) -> String {
    inner.trim().to_ascii_uppercase()
}

/// Replaces every complete, known token in `text`.
pub fn restore(pseudonyms: &Pseudonyms, text: &str) -> String {
    restore_with(pseudonyms, text, false)
}

/// Like [`restore`]; with `json`, values are escaped for the inside of a JSON string.
pub fn restore_with(pseudonyms: &Pseudonyms, text: &str, json: bool) -> String {
    if pseudonyms.is_empty() || !text.contains(TOKEN_OPEN) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find(TOKEN_OPEN) {
        out.push_str(&rest[..open]);
        let after = &rest[open + TOKEN_OPEN.len_utf8()..];
        match after.find(TOKEN_CLOSE) {
            // The same bound as the stream's hold-back, so that streamed and whole output agree.
            Some(close)
                if !after[..close].contains(TOKEN_OPEN) && within_hold_limit(pseudonyms, close) =>
            {
                match pseudonyms.value(&canonical(&after[..close])) {
                    Some(value) if json => {
                        let quoted = serde_json::to_string(value).unwrap_or_default();
                        out.push_str(quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or(""));
                    }
                    Some(value) => out.push_str(value),
                    None => {
                        out.push(TOKEN_OPEN);
                        out.push_str(&after[..close]);
                        out.push(TOKEN_CLOSE);
                    }
                }
                rest = &after[close + TOKEN_CLOSE.len_utf8()..];
            }
            _ => {
                out.push(TOKEN_OPEN);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> Pseudonyms {
        let mut p = Pseudonyms::default();
        p.token("EMAIL_ADDRESS", "alice@example.com");
        p.token("PHONE_NUMBER", "13812345678");
        p
    }

    #[test]
    fn whole_tokens_case_and_whitespace() {
        let p = map();
        assert_eq!(
            restore(&p, "write to ⟦EMAIL_ADDRESS_1⟧."),
            "write to alice@example.com."
        );
        assert_eq!(restore(&p, "call ⟦ phone_number_1 ⟧"), "call 13812345678");
        assert_eq!(restore(&p, "⟦UNKNOWN_9⟧ stays"), "⟦UNKNOWN_9⟧ stays");
        assert_eq!(
            restore(&p, "dangling ⟦ and ⟦EMAIL_ADDRESS_1⟧"),
            "dangling ⟦ and alice@example.com"
        );
    }

    #[test]
    fn tokens_split_across_chunks_at_every_position() {
        let p = map();
        let text = "Dear ⟦EMAIL_ADDRESS_1⟧, call ⟦PHONE_NUMBER_1⟧ or ⟦OTHER⟧ now";
        let expected = "Dear alice@example.com, call 13812345678 or ⟦OTHER⟧ now";
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for &(cut, _) in &chars[1..] {
            let mut u = Unmasker::new();
            let mut out = u.push(&p, &text[..cut]);
            out += &u.push(&p, &text[cut..]);
            out += &u.finish(&p);
            assert_eq!(out, expected, "split at byte {cut}");
        }
        // One character at a time: only a possible token prefix is ever held.
        let mut u = Unmasker::new();
        let mut out = String::new();
        for (_, c) in &chars {
            out += &u.push(&p, &c.to_string());
            assert!(u.held.len() <= p.longest_token() + WHITESPACE_SLACK);
        }
        out += &u.finish(&p);
        assert_eq!(out, expected);
    }

    #[test]
    fn streamed_and_whole_agree_on_heavily_spaced_tokens() {
        // Found by the unmask fuzz target: whole-text restore accepted any amount of whitespace
        // inside the brackets, the stream only a little.
        let p = map();
        let text = format!("x ⟦ {} EMAIL_ADDRESS_1⟧ y", "\u{c}".repeat(19));
        let mut u = Unmasker::new();
        let mut streamed = String::new();
        for piece in text.split_inclusive('\u{c}') {
            streamed += &u.push(&p, piece);
        }
        streamed += &u.finish(&p);
        assert_eq!(streamed, restore(&p, &text));
        assert_eq!(restore(&p, "a ⟦  EMAIL_ADDRESS_1 ⟧"), "a alice@example.com");
    }

    #[test]
    fn text_that_cannot_be_a_token_is_not_held() {
        let p = map();
        let mut u = Unmasker::new();
        assert_eq!(u.push(&p, "math ⟦x"), "math ⟦x");
        assert!(!u.is_holding());
        assert_eq!(u.push(&p, "see ⟦EMAIL_"), "see ");
        assert!(u.is_holding());
    }
}
