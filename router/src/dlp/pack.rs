//! Rule packs as data: TOML files in `dlp-rules/`, each a `[pack]` table and `[[rules]]`. Read in
//! two stages like the gateway config: unknown fields are errors, then each rule is checked.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::Digest;

use super::DlpError;
use super::validators::Validator;

/// Which neighbours a match may not have. Explicit ASCII classes, because Chinese characters are
/// word characters for Unicode `\b` and `\d` matches other scripts' digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Boundary {
    /// No ASCII digit directly before or after: a number inside a longer number is not found.
    #[default]
    Digit,
    /// No ASCII letter or digit directly before or after.
    Alnum,
    /// For dotted numbers (IPv4): no digit, and no `.` followed by a digit, on either side, so
    /// `1.2.3.4` inside the version `1.2.3.4.5` is not found.
    Dotted,
    None,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    #[default]
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }
}

/// Which engine runs a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// The compiled multi-pattern pass over personal data (Unicode-aware text, ASCII classes).
    #[default]
    Pii,
    /// Keyword-gated ASCII byte regexes, gitleaks-style.
    Secret,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPack {
    pack: RawPackHeader,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    dictionaries: Vec<RawDictionary>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPackHeader {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    engine: Engine,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    entity: String,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    keywords: Vec<String>,
    validator: Option<Validator>,
    min_entropy: Option<f64>,
    #[serde(default)]
    context: Vec<String>,
    #[serde(default)]
    context_required: bool,
    /// Words that mark a match as some other kind of number (`nhs` near a US-style phone
    /// number): with one in the context window there is no finding.
    #[serde(default)]
    exclude_context: Vec<String>,
    /// Only matches that hold an ASCII digit count: lets the scanner skip digit-free text for
    /// a pattern that could otherwise match without one.
    #[serde(default)]
    require_digit: bool,
    base_confidence: Option<f32>,
    validated_confidence: Option<f32>,
    #[serde(default)]
    severity: Severity,
    boundary: Option<Boundary>,
    #[serde(default)]
    priority: i32,
    /// Capture group holding the sensitive part (0 = the whole match).
    #[serde(default)]
    group: usize,
    #[serde(default)]
    positive: Vec<String>,
    #[serde(default)]
    negative: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDictionary {
    name: String,
    /// A file of terms, one per line (`#` starts a comment), relative to the pack.
    file: PathBuf,
    #[serde(default)]
    severity: Severity,
    #[serde(default)]
    case_sensitive: bool,
}

/// One validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub pack: String,
    pub engine: Engine,
    pub entity: String,
    pub patterns: Vec<String>,
    pub keywords: Vec<String>,
    pub validator: Option<Validator>,
    pub min_entropy: f64,
    pub context: Vec<String>,
    pub context_required: bool,
    pub exclude_context: Vec<String>,
    pub require_digit: bool,
    pub base_confidence: f32,
    pub validated_confidence: f32,
    pub severity: Severity,
    pub boundary: Boundary,
    pub priority: i32,
    pub group: usize,
    pub positive: Vec<String>,
    pub negative: Vec<String>,
}

/// A custom keyword list: every term is an entity of type `CUSTOM_<NAME>`.
#[derive(Debug, Clone)]
pub struct Dictionary {
    pub pack: String,
    pub entity: String,
    pub terms: Vec<String>,
    pub severity: Severity,
    pub case_sensitive: bool,
}

#[derive(Debug, Clone)]
pub struct Pack {
    pub name: String,
    pub description: String,
    /// SHA-256 of the pack file and its dictionaries' terms: the version reloads report.
    pub digest: String,
    pub rules: Vec<Rule>,
    pub dictionaries: Vec<Dictionary>,
}

impl Pack {
    pub fn load(path: &Path) -> Result<Self, DlpError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DlpError::pack(path, format!("cannot read: {e}")))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, DlpError> {
        let raw: RawPack = toml::from_str(text).map_err(|e| DlpError::pack(path, e.to_string()))?;
        let pack = raw.pack.name.clone();
        let mut rules = Vec::with_capacity(raw.rules.len());
        for (i, r) in raw.rules.into_iter().enumerate() {
            let at = |msg: String| DlpError::pack(path, format!("rules[{i}] ({}): {msg}", r.id));
            if r.patterns.is_empty() {
                return Err(at("needs at least one pattern".into()));
            }
            if !r
                .entity
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(at(format!(
                    "entity `{}` must be UPPER_SNAKE_CASE",
                    r.entity
                )));
            }
            if r.context_required && r.context.is_empty() {
                return Err(at("context_required needs context words".into()));
            }
            if r.positive.len() < 3 || r.negative.len() < 3 {
                return Err(at(
                    "needs at least three positive and three negative examples".into(),
                ));
            }
            let base = r
                .base_confidence
                .unwrap_or(if r.validator.is_some() { 0.6 } else { 0.5 });
            rules.push(Rule {
                pack: pack.clone(),
                engine: raw.pack.engine,
                entity: r.entity,
                patterns: r.patterns,
                keywords: r.keywords,
                validator: r.validator,
                min_entropy: r.min_entropy.unwrap_or(3.0),
                context: r.context.iter().map(|w| w.to_ascii_lowercase()).collect(),
                context_required: r.context_required,
                exclude_context: r
                    .exclude_context
                    .iter()
                    .map(|w| w.to_ascii_lowercase())
                    .collect(),
                require_digit: r.require_digit,
                base_confidence: base,
                validated_confidence: r.validated_confidence.unwrap_or(0.95).max(base),
                severity: r.severity,
                boundary: r.boundary.unwrap_or(match raw.pack.engine {
                    Engine::Pii => Boundary::Digit,
                    Engine::Secret => Boundary::None,
                }),
                priority: r.priority,
                group: r.group,
                positive: r.positive,
                negative: r.negative,
                id: r.id,
            });
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let dictionaries = raw
            .dictionaries
            .into_iter()
            .map(|d| {
                let file = base.join(&d.file);
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    DlpError::pack(
                        path,
                        format!("dictionary {}: cannot read {}: {e}", d.name, file.display()),
                    )
                })?;
                let terms: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned)
                    .collect();
                if terms.is_empty() {
                    return Err(DlpError::pack(
                        path,
                        format!("dictionary {} has no terms", d.name),
                    ));
                }
                Ok(Dictionary {
                    pack: pack.clone(),
                    entity: format!("CUSTOM_{}", d.name.to_ascii_uppercase()),
                    terms,
                    severity: d.severity,
                    case_sensitive: d.case_sensitive,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut hash = sha2::Sha256::new();
        hash.update(text.as_bytes());
        for d in &dictionaries {
            for t in &d.terms {
                hash.update(t.as_bytes());
                hash.update(b"\n");
            }
        }
        Ok(Self {
            name: raw.pack.name,
            description: raw.pack.description,
            digest: format!("{:x}", hash.finalize()),
            rules,
            dictionaries,
        })
    }

    /// Every `*.toml` pack in a directory, in name order.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, DlpError> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DlpError::pack(dir, format!("cannot list: {e}")))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Self::load(p)).collect()
    }
}
