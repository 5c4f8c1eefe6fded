//! Passive health of upstream providers, and the per-key request counter that policies see.
//! A provider whose connection or TLS setup failed, or that timed out, counts as down for a
//! short while; any response brings it back. Policies read the result per route
//! (`input.route_health`), and the private route skips providers that are down.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ProviderConfig;
use crate::policy::input::RouteHealth;

/// How long a provider stays down after a transport failure before it is tried again.
pub const DOWN_FOR: Duration = Duration::from_secs(10);

/// A provider served by several instances (a load balancer's pool): it is up while any
/// instance is, and one instance failing does not take the provider down.
pub trait InstancePool: Send + Sync {
    fn any_up(&self) -> bool;
}

pub struct ProviderHealth {
    epoch: Instant,
    /// Provider -> (on_prem, milliseconds since `epoch` until which it is down).
    state: HashMap<String, (bool, AtomicU64)>,
    pools: HashMap<String, Arc<dyn InstancePool>>,
}

impl ProviderHealth {
    pub fn new(
        providers: &BTreeMap<String, Arc<ProviderConfig>>,
        pools: HashMap<String, Arc<dyn InstancePool>>,
    ) -> Self {
        Self {
            epoch: Instant::now(),
            state: providers
                .iter()
                .map(|(name, p)| (name.clone(), (p.on_prem, AtomicU64::new(0))))
                .collect(),
            pools,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A transport failure: the provider is down for [`DOWN_FOR`], unless it has other
    /// instances that are up.
    pub fn mark_failed(&self, provider: &str) {
        if self.pools.get(provider).is_some_and(|p| p.any_up()) {
            return;
        }
        if let Some((_, until)) = self.state.get(provider) {
            until.store(
                self.now_ms() + DOWN_FOR.as_millis() as u64,
                Ordering::Relaxed,
            );
        }
    }

    pub fn mark_ok(&self, provider: &str) {
        if let Some((_, until)) = self.state.get(provider) {
            until.store(0, Ordering::Relaxed);
        }
    }

    pub fn is_up(&self, provider: &str) -> bool {
        self.state.get(provider).is_some_and(|(_, until)| {
            until.load(Ordering::Relaxed) <= self.now_ms()
                && self.pools.get(provider).is_none_or(|p| p.any_up())
        })
    }

    /// Whether each route has at least one provider that is up (false when it has none).
    pub fn routes(&self) -> RouteHealth {
        let up = |on_prem: bool| {
            self.state
                .iter()
                .any(|(name, (p, _))| *p == on_prem && self.is_up(name))
        };
        RouteHealth {
            private: up(true),
            hosted: up(false),
        }
    }
}

/// Requests per API key in the current minute.
#[derive(Default)]
pub struct KeyUsage {
    counts: Mutex<HashMap<String, (u64, u64)>>,
}

impl KeyUsage {
    /// Counts one request for the key and returns its count in the current minute.
    pub fn hit(&self, key_id: &str) -> Option<u64> {
        let minute = time::OffsetDateTime::now_utc().unix_timestamp() as u64 / 60;
        let mut counts = self.counts.lock().ok()?;
        let entry = counts.entry(key_id.to_owned()).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        Some(entry.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_failed_provider_is_down_until_it_answers() {
        let config = Config::from_toml(
            r#"
            [server]
            http_listen = "127.0.0.1:1"
            [dlp]
            enabled = false
            [policy]
            enabled = false
            [providers.local]
            type = "openai"
            base_url = "http://127.0.0.1:9/v1"
            on_prem = true
            [providers.cloud]
            type = "openai"
            base_url = "https://127.0.0.1:9/v1"
            [[models]]
            name = "m"
            provider = "local"
            "#,
            std::path::Path::new("."),
        )
        .unwrap();
        let h = ProviderHealth::new(&config.providers, HashMap::new());
        assert!(h.is_up("local") && h.routes().private && h.routes().hosted);
        h.mark_failed("local");
        assert!(!h.is_up("local") && !h.routes().private && h.routes().hosted);
        h.mark_ok("local");
        assert!(h.routes().private);
        assert!(!h.is_up("unknown"));
    }

    #[test]
    fn a_pooled_provider_is_up_while_any_instance_is() {
        struct Pool(std::sync::atomic::AtomicBool);
        impl InstancePool for Pool {
            fn any_up(&self) -> bool {
                self.0.load(Ordering::Relaxed)
            }
        }
        let config = Config::from_toml(
            r#"
            [server]
            http_listen = "127.0.0.1:1"
            [dlp]
            enabled = false
            [policy]
            enabled = false
            [providers.local]
            type = "private"
            endpoints = ["http://127.0.0.1:9/v1", "http://127.0.0.2:9/v1"]
            [[models]]
            name = "m"
            provider = "local"
            "#,
            std::path::Path::new("."),
        )
        .unwrap();
        let pool = Arc::new(Pool(std::sync::atomic::AtomicBool::new(true)));
        let pools = HashMap::from([("local".to_owned(), pool.clone() as Arc<dyn InstancePool>)]);
        let h = ProviderHealth::new(&config.providers, pools);
        // One instance failing leaves the provider up while the pool has another.
        h.mark_failed("local");
        assert!(h.is_up("local") && h.routes().private);
        // No instance up: the provider and the private route are down.
        pool.0.store(false, Ordering::Relaxed);
        assert!(!h.is_up("local") && !h.routes().private);
        pool.0.store(true, Ordering::Relaxed);
        assert!(h.is_up("local"));
    }

    #[test]
    fn key_usage_counts_per_key() {
        let u = KeyUsage::default();
        assert_eq!(u.hit("a"), Some(1));
        assert_eq!(u.hit("a"), Some(2));
        assert_eq!(u.hit("b"), Some(1));
    }
}
