//! The audit tables in the gateway's database (SQLite or PostgreSQL): batched appends that are
//! idempotent (replaying a spool twice inserts nothing twice), chain heads, checkpoints, and
//! the rows an auditor reads.

use futures::TryStreamExt;
use sqlx::Row;

use super::{AuditRecord, Chain, ChainedRecord, Checkpoint};
use crate::db::{Database, DbError};

/// Rows per INSERT statement on PostgreSQL (19 parameters each, well inside its limits).
pub const BATCH_ROWS: usize = 400;
/// Rows per INSERT statement on SQLite. Its parameters are anonymous (`?`): sqlx's SQLite
/// driver asks SQLite for each parameter's name, and for numbered ones (`$1`) SQLite scans the
/// statement's name list every time, so that 400 numbered rows (7,600 parameters) made
/// `sqlite3_bind_parameter_name` the gateway's top function under load.
///
/// A shorter remainder is written as statements of power-of-two lengths (46 rows: 32, 8, 4 and
/// 2), so that a connection caches seven INSERT statements rather than one for every length from
/// 1 to 64: sqlx keeps each prepared statement, and a 64-row one holds about 280 KB in SQLite,
/// so that all 64 lengths took about 9 MB on every connection.
pub const SQLITE_BATCH_ROWS: usize = 64;

const COLUMNS: &str = "chain_id, seq, id, time_ms, user_id, team, api_key_id, model, route, decision, status, reason_codes, entity_types, tokens_in, tokens_out, cost_micros, record, prev_hash, hash";
/// Parameters per row: one per name in [`COLUMNS`].
const COLUMN_COUNT: usize = {
    let (bytes, mut i, mut n) = (COLUMNS.as_bytes(), 0, 1);
    while i < bytes.len() {
        if bytes[i] == b',' {
            n += 1;
        }
        i += 1;
    }
    n
};

/// One stored row: the chained record and the query columns stored beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub chained: ChainedRecord,
    pub columns: RowColumns,
}

impl StoredRow {
    /// The row a record should be stored as.
    pub fn of(chained: ChainedRecord, r: &AuditRecord) -> Self {
        Self {
            chained,
            columns: RowColumns::of(r),
        }
    }
}

/// The query columns of a record, stored beside its canonical JSON: all the writer keeps of a
/// record while it waits (the JSON holds the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct RowColumns {
    pub id: String,
    pub time_ms: i64,
    pub user_id: Option<String>,
    pub team: Option<String>,
    pub api_key_id: Option<String>,
    pub model: Option<String>,
    pub route: Option<String>,
    pub decision: String,
    pub status: i64,
    pub reason_codes: String,
    pub entity_types: String,
    pub tokens_in: Option<i64>,
    pub tokens_out: Option<i64>,
    pub cost_micros: Option<i64>,
}

impl RowColumns {
    pub fn of(r: &AuditRecord) -> Self {
        Self {
            id: r.id.clone(),
            time_ms: r.time_ms,
            user_id: r.user_id.clone(),
            team: r.team.clone(),
            api_key_id: r.api_key_id.clone(),
            model: r.requested_model.clone(),
            route: r.route.clone(),
            decision: r.decision.clone(),
            status: i64::from(r.status),
            reason_codes: r.reason_codes_column(),
            entity_types: r.entity_types_column(),
            tokens_in: r.tokens_in.map(|t| t as i64),
            tokens_out: r.tokens_out.map(|t| t as i64),
            cost_micros: r.cost_micros,
        }
    }
}

