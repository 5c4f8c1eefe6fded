//! Scoped API keys: random `ck-` keys shown once at creation and stored only as a SHA-256 hash,
//! with an owner, a team, the models they may use, an expiry and a revoked flag.

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{Database, DbError};

pub const KEY_PREFIX: &str = "ck-";

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ApiKey {
    pub id: String,
    /// The first characters of the key, to recognise it in listings.
    pub prefix: String,
    pub name: String,
    pub owner: String,
    pub team: String,
    /// Models (catalogue names) this key may use; empty means every model.
    pub allowed_models: Vec<String>,
    /// Groups, roles and attributes of the key's holder, for policies.
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked: bool,
}

impl ApiKey {
    pub fn may_use(&self, model: &str) -> bool {
        self.allowed_models.is_empty() || self.allowed_models.iter().any(|m| m == model)
    }
}

/// What `cordon keys create` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: String,
    pub owner: String,
    pub team: String,
    pub allowed_models: Vec<String>,
    pub groups: Vec<String>,
    pub roles: Vec<String>,
    pub attributes: std::collections::BTreeMap<String, String>,
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct KeyStore {
    db: Database,
}

/// SHA-256 of the key, hex: the only form in which a key is stored or compared.
pub fn hash_key(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl KeyStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Creates a key and returns it with its secret, which is never stored and cannot be shown
    /// again.
    pub async fn create(&self, new: NewKey) -> Result<(ApiKey, String), DbError> {
        let mut raw = [0u8; 24];
        rand::rng().fill_bytes(&mut raw);
        let secret = format!("{KEY_PREFIX}{}", hex::encode(raw));
        let mut id_raw = [0u8; 8];
        rand::rng().fill_bytes(&mut id_raw);
        let key = ApiKey {
            id: format!("key_{}", hex::encode(id_raw)),
            prefix: secret[..KEY_PREFIX.len() + 6].to_owned(),
            name: new.name,
            owner: new.owner,
            team: new.team,
            allowed_models: new.allowed_models,
            groups: new.groups,
            roles: new.roles,
            attributes: new.attributes,
            created_at: now_unix(),
            expires_at: new.expires_at,
            revoked: false,
        };
        sqlx::query(
            "INSERT INTO api_keys (id, key_hash, prefix, name, owner, team, allowed_models, created_at, expires_at, revoked, groups, roles, attributes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 0, $10, $11, $12)",
        )
        .bind(&key.id)
        .bind(hash_key(&secret))
        .bind(&key.prefix)
        .bind(&key.name)
        .bind(&key.owner)
        .bind(&key.team)
        .bind(serde_json::to_string(&key.allowed_models).unwrap_or_else(|_| "[]".into()))
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(json(&key.groups))
        .bind(json(&key.roles))
        .bind(json(&key.attributes))
        .execute(&self.db.pool)
        .await
        .map_err(DbError::query("creating an API key"))?;
        Ok((key, secret))
    }

    pub async fn list(&self) -> Result<Vec<ApiKey>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.db.pool)
        .await
        .map_err(DbError::query("listing API keys"))?;
        rows.iter().map(row_to_key).collect()
    }

    /// Marks a key revoked; false when no key has that id.
    pub async fn revoke(&self, id: &str) -> Result<bool, DbError> {
        let done = sqlx::query("UPDATE api_keys SET revoked = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.db.pool)
            .await
            .map_err(DbError::query("revoking an API key"))?;
        Ok(done.rows_affected() > 0)
    }

    /// The key whose hash matches, whatever its state; the caller decides what an expired or
    /// revoked key means.
    pub async fn find_by_hash(&self, key_hash: &str) -> Result<Option<ApiKey>, DbError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM api_keys WHERE key_hash = $1"
        ))
        .bind(key_hash)
        .fetch_optional(&self.db.pool)
        .await
        .map_err(DbError::query("looking up an API key"))?;
        row.as_ref().map(row_to_key).transpose()
    }
}

const COLUMNS: &str = "id, prefix, name, owner, team, allowed_models, created_at, expires_at, revoked, groups, roles, attributes";

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn row_to_key(row: &sqlx::any::AnyRow) -> Result<ApiKey, DbError> {
    let get = DbError::query("reading an API key row");
    let inner = || -> Result<ApiKey, sqlx::Error> {
        let models: String = row.try_get("allowed_models")?;
        fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, sqlx::Error> {
            serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
        }
        let groups: String = row.try_get("groups")?;
        let roles: String = row.try_get("roles")?;
        let attributes: String = row.try_get("attributes")?;
        Ok(ApiKey {
            id: row.try_get("id")?,
            prefix: row.try_get("prefix")?,
            name: row.try_get("name")?,
            owner: row.try_get("owner")?,
            team: row.try_get("team")?,
            allowed_models: serde_json::from_str(&models)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            groups: parse(&groups)?,
            roles: parse(&roles)?,
            attributes: parse(&attributes)?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked: row.try_get::<i64, _>("revoked")? != 0,
        })
    };
    inner().map_err(get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_find_revoke_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("k.db").display());
        let store = KeyStore::new(Database::open(&url).await.unwrap());
        let (key, secret) = store
            .create(NewKey {
                name: "ci".into(),
                owner: "alice".into(),
                team: "risk".into(),
                allowed_models: vec!["gpt-4o".into()],
                groups: vec!["llm-premium".into()],
                roles: vec!["analyst".into()],
                attributes: [("department".to_owned(), "risk".to_owned())].into(),
                expires_at: None,
            })
            .await
            .unwrap();
        assert!(secret.starts_with("ck-") && secret.len() == 3 + 48);
        let found = store
            .find_by_hash(&hash_key(&secret))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found, key);
        assert!(found.may_use("gpt-4o") && !found.may_use("other"));
        assert!(
            store
                .find_by_hash(&hash_key("ck-wrong"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.revoke(&key.id).await.unwrap());
        assert!(!store.revoke("key_missing").await.unwrap());
        assert!(store.list().await.unwrap()[0].revoked);
    }
}
