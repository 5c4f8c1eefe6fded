//! Which CPU time the SQLite audit writes may take (`audit.yield_cpu`). SQLite does its work on
//! the thread sqlx starts for each connection, and on a small machine that thread's bursts (a
//! batch insert, a WAL checkpoint) delayed requests: lower `nice` values did not help, because
//! the kernel still lets a running thread finish its slice before a woken request thread runs.
//! So on Linux the writer keeps a second connection whose worker thread has the `SCHED_IDLE`
//! policy, which runs only on CPU time that nothing else wants.
//!
//! Idle-priority work starves on a busy machine, and an unprivileged thread cannot leave
//! `SCHED_IDLE` again. So the writer writes at idle priority in transactions of [`IDLE_ROWS`]
//! rows, and after each one looks at how long its oldest record waited to be stored
//! ([`Yielding`]): longer than [`BEHIND`] means there is too little idle CPU to keep up, and the
//! writer uses its normal connection for [`HOLD`] before it tries again. PostgreSQL does its
//! work in the database server, so none of this applies there.
//!
//! Off by default: on the load bench's 2-core machine it cut the added p99 at concurrency 1
//! from about 510 to 260-290 µs, but each fall-back under full load lets up to [`BEHIND`] of
//! records queue, and with the second connection peak RSS at concurrency 64 rose from 56-58 to
//! 66-69 MiB.

use std::time::{Duration, Instant};

use super::AuditError;
use super::store::AuditStore;
use crate::db::Database;

/// A record stored this long after it was sealed means the idle-priority writes are not keeping
/// up (they wait up to the writer's 10 ms linger, and a transaction takes about a millisecond).
pub const BEHIND: Duration = Duration::from_millis(100);
/// Rows per idle-priority transaction: one SQLite INSERT statement
/// ([`super::store::SQLITE_BATCH_ROWS`]).
pub const IDLE_ROWS: usize = super::store::SQLITE_BATCH_ROWS;
/// How long the writer stays at normal priority after the idle-priority writes fell behind.
pub const HOLD: Duration = Duration::from_secs(10);

/// The audit store through a connection whose SQLite thread runs at `SCHED_IDLE`. Dropping it
/// ends the thread that opened it.
pub struct IdleStore {
    pub store: AuditStore,
    /// The opening thread waits for this to drop: its runtime runs the tasks sqlx spawned while
    /// opening (returning the first connection to the pool), which would be dropped, and that
    /// connection closed, if the runtime ended.
    _opener: tokio::sync::oneshot::Sender<()>,
}

/// Opens `url` from a new thread that has set itself to `SCHED_IDLE`, so that the worker thread
/// sqlx starts for the SQLite connection inherits the policy. sqlx never recycles the
/// connection (see [`Database::open`]); one that breaks is reopened from the writer's thread,
/// at normal priority.
pub async fn open_idle(url: &str) -> Result<IdleStore, AuditError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let url = url.to_owned();
    std::thread::Builder::new()
        .name("cordon-audit-idle".into())
        .spawn(move || {
            let rt = set_idle().and_then(|()| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| AuditError::Priority(format!("cannot start a runtime: {e}")))
            });
            let rt = match rt {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            rt.block_on(async move {
                match Database::open(&url).await {
                    Ok(db) => {
                        let (opener, done) = tokio::sync::oneshot::channel();
                        let store = AuditStore::new(db);
                        // If the writer stopped waiting, the store is dropped here.
                        if tx
                            .send(Ok(IdleStore {
                                store,
                                _opener: opener,
                            }))
                            .is_ok()
                        {
                            let _ = done.await;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into()));
                    }
                }
            });
        })
        .map_err(|e| AuditError::Priority(format!("cannot start a thread: {e}")))?;
    rx.await
        .map_err(|_| AuditError::Priority("the opening thread stopped".into()))?
}

#[cfg(target_os = "linux")]
fn set_idle() -> Result<(), AuditError> {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
    .map_err(|e| AuditError::Priority(format!("cannot set SCHED_IDLE: {e:?}")))
}

#[cfg(not(target_os = "linux"))]
fn set_idle() -> Result<(), AuditError> {
    Err(AuditError::Priority(
        "SCHED_IDLE exists only on Linux".into(),
    ))
}

/// The writer's choice of priority, transaction by transaction.
#[derive(Debug, Default)]
pub struct Yielding {
    /// Set while the writer stays at normal priority after it fell behind.
    normal_until: Option<Instant>,
}

impl Yielding {
    /// Whether the next transaction may run at idle priority.
    pub fn idle(&mut self, now: Instant) -> bool {
        match self.normal_until {
            Some(until) if now < until => false,
            _ => {
                self.normal_until = None;
                true
            }
        }
    }

    /// Records how long the oldest record of an idle-priority transaction waited to be stored.
    /// Returns true when that is too long: the writer then stays at normal priority for
    /// [`HOLD`].
    pub fn wrote(&mut self, waited: Duration, now: Instant) -> bool {
        let behind = waited > BEHIND;
        if behind {
            self.normal_until = Some(now + HOLD);
        }
        behind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn falling_behind_holds_normal_priority_then_yields_again() {
        let mut y = Yielding::default();
        let t0 = Instant::now();
        assert!(y.idle(t0));
        assert!(!y.wrote(Duration::from_millis(12), t0));
        assert!(y.idle(t0 + Duration::from_millis(1)));
        assert!(y.wrote(BEHIND + Duration::from_millis(1), t0));
        assert!(!y.idle(t0 + Duration::from_secs(1)));
        assert!(!y.idle(t0 + HOLD - Duration::from_millis(1)));
        assert!(y.idle(t0 + HOLD));
        assert!(y.idle(t0 + HOLD + Duration::from_secs(1)));
    }

    /// The scheduling policy of a thread of this process (field 41 of its `stat`), by its path
    /// under `/proc`.
    fn policy(path: &str) -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{path}/stat")).ok()?;
        // The name (field 2) is in parentheses and may hold spaces: count from after it.
        let rest = &stat[stat.rfind(')')? + 2..];
        rest.split(' ').nth(41 - 3)?.parse().ok()
    }

    /// This process's threads whose name starts with `prefix`, as paths under `/proc`.
    fn threads(prefix: &str) -> std::collections::BTreeSet<String> {
        std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|tid| {
                std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                    .is_ok_and(|n| n.starts_with(prefix))
            })
            .map(|tid| format!("self/task/{tid}"))
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_idle_connection_runs_on_a_sched_idle_worker() {
        const SCHED_IDLE: u32 = 5;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let before = threads("sqlx-sqlite-wor");
        let idle = open_idle(&url).await.unwrap();
        idle.store.db.ping().await.unwrap();
        let new: Vec<String> = threads("sqlx-sqlite-wor")
            .difference(&before)
            .cloned()
            .collect();
        // Other tests of this process may start workers meanwhile, at normal priority: ours is
        // among the new ones, and this thread (the test's) kept its policy.
        assert!(
            new.iter().any(|t| policy(t) == Some(SCHED_IDLE)),
            "no new SQLite worker runs at SCHED_IDLE: {:?}",
            new.iter().map(|t| (t, policy(t))).collect::<Vec<_>>()
        );
        assert_eq!(policy("thread-self"), Some(0), "SCHED_OTHER");
    }
}