/// `INSERT ... VALUES (...), (...)` for `rows` rows: anonymous `?` parameters on SQLite (see
/// [`SQLITE_BATCH_ROWS`]), numbered `$n` ones on PostgreSQL.
fn insert_sql(rows: usize, sqlite: bool) -> String {
    use std::fmt::Write;
    let mut sql = format!("INSERT INTO audit_log ({COLUMNS}) VALUES ");
    for i in 0..rows {
        sql.push_str(if i > 0 { ",(" } else { "(" });
        for c in 0..COLUMN_COUNT {
            if c > 0 {
                sql.push(',');
            }
            if sqlite {
                sql.push('?');
            } else {
                let _ = write!(sql, "${}", i * COLUMN_COUNT + c + 1);
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (chain_id, seq) DO NOTHING");
    sql
}

/// How many of `left` rows the next INSERT statement takes: `per_statement` while that many are
/// left, then on SQLite the largest power of two (see [`SQLITE_BATCH_ROWS`]).
fn statement_rows(left: usize, per_statement: usize, sqlite: bool) -> usize {
    if left >= per_statement || !sqlite {
        left.min(per_statement)
    } else {
        1 << left.ilog2()
    }
}

#[derive(Debug, Clone)]
pub struct AuditStore {
    pub db: Database,
}

impl AuditStore {
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Appends rows (any number; split into statements of [`BATCH_ROWS`], or
    /// [`SQLITE_BATCH_ROWS`] on SQLite) in one transaction.
    /// Rows already stored (same chain and seq) are skipped.
    pub async fn append(&self, rows: &[StoredRow]) -> Result<(), DbError> {
        let mut tx = self
            .db
            .pool
            .begin()
            .await
            .map_err(DbError::query("starting an audit transaction"))?;
        let sqlite = self.db.backend == crate::db::Backend::Sqlite;
        let per_statement = if sqlite {
            SQLITE_BATCH_ROWS
        } else {
            BATCH_ROWS
        };
        let mut rest = rows;
        while !rest.is_empty() {
            let len = statement_rows(rest.len(), per_statement, sqlite);
            let (chunk, after) = rest.split_at(len);
            rest = after;
            let sql = insert_sql(chunk.len(), sqlite);
            let mut q = sqlx::query(&sql);
            for r in chunk {
                // Bound by reference: the rows outlive the statement, so no column is copied.
                let c = &r.columns;
                q = q
                    .bind(r.chained.chain_id.as_str())
                    .bind(r.chained.seq)
                    .bind(c.id.as_str())
                    .bind(c.time_ms)
                    .bind(c.user_id.as_deref())
                    .bind(c.team.as_deref())
                    .bind(c.api_key_id.as_deref())
                    .bind(c.model.as_deref())
                    .bind(c.route.as_deref())
                    .bind(c.decision.as_str())
                    .bind(c.status as i32)
                    .bind(c.reason_codes.as_str())
                    .bind(c.entity_types.as_str())
                    .bind(c.tokens_in)
                    .bind(c.tokens_out)
                    .bind(c.cost_micros)
                    .bind(r.chained.record.as_str())
                    .bind(r.chained.prev_hash.as_str())
                    .bind(r.chained.hash.as_str());
            }
            q.execute(&mut *tx)
                .await
                .map_err(DbError::query("appending audit records"))?;
        }
        tx.commit()
            .await
            .map_err(DbError::query("committing audit records"))
    }

    pub async fn add_checkpoint(&self, c: &Checkpoint) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (chain_id, seq, hash, time_ms, public_key, signature) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (chain_id, seq) DO NOTHING",
        )
        .bind(c.chain_id.clone())
        .bind(c.seq)
        .bind(c.hash.clone())
        .bind(c.time_ms)
        .bind(c.public_key.clone())
        .bind(c.signature.clone())
        .execute(&self.db.pool)
        .await
        .map_err(DbError::query("writing an audit checkpoint"))?;
        Ok(())
    }

    /// The stored head of a chain (a new chain when it has no rows).
    pub async fn head(&self, chain_id: &str) -> Result<Chain, DbError> {
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_log WHERE chain_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(chain_id.to_owned())
        .fetch_optional(&self.db.pool)
        .await
        .map_err(DbError::query("reading the audit chain head"))?;
        let mut chain = Chain::new(chain_id);
        if let Some(row) = row {
            chain.seq = row
                .try_get("seq")
                .map_err(DbError::query("reading the audit chain head"))?;
            chain.head = row
                .try_get("hash")
                .map_err(DbError::query("reading the audit chain head"))?;
        }
        Ok(chain)
    }

    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, DbError> {
        let rows = sqlx::query(
            "SELECT chain_id, seq, hash, time_ms, public_key, signature FROM audit_checkpoints ORDER BY chain_id, seq",
        )
        .fetch_all(&self.db.pool)
        .await
        .map_err(DbError::query("reading audit checkpoints"))?;
        rows.iter()
            .map(|r| {
                Ok(Checkpoint {
                    chain_id: r.try_get("chain_id")?,
                    seq: r.try_get("seq")?,
                    hash: r.try_get("hash")?,
                    time_ms: r.try_get("time_ms")?,
                    public_key: r.try_get("public_key")?,
                    signature: r.try_get("signature")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DbError::query("reading audit checkpoints"))
    }

    /// Number of rows matching a filter (for progress bars).
    pub async fn count(&self, filter: &Filter) -> Result<i64, DbError> {
        let (clause, binds) = filter.sql();
        let sql = format!("SELECT COUNT(*) AS n FROM audit_log{clause}");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = b.bind(q);
        }
        let row = q
            .fetch_one(&self.db.pool)
            .await
            .map_err(DbError::query("counting audit records"))?;
        row.try_get::<i64, _>("n")
            .map_err(DbError::query("counting audit records"))
    }

    /// Streams matching rows in chain order (chain id, then seq) to `f`; stops early when `f`
    /// returns false.
    pub async fn scan(
        &self,
        filter: &Filter,
        mut f: impl FnMut(StoredRow) -> bool,
    ) -> Result<(), DbError> {
        let (clause, binds) = filter.sql();
        let sql = format!("SELECT {COLUMNS} FROM audit_log{clause} ORDER BY chain_id, seq");
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = b.bind(q);
        }
        let mut rows = q.fetch(&self.db.pool);
        while let Some(row) = rows
            .try_next()
            .await
            .map_err(DbError::query("reading audit records"))?
        {
            let read = || -> Result<StoredRow, sqlx::Error> {
                Ok(StoredRow {
                    chained: ChainedRecord {
                        chain_id: row.try_get("chain_id")?,
                        seq: row.try_get("seq")?,
                        prev_hash: row.try_get("prev_hash")?,
                        hash: row.try_get("hash")?,
                        record: row.try_get("record")?,
                    },
                    columns: RowColumns {
                        id: row.try_get("id")?,
                        time_ms: row.try_get("time_ms")?,
                        user_id: row.try_get("user_id")?,
                        team: row.try_get("team")?,
                        api_key_id: row.try_get("api_key_id")?,
                        model: row.try_get("model")?,
                        route: row.try_get("route")?,
                        decision: row.try_get("decision")?,
                        status: i64::from(row.try_get::<i32, _>("status")?),
                        reason_codes: row.try_get("reason_codes")?,
                        entity_types: row.try_get("entity_types")?,
                        tokens_in: row.try_get("tokens_in")?,
                        tokens_out: row.try_get("tokens_out")?,
                        cost_micros: row.try_get("cost_micros")?,
                    },
                })
            };
            let stored = read().map_err(DbError::query("reading an audit record"))?;
            if !f(stored) {
                break;
            }
        }
        Ok(())
    }
}

/// What `cordon audit query|export|stats|verify` select.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub chain_id: Option<String>,
    pub user_id: Option<String>,
    pub team: Option<String>,
    pub api_key_id: Option<String>,
    pub model: Option<String>,
    pub route: Option<String>,
    pub decision: Option<String>,
    pub reason_code: Option<String>,
    pub entity_type: Option<String>,
}

pub enum Bind {
    I(i64),
    S(String),
}

impl Bind {
    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
        match self {
            Self::I(v) => q.bind(v),
            Self::S(v) => q.bind(v),
        }
    }
}

impl Filter {
    fn sql(&self) -> (String, Vec<Bind>) {
        let mut conds = Vec::new();
        let mut binds = Vec::new();
        let mut push = |cond: &str, b: Bind| {
            binds.push(b);
            conds.push(cond.replace('?', &format!("${}", binds.len())));
        };
        if let Some(v) = self.from_ms {
            push("time_ms >= ?", Bind::I(v));
        }
        if let Some(v) = self.to_ms {
            push("time_ms < ?", Bind::I(v));
        }
        for (col, v) in [
            ("chain_id", &self.chain_id),
            ("user_id", &self.user_id),
            ("team", &self.team),
            ("api_key_id", &self.api_key_id),
            ("model", &self.model),
            ("route", &self.route),
            ("decision", &self.decision),
        ] {
            if let Some(v) = v {
                push(&format!("{col} = ?"), Bind::S(v.clone()));
            }
        }
        if let Some(v) = &self.reason_code {
            push("reason_codes LIKE ?", Bind::S(format!("%,{v},%")));
        }
        if let Some(v) = &self.entity_type {
            push("entity_types LIKE ?", Bind::S(format!("%,{v},%")));
        }
        if conds.is_empty() {
            (String::new(), binds)
        } else {
            (format!(" WHERE {}", conds.join(" AND ")), binds)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statement lengths a transaction of `n` rows uses.
    fn lengths(n: usize, sqlite: bool) -> Vec<usize> {
        let per = if sqlite {
            SQLITE_BATCH_ROWS
        } else {
            BATCH_ROWS
        };
        let (mut left, mut out) = (n, Vec::new());
        while left > 0 {
            let len = statement_rows(left, per, sqlite);
            out.push(len);
            left -= len;
        }
        out
    }

    #[test]
    fn sqlite_statements_come_in_seven_lengths() {
        assert_eq!(lengths(46, true), [32, 8, 4, 2]);
        assert_eq!(lengths(64 * 3 + 7, true), [64, 64, 64, 4, 2, 1]);
        let mut seen = std::collections::BTreeSet::new();
        for n in 1..=1000 {
            let l = lengths(n, true);
            assert_eq!(l.iter().sum::<usize>(), n);
            seen.extend(l);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            [1, 2, 4, 8, 16, 32, 64]
        );
        // On PostgreSQL: full statements, then the rest in one.
        assert_eq!(lengths(BATCH_ROWS + 46, false), [BATCH_ROWS, 46]);
    }
}
