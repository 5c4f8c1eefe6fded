//! The compiled scanner. Three passes over the normalised text:
//!
//! - personal data: one regex-automata meta regex built from every PII pattern (ASCII classes,
//!   byte-oriented), reporting pattern ids. At each candidate start, every pattern that matches
//!   there is tried, so a candidate that fails its checksum never hides another rule's match;
//!   boundaries, validators and context words are checked only on candidates;
//! - secrets: one Aho-Corasick pass over every rule's keywords; only rules whose keywords
//!   occur run their `(?-u)` byte regex, as gitleaks does;
//! - dictionaries: one Aho-Corasick pass over custom terms.
//!
//! Overlapping candidates are resolved: validated beats unvalidated, longer beats shorter, then
//! priority. Offsets are UTF-8 byte offsets into the original input.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind as AcMatchKind};
use regex_automata::hybrid::dfa::{Cache as DfaCache, DFA as LazyDfa, OverlappingState};
use regex_automata::meta::Regex as MetaRegex;
use regex_automata::util::pool::Pool;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, PatternSet};

use super::normalize::normalize;
use super::pack::{Boundary, Engine, Pack, Rule, Severity};
use super::trigger::{self, ByteSet};
use super::{DlpError, Finding};

/// Where a context word may stand relative to a candidate, in bytes.
const CONTEXT_BEFORE: usize = 48;
const CONTEXT_AFTER: usize = 24;
const CONTEXT_BOOST: f32 = 0.2;

pub struct Scanner {
    rules: Vec<Rule>,
    /// Interned per rule, so findings share them.
    entities: Vec<Arc<str>>,
    rule_ids: Vec<Arc<str>>,
    pii: Option<Pii>,
    secrets: Option<Secrets>,
    dictionaries: Vec<DictionaryMatcher>,
}

struct Pii {
    /// Patterns every match of which holds a trigger byte: searched only in windows around them.
    gated: Option<Automata>,
    /// Patterns that can match without one: searched over the whole text.
    ungated: Option<Automata>,
    /// How far around a trigger byte of each class a match can reach: (before, after).
    reach: [(usize, usize); TRIGGER_CLASSES],
}

/// One compiled group of personal-data patterns.
struct Automata {
    /// Leftmost-first over every pattern: where the next candidate starts.
    first: MetaRegex,
    /// All-matches over every pattern, anchored at a candidate start: an overlapping search
    /// gives every pattern's match ends there in one pass.
    all: Arc<LazyDfa>,
    caches: Pool<DfaCache, CacheInit>,
    /// All-matches as a meta regex, and each pattern alone: the fallback when the lazy DFA
    /// gives up on a candidate. Small regexes searched over a short span stay on the fast
    /// engines, where a per-pattern anchored search of the big regexes would fall back to the
    /// PikeVM.
    all_meta: MetaRegex,
    each: Vec<MetaRegex>,
    pattern_rule: Vec<usize>,
}

pub(crate) type CacheInit =
    Box<dyn Fn() -> DfaCache + Send + Sync + std::panic::RefUnwindSafe + std::panic::UnwindSafe>;

/// A pool of search caches for a lazy DFA shared across threads: one cache per thread in use.
pub(crate) fn cache_pool(dfa: &Arc<LazyDfa>) -> Pool<DfaCache, CacheInit> {
    let dfa = dfa.clone();
    Pool::new(Box::new(move || dfa.create_cache()))
}

/// Trigger classes, commonest in prose first: ASCII digits, `:` (IPv6, MAC), `-` (MAC) and `@`
/// (e-mail, URL credentials).
const TRIGGER_CLASSES: usize = 4;

fn trigger_class(b: u8) -> Option<usize> {
    match b {
        b'0'..=b'9' => Some(0),
        b':' => Some(1),
        b'-' => Some(2),
        b'@' => Some(3),
        _ => None,
    }
}

/// The longest personal-data match considered (an e-mail address is at most 254 bytes).
const MAX_PII_LEN: usize = 320;

struct Secrets {
    keywords: AhoCorasick,
    keyword_rules: Vec<Vec<usize>>,
    regexes: Vec<Option<regex::bytes::Regex>>,
}

