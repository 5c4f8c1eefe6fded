//! Output rules on model output: the entity types (secrets, by default) that are redacted before
//! the client sees them, in whole bodies and in streams.
//!
//! A stream arrives in pieces of a few characters, so a secret is nearly always split across
//! pieces, and its keyword (`api_key=`) may come several pieces before its value. Each streamed
//! text field has a [`StreamRedactor`] that holds back only what could still grow into a match:
//! the earliest point from which some output pattern, run as an anchored lazy DFA, is not yet
//! dead at the end of the text. Everything before it is scanned together with the last
//! [`CONTEXT`] bytes already sent (for keywords and context words), redacted and released.

use std::collections::HashMap;
use std::sync::Arc;

use aho_corasick::AhoCorasick;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::util::pool::Pool;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind};

use super::engine::{CacheInit, cache_pool};
use super::{DlpError, Scanner, entity_matches};

/// Bytes of already released text kept to scan with the next piece.
pub const CONTEXT: usize = 128;
/// The most a stream holds back for one possible match (a private-key block is a few KiB);
/// past it the text is released and scanned as it is.
pub const MAX_HOLD: usize = 16 << 10;

/// Whether text could still become a match of an output rule.
///
/// Each rule has its own anchored lazy DFA. A rule counts only while it could still fire: a
/// keyword-gated rule needs one of its keywords in the text (or a keyword's beginning at the very
/// end of it), as the scanner does; a rule without keywords always counts. So ordinary prose is
/// not held back just because a broad pattern (`[MN][A-Za-z0-9]{23,25}...`, gated by `discord`)
/// could start anywhere.
pub struct Prefixes {
    rules: Vec<RuleDfa>,
    keywords: Option<AhoCorasick>,
    /// For each keyword, the rules it gates.
    keyword_rules: Vec<Vec<usize>>,
    /// Lower-case proper beginnings of keywords, and the rules their keywords gate.
    beginnings: HashMap<Vec<u8>, Vec<usize>>,
    longest_keyword: usize,
}

struct RuleDfa {
    dfa: Arc<DFA>,
    caches: Pool<Cache, CacheInit>,
    gated: bool,
}

impl Prefixes {
    /// `None` when no rule's entity type is redacted.
    pub fn new(scanner: &Scanner, redact: &[String]) -> Result<Option<Self>, DlpError> {
        let chosen: Vec<_> = scanner
            .rules()
            .iter()
            .filter(|r| redact.iter().any(|p| entity_matches(p, &r.entity)))
            .collect();
        if chosen.is_empty() {
            return Ok(None);
        }
        let mut rules = Vec::new();
        let mut words: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut beginnings: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
        for (i, r) in chosen.iter().enumerate() {
            let dfa = Arc::new(
                DFA::builder()
                    .syntax(syntax::Config::new().unicode(false).utf8(false))
                    .configure(
                        DFA::config()
                            .match_kind(MatchKind::All)
                            .cache_capacity(256 << 10)
                            .skip_cache_capacity_check(true),
                    )
                    .build_many(&r.patterns)
                    .map_err(|e| DlpError::Compile(format!("output rule {}: {e}", r.id)))?,
            );
            rules.push(RuleDfa {
                caches: cache_pool(&dfa),
                dfa,
                gated: !r.keywords.is_empty(),
            });
            for k in &r.keywords {
                let k = k.to_ascii_lowercase();
                for n in 1..k.len() {
                    beginnings
                        .entry(k.as_bytes()[..n].to_vec())
                        .or_default()
                        .push(i);
                }
                match words.iter().position(|w| *w == k) {
                    Some(p) => keyword_rules[p].push(i),
                    None => {
                        words.push(k);
                        keyword_rules.push(vec![i]);
                    }
                }
            }
        }
        let keywords = if words.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&words)
                    .map_err(|e| DlpError::Compile(format!("output rule keywords: {e}")))?,
            )
        };
        Ok(Some(Self {
            rules,
            keywords,
            keyword_rules,
            beginnings,
            longest_keyword: words.iter().map(String::len).max().unwrap_or(0),
        }))
    }

    /// The first character start in `text[from..]` from which a match of a rule that could
    /// still fire may be growing at the end of `text`, no further back than [`MAX_HOLD`].
    pub fn live_start(&self, text: &str, from: usize) -> Option<usize> {
        let bytes = text.as_bytes();
        let mut active: Vec<bool> = self.rules.iter().map(|r| !r.gated).collect();
        if let Some(ac) = &self.keywords {
            for m in ac.find_overlapping_iter(bytes) {
                for &r in &self.keyword_rules[m.pattern().as_usize()] {
                    active[r] = true;
                }
            }
        }
        // A keyword may be arriving: its beginning ends the text.
        let end = bytes[bytes.len().saturating_sub(self.longest_keyword)..].to_ascii_lowercase();
        for n in 1..self.longest_keyword.min(bytes.len() + 1) {
            for &r in self
                .beginnings
                .get(&end[end.len() - n..])
                .into_iter()
                .flatten()
            {
                active[r] = true;
            }
        }
        let live: Vec<&RuleDfa> = self
            .rules
            .iter()
            .zip(&active)
            .filter(|(_, a)| **a)
            .map(|(r, _)| r)
            .collect();
        if live.is_empty() {
            return None;
        }
        let mut caches: Vec<_> = live.iter().map(|r| r.caches.get()).collect();
        let from = from.max(text.len().saturating_sub(MAX_HOLD));
        (from..text.len())
            .filter(|&i| text.is_char_boundary(i) && bytes[i].is_ascii())
            .find(|&i| {
                live.iter()
                    .zip(caches.iter_mut())
                    .any(|(r, cache)| alive(&r.dfa, cache, bytes, i))
            })
    }
}

