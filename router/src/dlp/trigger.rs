//! Trigger bytes: a byte class that every match of a pattern must contain, found by walking the
//! pattern's syntax tree. Nearly every personal-data pattern needs an ASCII digit or an `@`, and
//! most prose has few of either, so the scanner runs its automaton only in windows around such
//! bytes: from the furthest a match can start before its first trigger byte to the longest a
//! match can be. Patterns that need no trigger (an IPv6 address may be all hex letters) are
//! searched over the whole text as before.

use regex_automata::util::syntax;
use regex_syntax::hir::{Class, Hir, HirKind};

/// A set of bytes.
#[derive(Clone, Copy)]
pub struct ByteSet([bool; 256]);

impl ByteSet {
    pub fn from_fn(f: impl Fn(u8) -> bool) -> Self {
        let mut s = [false; 256];
        for (b, slot) in s.iter_mut().enumerate() {
            *slot = f(b as u8);
        }
        Self(s)
    }

    pub fn contains(&self, b: u8) -> bool {
        self.0[b as usize]
    }
}

/// What a pattern needs from one trigger class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The most bytes a match can have before its first trigger byte (`None`: no bound).
    pub before: Option<usize>,
    /// The longest match (`None`: no bound).
    pub len: Option<usize>,
}

/// A pattern's syntax tree, parsed as the scanner compiles it (ASCII, bytes); `None` when it
/// does not parse (compiling it reports the error).
pub fn parse(pattern: &str) -> Option<Hir> {
    syntax::parse_with(pattern, &syntax::Config::new().unicode(false).utf8(false)).ok()
}

/// `Some` when every match of the pattern contains a byte of `set`.
pub fn reach(hir: &Hir, set: &ByteSet) -> Option<Reach> {
    let info = walk(hir, set);
    (!info.free).then(|| Reach {
        before: info.pre,
        len: hir.properties().maximum_len(),
    })
}

/// One node's summary: can it match without a trigger byte (and how long such a match can be),
/// and how many bytes can come before the first trigger byte of a match that has one.
#[derive(Clone, Copy)]
struct Info {
    free: bool,
    /// Longest trigger-free match (`None`: unbounded); meaningful only when `free`.
    free_max: Option<usize>,
    /// Whether some match contains a trigger byte.
    hit: bool,
    /// Most bytes before the first trigger byte (`None`: unbounded); meaningful only when `hit`.
    pre: Option<usize>,
}

const EMPTY: Info = Info {
    free: true,
    free_max: Some(0),
    hit: false,
    pre: Some(0),
};

fn add(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    a?.checked_add(b?)
}

fn max(a: Option<usize>, b: Option<usize>) -> Option<usize> {
    Some(a?.max(b?))
}

fn walk(hir: &Hir, set: &ByteSet) -> Info {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => EMPTY,
        HirKind::Literal(lit) => match lit.0.iter().position(|&b| set.contains(b)) {
            Some(i) => Info {
                free: false,
                free_max: Some(0),
                hit: true,
                pre: Some(i),
            },
            None => Info {
                free_max: Some(lit.0.len()),
                ..EMPTY
            },
        },
        HirKind::Class(class) => {
            let (free, hit, len) = match class {
                Class::Bytes(c) => {
                    let bytes = || c.ranges().iter().flat_map(|r| r.start()..=r.end());
                    (
                        bytes().any(|b| !set.contains(b)),
                        bytes().any(|b| set.contains(b)),
                        1,
                    )
                }
                Class::Unicode(c) => {
                    let chars = || c.ranges().iter().flat_map(|r| r.start()..=r.end());
                    let in_set = |ch: char| ch.is_ascii() && set.contains(ch as u8);
                    (
                        chars().any(|ch| !in_set(ch)),
                        chars().any(in_set),
                        c.maximum_len().unwrap_or(4),
                    )
                }
            };
            Info {
                free,
                free_max: Some(len),
                hit,
                pre: Some(0),
            }
        }
        HirKind::Capture(c) => walk(&c.sub, set),
        HirKind::Repetition(rep) => {
            let sub = walk(&rep.sub, set);
            let max_reps = rep.max.map(|m| m as usize);
            // Trigger-free iterations may come before the one that holds the trigger.
            let free_run = |reps: Option<usize>| -> Option<usize> {
                match (sub.free_max, reps) {
                    (Some(0), _) => Some(0),
                    (Some(l), Some(n)) => l.checked_mul(n),
                    _ => None,
                }
            };
            Info {
                free: rep.min == 0 || sub.free,
                free_max: if sub.free {
                    free_run(max_reps)
                } else {
                    Some(0)
                },
                hit: sub.hit,
                pre: if sub.free {
                    add(free_run(max_reps.map(|m| m.saturating_sub(1))), sub.pre)
                } else {
                    sub.pre
                },
            }
        }
        HirKind::Concat(parts) => parts.iter().fold(EMPTY, |acc, part| {
            let p = walk(part, set);
            let mut pre = None::<Option<usize>>;
            if acc.hit {
                pre = Some(acc.pre);
            }
            if acc.free && p.hit {
                let via = add(acc.free_max, p.pre);
                pre = Some(match pre {
                    Some(x) => max(x, via),
                    None => via,
                });
            }
            Info {
                free: acc.free && p.free,
                free_max: add(acc.free_max, p.free_max),
                hit: acc.hit || (acc.free && p.hit),
                pre: pre.unwrap_or(Some(0)),
            }
        }),
        HirKind::Alternation(alts) => {
            let infos: Vec<Info> = alts.iter().map(|a| walk(a, set)).collect();
            let fold = |pick: fn(&Info) -> (bool, Option<usize>)| {
                infos
                    .iter()
                    .map(pick)
                    .filter(|(ok, _)| *ok)
                    .map(|(_, v)| v)
                    .reduce(max)
            };
            let free_max = fold(|i| (i.free, i.free_max));
            let pre = fold(|i| (i.hit, i.pre));
            Info {
                free: free_max.is_some(),
                free_max: free_max.flatten(),
                hit: pre.is_some(),
                pre: pre.flatten(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> ByteSet {
        ByteSet::from_fn(|b| b.is_ascii_digit())
    }

    #[test]
    fn digit_patterns_need_digits() {
        let r = reach(
            &parse(r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}").unwrap(),
            &digits(),
        )
        .unwrap();
        assert_eq!(r.before, Some(2));
        assert_eq!(r.len, Some(2 + 2 + 7 * 5));
        // `+86` has one byte before its first digit.
        let r = reach(
            &parse(r"(?:(?:\+86|0086)[ -]?)?1[3-9][0-9]").unwrap(),
            &digits(),
        )
        .unwrap();
        assert_eq!(r.before, Some(1));
        // The trigger may come after optional trigger-free repetitions.
        let r = reach(&parse(r"[a-f]{0,3}:?[0-9]").unwrap(), &digits()).unwrap();
        assert_eq!(r.before, Some(4));
    }

    #[test]
    fn patterns_that_can_do_without() {
        assert!(
            reach(
                &parse(r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}").unwrap(),
                &digits()
            )
            .is_none()
        );
        assert!(reach(&parse(r"[a-z]+|[0-9]+").unwrap(), &digits()).is_none());
        let at = ByteSet::from_fn(|b| b == b'@');
        let r = reach(
            &parse(r"[A-Za-z0-9][A-Za-z0-9._%+-]*@[a-z]+\.[a-z]{2,24}").unwrap(),
            &at,
        )
        .unwrap();
        assert_eq!(r.before, None);
        assert_eq!(r.len, None);
    }
}
