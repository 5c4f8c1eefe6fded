//! The compiled scanner. Three passes over the normalised text:
//!
//! - personal data: the PII patterns compiled together (ASCII classes, byte-oriented) into one
//!   all-matches DFA per trigger class (a byte every match needs: a digit, `:`, `-` or `@`),
//!   which reports pattern ids: compiled in full when it fits (the bundled packs' largest is
//!   about 190 KB), lazily otherwise. Its candidates start only in windows just before its
//!   class's bytes. Candidate starts are read off the text a block at a time (a byte a match
//!   can begin with, after a non-word byte), and at each, one anchored search gives every
//!   pattern that matches there, so a candidate that fails its checksum never hides another
//!   rule's match; boundaries, validators and context words are checked only on candidates;
//! - secrets: one Aho-Corasick pass over every rule's keywords (skipping runs of bytes that
//!   begin none, Chinese text among them); only rules whose keywords occur run their `(?-u)`
//!   byte regex, as gitleaks does;
//! - dictionaries: one Aho-Corasick pass over custom terms.
//!
//! Overlapping candidates are resolved: validated beats unvalidated, longer beats shorter, then
//! priority. Offsets are UTF-8 byte offsets into the original input.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind as AcMatchKind};
use regex_automata::dfa::dense::DFA as DenseDfa;
use regex_automata::hybrid::LazyStateID;
use regex_automata::hybrid::dfa::{Cache as DfaCache, DFA as LazyDfa};
use regex_automata::meta::Regex as MetaRegex;
use regex_automata::util::pool::Pool;
use regex_automata::util::primitives::StateID as DenseStateID;
use regex_automata::util::syntax;
use regex_automata::{Anchored, Input, MatchKind, PatternSet};

use super::normalize::normalize;
use super::pack::{Boundary, Engine, Pack, Rule, Severity};
use super::starts::{Cursor, StartBytes, is_word_byte};
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
    /// Per rule, its context words and its excluding ones, as prepared searchers.
    context: Vec<(ContextWords, ContextWords)>,
    pii: Option<Pii>,
    secrets: Option<Secrets>,
    dictionaries: Vec<DictionaryMatcher>,
}

struct Pii {
    /// Per trigger class, the patterns every match of which holds a byte of that class: their
    /// candidates are started only in windows just before such bytes, as far back as a match
    /// can begin before its first one. A class of its own per automaton keeps, say, the e-mail
    /// pattern (`@`) from starting a candidate at every word near a digit.
    gated: Vec<(usize, Automata, usize)>,
    /// Patterns that can match without one: searched over the whole text.
    ungated: Option<Automata>,
}

/// One compiled group of personal-data patterns.
struct Automata {
    /// The bytes a match can start with, after a byte that is not an ASCII word byte (every
    /// pattern starts with `\b{start-half}`): candidate starts are read off the text a block at
    /// a time, and each is tried with one anchored search.
    starts: StartBytes,
    /// All-matches over every pattern, anchored at a candidate start: an overlapping search
    /// gives every pattern's match ends there in one pass.
    all: Arc<LazyDfa>,
    caches: Pool<DfaCache, CacheInit>,
    /// The same automaton compiled in full, when it fits in [`DENSE_LIMIT`] (every bundled
    /// pack's does, in well under a megabyte): walked with no cache to consult and no state
    /// ever to build, give up on or clear.
    dense: Option<DenseWalk>,
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
        _ => TRIGGER_BYTES.iter().position(|&t| t == b).map(|i| i + 1),
    }
}

/// The longest personal-data match considered (an e-mail address is at most 254 bytes).
const MAX_PII_LEN: usize = 320;

