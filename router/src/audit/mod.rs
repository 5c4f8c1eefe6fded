//! The tamper-evident audit log: one [`AuditRecord`] per request (allowed, denied or failed),
//! chained per gateway instance and stored in the gateway's database. A library module with no
//! Pingora in it: the gateway builds records in its logging phase and hands them to the
//! [`writer`]; auditors read them with [`verify`] and [`report`].
//!
//! Tamper evidence: each row carries its chain id, a sequence number, the previous row's hash
//! and its own hash, SHA-256 over `chain_id \n seq \n prev_hash \n record`, where `record` is the
//! canonical JSON of the record (fields in declaration order, as stored). Every N records and at
//! shutdown the chain head is signed with the instance's Ed25519 key (a checkpoint), so that
//! rewriting the whole chain, or cutting its tail, is detected too.

pub mod priority;
pub mod report;
pub mod store;
pub mod verify;
pub mod writer;

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash a chain starts from.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: {0}")]
    Store(#[from] crate::db::DbError),
    #[error("audit spool {path}: {source}")]
    Spool {
        path: String,
        source: std::io::Error,
    },
    #[error("audit signing key: {0}")]
    Key(String),
    #[error("audit record: {0}")]
    Record(String),
    #[error("audit writes at idle priority: {0}")]
    Priority(String),
}

/// What DLP found, per entity type: never the values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFinding {
    pub entity_type: String,
    pub count: u64,
    pub locations: Vec<String>,
}

/// One request, as the audit log keeps it. Field order is the canonical order: do not reorder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The request id, which is also the decision id (`x-cordon-decision-id`).
    pub id: String,
    pub time_ms: i64,
    pub user_id: Option<String>,
    pub api_key_id: Option<String>,
    pub team: Option<String>,
    pub auth_method: Option<String>,
    pub source_ip: Option<String>,
    /// `chat`, `completions`, `embeddings`, `messages`, or the endpoint label for others.
    pub api: String,
    pub requested_model: Option<String>,
    /// `private` or `hosted`, when routed.
    pub route: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub policy_version: Option<String>,
    /// The DLP rule packs that scanned the request (their `/readyz` version).
    #[serde(default)]
    pub dlp_version: Option<String>,
    /// `allow`, `deny`, `error` (the policy could not decide) or `none` (the request ended
    /// before the policy ran, e.g. a 401).
    pub decision: String,
    pub reason_codes: Vec<String>,
    pub dlp_findings: Vec<AuditFinding>,
    /// Entity type (or `PREFIX_*`) -> action, as applied.
    pub dlp_actions: BTreeMap<String, String>,
    pub obligations: Option<serde_json::Value>,
    /// The shadow bundle's outcome, when one is configured.
    pub shadow: Option<serde_json::Value>,
    pub status: u16,
    pub latency_ms: u64,
    pub upstream_ms: Option<u64>,
    pub tokens_in: Option<u64>,
    pub tokens_out: Option<u64>,
    /// Estimated cost in millionths of the price table's currency.
    pub cost_micros: Option<i64>,
    pub stream: bool,
    /// The error code the client got (`upstream_timeout`, `policy_denied`, ...), if any.
    pub error_class: Option<String>,
    pub fail_open: bool,
    /// The prompt after masking, kept only when the decision's obligations ask for it.
    pub prompt: Option<String>,
}

impl AuditRecord {
    pub fn canonical(&self) -> String {
        // Serialising a struct of strings, numbers, maps and vectors cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `,A,B,` forms stored for LIKE filters.
    pub fn reason_codes_column(&self) -> String {
        delimited(self.reason_codes.iter().map(String::as_str))
    }

    pub fn entity_types_column(&self) -> String {
        delimited(self.dlp_findings.iter().map(|f| f.entity_type.as_str()))
    }
}

fn delimited<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::from(",");
    for i in items {
        s.push_str(i);
        s.push(',');
    }
    s
}

/// A record with its place in a chain, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChainedRecord {
    pub chain_id: String,
    pub seq: i64,
    pub prev_hash: String,
    pub hash: String,
    /// The canonical JSON of the record: exactly what was hashed.
    pub record: String,
}

pub fn chain_hash(chain_id: &str, seq: i64, prev_hash: &str, record: &str) -> String {
    let mut h = Sha256::new();
    h.update(chain_id.as_bytes());
    h.update(b"\n");
    h.update(seq.to_string().as_bytes());
    h.update(b"\n");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(record.as_bytes());
    hex::encode(h.finalize())
}

/// The head of one chain, advanced record by record.
#[derive(Debug, Clone)]
pub struct Chain {
    pub chain_id: String,
    pub seq: i64,
    pub head: String,
}

impl Chain {
    pub fn new(chain_id: impl Into<String>) -> Self {
        Self {
            chain_id: chain_id.into(),
            seq: 0,
            head: GENESIS.to_owned(),
        }
    }

    pub fn append(&mut self, record: &AuditRecord) -> ChainedRecord {
        self.append_canonical(record.canonical())
    }

