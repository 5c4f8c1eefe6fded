//! What happens to a finding: `allow`, `redact`, `mask`, `hash`, `pseudonymise` or `block`, chosen
//! per entity type. Pseudonymisation is reversible within one request: the same value gets the
//! same token, numbering is unique across the whole request, and the map never leaves it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Finding;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// `[EMAIL_ADDRESS]`
    Redact,
    /// Every character but separators becomes `*`, except the last `keep_last`.
    Mask {
        keep_last: usize,
    },
    /// `[EMAIL_ADDRESS:1a2b3c4d5e6f]`: HMAC-SHA256 with the configured key, stable across requests.
    Hash,
    /// `⟦EMAIL_ADDRESS_1⟧`, restored in the response.
    Pseudonymise,
    /// The request is refused.
    Block,
}

impl FromStr for Action {
    type Err = String;

    /// `allow`, `redact`, `mask` (keeps 4), `mask:N`, `hash`, `pseudonymise` (or `-ize`), `block`.
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "allow" => Self::Allow,
            "redact" => Self::Redact,
            "mask" => Self::Mask { keep_last: 4 },
            "hash" => Self::Hash,
            "pseudonymise" | "pseudonymize" => Self::Pseudonymise,
            "block" => Self::Block,
            _ => match s.strip_prefix("mask:").map(str::parse) {
                Some(Ok(keep_last)) => Self::Mask { keep_last },
                _ => {
                    return Err(format!(
                        "`{s}` is not an action: allow, redact, mask, mask:N, hash, pseudonymise or block"
                    ));
                }
            },
        })
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow => f.write_str("allow"),
            Self::Redact => f.write_str("redact"),
            Self::Mask { keep_last } => write!(f, "mask:{keep_last}"),
            Self::Hash => f.write_str("hash"),
            Self::Pseudonymise => f.write_str("pseudonymise"),
            Self::Block => f.write_str("block"),
        }
    }
}

/// The action for each entity type, with a default for the rest.
#[derive(Debug, Clone)]
pub struct ActionTable {
    pub default: Action,
    pub by_entity: HashMap<String, Action>,
}

impl ActionTable {
    pub fn new(default: Action) -> Self {
        Self {
            default,
            by_entity: HashMap::new(),
        }
    }

    pub fn with(mut self, entity: &str, action: Action) -> Self {
        self.by_entity.insert(entity.to_owned(), action);
        self
    }

    /// The entity's own entry, else the longest matching `PREFIX_*` entry, else the default.
    pub fn action(&self, entity: &str) -> Action {
        if let Some(a) = self.by_entity.get(entity) {
            return *a;
        }
        self.by_entity
            .iter()
            .filter(|(k, _)| k.ends_with('*') && super::entity_matches(k, entity))
            .max_by_key(|(k, _)| k.len())
            .map_or(self.default, |(_, a)| *a)
    }
}

/// The reversible map of one request. Never logged: it has no `Debug` that shows values.
#[derive(Default)]
pub struct Pseudonyms {
    by_value: HashMap<(String, String), String>,
    /// Token name (`EMAIL_ADDRESS_1`) -> original value.
    by_name: HashMap<String, String>,
    counters: HashMap<String, usize>,
    longest_token: usize,
}

impl fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pseudonyms({} tokens)", self.by_name.len())
    }
}

pub const TOKEN_OPEN: char = '⟦';
pub const TOKEN_CLOSE: char = '⟧';

impl Pseudonyms {
    /// The token for a value, the same each time within the request.
    pub fn token(&mut self, entity: &str, value: &str) -> String {
        let key = (entity.to_owned(), value.to_owned());
        if let Some(t) = self.by_value.get(&key) {
            return t.clone();
        }
        let n = self.counters.entry(entity.to_owned()).or_insert(0);
        *n += 1;
        let name = format!("{entity}_{n}");
        let token = format!("{TOKEN_OPEN}{name}{TOKEN_CLOSE}");
        self.longest_token = self.longest_token.max(token.len());
        self.by_name.insert(name, value.to_owned());
        self.by_value.insert(key, token.clone());
        token
    }

    /// The original value of a token name such as `EMAIL_ADDRESS_1`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Whether `partial` (an upper-cased name without brackets) could still grow into a token.
    pub fn could_complete(&self, partial: &str) -> bool {
        self.by_name.keys().any(|k| k.starts_with(partial))
    }

    pub fn longest_token(&self) -> usize {
        self.longest_token
    }
}

