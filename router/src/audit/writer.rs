//! The audit writer: the request path hands a record over and goes on; one background thread
//! per gateway chains records and writes them in batches (multi-row INSERTs in one
//! transaction). While the database is unreachable or failing, records go to a local spool file
//! (JSON lines, fsync per batch) and are replayed in order once it is back; the spool survives
//! restarts and is replayed at start. Records are chained only when they are written to the
//! database, against the chain head read from it, so a spool replayed after a restart continues
//! the same chain. Replays skip records whose id is already stored, so a crash between commit
//! and spool cleanup inserts nothing twice.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use sqlx::Row;

use super::priority::{self, Yielding};
use super::store::{AuditStore, RowColumns, StoredRow};
use super::{AuditError, AuditRecord, Chain, Checkpoint};
use crate::db::{Database, DbError};

#[derive(Clone)]
pub struct AuditSettings {
    pub database_url: String,
    /// This instance's chain (unique per gateway instance writing to one database).
    pub chain_id: String,
    pub spool_dir: PathBuf,
    pub signing_key: SigningKey,
    /// Records between signed checkpoints.
    pub checkpoint_every: u64,
    /// Refuse requests (503) while records can be neither stored nor spooled.
    pub required: bool,
    /// Records queued in memory before the request path writes to the spool itself.
    pub queue: usize,
    /// On SQLite (Linux), write on idle CPU time while there is some ([`super::priority`]).
    pub yield_cpu: bool,
}

impl std::fmt::Debug for AuditSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSettings")
            .field("database_url", &crate::db::redact_url(&self.database_url))
            .field("chain_id", &self.chain_id)
            .field("spool_dir", &self.spool_dir)
            .field("checkpoint_every", &self.checkpoint_every)
            .field("required", &self.required)
            .field("queue", &self.queue)
            .field("yield_cpu", &self.yield_cpu)
            .finish()
    }
}

/// A record as it waits to be stored: its canonical JSON and a newline, serialised once on the
/// request path (then the journal line, the spool line and the chained, hashed and stored text
/// alike), and its query columns. The record itself is dropped: a queue of thousands of records
/// (a slow database) holds no second copy of prompts and findings.
#[derive(Debug, Clone)]
struct Sealed {
    columns: RowColumns,
    line: String,
    /// When it was sealed (or read back from the spool): how long it has waited.
    at: Instant,
}

impl Sealed {
    fn new(record: AuditRecord) -> Self {
        let mut line = record.canonical();
        line.push('\n');
        Self {
            columns: RowColumns::of(&record),
            line,
            at: Instant::now(),
        }
    }

    /// The canonical JSON, without the newline.
    fn canonical(&self) -> &str {
        &self.line[..self.line.len() - 1]
    }

    fn id(&self) -> &str {
        &self.columns.id
    }
}

enum Msg {
    Record(Box<Sealed>),
    /// A journal file all of whose records were queued before this message: delete it once
    /// they are stored or spooled.
    Rotate(PathBuf),
    /// Write everything queued, then answer.
    Flush(std::sync::mpsc::Sender<()>),
    /// Flush, write a final checkpoint, stop.
    Shutdown(std::sync::mpsc::Sender<()>),
}

/// Counters the gateway exports as metrics.
#[derive(Default)]
pub struct AuditStats {
    pub written: AtomicU64,
    pub spooled: AtomicU64,
    pub replayed: AtomicU64,
    pub failures: AtomicU64,
    /// Records written at idle priority (`audit.yield_cpu`).
    pub written_idle: AtomicU64,
    /// Times an idle-priority write found no idle CPU and the writer went back to normal
    /// priority for a while.
    pub starved: AtomicU64,
}