fn alive(dfa: &DFA, cache: &mut Cache, bytes: &[u8], start: usize) -> bool {
    let input = Input::new(bytes)
        .span(start..bytes.len())
        .anchored(Anchored::Yes);
    let Ok(mut sid) = dfa.start_state_forward(cache, &input) else {
        return true;
    };
    for &b in &bytes[start..] {
        match dfa.next_state(cache, sid, b) {
            Ok(next) if next.is_dead() => return false,
            // A lazy DFA that gives up cannot say; hold, to be safe.
            Ok(next) if next.is_quit() => return true,
            Ok(next) => sid = next,
            Err(_) => return true,
        }
    }
    true
}

/// The output rules of one gateway configuration.
#[derive(Clone)]
pub struct OutputRules {
    pub scanner: Arc<Scanner>,
    /// Entity types (or `PREFIX_*`) redacted in model output; shared, so cloning per request
    /// is a reference count.
    pub redact: Arc<[String]>,
    pub prefixes: Option<Arc<Prefixes>>,
}

impl OutputRules {
    pub fn new(scanner: Arc<Scanner>, redact: Arc<[String]>) -> Result<Self, DlpError> {
        let prefixes = Prefixes::new(&scanner, &redact)?.map(Arc::new);
        Ok(Self {
            scanner,
            redact,
            prefixes,
        })
    }

    /// A complete text, redacted.
    pub fn redact(&self, text: &str) -> String {
        let spans = self.findings(text);
        replace(text, &spans, 0, text.len())
    }

    /// (start, end, entity) of every redacted finding, in order.
    fn findings(&self, text: &str) -> Vec<(usize, usize, Arc<str>)> {
        self.scanner
            .scan(text)
            .into_iter()
            .filter(|f| self.redact.iter().any(|p| entity_matches(p, &f.entity)))
            .map(|f| (f.start, f.end, f.entity))
            .collect()
    }
}

/// `text[from..to]` with each finding's part inside it replaced by `[ENTITY]`.
fn replace(text: &str, spans: &[(usize, usize, Arc<str>)], from: usize, to: usize) -> String {
    let mut out = String::with_capacity(to - from);
    let mut last = from;
    for (start, end, entity) in spans {
        let (s, e) = ((*start).max(from), (*end).min(to));
        if s >= e || s < last {
            continue;
        }
        out.push_str(&text[last..s]);
        out.push('[');
        out.push_str(entity);
        out.push(']');
        last = e;
    }
    out.push_str(&text[last..to]);
    out
}

/// Redacts one streamed text field, holding back only what could still become a match.
#[derive(Default)]
pub struct StreamRedactor {
    /// Released text, the last [`CONTEXT`] bytes of it, kept to scan with what follows.
    tail: String,
    /// Text not yet released.
    held: String,
}

impl StreamRedactor {
    /// Takes the next piece; returns what can be released now, redacted. With `last`, nothing
    /// is held.
    pub fn push(&mut self, rules: &OutputRules, piece: &str, last: bool) -> String {
        self.held.push_str(piece);
        let t = self.tail.len();
        let mut text = std::mem::take(&mut self.tail);
        text.push_str(&self.held);
        let mut hold = match (&rules.prefixes, last) {
            (Some(p), false) => p.live_start(&text, t).unwrap_or(text.len()),
            _ => text.len(),
        };
        let spans = rules.findings(&text);
        // A finding that would be cut by the hold point is held whole (unless it began in text
        // already sent, whose rest is then redacted as it comes).
        while let Some(&(start, ..)) = spans
            .iter()
            .find(|(start, end, _)| *start >= t && *start < hold && *end > hold)
        {
            hold = start;
        }
        let out = replace(&text, &spans, t, hold);
        self.held = text[hold..].to_owned();
        let keep_from = floor_char_boundary(&text, hold.saturating_sub(CONTEXT));
        self.tail = text[keep_from..hold].to_owned();
        out
    }