struct Secrets {
    /// The keywords made of ASCII bytes only: a byte outside ASCII takes their automaton back
    /// to its start state, so most of a Chinese text is skipped eight bytes at a time instead
    /// of being walked byte by byte.
    ascii: Option<Keywords>,
    /// Keywords with other bytes and no ASCII letter (`密码`), each looked for with memmem over
    /// the whole text: the automaton's prefilter counts bytes above 0x7F as rare, which in
    /// Chinese text they are not.
    exact: Vec<(memchr::memmem::Finder<'static>, Vec<usize>)>,
    /// Keywords with other bytes and ASCII letters, searched over the whole text.
    mixed: Option<Keywords>,
    regexes: Vec<Option<regex::bytes::Regex>>,
}

/// Keywords and the rules that each one gates.
struct Keywords {
    /// A DFA walked byte by byte: the keyword gate runs over every byte of every request, and
    /// only which rules a keyword triggers matters, not where each occurrence is, so the walk
    /// marks rules as it goes instead of stopping at every match as an overlapping search does.
    dfa: aho_corasick::dfa::DFA,
    start: aho_corasick::automaton::StateID,
    /// The bytes that take the start state elsewhere, that is, that can begin a keyword: in
    /// the start state, the walk skips to the next of them (digits and punctuation, most of a
    /// dense text, begin none).
    leaves_start: ByteSet,
    /// No byte outside ASCII leaves the start state: the walk skips runs of them whole.
    ascii_only: bool,
    rules: Vec<Vec<usize>>,
}

impl Keywords {
    fn build(words: Vec<(String, Vec<usize>)>) -> Result<Option<Self>, DlpError> {
        use aho_corasick::automaton::Automaton;
        if words.is_empty() {
            return Ok(None);
        }
        let (words, rules): (Vec<String>, Vec<Vec<usize>>) = words.into_iter().unzip();
        let compile =
            |e: &dyn std::fmt::Display| DlpError::Compile(format!("secret keywords: {e}"));
        let dfa = aho_corasick::dfa::DFA::builder()
            .ascii_case_insensitive(true)
            .start_kind(aho_corasick::StartKind::Unanchored)
            // Never consulted by the walk, which reads every byte.
            .prefilter(false)
            .build(&words)
            .map_err(|e| compile(&e))?;
        let start = dfa
            .start_state(aho_corasick::Anchored::No)
            .map_err(|e| compile(&e))?;
        let leaves_start =
            ByteSet::from_fn(|b| dfa.next_state(aho_corasick::Anchored::No, start, b) != start);
        let ascii_only = (0x80..=0xFF).all(|b| !leaves_start.contains(b));
        Ok(Some(Self {
            dfa,
            start,
            leaves_start,
            ascii_only,
            rules,
        }))
    }

    /// Marks the rules of every keyword found in `hay[span]`, overlapping ones included.
    fn mark(&self, hay: &[u8], span: std::ops::Range<usize>, triggered: &mut [bool]) {
        use aho_corasick::automaton::Automaton;
        let dfa = &self.dfa;
        let bytes = &hay[span];
        let leaves = &self.leaves_start;
        let mut sid = self.start;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            i += 1;
            if sid == self.start && !leaves.contains(b) {
                // The start state loops on this byte and is no match state. Skip the bytes
                // that keep it there four at a time (digits and punctuation, most of a dense
                // text, begin no keyword), and when none outside ASCII begins a keyword, a
                // run of those eight at a time (Chinese text).
                let high = if self.ascii_only { 0x8080_8080 } else { 0 };
                while let Some(w) = bytes.get(i..i + 4) {
                    let w: &[u8; 4] = w.try_into().expect("four bytes");
                    if w.iter().fold(false, |any, &b| any | leaves.contains(b)) {
                        break;
                    }
                    if u32::from_le_bytes(*w) & high == 0x8080_8080 {
                        i = next_ascii(bytes, i + 4);
                        break;
                    }
                    i += 4;
                }
                continue;
            }
            sid = dfa.next_state(aho_corasick::Anchored::No, sid, b);
            // Without a prefilter the special states are the dead one (which an unanchored
            // standard search never enters) and the match states.
            if dfa.is_special(sid) && dfa.is_match(sid) {
                for m in 0..dfa.match_len(sid) {
                    for &r in &self.rules[dfa.match_pattern(sid, m).as_usize()] {
                        triggered[r] = true;
                    }
                }
            }
        }
    }
}

