//! Authentication: who is calling. Takes the key from `Authorization: Bearer` or `x-api-key`,
//! checks it against the key store (with a short positive cache so that the hot path rarely
//! touches the database) and yields a [`Principal`] or a 401.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::error::ApiError;
use crate::keys::{ApiKey, KeyStore, hash_key, now_unix};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key: ApiKey,
    pub method: AuthMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ApiKey,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
        }
    }
}

pub struct Authenticator {
    store: KeyStore,
    ttl: Duration,
    /// Valid keys seen recently, by hash. Unknown keys are not cached, so the map only grows
    /// with the number of real keys.
    cache: RwLock<HashMap<String, (Instant, ApiKey)>>,
}

impl Authenticator {
    pub fn new(store: KeyStore, ttl: Duration) -> Self {
        Self {
            store,
            ttl,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Authenticates from the request headers. A store failure denies (fail closed).
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, ApiError> {
        let secret = credential(headers)?;
        let key_hash = hash_key(secret);
        let cached = self.cache.read().ok().and_then(|c| {
            c.get(&key_hash)
                .filter(|(at, _)| at.elapsed() < self.ttl)
                .map(|(_, k)| k.clone())
        });
        let key = match cached {
            Some(k) => k,
            None => {
                let found = self.store.find_by_hash(&key_hash).await.map_err(|e| {
                    tracing::error!(error = %e, "API key lookup failed");
                    ApiError::auth_unavailable()
                })?;
                let key = found.ok_or_else(|| {
                    ApiError::unauthorized("unknown API key; create one with `cordon keys create`")
                })?;
                if !self.ttl.is_zero()
                    && let Ok(mut c) = self.cache.write()
                {
                    c.insert(key_hash, (Instant::now(), key.clone()));
                }
                key
            }
        };
        if key.revoked {
            return Err(ApiError::unauthorized(format!(
                "API key {} has been revoked",
                key.id
            )));
        }
        if key.expires_at.is_some_and(|t| t <= now_unix()) {
            return Err(ApiError::unauthorized(format!(
                "API key {} has expired",
                key.id
            )));
        }
        Ok(Principal {
            key,
            method: AuthMethod::ApiKey,
        })
    }
}

/// The presented key: a bearer token, else `x-api-key` (what Anthropic's SDK sends).
fn credential(headers: &http::HeaderMap) -> Result<&str, ApiError> {
    let missing = || {
        ApiError::unauthorized(
            "no API key: send `Authorization: Bearer ck-...` or `x-api-key: ck-...`",
        )
    };
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.to_str().map_err(|_| missing())?;
        let token = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("the Authorization header must be `Bearer <key>`")
            })?;
        return Ok(token.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_sources() {
        let mut h = http::HeaderMap::new();
        assert_eq!(credential(&h).unwrap_err().status, 401);
        h.insert("x-api-key", "ck-a".parse().unwrap());
        assert_eq!(credential(&h).unwrap(), "ck-a");
        h.insert(http::header::AUTHORIZATION, "Bearer ck-b".parse().unwrap());
        assert_eq!(credential(&h).unwrap(), "ck-b");
        h.insert(http::header::AUTHORIZATION, "Basic x".parse().unwrap());
        assert_eq!(credential(&h).unwrap_err().status, 401);
    }
}