/// The handle the gateway holds.
pub struct AuditLog {
    tx: std::sync::mpsc::SyncSender<Msg>,
    /// Taken at shutdown.
    journal: Mutex<Option<Journal>>,
    spool: Arc<Mutex<Spool>>,
    /// Set when a record could be neither written nor spooled.
    broken: Arc<AtomicBool>,
    required: bool,
    pub stats: Arc<AuditStats>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The writer thread, unparked by flush and shutdown to cut its linger short (records do
    /// not wake it while it lingers).
    writer: std::thread::Thread,
}

impl AuditLog {
    /// Starts the writer thread. The database may be down: records are spooled until it is up.
    pub fn start(settings: AuditSettings) -> Result<Self, AuditError> {
        let spool_err = |source| AuditError::Spool {
            path: settings.spool_dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&settings.spool_dir).map_err(spool_err)?;
        let mut spool = Spool::new(&settings.spool_dir);
        // Journals a previous run left (it was killed): their records go to the spool, where
        // the replay skips those already stored.
        recover_journals(&settings.spool_dir, &mut spool).map_err(spool_err)?;
        let journal = Journal::open(&settings.spool_dir).map_err(spool_err)?;
        let spool = Arc::new(Mutex::new(spool));
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.queue.max(1));
        let broken = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(AuditStats::default());
        let mut writer = Writer::new(
            settings.clone(),
            spool.clone(),
            broken.clone(),
            stats.clone(),
        );
        writer.yielding = Yielding::watching_cpu();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| AuditError::Record(format!("cannot start the writer: {e}")))?;
        let thread = std::thread::Builder::new()
            .name("cordon-audit".into())
            .spawn(move || rt.block_on(writer.run(rx)))
            .map_err(|e| AuditError::Record(format!("cannot start the writer: {e}")))?;
        Ok(Self {
            tx,
            writer: thread.thread().clone(),
            journal: Mutex::new(Some(journal)),
            spool,
            broken,
            required: settings.required,
            stats,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Whether new requests may be served: false only with `required` while records cannot be
    /// kept anywhere.
    pub fn accepting(&self) -> bool {
        !(self.required && self.broken.load(Ordering::Relaxed))
    }

    /// Hands a record to the writer without waiting for the database. When the queue is full
    /// (the writer is behind), the caller waits up to [`QUEUE_WAIT`] for room, then writes the
    /// record to the spool itself; nothing is dropped.
    pub fn record(&self, record: AuditRecord) {
        let record = Sealed::new(record);
        // The journal write and the first queueing attempt happen under one lock, so that a
        // journal file's records are queued before its rotation marker.
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let mut rotated = None;
        let mut generation = None;
        if let Some(j) = journal.as_mut() {
            if let Err(e) = j.append(&record) {
                tracing::error!(error = %e, "cannot write the audit journal");
            }
            if j.bytes >= JOURNAL_ROTATE_BYTES {
                match j.rotate() {
                    Ok(old) => rotated = Some(old),
                    Err(e) => tracing::error!(error = %e, "cannot rotate the audit journal"),
                }
            }
            generation = Some(j.n);
        }
        let Err(std::sync::mpsc::TrySendError::Full(mut msg)) =
            self.tx.try_send(Msg::Record(Box::new(record)))
        else {
            // Queued (or the writer is gone, and the journal keeps the record for the next start).
            if let Some(old) = rotated {
                // If the marker cannot be queued, the file stays and is replayed (and
                // deduplicated) at the next start.
                let _ = self.tx.try_send(Msg::Rotate(old));
            }
            return;
        };
        // The writer is behind: wait for room without holding the lock, so that other requests
        // are not queued behind this one.
        drop(journal);
        let deadline = Instant::now() + QUEUE_WAIT;
        // Kept for the spool or a re-journal below; cloned once, only on this slow path.
        let record = match &msg {
            Msg::Record(r) => (**r).clone(),
            _ => return,
        };
        let id = record.id().to_owned();
        let queued = loop {
            match self.tx.try_send(msg) {
                Ok(()) => break true,
                Err(std::sync::mpsc::TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_micros(200));
                }
                Err(_) => break false,
            }
        };
        let mut journal = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        // The journal rotated while this record waited: its rotation marker may be processed
        // before the record is stored, so the record goes into the current journal too (replays
        // skip duplicates).
        if let Some(j) = journal.as_mut()
            && Some(j.n) != generation
            && let Err(e) = j.append(&record)
        {
            tracing::error!(error = %e, "cannot write the audit journal");
        }
        drop(journal);
        if !queued {
            // Written without an fsync of its own: the writer syncs the spool on its next pass.
            let ok = self
                .spool
                .lock()
                .map(|mut s| s.append_unsynced(std::slice::from_ref(&record)).is_ok())
                .unwrap_or(false);
            if ok {
                self.stats.spooled.fetch_add(1, Ordering::Relaxed);
            } else {
                self.broken.store(true, Ordering::Relaxed);
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(id = %id, "audit record could be neither queued nor spooled");
            }
        }
        if let Some(old) = rotated {
            let _ = self.tx.try_send(Msg::Rotate(old));
        }
    }

    /// Waits until everything queued so far is written or spooled.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, wait) = std::sync::mpsc::channel();
        let sent = self.tx.send(Msg::Flush(done)).is_ok();
        self.writer.unpark();
        sent && wait.recv_timeout(timeout).is_ok()
    }