/// Applies the table's actions to `text`. `findings` must be sorted and must not overlap (as the
/// scanner returns them). Returns the entity types that are blocked, if any, instead of text.
pub fn apply(
    text: &str,
    findings: &[Finding],
    table: &ActionTable,
    hash_key: &[u8],
    pseudonyms: &mut Pseudonyms,
) -> Result<String, Vec<String>> {
    let blocked: Vec<String> = findings
        .iter()
        .filter(|f| table.action(&f.entity) == Action::Block)
        .map(|f| f.entity.to_string())
        .collect();
    if !blocked.is_empty() {
        return Err(blocked);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for f in findings {
        let (Some(before), Some(value)) = (text.get(last..f.start), text.get(f.start..f.end))
        else {
            continue;
        };
        out.push_str(before);
        match table.action(&f.entity) {
            Action::Allow | Action::Block => out.push_str(value),
            Action::Redact => {
                out.push('[');
                out.push_str(&f.entity);
                out.push(']');
            }
            Action::Mask { keep_last } => out.push_str(&mask(value, keep_last)),
            Action::Hash => {
                out.push('[');
                out.push_str(&f.entity);
                out.push(':');
                out.push_str(&hmac_hex(hash_key, value)[..12]);
                out.push(']');
            }
            Action::Pseudonymise => out.push_str(&pseudonyms.token(&f.entity, value)),
        }
        last = f.end;
    }
    out.push_str(text.get(last..).unwrap_or(""));
    Ok(out)
}

fn mask(value: &str, keep_last: usize) -> String {
    let significant = value.chars().filter(|c| c.is_alphanumeric()).count();
    let mut seen = 0;
    value
        .chars()
        .map(|c| {
            if !c.is_alphanumeric() {
                return c;
            }
            seen += 1;
            if seen + keep_last > significant {
                c
            } else {
                '*'
            }
        })
        .collect()
}

/// HMAC-SHA256 of a value, hex.
pub fn hmac_hex(key: &[u8], value: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn finding(entity: &str, start: usize, end: usize) -> Finding {
        Finding {
            entity: Arc::from(entity),
            start,
            end,
            confidence: 1.0,
            rule: Arc::from("t/t"),
            severity: crate::dlp::Severity::High,
        }
    }

    #[test]
    fn every_action() {
        let text = "mail a@b.cn card 4111 1111 1111 1111 id X";
        let f = [
            finding("EMAIL_ADDRESS", 5, 11),
            finding("CREDIT_CARD", 17, 36),
        ];
        let mut p = Pseudonyms::default();
        let t = ActionTable::new(Action::Allow);
        assert_eq!(apply(text, &f, &t, b"k", &mut p).unwrap(), text);
        let t = ActionTable::new(Action::Redact).with("CREDIT_CARD", "mask:4".parse().unwrap());
        assert_eq!(
            apply(text, &f, &t, b"k", &mut p).unwrap(),
            "mail [EMAIL_ADDRESS] card **** **** **** 1111 id X"
        );
        let t = ActionTable::new(Action::Hash);
        let out = apply(text, &f, &t, b"k", &mut p).unwrap();
        assert_eq!(
            out,
            apply(text, &f, &t, b"k", &mut p).unwrap(),
            "hashes are stable"
        );
        assert!(out.starts_with("mail [EMAIL_ADDRESS:") && !out.contains("a@b.cn"));
        let t = ActionTable::new(Action::Pseudonymise);
        assert_eq!(
            apply(text, &f, &t, b"k", &mut p).unwrap(),
            "mail ⟦EMAIL_ADDRESS_1⟧ card ⟦CREDIT_CARD_1⟧ id X"
        );
        assert_eq!(p.value("CREDIT_CARD_1"), Some("4111 1111 1111 1111"));
        let t = ActionTable::new(Action::Allow).with("CREDIT_CARD", Action::Block);
        assert_eq!(
            apply(text, &f, &t, b"k", &mut p).unwrap_err(),
            ["CREDIT_CARD"]
        );
    }

    #[test]
    fn same_value_same_token_numbering_per_request() {
        let mut p = Pseudonyms::default();
        assert_eq!(p.token("EMAIL_ADDRESS", "a@b.cn"), "⟦EMAIL_ADDRESS_1⟧");
        assert_eq!(p.token("EMAIL_ADDRESS", "c@d.cn"), "⟦EMAIL_ADDRESS_2⟧");
        assert_eq!(p.token("EMAIL_ADDRESS", "a@b.cn"), "⟦EMAIL_ADDRESS_1⟧");
        assert_eq!(format!("{p:?}"), "Pseudonyms(2 tokens)");
    }

    #[test]
    fn wildcards() {
        let t = ActionTable::new(Action::Allow)
            .with("SECRET_*", Action::Block)
            .with("SECRET_JWT", Action::Redact);
        assert_eq!(t.action("SECRET_GITHUB_TOKEN"), Action::Block);
        assert_eq!(t.action("SECRET_JWT"), Action::Redact);
        assert_eq!(t.action("EMAIL_ADDRESS"), Action::Allow);
    }

    #[test]
    fn parse_actions() {
        assert_eq!(
            "mask:2".parse::<Action>().unwrap(),
            Action::Mask { keep_last: 2 }
        );
        assert!("explode".parse::<Action>().is_err());
    }
}