struct DictionaryMatcher {
    ac: AhoCorasick,
    entity: Arc<str>,
    rule: Arc<str>,
    severity: Severity,
}

/// A match before overlap resolution.
#[derive(Debug, Clone)]
struct Candidate {
    start: usize,
    end: usize,
    rule: usize,
    confidence: f32,
    validated: bool,
    priority: i32,
}

impl Scanner {
    pub fn new(packs: &[Pack]) -> Result<Self, DlpError> {
        let rules: Vec<Rule> = packs.iter().flat_map(|p| p.rules.iter().cloned()).collect();
        let entities = rules.iter().map(|r| Arc::from(r.entity.as_str())).collect();
        let rule_ids = rules
            .iter()
            .map(|r| Arc::from(format!("{}/{}", r.pack, r.id).as_str()))
            .collect();

        let mut gated: (Vec<&str>, Vec<usize>) = Default::default();
        let mut ungated: (Vec<&str>, Vec<usize>) = Default::default();
        let mut reach = [(0usize, 0usize); TRIGGER_CLASSES];
        let classes: [ByteSet; TRIGGER_CLASSES] =
            std::array::from_fn(|c| ByteSet::from_fn(|b| trigger_class(b) == Some(c)));
        for (i, r) in rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.engine == Engine::Pii)
        {
            for p in &r.patterns {
                let hir = trigger::parse(p);
                // Of the classes the pattern needs, the rarest in prose whose reach back is
                // bounded (classes are ordered commonest first).
                let bound = |n: Option<usize>| n.unwrap_or(MAX_PII_LEN).min(MAX_PII_LEN);
                let best = classes
                    .iter()
                    .enumerate()
                    .filter_map(|(c, set)| Some((c, trigger::reach(hir.as_ref()?, set)?)))
                    .min_by_key(|(c, r)| (r.before.is_none(), std::cmp::Reverse(*c)))
                    // A digit-free match is not wanted: windows around digits, as wide as the
                    // longest match.
                    .or_else(|| {
                        let len = hir.as_ref()?.properties().maximum_len();
                        r.require_digit
                            .then_some((0, trigger::Reach { before: len, len }))
                    });
                match best {
                    Some((c, r)) => {
                        reach[c].0 = reach[c].0.max(bound(r.before));
                        reach[c].1 = reach[c].1.max(bound(r.len));
                        gated.0.push(p.as_str());
                        gated.1.push(i);
                    }
                    None => {
                        ungated.0.push(p.as_str());
                        ungated.1.push(i);
                    }
                }
            }
        }
        let gated = Automata::build(&gated.0, gated.1)?;
        let ungated = Automata::build(&ungated.0, ungated.1)?;
        let pii = (gated.is_some() || ungated.is_some()).then_some(Pii {
            gated,
            ungated,
            reach,
        });

        let secret_rules: Vec<usize> = (0..rules.len())
            .filter(|&i| rules[i].engine == Engine::Secret)
            .collect();
        let secrets = if secret_rules.is_empty() {
            None
        } else {
            let mut words: Vec<String> = Vec::new();
            let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
            let mut regexes = vec![None; rules.len()];
            for &i in &secret_rules {
                let r = &rules[i];
                let re = regex::bytes::RegexBuilder::new(&format!("(?-u){}", r.patterns.join("|")))
                    .size_limit(50 << 20)
                    .build()
                    .map_err(|e| DlpError::Compile(format!("rule {}: {e}", r.id)))?;
                regexes[i] = Some(re);
                for k in &r.keywords {
                    let k = k.to_ascii_lowercase();
                    match words.iter().position(|w| *w == k) {
                        Some(p) => keyword_rules[p].push(i),
                        None => {
                            words.push(k);
                            keyword_rules.push(vec![i]);
                        }
                    }
                }
                if r.keywords.is_empty() {
                    return Err(DlpError::Compile(format!(
                        "secret rule {} has no keywords to gate it",
                        r.id
                    )));
                }
            }
            // A DFA: the keyword gate runs over every byte of every request.
            let keywords = AhoCorasickBuilder::new()
                .ascii_case_insensitive(true)
                .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                .build(&words)
                .map_err(|e| DlpError::Compile(format!("secret keywords: {e}")))?;
            Some(Secrets {
                keywords,
                keyword_rules,
                regexes,
            })
        };

