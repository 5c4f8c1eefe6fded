//! The gateway's database: SQLite (a file in the data directory, the embedded default) or
//! PostgreSQL, chosen by the URL. Migrations for the chosen backend run when it is opened.

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed while {context}: {source}")]
    Query {
        context: &'static str,
        source: sqlx::Error,
    },
}

impl DbError {
    pub fn query(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Query { context, source }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// An open, migrated database.
#[derive(Debug, Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
}

impl Database {
    /// Connects and runs the migrations. For SQLite the file's directory is created.
    pub async fn open(url: &str) -> Result<Self, DbError> {
        install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        if backend == Backend::Sqlite
            && let Some(path) = sqlite_path(url)
            && let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| DbError::DataDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 1 } else { 8 })
            // An embedded SQLite connection cannot drop, so the ping before each acquire (a
            // round trip through sqlx's worker thread, two context switches) buys nothing there.
            .test_before_acquire(backend != Backend::Sqlite)
            // Nor does it need recycling. Without a lifetime or an idle timeout sqlx starts no
            // maintenance task, and the connection (with the worker thread it runs on) lives as
            // long as the pool: the audit writer opens one from a thread at idle priority
            // (`audit::priority`) and relies on it not being reopened from another thread.
            .idle_timeout(
                (backend != Backend::Sqlite).then_some(std::time::Duration::from_secs(600)),
            )
            .max_lifetime(
                (backend != Backend::Sqlite).then_some(std::time::Duration::from_secs(1800)),
            )
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Write-ahead logging: a commit is one append and, with NORMAL, no
                        // fsync of the main file; readers do not block the audit writer.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                        // Checkpoint every 100 pages instead of SQLite's 1000: each copy of the
                        // log into the database then takes a fraction of a millisecond, not the
                        // 2-3 ms bursts that delayed requests on a small machine (load bench,
                        // p99 at concurrency 1), for the same CPU.
                        sqlx::query("PRAGMA wal_autocheckpoint = 100")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await
            .map_err(|source| DbError::Open {
                url: redact_url(url),
                source,
            })?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Self { pool, backend })
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(DbError::query("pinging the database"))?;
        Ok(())
    }
}

fn sqlite_path(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then_some(path)
}

/// A database URL with any password removed, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:hunter2@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_url("sqlite://data/c.db"), "sqlite://data/c.db");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            sqlite_path("sqlite://data/c.db?mode=rwc"),
            Some("data/c.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }
}