/// The first offset from `from` whose byte is ASCII, or the length: eight bytes at a time.
fn next_ascii(hay: &[u8], from: usize) -> usize {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut i = from;
    while let Some(word) = hay.get(i..i + 8) {
        // High bits clear where a byte is ASCII.
        let ascii = !u64::from_le_bytes(word.try_into().expect("eight bytes")) & HIGH;
        if ascii != 0 {
            return i + (ascii.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    // Fewer than eight bytes are left.
    i + hay[i..]
        .iter()
        .position(u8::is_ascii)
        .unwrap_or(hay.len() - i)
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

        let mut gated: [(Vec<&str>, Vec<usize>); TRIGGER_CLASSES] = Default::default();
        let mut ungated: (Vec<&str>, Vec<usize>) = Default::default();
        let mut reach = [0usize; TRIGGER_CLASSES];
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
                    // A digit-free match is not wanted: windows before digits, as wide as the
                    // longest match.
                    .or_else(|| {
                        let len = hir.as_ref()?.properties().maximum_len();
                        r.require_digit
                            .then_some((0, trigger::Reach { before: len, len }))
                    });
                match best {
                    Some((c, r)) => {
                        reach[c] = reach[c].max(bound(r.before));
                        gated[c].0.push(p.as_str());
                        gated[c].1.push(i);
                    }
                    None => {
                        ungated.0.push(p.as_str());
                        ungated.1.push(i);
                    }
                }
            }
        }
        let mut by_class = Vec::new();
        for (c, (patterns, pattern_rule)) in gated.into_iter().enumerate() {
            if let Some(a) = Automata::build(&patterns, pattern_rule)? {
                by_class.push((c, a, reach[c]));
            }
        }
        let ungated = Automata::build(&ungated.0, ungated.1)?;
        let pii = (!by_class.is_empty() || ungated.is_some()).then_some(Pii {
            gated: by_class,
            ungated,
        });

        let secret_rules: Vec<usize> = (0..rules.len())
            .filter(|&i| rules[i].engine == Engine::Secret)
            .collect();
        let secrets = if secret_rules.is_empty() {
            None
        } else {
            let mut words: Vec<(String, Vec<usize>)> = Vec::new();
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
                    match words.iter_mut().find(|(w, _)| *w == k) {
                        Some((_, gated)) => gated.push(i),
                        None => words.push((k, vec![i])),
                    }
                }
                if r.keywords.is_empty() {
                    return Err(DlpError::Compile(format!(
                        "secret rule {} has no keywords to gate it",
                        r.id
                    )));
                }
            }
            let (ascii, other): (Vec<_>, Vec<_>) =
                words.into_iter().partition(|(w, _)| w.is_ascii());
            let (mixed, exact): (Vec<_>, Vec<_>) = other
                .into_iter()
                .partition(|(w, _)| w.bytes().any(|b| b.is_ascii_alphabetic()));
            Some(Secrets {
                ascii: Keywords::build(ascii)?,
                exact: exact
                    .into_iter()
                    .map(|(w, rules)| {
                        (
                            memchr::memmem::Finder::new(w.as_bytes()).into_owned(),
                            rules,
                        )
                    })
                    .collect(),
                mixed: Keywords::build(mixed)?,
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

        let context = rules
            .iter()
            .map(|r| {
                (
                    ContextWords::new(&r.context),
                    ContextWords::new(&r.exclude_context),
                )
            })
            .collect();
        Ok(Self {
            rules,
            entities,
            rule_ids,
            context,
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
            self.scan_pii(pii, &norm.text, &mut candidates);
        }
        if let Some(secrets) = &self.secrets {
            self.scan_secrets(secrets, &norm.text, &mut candidates);
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

    fn scan_pii(&self, pii: &Pii, text: &str, out: &mut Vec<Candidate>) {
        let hay = text.as_bytes();
        if let Some(a) = &pii.ungated {
            self.scan_spans(a, text, [(0, hay.len())], out);
        }
        for (class, a, reach) in &pii.gated {
            self.scan_spans(a, text, windows(hay, *class, *reach), out);
        }
    }

    /// Candidates that start in the spans (in order), each resumed where the previous one's
    /// last candidate ended when that is further on (a validated finding from an earlier
    /// window may reach into the next).
    fn scan_spans(
        &self,
        a: &Automata,
        text: &str,
        spans: impl IntoIterator<Item = (usize, usize)>,
        out: &mut Vec<Candidate>,
    ) {
        let hay = text.as_bytes();
        // The lazy automaton's cache, taken from the pool only if there is no dense one.
        let mut lazy = None;
        let mut hits = Vec::new();
        let mut ends: Vec<(usize, usize)> = Vec::new();
        let mut cursor = Cursor::default();
        let mut pos = 0;
        for (from, to) in spans {
            pos = pos.max(from);
            while pos < to {
                let Some(s) = cursor.next(&a.starts, hay, pos, to) else {
                    break;
                };
                let end = (s + MAX_PII_LEN).min(hay.len());
                let walked = match &a.dense {
                    Some(dense) => dense.match_ends(hay, (s, end), &mut hits, &mut ends),
                    None => {
                        let (cache, starts) =
                            lazy.get_or_insert_with(|| (a.caches.get(), StartStates::default()));
                        match_ends(&a.all, cache, starts, hay, (s, end), &mut ends)
                    }
                };
                if !walked {
                    let input = Input::new(hay).span(s..end).anchored(Anchored::Yes);
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
                    if let Some(c) = self.candidate(rule, text, s, match_end) {
                        if c.validated {
                            furthest_validated =
                                Some(furthest_validated.map_or(c.end, |e: usize| e.max(c.end)));
                        }
                        out.push(c);
                    }
                }
                // Step past a validated finding; otherwise on to the next start (none lies
                // inside a digit run or a character).
                pos = furthest_validated.unwrap_or(s + 1);
            }
        }
    }

    fn scan_secrets(&self, secrets: &Secrets, text: &str, out: &mut Vec<Candidate>) {
        let hay = text.as_bytes();
        let mut triggered = vec![false; self.rules.len()];
        if let Some(k) = &secrets.ascii {
            k.mark(hay, 0..hay.len(), &mut triggered);
        }
        for (finder, rules) in &secrets.exact {
            if finder.find(hay).is_some() {
                for &r in rules {
                    triggered[r] = true;
                }
            }
        }
        if let Some(k) = &secrets.mixed {
            k.mark(hay, 0..hay.len(), &mut triggered);
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
                if let Some(c) = self.candidate(rule, text, g.start(), g.end()) {
                    out.push(c);
                }
            }
        }
    }

    /// Checks boundary, validator and context words for one match.
    fn candidate(&self, rule: usize, text: &str, start: usize, end: usize) -> Option<Candidate> {
        let hay = text.as_bytes();
        let r = &self.rules[rule];
        if start >= end || !bounded(hay, start, end, r.boundary) {
            return None;
        }
        // Not one that splits a character.
        let text = text.get(start..end)?;
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
        let (context, exclude) = &self.context[rule];
        if !exclude.is_empty() && exclude.near(hay, start, end) {
            return None;
        }
        if !context.is_empty() {
            let near = context.near(hay, start, end);
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
        let starts = start_bytes(&all)
            .map_err(|e| DlpError::Compile(format!("personal-data patterns: {e}")))?;
        Ok(Some(Self {
            starts: StartBytes::new(&starts),
            dense: DenseWalk::build(syntax, &started)?,
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

/// The bytes on which an anchored search of `dfa` can leave its start state for a live one,
/// after any look-behind byte that is not a word byte (or none).
fn start_bytes(dfa: &LazyDfa) -> Result<ByteSet, String> {
    let mut cache = dfa.create_cache();
    let mut live = [false; 256];
    let behind = std::iter::once(None).chain((0..=255u8).filter(|&b| !is_word_byte(b)).map(Some));
    for look_behind in behind {
        let config = regex_automata::util::start::Config::new()
            .anchored(Anchored::Yes)
            .look_behind(look_behind);
        let start = dfa
            .start_state(&mut cache, &config)
            .map_err(|e| e.to_string())?;
        for (b, slot) in live.iter_mut().enumerate() {
            let next = dfa
                .next_state(&mut cache, start, b as u8)
                .map_err(|e| e.to_string())?;
            *slot |= !next.is_dead();
        }
    }
    Ok(ByteSet::from_fn(|b| live[b as usize]))
}

/// The merged windows in which the matches of one class's patterns can start, in order: from
/// each trigger byte less `before` (the most bytes a match can have before its first trigger
/// byte) to the byte itself. A walk from a start reads on past its window as far as a match
/// can reach. Digits, the commonest class, are read in blocks of 32 bytes (the test
/// vectorises); a block with digits opens a window from its first one, less `before`, to its
/// last one, never narrower than the digits' own windows. The other classes are single bytes
/// found with memchr.
fn windows(hay: &[u8], class: usize, before: usize) -> Vec<(usize, usize)> {
    const BLOCK: usize = 32;
    let mut merged: Vec<(usize, usize)> = Vec::new();
    let mut push = |from: usize, to: usize| match merged.last_mut() {
        Some(prev) if from <= prev.1 => prev.1 = prev.1.max(to),
        _ => merged.push((from, to)),
    };
    if class == 0 {
        for (k, block) in hay.chunks(BLOCK).enumerate() {
            if !block.iter().fold(false, |any, b| any | b.is_ascii_digit()) {
                continue;
            }
            let (Some(first), Some(last)) = (
                block.iter().position(u8::is_ascii_digit),
                block.iter().rposition(u8::is_ascii_digit),
            ) else {
                continue;
            };
            push(
                (k * BLOCK + first).saturating_sub(before),
                k * BLOCK + last + 1,
            );
        }
    } else {
        let byte = TRIGGER_BYTES[class - 1];
        for i in memchr::memchr_iter(byte, hay) {
            push(i.saturating_sub(before), i + 1);
        }
    }
    merged
}

/// The single-byte trigger classes after the digits, in class order.
const TRIGGER_BYTES: [u8; TRIGGER_CLASSES - 1] = [b':', b'-', b'@'];

/// The longest match end of each pattern matching at `hay[start..]` and ending by `end`, from
/// one walk of the all-matches DFA anchored at `start`; `false` when the lazy DFA gave up.
///
/// The walk is what an overlapping search does, without leaving it at every match: in dense
/// text a candidate start matches several digit-counting patterns at several lengths, and
/// re-entering the search for each (pattern, end) pair cost more than the bytes walked.
/// Matches are reported one byte late: the state reached on `hay[at]` holds the matches that end
/// at `at`, and the byte after the span (or the end of the text) settles the last ones.
fn match_ends(
    dfa: &LazyDfa,
    cache: &mut DfaCache,
    starts: &mut StartStates,
    hay: &[u8],
    (start, end): (usize, usize),
    ends: &mut Vec<(usize, usize)>,
) -> bool {
    ends.clear();
    let Some(mut sid) = starts.anchored(dfa, cache, start.checked_sub(1).map(|i| hay[i])) else {
        return false;
    };
    let record = |ends: &mut Vec<(usize, usize)>, cache: &DfaCache, sid, at| {
        for i in 0..dfa.match_len(cache, sid) {
            record_end(ends, dfa.match_pattern(cache, sid, i).as_usize(), at);
        }
    };
    for (i, &b) in hay[start..end].iter().enumerate() {
        let Ok(next) = dfa.next_state(cache, sid, b) else {
            return false;
        };
        sid = next;
        if sid.is_tagged() {
            if sid.is_match() {
                record(ends, cache, sid, start + i);
            } else if sid.is_dead() {
                return true;
            } else if sid.is_quit() {
                return false;
            }
        }
    }
    let last = match hay.get(end) {
        Some(&b) => dfa.next_state(cache, sid, b),
        None => dfa.next_eoi_state(cache, sid),
    };
    match last {
        Ok(sid) if sid.is_match() => record(ends, cache, sid, end),
        Ok(sid) if sid.is_quit() => return false,
        Ok(_) => {}
        Err(_) => return false,
    }
    true
}

/// Notes that pattern `pid` matches up to `at`: matches are met in order of their ends, so the
/// last one noted is the longest.
fn record_end(ends: &mut Vec<(usize, usize)>, pid: usize, at: usize) {
    match ends.iter_mut().find(|(p, _)| *p == pid) {
        Some((_, e)) => *e = at,
        None => ends.push((pid, at)),
    }
}

/// The largest fully compiled candidate automaton used; a bigger one (a pack with long counted
/// repetitions, say) is walked lazily instead.
const DENSE_LIMIT: usize = 16 << 20;

/// An all-matches DFA anchored at candidate starts, compiled in full, with its start state for
/// each look-behind byte (and for none, at the start of the text).
struct DenseWalk {
    dfa: DenseDfa<Vec<u32>>,
    starts: Vec<DenseStateID>,
    /// Per state (by index), where its patterns lie in `pids`: empty for all but match
    /// states. Read off the DFA once, so that a match costs a slice, not a decoding per pattern.
    matches: Vec<(u32, u32)>,
    pids: Vec<u32>,
}

impl DenseWalk {
    /// `None` when the DFA would exceed [`DENSE_LIMIT`].
    fn build(syntax: syntax::Config, patterns: &[&str]) -> Result<Option<Self>, DlpError> {
        use regex_automata::dfa::Automaton;
        let compile =
            |e: &dyn std::fmt::Display| DlpError::Compile(format!("personal-data patterns: {e}"));
        let config = DenseDfa::config()
            .match_kind(MatchKind::All)
            .start_kind(regex_automata::dfa::StartKind::Anchored)
            // Acceleration serves the crate's own searches; it would only add special states
            // to the walk.
            .accelerate(false)
            .dfa_size_limit(Some(DENSE_LIMIT))
            .determinize_size_limit(Some(DENSE_LIMIT));
        let dfa = match DenseDfa::builder()
            .syntax(syntax)
            .configure(config)
            .build_many(patterns)
        {
            Ok(dfa) => dfa,
            Err(e) if e.is_size_limit_exceeded() => return Ok(None),
            Err(e) => return Err(compile(&e)),
        };
        let starts = std::iter::once(None)
            .chain((0..=255u8).map(Some))
            .map(|look_behind| {
                let config = regex_automata::util::start::Config::new()
                    .anchored(Anchored::Yes)
                    .look_behind(look_behind);
                dfa.start_state(&config).map_err(|e| compile(&e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Every state reachable from a start state, by one byte of each class or the end of
        // the text.
        let index = |sid: DenseStateID| sid.as_usize() >> dfa.stride2();
        let mut seen = vec![false; 0];
        let mut stack = starts.clone();
        let mut matches = Vec::new();
        let mut pids = Vec::new();
        while let Some(sid) = stack.pop() {
            let i = index(sid);
            if seen.len() <= i {
                seen.resize(i + 1, false);
                matches.resize(i + 1, (0, 0));
            }
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            if dfa.is_match_state(sid) {
                let from = pids.len();
                pids.extend((0..dfa.match_len(sid)).map(|m| dfa.match_pattern(sid, m).as_u32()));
                matches[i] = (from as u32, (pids.len() - from) as u32);
            }
            stack.extend(
                dfa.byte_classes()
                    .representatives(0..=255)
                    .filter_map(|unit| unit.as_u8())
                    .map(|b| dfa.next_state(sid, b))
                    .chain(std::iter::once(dfa.next_eoi_state(sid))),
            );
        }
        Ok(Some(Self {
            dfa,
            starts,
            matches,
            pids,
        }))
    }

    /// The patterns match state `sid` holds.
    fn patterns(&self, sid: DenseStateID) -> &[u32] {
        let (from, len) = self.matches[sid.as_usize() >> self.dfa.stride2()];
        &self.pids[from as usize..(from + len) as usize]
    }

    /// As [`match_ends`]; gives up only on a quit state, which these patterns never make.
    /// `hits` is scratch space: the match states met, and where.
    #[inline(always)]
    fn match_ends(
        &self,
        hay: &[u8],
        (start, end): (usize, usize),
        hits: &mut Vec<(DenseStateID, usize)>,
        ends: &mut Vec<(usize, usize)>,
    ) -> bool {
        use regex_automata::dfa::Automaton;
        let dfa = &self.dfa;
        hits.clear();
        let mut sid = self.starts[start.checked_sub(1).map_or(0, |i| usize::from(hay[i]) + 1)];
        // The state that settles the walk: dead (or quit) part-way, else the one after the span.
        let last = 'walk: {
            for (i, &b) in hay[start..end].iter().enumerate() {
                sid = dfa.next_state(sid, b);
                if dfa.is_special_state(sid) {
                    if !dfa.is_match_state(sid) {
                        // Dead, or (never: without Unicode `\b` there are no quit bytes) quit.
                        break 'walk sid;
                    }
                    hits.push((sid, start + i));
                }
            }
            match hay.get(end) {
                Some(&b) => dfa.next_state(sid, b),
                None => dfa.next_eoi_state(sid),
            }
        };
        if dfa.is_match_state(last) {
            hits.push((last, end));
        }
        ends.clear();
        for &(sid, at) in hits.iter() {
            for &pid in self.patterns(sid) {
                record_end(ends, pid as usize, at);
            }
        }
        !dfa.is_quit_state(last)
    }
}

/// The anchored start state for each look-behind byte (and for none), asked of the lazy DFA
/// once per scan rather than once per candidate. A cleared cache invalidates state ids, so the
/// table is emptied whenever the cache's clear count moves.
struct StartStates {
    clears: usize,
    ids: [Option<LazyStateID>; 257],
}

impl Default for StartStates {
    fn default() -> Self {
        Self {
            clears: usize::MAX,
            ids: [None; 257],
        }
    }
}

impl StartStates {
    fn anchored(
        &mut self,
        dfa: &LazyDfa,
        cache: &mut DfaCache,
        look_behind: Option<u8>,
    ) -> Option<LazyStateID> {
        if cache.clear_count() != self.clears {
            self.ids = [None; 257];
            self.clears = cache.clear_count();
        }
        let slot = look_behind.map_or(256, usize::from);
        if let Some(id) = self.ids[slot] {
            return Some(id);
        }
        let config = regex_automata::util::start::Config::new()
            .anchored(Anchored::Yes)
            .look_behind(look_behind);
        let id = dfa.start_state(cache, &config).ok()?;
        // Computing a start state can itself clear the cache.
        if cache.clear_count() == self.clears {
            self.ids[slot] = Some(id);
        }
        Some(id)
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

/// Context words (ASCII case-insensitive; words are stored lower-case), each with its searcher
/// built once.
struct ContextWords(Vec<memchr::memmem::Finder<'static>>);

impl ContextWords {
    fn new(words: &[String]) -> Self {
        Self(
            words
                .iter()
                .map(|w| memchr::memmem::Finder::new(w.as_bytes()).into_owned())
                .collect(),
        )
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether one of the words stands within the window around a match.
    fn near(&self, hay: &[u8], start: usize, end: usize) -> bool {
        let from = start.saturating_sub(CONTEXT_BEFORE);
        let to = (end + CONTEXT_AFTER).min(hay.len());
        let mut window = [0u8; CONTEXT_BEFORE + CONTEXT_AFTER + MAX_PII_LEN];
        let len = (to - from).min(window.len());
        for (w, b) in window.iter_mut().zip(&hay[from..from + len]) {
            *w = b.to_ascii_lowercase();
        }
        let window = &window[..len];
        self.0.iter().any(|f| f.find(window).is_some())
    }
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
    fn trigger_bytes_agree_with_classes() {
        for (i, &b) in TRIGGER_BYTES.iter().enumerate() {
            assert_eq!(trigger_class(b), Some(i + 1), "byte {b:#x}");
        }
        assert!((b'0'..=b'9').all(|b| trigger_class(b) == Some(0)));
        assert_eq!(
            (0..=255u8).filter(|&b| trigger_class(b).is_some()).count(),
            13
        );
    }

    #[test]
    fn keywords_are_found_next_to_chinese_text() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
        let scanner = Scanner::new(&super::super::load_packs(dir, None).unwrap()).unwrap();
        let token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
        for text in [
            format!("令牌{token}谢谢"),
            format!("令牌 {token}。"),
            token.to_string(),
        ] {
            let found = scanner.scan(&text);
            assert!(
                found
                    .iter()
                    .any(|f| f.entity.starts_with("SECRET_") && &text[f.start..f.end] == token),
                "{text}: {found:?}"
            );
        }
    }

    /// The keyword walk (which skips ahead while in the start state) marks exactly the rules of
    /// the keywords an overlapping Aho-Corasick search finds, keywords inside keywords and
    /// keywords at a span's edges included.
    #[test]
    fn keyword_marks_agree_with_the_overlapping_search() {
        let words = [
            "key",
            "accountkey",
            "sk-",
            "sk-ant-",
            "q~",
            "-----begin",
            "api",
            "k",
        ];
        let keywords = Keywords::build(
            words
                .iter()
                .enumerate()
                .map(|(i, w)| (w.to_string(), vec![i]))
                .collect(),
        )
        .unwrap()
        .unwrap();
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(words)
            .unwrap();
        // Text over a small alphabet, so that keywords and their prefixes are frequent.
        // Digit and punctuation runs, which the walk skips four bytes at a time, and runs of
        // bytes outside ASCII (Chinese characters), which it skips whole.
        let alphabet: [&[u8]; 26] = [
            b"a",
            b"k",
            b"e",
            b"y",
            b"s",
            b"c",
            b"o",
            b"u",
            b"n",
            b"t",
            b"q~",
            b"-",
            b"B",
            b"g",
            b"i",
            b"n ",
            b"p",
            b"I",
            b"0123",
            b"456789",
            b" ,.",
            b":;",
            "\u{4e2d}".as_bytes(),
            "\u{6587}\u{5bc6}".as_bytes(),
            b"\xe4\xb8",
            "\u{7801}\u{3002}\u{6587}".as_bytes(),
        ];
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut text: Vec<u8> = Vec::new();
        while text.len() < 20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            text.extend_from_slice(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        for len in [0, 1, 2, 3, 5, 8, 13, 40, 200] {
            for from in (0..text.len() - len).step_by(97) {
                let span = from..from + len;
                let mut walked = vec![false; words.len()];
                keywords.mark(&text, span.clone(), &mut walked);
                let mut searched = vec![false; words.len()];
                for m in ac.find_overlapping_iter(&text[span.clone()]) {
                    searched[m.pattern().as_usize()] = true;
                }
                assert_eq!(walked, searched, "span {span:?}");
            }
        }
    }

    /// A pack whose patterns would make the full DFA too big (a `1` 22 places from the end
    /// needs a state per combination of the last 22 bits) is walked by the lazy DFA, and
    /// finds the same as ever, the bundled rules' matches included.
    #[test]
    fn an_automaton_too_big_to_compile_in_full_is_walked_lazily() {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
        let mut packs = super::super::load_packs(dir, None).unwrap();
        packs.push(
            Pack::parse(
                r#"
[pack]
name = "big"
[[rules]]
id = "late_one"
entity = "LATE_ONE"
patterns = ['x[01]{0,40}1[01]{21}']
positive = ["x1000000000000000000000", "x01000000000000000000000", "x111111111111111111111111"]
negative = ["x0000000000000000000000", "x100000000000000000000", "y1000000000000000000000"]
"#,
                std::path::Path::new("big.toml"),
            )
            .unwrap(),
        );
        let scanner = Scanner::new(&packs).unwrap();
        let pii = scanner.pii.as_ref().unwrap();
        assert!(pii.gated.iter().any(|(_, a, _)| a.dense.is_none()));
        let late = format!("x1{}", "0".repeat(21));
        let text = format!("电话13812345678谢谢 {late} 身份证号11010519491231002X，");
        let found: Vec<_> = scanner
            .scan(&text)
            .into_iter()
            .map(|f| (f.entity.to_string(), text[f.start..f.end].to_owned()))
            .collect();
        for (entity, value) in [
            ("PHONE_NUMBER", "13812345678"),
            ("LATE_ONE", late.as_str()),
            ("CN_RESIDENT_ID", "11010519491231002X"),
        ] {
            assert!(
                found.iter().any(|(e, v)| e == entity && v == value),
                "{entity} {value}: {found:?}"
            );
        }
    }

    /// The DFA walk gives what regex-automata's own overlapping search gives: every pattern's
    /// longest match end, at every start, for spans that end inside the text and at its end.
    #[test]
    fn match_ends_agree_with_the_overlapping_search() {
        use regex_automata::hybrid::dfa::OverlappingState;
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
        let scanner = Scanner::new(&super::super::load_packs(dir, None).unwrap()).unwrap();
        let pii = scanner.pii.as_ref().unwrap();
        let mut text = super::super::corpus::Generator::new(3).prose(6000, true);
        text.push_str(" 4111 1111 1111 1111 fe80::1:2 a@b.cn 00:1a:2b:3c:4d:5e 13812345678");
        let hay = text.as_bytes();
        for (_, a, _) in &pii.gated {
            let dense = a.dense.as_ref().expect("the bundled packs compile in full");
            let mut cache = a.all.create_cache();
            let mut starts = StartStates::default();
            let (mut walked_dense, mut hits) = (Vec::new(), Vec::new());
            let (mut walked, mut searched) = (Vec::new(), Vec::new());
            for s in 0..hay.len() {
                for end in [(s + 7).min(hay.len()), (s + MAX_PII_LEN).min(hay.len())] {
                    assert!(match_ends(
                        &a.all,
                        &mut cache,
                        &mut starts,
                        hay,
                        (s, end),
                        &mut walked
                    ));
                    assert!(dense.match_ends(hay, (s, end), &mut hits, &mut walked_dense));
                    searched.clear();
                    let input = Input::new(hay).span(s..end).anchored(Anchored::Yes);
                    let mut state = OverlappingState::start();
                    loop {
                        a.all
                            .try_search_overlapping_fwd(&mut cache, &input, &mut state)
                            .unwrap();
                        let Some(m) = state.get_match() else { break };
                        let pid = m.pattern().as_usize();
                        match searched.iter_mut().find(|(p, _)| *p == pid) {
                            Some((_, e)) => *e = m.offset(),
                            None => searched.push((pid, m.offset())),
                        }
                    }
                    walked.sort_unstable();
                    walked_dense.sort_unstable();
                    searched.sort_unstable();
                    assert_eq!(walked, searched, "lazy walk: start {s}, end {end}");
                    assert_eq!(walked_dense, searched, "dense walk: start {s}, end {end}");
                }
            }
        }
    }

    #[test]
    fn windows_cover_every_trigger_reach() {
        let mut hay = vec![b'x'; 4096];
        hay[1000] = b'7';
        hay[1010] = b'8';
        hay[3000] = b'@';
        let w = windows(&hay, 0, 14);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].0 <= 1000 - 14 && w[0].1 > 1010, "{w:?}");
        let w = windows(&hay, 3, 320);
        assert_eq!(w, vec![(3000 - 320, 3000 + 1)]);
        // Windows that touch merge; `@` windows ignore digits.
        hay[2700] = b'@';
        let w = windows(&hay, 3, 320);
        assert_eq!(w, vec![(2700 - 320, 3000 + 1)]);
        hay[2000] = b'@';
        let w = windows(&hay, 3, 320);
        assert_eq!(w, vec![(2000 - 320, 2001), (2700 - 320, 3000 + 1)]);
        assert!(windows(&hay, 1, 4).is_empty());
        // A window is clipped to the text.
        hay[2] = b':';
        hay[4095] = b':';
        assert_eq!(windows(&hay, 1, 4), vec![(0, 3), (4091, 4096)]);
    }
}