    /// Flushes, writes the shutdown checkpoint and stops the writer.
    pub fn shutdown(&self, timeout: Duration) {
        let (done, wait) = std::sync::mpsc::channel();
        if let Some(j) = self
            .journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = self.tx.send(Msg::Rotate(j.path));
        }
        let sent = self.tx.send(Msg::Shutdown(done)).is_ok();
        self.writer.unpark();
        if sent && wait.recv_timeout(timeout).is_ok() {
            if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
                let _ = t.join();
            }
        } else {
            tracing::error!(
                "the audit writer did not finish in time; unwritten records stay in the spool"
            );
        }
    }
}

struct Writer {
    store: Option<AuditStore>,
    /// The same database through a connection whose SQLite thread runs at `SCHED_IDLE`, when
    /// `yield_cpu` is on and the database is SQLite.
    idle: Option<priority::IdleStore>,
    yielding: Yielding,
    chain: Option<Chain>,
    spool: Arc<Mutex<Spool>>,
    broken: Arc<AtomicBool>,
    stats: Arc<AuditStats>,
    last_attempt: Option<Instant>,
    retry: Duration,
    settings: AuditSettings,
}

/// How long a request waits for room in a full queue before spooling its record itself (the
/// wait happens outside the journal lock, so requests do not queue behind each other).
pub const QUEUE_WAIT: Duration = Duration::from_millis(100);

/// How long to wait before trying an unreachable database again.
const RETRY: Duration = Duration::from_millis(500);
/// The longest wait between connection attempts while the store is away.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Records per database write.
const BATCH: usize = 2000;
/// How long the writer waits for more records before writing a batch.
const LINGER: Duration = Duration::from_millis(10);

/// The next message to arrive before `until`, or `None`. The writer sleeps (parked) instead of
/// blocking on the channel, so the records that arrive meanwhile do not wake it one by one:
/// at thousands of requests a second, a wakeup per record cost more CPU than writing it. Flush
/// and shutdown unpark it.
fn linger(rx: &std::sync::mpsc::Receiver<Msg>, until: Instant) -> Option<Msg> {
    loop {
        if let Ok(m) = rx.try_recv() {
            return Some(m);
        }
        std::thread::park_timeout(until.checked_duration_since(Instant::now())?);
    }
}

impl Writer {
    /// A writer that has not connected yet.
    fn new(
        settings: AuditSettings,
        spool: Arc<Mutex<Spool>>,
        broken: Arc<AtomicBool>,
        stats: Arc<AuditStats>,
    ) -> Self {
        Self {
            store: None,
            idle: None,
            yielding: Yielding::default(),
            chain: None,
            spool,
            broken,
            stats,
            last_attempt: None,
            retry: RETRY,
            settings,
        }
    }