        let dictionaries = packs
            .iter()
            .flat_map(|p| &p.dictionaries)
            .map(|d| {
                let ac = AhoCorasickBuilder::new()
                    .ascii_case_insensitive(!d.case_sensitive)
                    .match_kind(AcMatchKind::LeftmostLongest)
                    .build(&d.terms)
                    .map_err(|e| DlpError::Compile(format!("dictionary {}: {e}", d.entity)))?;
                Ok(DictionaryMatcher {
                    ac,
                    entity: Arc::from(d.entity.as_str()),
                    rule: Arc::from(
                        format!("{}/{}", d.pack, d.entity.to_ascii_lowercase()).as_str(),
                    ),
                    severity: d.severity,
                })
            })
            .collect::<Result<Vec<_>, DlpError>>()?;

        Ok(Self {
            rules,
            entities,
            rule_ids,
            pii,
            secrets,
            dictionaries,
        })
    }

    /// How many personal-data patterns need no trigger byte, and so are searched over the
    /// whole text.
    pub fn ungated_patterns(&self) -> usize {
        self.pii
            .as_ref()
            .and_then(|p| p.ungated.as_ref())
            .map_or(0, |a| a.each.len())
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Every finding in `text`, in order of position, with original byte offsets.
    pub fn scan(&self, text: &str) -> Vec<Finding> {
        let norm = normalize(text);
        let hay = norm.text.as_bytes();
        let mut candidates = Vec::new();
        if let Some(pii) = &self.pii {
            self.scan_pii(pii, hay, &mut candidates);
        }
        if let Some(secrets) = &self.secrets {
            self.scan_secrets(secrets, hay, &mut candidates);
        }
        let mut findings: Vec<Finding> = resolve(candidates)
            .into_iter()
            .map(|c| Finding {
                entity: self.entities[c.rule].clone(),
                start: norm.original(c.start),
                end: norm.original(c.end),
                confidence: c.confidence,
                rule: self.rule_ids[c.rule].clone(),
                severity: self.rules[c.rule].severity,
            })
            .collect();
        for d in &self.dictionaries {
            for m in d.ac.find_iter(hay) {
                if !bounded(hay, m.start(), m.end(), Boundary::Alnum) {
                    continue;
                }
                let (start, end) = (norm.original(m.start()), norm.original(m.end()));
                if findings.iter().any(|f| f.start < end && start < f.end) {
                    continue;
                }
                findings.push(Finding {
                    entity: d.entity.clone(),
                    start,
                    end,
                    confidence: 1.0,
                    rule: d.rule.clone(),
                    severity: d.severity,
                });
            }
        }
        findings.sort_by_key(|f| (f.start, f.end));
        findings
    }

    fn scan_pii(&self, pii: &Pii, hay: &[u8], out: &mut Vec<Candidate>) {
        if let Some(a) = &pii.ungated {
            self.scan_span(a, hay, 0, hay.len(), &mut 0, out);
        }
        if let Some(a) = &pii.gated {
            let mut pos = 0;
            for (from, to) in windows(hay, &pii.reach) {
                self.scan_span(a, hay, from, to, &mut pos, out);
            }
        }
    }

    /// Candidates that start in `from..to`, resuming at `pos` when that is further on (a
    /// validated finding from an earlier window may reach into this one).
    fn scan_span(
        &self,
        a: &Automata,
        hay: &[u8],
        from: usize,
        to: usize,
        pos: &mut usize,
        out: &mut Vec<Candidate>,
    ) {
        let mut cache = a.caches.get();
        let mut ends: Vec<(usize, usize)> = Vec::new();
        *pos = (*pos).max(from);
        while *pos < to {
            let Some(m) = a.first.search(&Input::new(hay).span(*pos..to)) else {
                break;
            };
            let s = m.start();
            // A candidate that starts inside a digit run cannot pass a digit boundary; skip the run.
            if s > 0 && hay[s - 1].is_ascii_digit() && hay[s].is_ascii_digit() {
                *pos = s + hay[s..].iter().take_while(|b| b.is_ascii_digit()).count();
                continue;
            }
            let end = (s + MAX_PII_LEN).min(hay.len());
            let input = Input::new(hay).span(s..end).anchored(Anchored::Yes);
            if !match_ends(&a.all, &mut cache, &input, &mut ends) {
                // The lazy DFA gave up: ask each matching pattern for its span.
                ends.clear();
                let mut set = PatternSet::new(a.all_meta.pattern_len());
                a.all_meta.which_overlapping_matches(&input, &mut set);
                for pid in set.iter() {
                    if let Some(pm) = a.each[pid.as_usize()].search(&input) {
                        ends.push((pid.as_usize(), pm.end()));
                    }
                }
            }
            let mut furthest_validated = None;
            for &(pid, match_end) in &ends {
                let rule = a.pattern_rule[pid];
                if let Some(c) = self.candidate(rule, hay, s, match_end) {
                    if c.validated {
                        furthest_validated =
                            Some(furthest_validated.map_or(c.end, |e: usize| e.max(c.end)));
                    }
                    out.push(c);
                }
            }
            // Step past a validated finding; otherwise try the next character, or past the
            // digit run the candidate starts with (a candidate inside it is skipped anyway).
            *pos = furthest_validated.unwrap_or_else(|| {
                s + hay[s..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count()
                    .max(utf8_len(hay[s]))
            });
        }
    }

    fn scan_secrets(&self, secrets: &Secrets, hay: &[u8], out: &mut Vec<Candidate>) {
        let mut triggered = vec![false; self.rules.len()];
        for m in secrets.keywords.find_overlapping_iter(hay) {
            for &r in &secrets.keyword_rules[m.pattern().as_usize()] {
                triggered[r] = true;
            }
        }
        for (rule, _) in triggered.iter().enumerate().filter(|(_, t)| **t) {
            let Some(re) = &secrets.regexes[rule] else {
                continue;
            };
            let group = self.rules[rule].group;
            for caps in re.captures_iter(hay) {
                let Some(g) = caps.get(group).or_else(|| caps.get(0)) else {
                    continue;
                };
                if let Some(c) = self.candidate(rule, hay, g.start(), g.end()) {
                    out.push(c);
                }
            }
        }
    }

    /// Checks boundary, validator and context words for one match.
    fn candidate(&self, rule: usize, hay: &[u8], start: usize, end: usize) -> Option<Candidate> {
        let r = &self.rules[rule];
        if start >= end || !bounded(hay, start, end, r.boundary) {
            return None;
        }
        let text = std::str::from_utf8(&hay[start..end]).ok()?;
        if r.require_digit && !text.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        let validated = match r.validator {
            Some(v) if v.check(text, r.min_entropy) => true,
            Some(_) => return None,
            // A keyword-gated secret pattern (a fixed prefix and length) is its own validation.
            None => r.engine == Engine::Secret,
        };
        let mut confidence = if validated {
            r.validated_confidence
        } else {
            r.base_confidence
        };
        if !r.exclude_context.is_empty() && has_context(hay, start, end, &r.exclude_context) {
            return None;
        }
        if !r.context.is_empty() {
            let near = has_context(hay, start, end, &r.context);
            if r.context_required && !near {
                return None;
            }
            if near {
                confidence = (confidence + CONTEXT_BOOST).min(1.0);
            }
        }
        Some(Candidate {
            start,
            end,
            rule,
            confidence,
            validated,
            priority: r.priority,
        })
    }
}

impl Automata {
    fn build(patterns: &[&str], pattern_rule: Vec<usize>) -> Result<Option<Self>, DlpError> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let syntax = syntax::Config::new().unicode(false).utf8(false);
        let build = |kind: MatchKind, patterns: &[&str]| {
            MetaRegex::builder()
                .syntax(syntax)
                // A lazy-DFA cache that is not cleared under dense digits (a cache that keeps
                // being cleared makes the engine give up to the PikeVM). A cap, not an
                // allocation: states are made as text needs them. 32 MiB measured 15% faster
                // than 8 MiB on the dense-digit bench, 64 MiB no faster.
                .configure(
                    MetaRegex::config()
                        .match_kind(kind)
                        .utf8_empty(false)
                        .hybrid_cache_capacity(32 << 20),
                )
                .build_many(patterns)
                .map_err(|e| DlpError::Compile(format!("personal-data patterns: {e}")))
        };
        // Candidates start only where the previous byte is not an ASCII letter, digit or
        // underscore. Without this, an unanchored search restarts every digit-counting pattern
        // at every digit, and the lazy DFA's states multiply until it gives up. Chinese
        // characters are not ASCII word bytes, so `电话13812345678` still starts a candidate;
        // `tel13812345678` does not.
        let started: Vec<String> = patterns
            .iter()
            .map(|p| format!(r"\b{{start-half}}(?:{p})"))
            .collect();
        let started: Vec<&str> = started.iter().map(String::as_str).collect();
        let all = Arc::new(
            LazyDfa::builder()
                .syntax(syntax)
                .configure(
                    LazyDfa::config()
                        .match_kind(MatchKind::All)
                        .cache_capacity(32 << 20),
                )
                .build_many(&started)
                .map_err(|e| DlpError::Compile(format!("personal-data patterns: {e}")))?,
        );
        Ok(Some(Self {
            first: build(MatchKind::LeftmostFirst, &started)?,
            caches: cache_pool(&all),
            all,
            all_meta: build(MatchKind::All, &started)?,
            each: patterns
                .iter()
                .map(|p| build(MatchKind::LeftmostFirst, &[p]))
                .collect::<Result<_, _>>()?,
            pattern_rule,
        }))
    }
}