    /// Appends a record given as its canonical JSON ([`AuditRecord::canonical`]).
    pub fn append_canonical(&mut self, record: String) -> ChainedRecord {
        let seq = self.seq + 1;
        let hash = chain_hash(&self.chain_id, seq, &self.head, &record);
        let out = ChainedRecord {
            chain_id: self.chain_id.clone(),
            seq,
            prev_hash: std::mem::replace(&mut self.head, hash.clone()),
            hash,
            record,
        };
        self.seq = seq;
        out
    }
}

/// A signed chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub chain_id: String,
    pub seq: i64,
    pub hash: String,
    pub time_ms: i64,
    /// Hex of the Ed25519 public key that signed it.
    pub public_key: String,
    pub signature: String,
}

fn checkpoint_message(chain_id: &str, seq: i64, hash: &str, time_ms: i64) -> String {
    format!("cordon-audit-checkpoint/v1\n{chain_id}\n{seq}\n{hash}\n{time_ms}")
}

impl Checkpoint {
    pub fn sign(key: &SigningKey, chain: &Chain, time_ms: i64) -> Self {
        let msg = checkpoint_message(&chain.chain_id, chain.seq, &chain.head, time_ms);
        Self {
            chain_id: chain.chain_id.clone(),
            seq: chain.seq,
            hash: chain.head.clone(),
            time_ms,
            public_key: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(key.sign(msg.as_bytes()).to_bytes()),
        }
    }

    /// Checks the signature against `trusted` (the auditor's copy of the public key).
    pub fn verify(&self, trusted: &VerifyingKey) -> Result<(), String> {
        if self.public_key != hex::encode(trusted.as_bytes()) {
            return Err("was signed by another key than the trusted one".into());
        }
        let sig: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("has a malformed signature")?;
        let msg = checkpoint_message(&self.chain_id, self.seq, &self.hash, self.time_ms);
        trusted
            .verify(msg.as_bytes(), &ed25519_dalek::Signature::from_bytes(&sig))
            .map_err(|_| "has an invalid signature".to_owned())
    }
}

/// Reads a signing key: 64 hex characters (the 32-byte Ed25519 seed).
pub fn signing_key_from_hex(text: &str) -> Result<SigningKey, AuditError> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            AuditError::Key("expected 64 hex characters (a 32-byte Ed25519 seed)".into())
        })?;
    Ok(SigningKey::from_bytes(&bytes))
}

pub fn verifying_key_from_hex(text: &str) -> Result<VerifyingKey, AuditError> {
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            AuditError::Key("expected 64 hex characters (a 32-byte Ed25519 public key)".into())
        })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| AuditError::Key(e.to_string()))
}

#[cfg(test)]
pub(crate) fn sample(id: &str) -> AuditRecord {
    AuditRecord {
        id: id.to_owned(),
        time_ms: 1_795_000_000_000,
        user_id: Some("alice".into()),
        api_key_id: Some("key_1".into()),
        team: Some("risk".into()),
        auth_method: Some("api_key".into()),
        source_ip: Some("10.0.0.1".into()),
        api: "chat".into(),
        requested_model: Some("gpt-test".into()),
        route: Some("hosted".into()),
        provider: Some("openai".into()),
        upstream_model: Some("gpt-upstream".into()),
        policy_version: Some("sha256:00".into()),
        dlp_version: Some("ab12".into()),
        decision: "allow".into(),
        reason_codes: vec![],
        dlp_findings: vec![AuditFinding {
            entity_type: "EMAIL_ADDRESS".into(),
            count: 1,
            locations: vec!["messages[0].content".into()],
        }],
        dlp_actions: [("EMAIL_ADDRESS".to_owned(), "pseudonymise".to_owned())].into(),
        obligations: None,
        shadow: None,
        status: 200,
        latency_ms: 12,
        upstream_ms: Some(10),
        tokens_in: Some(5),
        tokens_out: Some(7),
        cost_micros: Some(42),
        stream: false,
        error_class: None,
        fail_open: false,
        prompt: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_links_each_record_to_the_previous_one() {
        let mut c = Chain::new("gw-1");
        let a = c.append(&sample("a"));
        let b = c.append(&sample("b"));
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(a.prev_hash, GENESIS);
        assert_eq!(b.prev_hash, a.hash);
        assert_eq!(b.hash, chain_hash("gw-1", 2, &a.hash, &b.record));
        // The record round-trips exactly, so a verifier recomputes the same text.
        let back: AuditRecord = serde_json::from_str(&b.record).unwrap();
        assert_eq!(back.canonical(), b.record);
        assert_eq!(c.head, b.hash);
    }

    #[test]
    fn checkpoints_verify_only_with_the_trusted_key() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut c = Chain::new("gw-1");
        c.append(&sample("a"));
        let cp = Checkpoint::sign(&key, &c, 5);
        cp.verify(&key.verifying_key()).unwrap();
        let mut forged = cp.clone();
        forged.hash = GENESIS.into();
        assert!(forged.verify(&key.verifying_key()).is_err());
        let other = SigningKey::from_bytes(&[8; 32]);
        let resigned = Checkpoint::sign(&other, &c, 5);
        assert!(resigned.verify(&key.verifying_key()).is_err());
    }
}