    async fn run(&mut self, rx: std::sync::mpsc::Receiver<Msg>) {
        // Whatever a previous run left in the spool goes first.
        self.drain_spool().await;
        loop {
            let first = match rx.recv_timeout(RETRY) {
                Ok(m) => Some(m),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = Vec::new();
            let mut waiters = Vec::new();
            let mut rotated = Vec::new();
            let mut stop = None;
            let mut next = first;
            // Records are already in the journal, so the writer may wait a moment for more:
            // at low concurrency each request's record would otherwise be its own transaction.
            let linger_until = Instant::now() + LINGER;
            while let Some(m) = next {
                match m {
                    Msg::Record(r) => batch.push(*r),
                    Msg::Rotate(p) => rotated.push(p),
                    Msg::Flush(w) => waiters.push(w),
                    Msg::Shutdown(w) => {
                        stop = Some(w);
                        break;
                    }
                }
                if batch.len() >= BATCH {
                    break;
                }
                next = match rx.try_recv() {
                    Ok(m) => Some(m),
                    // Someone waits for a flush: write now.
                    Err(_) if !waiters.is_empty() => None,
                    Err(_) => linger(&rx, linger_until),
                };
            }
            if !batch.is_empty() {
                self.write(batch).await;
            } else if self.spool_pending() {
                self.drain_spool().await;
            }
            // Every record of these journals is now stored or in the (synced) spool.
            if !self.broken.load(Ordering::Relaxed) {
                for p in rotated {
                    if let Err(e) = std::fs::remove_file(&p) {
                        tracing::warn!(error = %e, path = %p.display(), "cannot remove an audit journal");
                    }
                }
            }
            for w in waiters {
                let _ = w.send(());
            }
            if let Some(w) = stop {
                // Anything still queued behind the shutdown message.
                let mut rest = Vec::new();
                let mut journals = Vec::new();
                for m in rx.try_iter() {
                    match m {
                        Msg::Record(r) => rest.push(*r),
                        Msg::Rotate(p) => journals.push(p),
                        _ => {}
                    }
                }
                if !rest.is_empty() {
                    self.write(rest).await;
                }
                if !self.broken.load(Ordering::Relaxed) {
                    for p in journals {
                        let _ = std::fs::remove_file(p);
                    }
                }
                self.drain_spool().await;
                self.checkpoint().await;
                let _ = w.send(());
                return;
            }
        }
    }

    fn spool_pending(&self) -> bool {
        self.spool.lock().map(|s| s.pending()).unwrap_or(true)
    }

    /// Connects (at most once per RETRY) and reads the chain head.
    async fn connect(&mut self) -> bool {
        if self.store.is_some() && self.chain.is_some() {
            return true;
        }
        if self.last_attempt.is_some_and(|t| t.elapsed() < self.retry) {
            return false;
        }
        self.last_attempt = Some(Instant::now());
        // Back off while the store stays away, so that connection attempts (each can take up
        // to CONNECT_TIMEOUT) do not slow spooling down.
        self.retry = (self.retry * 2).min(MAX_RETRY);
        let attempt = async {
            let store = match &self.store {
                Some(s) => s.clone(),
                None => AuditStore::new(Database::open(&self.settings.database_url).await?),
            };
            let chain = store.head(&self.settings.chain_id).await?;
            Ok::<_, DbError>((store, chain))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(Ok((store, chain))) => {
                let fresh = self.store.is_none();
                self.store = Some(store);
                self.chain = Some(chain);
                self.retry = RETRY;
                if fresh {
                    self.open_idle().await;
                }
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit store unreachable; spooling records");
                false
            }
            Err(_) => {
                tracing::warn!("audit store did not answer in time; spooling records");
                false
            }
        }
    }

    /// Opens the idle-priority connection, when it applies; without it every write runs at
    /// normal priority.
    async fn open_idle(&mut self) {
        self.idle = None;
        let sqlite = self
            .store
            .as_ref()
            .is_some_and(|s| s.db.backend == crate::db::Backend::Sqlite);
        // SCHED_IDLE is Linux's: elsewhere the writes run at normal priority, without a warning.
        if !self.settings.yield_cpu || !sqlite || !cfg!(target_os = "linux") {
            return;
        }
        let url = &self.settings.database_url;
        match tokio::time::timeout(CONNECT_TIMEOUT, priority::open_idle(url)).await {
            Ok(Ok(idle)) => self.idle = Some(idle),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit writes run at normal priority");
            }
            Err(_) => tracing::warn!(
                "audit writes run at normal priority: the idle-priority connection did not open in time"
            ),
        }
    }

    async fn write(&mut self, batch: Vec<Sealed>) {
        // Keep order: while older records wait in the spool, new ones queue behind them.
        if !self.spool_pending() && self.connect().await && self.insert(&batch, false).await {
            return;
        }
        self.spool_records(&batch);
        self.drain_spool().await;
    }

    fn spool_records(&mut self, batch: &[Sealed]) {
        let result = self
            .spool
            .lock()
            .map_err(|_| std::io::Error::other("spool lock poisoned"))
            .and_then(|mut s| s.append(batch));
        match result {
            Ok(()) => {
                self.stats
                    .spooled
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                self.broken.store(false, Ordering::Relaxed);
            }
            Err(e) => {
                self.broken.store(true, Ordering::Relaxed);
                self.stats
                    .failures
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                tracing::error!(error = %e, records = batch.len(), "audit records could be neither stored nor spooled");
            }
        }
    }

