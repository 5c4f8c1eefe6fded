//! `cordon audit verify`: recomputes every chain from the stored rows and checks the signed
//! checkpoints, reporting the first record that was altered, inserted, deleted or reordered.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use serde::Serialize;

use super::store::{AuditStore, Filter, RowColumns, StoredRow};
use super::{AuditRecord, Checkpoint, GENESIS, chain_hash};
use crate::db::DbError;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub chain_id: String,
    pub seq: i64,
    pub kind: ProblemKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A row's content no longer matches its hash, or a query column disagrees with the record.
    Altered,
    /// Sequence numbers skip: rows were removed.
    Deleted,
    /// A row does not link to the one before it: inserted, or moved.
    InsertedOrReordered,
    /// A checkpoint's signature does not verify, or the chain does not reach it.
    Checkpoint,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub records: u64,
    pub chains: BTreeMap<String, i64>,
    pub checkpoints: u64,
    /// The first problem per chain, in chain order.
    pub problems: Vec<Problem>,
}

struct ChainState {
    last_seq: i64,
    head: String,
    broken: bool,
    hashes_at: BTreeMap<i64, String>,
}

/// Verifies the rows the filter selects (a time range checks each chain from its first selected
/// row). `trusted` is the public key checkpoints must be signed with; `progress` is called per
/// row.
pub async fn verify(
    store: &AuditStore,
    filter: &Filter,
    trusted: &VerifyingKey,
    mut progress: impl FnMut(),
) -> Result<Report, DbError> {
    let checkpoints = store.checkpoints().await?;
    let mut wanted: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for c in &checkpoints {
        wanted.entry(c.chain_id.clone()).or_default().push(c.seq);
    }
    let mut report = Report::default();
    let mut chains: BTreeMap<String, ChainState> = BTreeMap::new();
    let ranged = filter.from_ms.is_some() || filter.to_ms.is_some();
    store
        .scan(filter, |row| {
            progress();
            report.records += 1;
            let id = row.chained.chain_id.clone();
            let state = chains.entry(id.clone()).or_insert_with(|| ChainState {
                last_seq: if ranged { row.chained.seq - 1 } else { 0 },
                head: if ranged {
                    row.chained.prev_hash.clone()
                } else {
                    GENESIS.to_owned()
                },
                broken: false,
                hashes_at: BTreeMap::new(),
            });
            if !state.broken
                && let Some(p) = check_row(&row, state)
            {
                state.broken = true;
                report.problems.push(p);
            }
            if wanted
                .get(&id)
                .is_some_and(|s| s.contains(&row.chained.seq))
            {
                state
                    .hashes_at
                    .insert(row.chained.seq, row.chained.hash.clone());
            }
            state.last_seq = row.chained.seq;
            state.head = row.chained.hash.clone();
            true
        })
        .await?;
    for (id, s) in &chains {
        report.chains.insert(id.clone(), s.last_seq);
    }
    for c in &checkpoints {
        if let Some(p) = check_checkpoint(c, trusted, &chains, ranged) {
            report.problems.push(p);
        } else {
            report.checkpoints += 1;
        }
    }
    Ok(report)
}

fn check_row(row: &StoredRow, state: &ChainState) -> Option<Problem> {
    let c = &row.chained;
    let problem = |kind, detail: String| Problem {
        chain_id: c.chain_id.clone(),
        seq: c.seq,
        kind,
        detail,
    };
    if c.seq > state.last_seq + 1 {
        return Some(problem(
            ProblemKind::Deleted,
            format!(
                "records {} to {} are missing",
                state.last_seq + 1,
                c.seq - 1
            ),
        ));
    }
    if chain_hash(&c.chain_id, c.seq, &c.prev_hash, &c.record) != c.hash {
        return Some(problem(
            ProblemKind::Altered,
            "the record does not match its hash".into(),
        ));
    }
    if c.prev_hash != state.head {
        return Some(problem(
            ProblemKind::InsertedOrReordered,
            "the record does not link to the previous one".into(),
        ));
    }
    let record: AuditRecord = match serde_json::from_str(&c.record) {
        Ok(r) => r,
        Err(e) => {
            return Some(problem(
                ProblemKind::Altered,
                format!("the record is not readable: {e}"),
            ));
        }
    };
    let (expected, row) = (RowColumns::of(&record), &row.columns);
    let columns = [
        ("id", expected.id == row.id),
        ("time_ms", expected.time_ms == row.time_ms),
        ("user_id", expected.user_id == row.user_id),
        ("team", expected.team == row.team),
        ("api_key_id", expected.api_key_id == row.api_key_id),
        ("model", expected.model == row.model),
        ("route", expected.route == row.route),
        ("decision", expected.decision == row.decision),
        ("status", expected.status == row.status),
        ("reason_codes", expected.reason_codes == row.reason_codes),
        ("entity_types", expected.entity_types == row.entity_types),
        ("tokens_in", expected.tokens_in == row.tokens_in),
        ("tokens_out", expected.tokens_out == row.tokens_out),
        ("cost_micros", expected.cost_micros == row.cost_micros),
    ];
    columns.iter().find(|(_, same)| !same).map(|(col, _)| {
        problem(
            ProblemKind::Altered,
            format!("column `{col}` differs from the hashed record"),
        )
    })
}

