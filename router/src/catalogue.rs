//! The model catalogue: public model names and aliases, each served by one provider's upstream
//! model, with an ordered list of fallbacks.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, ModelEntry, ProviderConfig};

/// One place a request for a model can be sent.
#[derive(Debug, Clone)]
pub struct Target {
    /// The catalogue name this target is listed under.
    pub model: String,
    pub provider: Arc<ProviderConfig>,
    pub upstream_model: String,
}

#[derive(Debug, Default)]
pub struct Catalogue {
    entries: Vec<ModelEntry>,
    by_name: HashMap<String, usize>,
    providers: HashMap<String, Arc<ProviderConfig>>,
}

impl Catalogue {
    pub fn new(config: &Config) -> Self {
        let mut by_name = HashMap::new();
        for (i, m) in config.models.iter().enumerate() {
            by_name.insert(m.name.clone(), i);
            for alias in &m.aliases {
                by_name.insert(alias.clone(), i);
            }
        }
        Self {
            entries: config.models.clone(),
            by_name,
            providers: config
                .providers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The catalogue entry for a public name or alias.
    pub fn entry(&self, name: &str) -> Option<&ModelEntry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    /// The requested model followed by its fallbacks, in the order they are tried.
    pub fn targets(&self, name: &str) -> Vec<Target> {
        let Some(first) = self.entry(name) else {
            return Vec::new();
        };
        std::iter::once(first)
            .chain(first.fallbacks.iter().filter_map(|f| self.entry(f)))
            .filter_map(|e| {
                Some(Target {
                    model: e.name.clone(),
                    provider: self.providers.get(&e.provider)?.clone(),
                    upstream_model: e.upstream_model.clone(),
                })
            })
            .collect()
    }

    /// Whether the model (name or alias) is served by an on-prem provider.
    pub fn is_on_prem(&self, name: &str) -> bool {
        self.entry(name)
            .and_then(|e| self.providers.get(&e.provider))
            .is_some_and(|p| p.on_prem)
    }

    /// Every public model name (not aliases), in catalogue order.
    pub fn names(&self) -> impl Iterator<Item = &ModelEntry> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_fallbacks_resolve_in_order() {
        let config = Config::from_toml(
            r#"
            [server]
            http_listen = "127.0.0.1:1"
            [dlp]
            enabled = false
            [policy]
            enabled = false
            [providers.a]
            type = "openai"
            base_url = "http://127.0.0.1:9/v1"
            [[models]]
            name = "big"
            aliases = ["large"]
            provider = "a"
            upstream_model = "big-2024"
            fallbacks = ["small"]
            [[models]]
            name = "small"
            provider = "a"
            "#,
            std::path::Path::new("."),
        )
        .unwrap();
        let c = Catalogue::new(&config);
        let t = c.targets("large");
        assert_eq!(
            t.iter()
                .map(|t| t.upstream_model.as_str())
                .collect::<Vec<_>>(),
            ["big-2024", "small"]
        );
        assert!(c.targets("nope").is_empty());
    }
}