    /// Chains and inserts records; on failure forgets the chain head (it is read again on
    /// reconnect) and returns false. With `dedupe`, records already stored are skipped.
    async fn insert(&mut self, batch: &[Sealed], dedupe: bool) -> bool {
        let (Some(store), Some(chain)) = (&self.store, &mut self.chain) else {
            return false;
        };
        let mut skip = HashSet::new();
        if dedupe {
            match stored_ids(store, &self.settings.chain_id, batch).await {
                Ok(ids) => skip = ids,
                Err(e) => {
                    tracing::warn!(error = %e, "audit store failed");
                    self.chain = None;
                    return false;
                }
            }
        }
        let mut next = chain.clone();
        let (rows, sealed_at): (Vec<StoredRow>, Vec<Instant>) = batch
            .iter()
            .filter(|s| !dedupe || skip.insert(s.id().to_owned()))
            .map(|s| {
                let row = StoredRow {
                    chained: next.append_canonical(s.canonical().to_owned()),
                    columns: s.columns.clone(),
                };
                (row, s.at)
            })
            .unzip();
        // At idle priority in small transactions, so that the writer sees soon when it falls
        // behind; else (or the rest, once behind) in one transaction at normal priority.
        let mut idle = self
            .idle
            .as_ref()
            .filter(|_| self.yielding.idle(Instant::now()))
            .map(|i| &i.store);
        let mut done = 0;
        let outcome = loop {
            let rest = &rows[done..];
            if rest.is_empty() {
                break Ok(Ok(()));
            }
            let part = &rest[..rest
                .len()
                .min(idle.map_or(rest.len(), |_| priority::IDLE_ROWS))];
            let appended = idle.unwrap_or(store).append(part);
            match tokio::time::timeout(Duration::from_secs(10), appended).await {
                Ok(Ok(())) => {}
                failed => break failed,
            }
            self.stats
                .written
                .fetch_add(part.len() as u64, Ordering::Relaxed);
            if idle.is_some() {
                self.stats
                    .written_idle
                    .fetch_add(part.len() as u64, Ordering::Relaxed);
                let waited = sealed_at[done].elapsed();
                if self.yielding.wrote(waited, Instant::now()) {
                    idle = None;
                    self.stats.starved.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        waited_ms = waited.as_millis() as u64,
                        "too little idle CPU for the audit writes: they run at normal priority for {} s",
                        priority::HOLD.as_secs()
                    );
                }
            }
            done += part.len();
        };
        match outcome {
            Ok(Ok(())) => {
                *chain = next;
                self.broken.store(false, Ordering::Relaxed);
                // A checkpoint at every multiple of checkpoint_every.
                let every = self.settings.checkpoint_every.max(1) as i64;
                let due: Vec<Chain> = rows
                    .iter()
                    .filter(|r| r.chained.seq % every == 0)
                    .map(|r| Chain {
                        chain_id: r.chained.chain_id.clone(),
                        seq: r.chained.seq,
                        head: r.chained.hash.clone(),
                    })
                    .collect();
                for at in due {
                    self.checkpoint_at(&at).await;
                }
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "audit store failed; spooling records");
                self.chain = None;
                self.last_attempt = Some(Instant::now());
                false
            }
            Err(_) => {
                tracing::warn!("audit store did not answer in 10 s; spooling records");
                self.chain = None;
                self.last_attempt = Some(Instant::now());
                false
            }
        }
    }

    /// Replays the spool into the database, oldest first, in batches.
    async fn drain_spool(&mut self) {
        if let Ok(s) = self.spool.lock()
            && let Err(e) = s.sync()
        {
            tracing::error!(error = %e, "cannot sync the audit spool");
        }
        loop {
            let batch = match self.spool.lock() {
                Ok(mut s) => match s.take_batch(BATCH) {
                    Ok(b) => b,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the audit spool");
                        return;
                    }
                },
                Err(_) => return,
            };
            let Some(batch) = batch else { return };
            if !self.connect().await || !self.insert(&batch, true).await {
                if let Ok(mut s) = self.spool.lock() {
                    s.put_back();
                }
                return;
            }
            self.stats
                .replayed
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            if let Ok(mut s) = self.spool.lock()
                && let Err(e) = s.commit_batch()
            {
                tracing::error!(error = %e, "cannot update the audit spool");
                return;
            }
        }
    }

    /// The shutdown checkpoint: the chain head.
    async fn checkpoint(&mut self) {
        if let Some(chain) = self.chain.clone() {
            self.checkpoint_at(&chain).await;
        }
    }

    async fn checkpoint_at(&self, at: &Chain) {
        let Some(store) = &self.store else { return };
        if at.seq == 0 {
            return;
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let cp = Checkpoint::sign(&self.settings.signing_key, at, now as i64);
        if let Err(e) = store.add_checkpoint(&cp).await {
            tracing::warn!(error = %e, seq = at.seq, "cannot write an audit checkpoint");
        }
    }
}

