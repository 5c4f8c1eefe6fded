//! Which CPU time the SQLite audit writes may take (`audit.yield_cpu`). SQLite does its work on
//! the thread sqlx starts for each connection, and on a small machine that thread's bursts (a
//! batch insert, a WAL checkpoint) delayed requests: lower `nice` values did not help, because
//! the kernel still lets a running thread finish its slice before a woken request thread runs.
//! So on Linux the writer keeps a second connection whose worker thread has the `SCHED_IDLE`
//! policy, which runs only on CPU time that nothing else wants.
//!
//! Idle-priority work starves on a busy machine, and an unprivileged thread cannot leave
//! `SCHED_IDLE` again. So the writer starts an idle-priority transaction only while the machine
//! has had idle CPU lately ([`SpareCpu`]: at least [`SPARE_CPUS`] over the last
//! [`SPARE_WINDOW`] or more, from `/proc/stat`), writes it in [`IDLE_ROWS`] rows, and after each
//! one looks at how long its oldest record waited to be stored ([`Yielding`]): longer than
//! [`BEHIND`] means there is too little idle CPU to keep up (the load rose while it waited), and
//! the writer uses its normal connection for [`HOLD`] before it tries again. PostgreSQL does its
//! work in the database server, so none of this applies there.
//!
//! On by default. On the load bench's 2-core machine (runs of three rounds, same session) the
//! added p99 at concurrency 1 was 378 and 395 µs with it off and 229-252 µs in four runs with it
//! on; at concurrency 64 the writer stayed at normal priority (no starved transaction), and peak
//! RSS was 54-56 MiB. The second connection's page cache is [`IDLE_CACHE_KIB`], and both
//! connections cache seven INSERT statements ([`super::store::SQLITE_BATCH_ROWS`]): before that,
//! the second connection's caches and the backlog of starved transactions raised peak RSS to
//! 62-69 MiB.

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
/// The idle connection's SQLite page cache, in KiB (SQLite's default is 2,000). Appends touch
/// the few rightmost pages of the table and its indexes; a larger cache only holds pages
/// written earlier, a second copy beside the normal connection's.
pub const IDLE_CACHE_KIB: u32 = 256;

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
                let opened = async {
                    let db = Database::open(&url).await?;
                    // Only this connection's page cache: a pool of one, never recycled.
                    sqlx::query(&format!("PRAGMA cache_size = -{IDLE_CACHE_KIB}"))
                        .execute(&db.pool)
                        .await
                        .map_err(crate::db::DbError::query("sizing the page cache"))?;
                    Ok::<_, crate::db::DbError>(db)
                };
                match opened.await {
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
    /// The machine's idle CPU time, when the writer watches it (the gateway does; tests of the
    /// lag rule do not, so that the load of other tests cannot change their outcome).
    cpu: Option<SpareCpu>,
}

impl Yielding {
    /// Watches the machine's idle CPU time too: no idle-priority writes while there is little.
    pub fn watching_cpu() -> Self {
        Self {
            normal_until: None,
            cpu: Some(SpareCpu::default()),
        }
    }