fn check_checkpoint(
    c: &Checkpoint,
    trusted: &VerifyingKey,
    chains: &BTreeMap<String, ChainState>,
    ranged: bool,
) -> Option<Problem> {
    let problem = |detail: String| Problem {
        chain_id: c.chain_id.clone(),
        seq: c.seq,
        kind: ProblemKind::Checkpoint,
        detail,
    };
    if let Err(e) = c.verify(trusted) {
        return Some(problem(format!("the checkpoint {e}")));
    }
    match chains.get(&c.chain_id) {
        Some(s) => match s.hashes_at.get(&c.seq) {
            Some(h) if *h == c.hash => None,
            Some(_) => Some(problem(
                "the record at the checkpoint has another hash than the one signed".into(),
            )),
            None if !ranged && s.last_seq < c.seq => Some(problem(format!(
                "the chain ends at {} but a signed checkpoint covers {}: records were deleted",
                s.last_seq, c.seq
            ))),
            None => None,
        },
        None if !ranged => Some(problem(
            "a signed checkpoint names a chain that has no records: they were deleted".into(),
        )),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::sample;
    use crate::db::Database;
    use ed25519_dalek::SigningKey;

    #[tokio::test]
    async fn verify_on_sqlite_passes_then_finds_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let store = AuditStore::new(Database::open(&url).await.unwrap());
        let key = SigningKey::from_bytes(&[9; 32]);
        let mut chain = crate::audit::Chain::new("one");
        // More rows than one SQLite statement takes, and a remainder of 7 (statements of 4, 2
        // and 1 rows).
        let n = 2 * crate::audit::store::SQLITE_BATCH_ROWS + 7;
        let rows: Vec<StoredRow> = (0..n)
            .map(|i| {
                let r = sample(&format!("r{i}"));
                StoredRow::of(chain.append(&r), &r)
            })
            .collect();
        store.append(&rows).await.unwrap();
        // A replayed spool inserts nothing twice.
        store.append(&rows[..7]).await.unwrap();
        store
            .add_checkpoint(&Checkpoint::sign(&key, &chain, 1))
            .await
            .unwrap();
        let ok = verify(&store, &Filter::default(), &key.verifying_key(), || {})
            .await
            .unwrap();
        assert!(ok.problems.is_empty(), "{:?}", ok.problems);
        assert_eq!((ok.records, ok.checkpoints), (n as u64, 1));
        // The triggers refuse the edit; an attacker drops them first.
        let e = sqlx::query("UPDATE audit_log SET status = 500 WHERE seq = 2")
            .execute(&store.db.pool)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("append-only"), "{e}");
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(&store.db.pool)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_log SET record = replace(record, '\"latency_ms\":12', '\"latency_ms\":1') WHERE seq = 2")
            .execute(&store.db.pool)
            .await
            .unwrap();
        let bad = verify(&store, &Filter::default(), &key.verifying_key(), || {})
            .await
            .unwrap();
        assert_eq!(bad.problems.len(), 1, "{:?}", bad.problems);
        assert_eq!(
            (bad.problems[0].seq, bad.problems[0].kind),
            (2, ProblemKind::Altered)
        );
    }
}