async fn stored_ids(
    store: &AuditStore,
    chain_id: &str,
    batch: &[Sealed],
) -> Result<HashSet<String>, DbError> {
    let mut out = HashSet::new();
    for chunk in batch.chunks(500) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT id FROM audit_log WHERE chain_id = $1 AND id IN ({})",
            placeholders.join(",")
        );
        let mut q = sqlx::query(&sql).bind(chain_id.to_owned());
        for s in chunk {
            q = q.bind(s.id().to_owned());
        }
        for row in q
            .fetch_all(&store.db.pool)
            .await
            .map_err(DbError::query("checking replayed audit records"))?
        {
            out.insert(
                row.try_get::<String, _>("id")
                    .map_err(DbError::query("checking replayed audit records"))?,
            );
        }
    }
    Ok(out)
}

/// Journal files are rotated at this size.
const JOURNAL_ROTATE_BYTES: u64 = 16 << 20;

/// The write-ahead journal: every record is written here (a plain write, no fsync) before it is
/// queued, so that killing the process (`kill -9`) loses nothing: the kernel keeps the bytes.
/// Files are deleted once all their records are stored or spooled; the ones a killed process
/// left are moved to the spool at the next start.
struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    bytes: u64,
    started: u128,
    n: u64,
}

impl Journal {
    fn name(dir: &Path, started: u128, n: u64) -> PathBuf {
        dir.join(format!("audit-journal-{started}-{n:06}.jsonl"))
    }

    fn open(dir: &Path) -> std::io::Result<Self> {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = Self::name(dir, started, 0);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            dir: dir.to_owned(),
            path,
            file,
            bytes: 0,
            started,
            n: 0,
        })
    }

    fn append(&mut self, r: &Sealed) -> std::io::Result<()> {
        self.file.write_all(r.line.as_bytes())?;
        self.bytes += r.line.len() as u64;
        Ok(())
    }

    /// Starts a new file; returns the old one's path.
    fn rotate(&mut self) -> std::io::Result<PathBuf> {
        self.n += 1;
        let path = Self::name(&self.dir, self.started, self.n);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        self.file = file;
        self.bytes = 0;
        Ok(std::mem::replace(&mut self.path, path))
    }
}

/// Moves the records of journals left by a previous run into the spool (synced), then deletes
/// the journals.
fn recover_journals(dir: &Path, spool: &mut Spool) -> std::io::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-journal-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let records: Vec<Sealed> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok().map(Sealed::new))
            .collect();
        if !records.is_empty() {
            tracing::info!(records = records.len(), path = %f.display(), "recovering audit records from a journal");
            spool.append(&records)?;
        }
        std::fs::remove_file(&f)?;
    }
    Ok(())
}

/// The spool: `audit-spool.jsonl` receives records while the database is away; a replay moves
/// it to `audit-spool.replaying.jsonl` first, so new records never mix with the one being
/// replayed, and reads that in batches. A batch is removed from the file only once it is
/// committed to the database.
struct Spool {
    active: PathBuf,
    replaying: PathBuf,
    /// Byte offset in `replaying` of the first record not yet committed, and of the end of the
    /// batch handed out.
    committed: u64,
    handed_out: u64,
}

impl Spool {
    fn new(dir: &Path) -> Self {
        Self {
            active: dir.join("audit-spool.jsonl"),
            replaying: dir.join("audit-spool.replaying.jsonl"),
            committed: 0,
            handed_out: 0,
        }
    }