    pub fn is_holding(&self) -> bool {
        !self.held.is_empty()
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn rules() -> OutputRules {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
        let scanner = Scanner::new(&super::super::load_packs(dir, None).unwrap()).unwrap();
        OutputRules::new(Arc::new(scanner), vec!["SECRET_*".to_owned()].into()).unwrap()
    }

    /// Streams `text` in pieces of `n` characters; returns what the client sees and how many
    /// pieces released something before the end.
    fn stream(rules: &OutputRules, text: &str, n: usize) -> (String, usize) {
        let chars: Vec<char> = text.chars().collect();
        let pieces: Vec<String> = chars.chunks(n).map(|c| c.iter().collect()).collect();
        let mut r = StreamRedactor::default();
        let mut out = String::new();
        let mut early = 0;
        for (i, p) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            let released = r.push(rules, p, last);
            if !last && !released.is_empty() {
                early += 1;
            }
            out.push_str(&released);
        }
        assert!(!r.is_holding());
        (out, early)
    }

    #[test]
    fn secrets_split_across_pieces_are_redacted() {
        let rules = rules();
        let key = "AKIAZ5QWERTYUIOPASD7";
        let texts = [
            format!("Use {key} for the bucket, then rotate it."),
            "token: ghp_aB3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6 is the bot's".to_owned(),
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAvLEvobpD4McOjUQjryreGqwKKHL9iSc6J5Xg3mXBOKOgxYsYYp3Y8jRet9WvVxG\n-----END RSA PRIVATE KEY-----\nkeep it safe".to_owned(),
        ];
        for text in &texts {
            let whole = rules.redact(text);
            assert!(whole.contains("[SECRET_"), "{whole}");
            for n in [1, 2, 3, 5, 8] {
                let (streamed, _) = stream(&rules, text, n);
                assert_eq!(streamed, whole, "pieces of {n}");
            }
        }
    }

    #[test]
    fn a_keyword_in_an_earlier_piece_still_counts() {
        let rules = rules();
        let text = "config: api_key = \"Zx9Qw8Er7Ty6Ui5Op4As3Df2\" and more";
        let whole = rules.redact(text);
        assert!(whole.contains("[SECRET_GENERIC]"), "{whole}");
        let mut r = StreamRedactor::default();
        let mut out = r.push(&rules, "config: api_key = \"", false);
        for p in ["Zx9Qw8", "Er7Ty6Ui", "5Op4As3Df2", "\" and more"] {
            out.push_str(&r.push(&rules, p, false));
        }
        out.push_str(&r.push(&rules, "", true));
        assert_eq!(out, whole);
        assert!(!out.contains("Zx9Qw8"));
    }

    #[test]
    fn ordinary_prose_is_released_as_it_comes() {
        let rules = rules();
        let text = "Here is the summary of the meeting. We agreed on the plan and its milestones.";
        let (out, early) = stream(&rules, text, 4);
        assert_eq!(out, text);
        let pieces = text.chars().count().div_ceil(4);
        // Only a word that could start a secret pattern is held, and only briefly.
        assert!(early * 10 >= (pieces - 1) * 7, "{early} of {pieces}");
    }

    #[test]
    fn words_that_cannot_start_a_live_rule_are_not_held() {
        let rules = rules();
        let mut r = StreamRedactor::default();
        assert_eq!(r.push(&rules, "Hello", false), "Hello");
        assert_eq!(r.push(&rules, " world, thanks.", false), " world, thanks.");
        // `AK` may become an AWS key id; `the key is ` may precede a value.
        assert_eq!(r.push(&rules, " it is AK", false), " it is ");
        assert_eq!(
            r.push(&rules, "IAZ5QWERTYUIOPASD7 done.", false),
            "[SECRET_AWS_ACCESS_KEY] done."
        );
    }

    #[test]
    fn a_rule_gated_by_a_context_word_holds_once_the_word_came() {
        let rules = rules();
        let text = "the discord bot token MTIzNDU2Nzg5MDEyMzQ1Njc4.GabCde.abcdefghijklmnopqrstuvwxyz0123456 works";
        let whole = rules.redact(text);
        assert!(whole.contains("[SECRET_DISCORD"), "{whole}");
        for n in [2, 5] {
            assert_eq!(stream(&rules, text, n).0, whole, "pieces of {n}");
        }
    }
}
