//! Secrets in config are locations (`env:NAME`, `file:/path`), never values; the resolved value
//! lives in a [`Secret`] whose `Debug` and `Display` never print it.

use std::fmt;

use super::ConfigError;

/// Where a secret is read from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(std::path::PathBuf),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:/path`; anything else is rejected so that a literal key pasted
    /// into the config file fails loudly instead of being used.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ConfigError> {
        if let Some(name) = raw.strip_prefix("env:") {
            if name.is_empty() {
                return Err(ConfigError::field(field, "`env:` needs a variable name"));
            }
            Ok(Self::Env(name.to_owned()))
        } else if let Some(path) = raw.strip_prefix("file:") {
            if path.is_empty() {
                return Err(ConfigError::field(field, "`file:` needs a path"));
            }
            Ok(Self::File(path.into()))
        } else {
            Err(ConfigError::field(
                field,
                "secrets are written as a location, `env:VARIABLE` or `file:/path`, never as the value itself",
            ))
        }
    }

    /// Reads the secret now. Trailing newlines of secret files are trimmed.
    pub fn resolve(&self, field: &str) -> Result<Secret, ConfigError> {
        let value = match self {
            Self::Env(name) => std::env::var(name).map_err(|_| {
                ConfigError::field(field, format!("environment variable {name} is not set"))
            })?,
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|e| {
                    ConfigError::field(field, format!("cannot read {}: {e}", path.display()))
                })?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        };
        if value.is_empty() {
            return Err(ConfigError::field(field, format!("{self:?} is empty")));
        }
        Ok(Secret(value))
    }
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Env(name) => write!(f, "env:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
        }
    }
}

/// A resolved secret. It never prints; use [`Secret::expose`] where the value must be sent.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_values_are_refused() {
        let err = SecretRef::parse("providers.openai.api_key", "sk-live-123").unwrap_err();
        assert!(err.to_string().contains("providers.openai.api_key"));
        assert!(err.to_string().contains("env:"));
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret("sk-very-secret".into());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }

    #[test]
    fn file_secret_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "abc\n").unwrap();
        let r = SecretRef::parse("x", &format!("file:{}", path.display())).unwrap();
        assert_eq!(r.resolve("x").unwrap().expose(), "abc");
    }
}