    fn pending(&self) -> bool {
        let non_empty = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.len() > 0);
        non_empty(&self.active) || non_empty(&self.replaying)
    }

    /// Appends records and fsyncs.
    fn append(&mut self, records: &[Sealed]) -> std::io::Result<()> {
        self.append_unsynced(records)?.sync_data()
    }

    fn append_unsynced(&mut self, records: &[Sealed]) -> std::io::Result<File> {
        let buf: String = records.iter().map(|r| r.line.as_str()).collect();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.active)?;
        f.write_all(buf.as_bytes())?;
        Ok(f)
    }

    /// Makes records appended without a sync durable.
    fn sync(&self) -> std::io::Result<()> {
        match File::open(&self.active) {
            Ok(f) => f.sync_data(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The next batch to replay, or None when the spool is empty.
    fn take_batch(&mut self, max: usize) -> std::io::Result<Option<Vec<Sealed>>> {
        for p in [&self.active, &self.replaying] {
            if p.exists() && !std::fs::metadata(p)?.is_file() {
                return Err(std::io::Error::other(format!(
                    "{} is not a regular file",
                    p.display()
                )));
            }
        }
        if !self.replaying.exists() {
            if !self.active.exists() {
                return Ok(None);
            }
            std::fs::rename(&self.active, &self.replaying)?;
            self.committed = 0;
        }
        let mut f = BufReader::new(File::open(&self.replaying)?);
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(self.committed))?;
        let mut out = Vec::new();
        let mut pos = self.committed;
        let mut line = String::new();
        while out.len() < max {
            line.clear();
            let n = f.read_line(&mut line)?;
            if n == 0 {
                break;
            }
            pos += n as u64;
            if !line.ends_with('\n') {
                // A torn last line from a crash mid-write: the record never completed.
                break;
            }
            // Sealed anew: the stored text is always the canonical form of the record read.
            match serde_json::from_str::<AuditRecord>(&line) {
                Ok(r) => out.push(Sealed::new(r)),
                Err(e) => {
                    tracing::error!(error = %e, offset = pos, "skipping an unreadable audit spool line")
                }
            }
        }
        self.handed_out = pos;
        if out.is_empty() {
            std::fs::remove_file(&self.replaying)?;
            self.committed = 0;
            return if self.active.exists() {
                self.take_batch(max)
            } else {
                Ok(None)
            };
        }
        Ok(Some(out))
    }

    fn commit_batch(&mut self) -> std::io::Result<()> {
        self.committed = self.handed_out;
        let len = std::fs::metadata(&self.replaying)?.len();
        if self.committed >= len {
            std::fs::remove_file(&self.replaying)?;
            self.committed = 0;
        }
        Ok(())
    }

    fn put_back(&mut self) {
        self.handed_out = self.committed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::sample;

    #[test]
    fn the_spool_hands_out_batches_in_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::new(dir.path());
        assert!(!s.pending());
        let recs: Vec<Sealed> = (0..5)
            .map(|i| Sealed::new(sample(&format!("r{i}"))))
            .collect();
        s.append(&recs[..3]).unwrap();
        let b = s.take_batch(2).unwrap().unwrap();
        assert_eq!(b.iter().map(Sealed::id).collect::<Vec<_>>(), ["r0", "r1"]);
        s.commit_batch().unwrap();
        // New records arrive while replaying: they wait in the active file.
        s.append(&recs[3..]).unwrap();
        let b = s.take_batch(10).unwrap().unwrap();
        assert_eq!(b.iter().map(Sealed::id).collect::<Vec<_>>(), ["r2"]);
        s.put_back();
        // A restart reads from the last committed record.
        let mut s = Spool::new(dir.path());
        let b = s.take_batch(10).unwrap().unwrap();
        assert_eq!(
            b.iter().map(Sealed::id).collect::<Vec<_>>(),
            ["r0", "r1", "r2"],
            "committed is in memory only: replays dedupe by id"
        );
        s.commit_batch().unwrap();
        let b = s.take_batch(10).unwrap().unwrap();
        assert_eq!(b.iter().map(Sealed::id).collect::<Vec<_>>(), ["r3", "r4"]);
        s.commit_batch().unwrap();
        assert!(s.take_batch(10).unwrap().is_none());
        assert!(!s.pending());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn records_reach_sqlite_and_a_dead_database_spools_then_replays() {
        let dir = tempfile::tempdir().unwrap();
        let good = format!("sqlite://{}?mode=rwc", dir.path().join("a.db").display());
        let settings = |url: &str| AuditSettings {
            database_url: url.to_owned(),
            chain_id: "gw-test".into(),
            spool_dir: dir.path().join("spool"),
            signing_key: SigningKey::from_bytes(&[1; 32]),
            checkpoint_every: 3,
            required: false,
            queue: 16,
            yield_cpu: true,
        };
        // An unreachable database: a directory where the file should be.
        let bad_path = dir.path().join("missing-dir/sub");
        std::fs::create_dir_all(&bad_path).unwrap();
        let bad = format!("sqlite://{}?mode=rw", bad_path.display());
        let log = AuditLog::start(settings(&bad)).unwrap();
        for i in 0..5 {
            log.record(sample(&format!("s{i}")));
        }
        assert!(log.flush(Duration::from_secs(10)));
        assert_eq!(log.stats.spooled.load(Ordering::Relaxed), 5);
        log.shutdown(Duration::from_secs(10));
        // Restart against a working database: the spool is replayed, then new records follow.
        let log = AuditLog::start(settings(&good)).unwrap();
        for i in 5..8 {
            log.record(sample(&format!("s{i}")));
        }
        log.shutdown(Duration::from_secs(10));
        let store = AuditStore::new(Database::open(&good).await.unwrap());
        let mut ids = Vec::new();
        store
            .scan(&Default::default(), |r| {
                ids.push((r.chained.seq, r.columns.id));
                true
            })
            .await
            .unwrap();
        let expect: Vec<(i64, String)> = (0..8).map(|i| (i + 1, format!("s{i}"))).collect();
        assert_eq!(ids, expect);
        assert!(!store.checkpoints().await.unwrap().is_empty());
    }

    fn sqlite_settings(dir: &Path, yield_cpu: bool) -> AuditSettings {
        AuditSettings {
            database_url: format!("sqlite://{}?mode=rwc", dir.join("a.db").display()),
            chain_id: "gw-test".into(),
            spool_dir: dir.join("spool"),
            signing_key: SigningKey::from_bytes(&[1; 32]),
            checkpoint_every: 50,
            required: false,
            queue: 4096,
            yield_cpu,
        }
    }

    /// A writer as [`AuditLog::start`] makes one, driven directly.
    fn writer(settings: AuditSettings) -> Writer {
        let spool = Arc::new(Mutex::new(Spool::new(&settings.spool_dir)));
        Writer::new(settings, spool, Arc::default(), Arc::default())
    }

    /// `n` records sealed `ago` before now.
    fn sealed(from: usize, n: usize, ago: Duration) -> Vec<Sealed> {
        (from..from + n)
            .map(|i| {
                let mut s = Sealed::new(sample(&format!("r{i:04}")));
                s.at -= ago;
                s
            })
            .collect()
    }

    /// Verifies the stored chain; returns its length.
    async fn verified(url: &str) -> u64 {
        let store = AuditStore::new(Database::open(url).await.unwrap());
        let key = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let report = super::super::verify::verify(&store, &Default::default(), &key, || {})
            .await
            .unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        report.records
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn writes_go_at_idle_priority_until_the_writer_falls_behind() {
        let dir = tempfile::tempdir().unwrap();
        let settings = sqlite_settings(dir.path(), true);
        let url = settings.database_url.clone();
        let mut w = writer(settings);
        assert!(w.connect().await);
        assert!(w.idle.is_some(), "the idle-priority connection opened");
        let idle = |w: &Writer| w.stats.written_idle.load(Ordering::Relaxed);
        let fresh = Duration::ZERO;
        // A writer starts at idle priority.
        assert!(w.insert(&sealed(0, 10, fresh), false).await);
        assert_eq!((idle(&w), w.stats.starved.load(Ordering::Relaxed)), (10, 0));
        // Several idle-priority transactions keep one chain.
        let many = 3 * priority::IDLE_ROWS + 1;
        assert!(w.insert(&sealed(10, many, fresh), false).await);
        assert_eq!(idle(&w), (10 + many) as u64);
        // Records that waited too long: the first transaction is written at idle priority, the
        // rest at normal priority, and the writer stays there.
        let from = 10 + many;
        let late = sealed(from, priority::IDLE_ROWS + 5, priority::BEHIND * 2);
        assert!(w.insert(&late, false).await);
        let idle_rows = (10 + many + priority::IDLE_ROWS) as u64;
        assert_eq!(
            (idle(&w), w.stats.starved.load(Ordering::Relaxed)),
            (idle_rows, 1)
        );
        let total = from + late.len();
        assert!(w.insert(&sealed(total, 10, fresh), false).await);
        assert_eq!(idle(&w), idle_rows, "held at normal priority");
        assert_eq!(w.stats.written.load(Ordering::Relaxed), total as u64 + 10);
        // Both connections wrote one chain.
        assert_eq!(verified(&url).await, total as u64 + 10);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn without_yield_cpu_nothing_is_written_at_idle_priority() {
        let dir = tempfile::tempdir().unwrap();
        let settings = sqlite_settings(dir.path(), false);
        let url = settings.database_url.clone();
        let mut w = writer(settings);
        assert!(w.connect().await);
        assert!(w.idle.is_none());
        assert!(w.insert(&sealed(0, 10, Duration::ZERO), false).await);
        assert_eq!(w.stats.written_idle.load(Ordering::Relaxed), 0);
        assert_eq!(verified(&url).await, 10);
    }
}