/// The merged windows around trigger bytes in which a gated match can lie, in order. `@` is
/// rare and reaches far (an e-mail's local part), so it is found with memchr and given its own
/// reach. The other classes get the widest of their reaches; the text is read in blocks of 32
/// bytes (the test vectorises), and a block with trigger bytes opens a window from its first one,
/// less that reach back, to its last one plus the reach forward: never narrower than the bytes'
/// own windows.
fn windows(hay: &[u8], reach: &[(usize, usize); TRIGGER_CLASSES]) -> Vec<(usize, usize)> {
    const BLOCK: usize = 32;
    let at = TRIGGER_CLASSES - 1;
    let (before, after) = reach[..at]
        .iter()
        .fold((0, 0), |(b, a), r| (b.max(r.0), a.max(r.1)));
    let mut near: Vec<(usize, usize)> = Vec::new();
    for (k, block) in hay.chunks(BLOCK).enumerate() {
        if !block.iter().fold(false, |any, &b| any | is_trigger(b)) {
            continue;
        }
        let (Some(first), Some(last)) = (
            block.iter().position(|&b| is_trigger(b)),
            block.iter().rposition(|&b| is_trigger(b)),
        ) else {
            continue;
        };
        let from = (k * BLOCK + first).saturating_sub(before);
        let to = (k * BLOCK + last + after + 1).min(hay.len());
        match near.last_mut() {
            Some(prev) if from <= prev.1 => prev.1 = prev.1.max(to),
            _ => near.push((from, to)),
        }
    }
    let far = memchr::memchr_iter(b'@', hay).map(|i| {
        (
            i.saturating_sub(reach[at].0),
            (i + reach[at].1 + 1).min(hay.len()),
        )
    });
    // Both lists are in order; merge them.
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(near.len());
    let mut near = near.into_iter().peekable();
    let mut far = far.peekable();
    loop {
        let next = match (near.peek(), far.peek()) {
            (Some(n), Some(f)) if f.0 < n.0 => far.next(),
            (Some(_), _) => near.next(),
            (None, Some(_)) => far.next(),
            (None, None) => break,
        };
        let Some((from, to)) = next else { break };
        match merged.last_mut() {
            Some(prev) if from <= prev.1 => prev.1 = prev.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged
}

/// Whether a byte is a digit, `:` or `-` (every class but `@`); `0`..=`:` is 0x30..=0x3A.
fn is_trigger(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 11) | (b == b'-')
}

/// The longest match end of each pattern matching at the anchored start of `input`, by one
/// overlapping search; `false` when the lazy DFA gave up.
fn match_ends(
    dfa: &LazyDfa,
    cache: &mut DfaCache,
    input: &Input<'_>,
    ends: &mut Vec<(usize, usize)>,
) -> bool {
    ends.clear();
    let mut state = OverlappingState::start();
    loop {
        if dfa
            .try_search_overlapping_fwd(cache, input, &mut state)
            .is_err()
        {
            return false;
        }
        let Some(m) = state.get_match() else {
            return true;
        };
        let pid = m.pattern().as_usize();
        match ends.iter_mut().find(|(p, _)| *p == pid) {
            Some((_, e)) => *e = (*e).max(m.offset()),
            None => ends.push((pid, m.offset())),
        }
    }
}

fn utf8_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

/// Whether the match has no forbidden neighbour.
fn bounded(hay: &[u8], start: usize, end: usize, boundary: Boundary) -> bool {
    let forbidden: fn(&u8) -> bool = match boundary {
        Boundary::None => return true,
        Boundary::Dotted => {
            let digit = |i: usize| hay.get(i).is_some_and(u8::is_ascii_digit);
            let before = start > 0
                && (digit(start - 1) || (hay[start - 1] == b'.' && start > 1 && digit(start - 2)));
            let after = digit(end) || (hay.get(end) == Some(&b'.') && digit(end + 1));
            return !before && !after;
        }
        Boundary::Digit => u8::is_ascii_digit,
        Boundary::Alnum => u8::is_ascii_alphanumeric,
    };
    // Only an edge of the same class needs a boundary: "+86" may follow a digit.
    let before_ok = start == 0 || !forbidden(&hay[start]) || !forbidden(&hay[start - 1]);
    let after_ok = end >= hay.len() || !forbidden(&hay[end - 1]) || !forbidden(&hay[end]);
    before_ok && after_ok
}

/// A context word (ASCII case-insensitive; words are stored lower-case) within the window around
/// a match.
fn has_context(hay: &[u8], start: usize, end: usize, words: &[String]) -> bool {
    let from = start.saturating_sub(CONTEXT_BEFORE);
    let to = (end + CONTEXT_AFTER).min(hay.len());
    let mut window = [0u8; CONTEXT_BEFORE + CONTEXT_AFTER + MAX_PII_LEN];
    let len = (to - from).min(window.len());
    for (w, b) in window.iter_mut().zip(&hay[from..from + len]) {
        *w = b.to_ascii_lowercase();
    }
    let window = &window[..len];
    words
        .iter()
        .any(|w| memchr::memmem::find(window, w.as_bytes()).is_some())
}

/// Keeps the best of each group of overlapping candidates.
fn resolve(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    candidates.sort_by(|a, b| {
        b.validated
            .cmp(&a.validated)
            .then((b.end - b.start).cmp(&(a.end - a.start)))
            .then(b.priority.cmp(&a.priority))
            .then(b.confidence.total_cmp(&a.confidence))
            .then(a.start.cmp(&b.start))
    });
    let mut kept: Vec<Candidate> = Vec::with_capacity(candidates.len());
    let mut taken: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
    for c in candidates {
        let overlaps_before = taken
            .range(..c.end)
            .next_back()
            .is_some_and(|(_, &e)| e > c.start);
        if !overlaps_before {
            taken.insert(c.start, c.end);
            kept.push(c);
        }
    }
    kept.sort_by_key(|c| c.start);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_trigger_agrees_with_classes() {
        for b in 0..=255u8 {
            let class = trigger_class(b);
            assert_eq!(
                is_trigger(b),
                class.is_some() && class != Some(3),
                "byte {b:#x}"
            );
        }
    }

    #[test]
    fn windows_cover_every_trigger_reach() {
        let reach = [(14, 44), (4, 39), (4, 17), (320, 320)];
        let mut hay = vec![b'x'; 4096];
        hay[1000] = b'7';
        hay[3000] = b'@';
        let w = windows(&hay, &reach);
        assert_eq!(w.len(), 2);
        assert!(w[0].0 <= 1000 - 14 && w[0].1 > 1000 + 44, "{w:?}");
        assert!(w[1].0 <= 3000 - 320 && w[1].1 > 3000 + 320, "{w:?}");
        // An `@` reaching back past a window swallows it.
        hay[2700] = b'1';
        let w = windows(&hay, &reach);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[1].0 <= 2700 - 14);
    }
}