    /// Whether the next transaction may run at idle priority.
    pub fn idle(&mut self, now: Instant) -> bool {
        match self.normal_until {
            Some(until) if now < until => false,
            _ => {
                self.normal_until = None;
                self.cpu.as_mut().is_none_or(|c| c.spare(now))
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

/// The shortest span [`SpareCpu`] measures over: `/proc/stat` counts in 10 ms ticks per CPU,
/// and over 100 ms the load bench's full load (4-15% idle on 2 CPUs) read as idle now and then.
pub const SPARE_WINDOW: Duration = Duration::from_millis(200);
/// A reading older than this says little about the load now: a load that rose since would be
/// averaged with the quiet before it.
pub const SPARE_STALE: Duration = Duration::from_secs(1);
/// Idle CPU, in CPUs, below which the writer does not start idle-priority transactions: with
/// less, they would starve. A batch takes a fraction of a millisecond of one CPU every 10 ms;
/// on the load bench's 2 CPUs about 1 CPU was idle at concurrency 1 and 0.1-0.3 at 64.
pub const SPARE_CPUS: f64 = 0.5;

/// Whether the machine has had idle CPU lately: the idle time of the `cpu` line of `/proc/stat`
/// over [`SPARE_WINDOW`] or longer. At full load (the load bench at concurrency 64) an
/// idle-priority transaction waited for hundreds of milliseconds while records queued behind it,
/// until the lag rule noticed; this keeps the writer from starting one. In a container with a
/// CPU quota the host's idle time can overstate what the container may use: the lag rule still
/// applies there. Where `/proc/stat` cannot be read, only the lag rule decides.
#[derive(Debug, Default)]
pub struct SpareCpu {
    /// The last reading and when it was taken.
    last: Option<(Instant, CpuTimes)>,
    spare: bool,
}

/// The `cpu` line of `/proc/stat`: idle (with iowait) and total ticks over all CPUs, and how
/// many CPUs there are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuTimes {
    pub idle: u64,
    pub total: u64,
    pub cpus: usize,
}

impl CpuTimes {
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    pub fn parse(stat: &str) -> Option<Self> {
        let mut lines = stat.lines();
        let fields: Vec<u64> = lines
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        // already counted in user and nice.
        let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
        let total = fields.iter().take(8).sum();
        let cpus = lines
            .take_while(|l| l.starts_with("cpu"))
            .filter(|l| l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        Some(Self { idle, total, cpus })
    }

    /// Idle CPUs, on average, between `earlier` and this reading.
    pub fn spare_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return self.cpus as f64;
        }
        self.idle.saturating_sub(earlier.idle) as f64 / total as f64 * self.cpus as f64
    }
}

impl SpareCpu {
    /// Whether at least [`SPARE_CPUS`] were idle since the last reading, taken [`SPARE_WINDOW`]
    /// to [`SPARE_STALE`] ago. Within the window the last verdict stands. Without such a reading
    /// (the first call, or after a pause in the writes) nothing is known about the load now, so
    /// the answer is no, and the reading taken now serves the next call.
    pub fn spare(&mut self, now: Instant) -> bool {
        self.judge(now, CpuTimes::read)
    }

    /// [`Self::spare`] with the reading taken by `read` (only when a new one is due).
    fn judge(&mut self, now: Instant, read: impl FnOnce() -> Option<CpuTimes>) -> bool {
        let age = self.last.map(|(at, _)| now.saturating_duration_since(at));
        if age.is_some_and(|a| a < SPARE_WINDOW) {
            return self.spare;
        }
        let Some(times) = read() else {
            self.last = None;
            self.spare = true;
            return true;
        };
        self.spare = match (self.last, age) {
            (Some((_, earlier)), Some(age)) if age <= SPARE_STALE => {
                times.spare_since(&earlier) >= SPARE_CPUS
            }
            _ => false,
        };
        self.last = Some((now, times));
        self.spare
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

    #[test]
    fn proc_stat_gives_idle_cpus() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n\
                    cpu1 50 0 25 400 25 0 0 0 0 0\nintr 1 2 3\nctxt 9\n";
        let t0 = CpuTimes::parse(stat).unwrap();
        assert_eq!(
            t0,
            CpuTimes {
                idle: 850,
                total: 1000,
                cpus: 2
            }
        );
        // 200 ticks over 2 CPUs, 40 of them idle: 0.4 CPUs were idle.
        let t1 = CpuTimes {
            idle: 890,
            total: 1200,
            cpus: 2,
        };
        assert!((t1.spare_since(&t0) - 0.4).abs() < 1e-9);
        assert!(CpuTimes::parse("intr 1\n").is_none());
        assert!(CpuTimes::parse("cpu  1 x 3 4\n").is_none());
        // This machine's own file parses, with at least one CPU.
        #[cfg(target_os = "linux")]
        assert!(CpuTimes::read().unwrap().cpus >= 1);
    }

    #[test]
    fn spare_cpu_judges_recent_readings_only() {
        let at = |idle, total| {
            move || {
                Some(CpuTimes {
                    idle,
                    total,
                    cpus: 2,
                })
            }
        };
        let mut cpu = SpareCpu::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert!(!cpu.judge(t0, at(0, 0)), "nothing known yet");
        // 40 ticks in 200 ms, 20 of them idle: one CPU idle.
        assert!(cpu.judge(t0 + ms(200), at(20, 40)));
        // Within the window the verdict stands, and no reading is taken.
        assert!(cpu.judge(t0 + ms(300), || unreachable!()));
        // 40 more ticks, 8 idle: 0.4 CPUs, under SPARE_CPUS.
        assert!(!cpu.judge(t0 + ms(400), at(28, 80)));
        // Quiet again: 40 ticks, 38 idle.
        assert!(cpu.judge(t0 + ms(600), at(66, 120)));
        // After a pause longer than SPARE_STALE, however idle it was: no.
        assert!(!cpu.judge(t0 + ms(600) + SPARE_STALE * 2, at(900, 1000)));
        assert!(cpu.judge(t0 + ms(800) + SPARE_STALE * 2, at(940, 1040)));
        // Without /proc/stat only the lag rule decides.
        assert!(cpu.judge(t0 + ms(1000) + SPARE_STALE * 2, || None));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_machine_has_no_spare_cpu() {
        let mut cpu = SpareCpu::default();
        let t0 = Instant::now();
        assert!(!cpu.spare(t0), "the first reading says no");
        // Keep every CPU busy for longer than the window (with a spinner per CPU at normal
        // priority nothing is left idle, whatever else runs).
        let n = CpuTimes::read().unwrap().cpus;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spinners: Vec<_> = (0..n)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        std::thread::sleep(SPARE_WINDOW * 3);
        let busy = cpu.spare(Instant::now());
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in spinners {
            s.join().unwrap();
        }
        assert!(!busy, "spinners on every CPU left spare CPU time");
        // Within the window the verdict stands without a new reading.
        assert!(!cpu.spare(Instant::now()));
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
