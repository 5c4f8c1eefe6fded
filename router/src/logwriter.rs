//! The log writer: request threads append formatted lines to a shared buffer, and one
//! background thread writes the buffer out a few milliseconds after its first line, in one
//! `write` for the lines of that time.
//!
//! `tracing_appender::non_blocking` hands every line to its worker through a channel, which
//! wakes the worker once per line: at one access-log line per request that was a context
//! switch per request and about 10 µs of CPU on the load bench, the largest cost of Cordon's
//! logging. Here a batch costs one wakeup. Like the appender (built with `lossy(false)`), the
//! buffer never drops a line: past [`MAX_BUFFER`] a request waits until the writer has caught
//! up. Lines still buffered when the process is killed are lost, as with the appender's queue;
//! the audit log, not this log, is the durable record of a request.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long the writer gathers lines after the first one before writing them.
pub const LINGER: Duration = Duration::from_millis(5);
/// Buffered bytes at which the writer writes without waiting out [`LINGER`].
const HIGH_WATER: usize = 64 * 1024;
/// Buffered bytes at which a request waits for the writer (a stalled stderr).
pub const MAX_BUFFER: usize = 4 * 1024 * 1024;

#[derive(Default)]
struct State {
    buf: Vec<u8>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the buffer gets its first line, reaches the high-water mark, or closes.
    filled: Condvar,
    /// Signalled when the writer has taken the buffer.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle log lines are written to (cheap to clone, one per event).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes what is left and stops the writer thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LogWriter {
    /// Starts the writer thread over `out`.
    pub fn new<W: Write + Send + 'static>(out: W) -> std::io::Result<(Self, FlushGuard)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            filled: Condvar::new(),
            drained: Condvar::new(),
        });
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("cordon-log".into())
            .spawn(move || run(&worker, out))?;
        Ok((
            Self {
                shared: shared.clone(),
            },
            FlushGuard {
                shared,
                thread: Some(thread),
            },
        ))
    }
}

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut spare = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.buf.is_empty() && !state.closed {
            state = shared.filled.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if !state.closed && state.buf.len() < HIGH_WATER {
            // Gather the lines of the next few milliseconds into the same write.
            state = shared
                .filled
                .wait_timeout_while(state, LINGER, |s| s.buf.len() < HIGH_WATER && !s.closed)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let closed = state.closed;
        std::mem::swap(&mut state.buf, &mut spare);
        drop(state);
        shared.drained.notify_all();
        // A log line that cannot be written has nowhere else to go.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        spare.clear();
        if closed && shared.lock().buf.is_empty() {
            return;
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        while state.buf.len() >= MAX_BUFFER && !state.closed {
            state = self
                .shared
                .drained
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        let was = state.buf.len();
        state.buf.extend_from_slice(line);
        let now = state.buf.len();
        drop(state);
        // Only the first line of a batch, or the one that fills it, wakes the writer.
        if was == 0 || (was < HIGH_WATER && now >= HIGH_WATER) {
            self.shared.filled.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.filled.notify_one();
        self.shared.drained.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output that records each write it gets.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Recorder {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(b.to_vec());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_lines_share_writes() {
        let out = Recorder::default();
        let (writer, guard) = LogWriter::new(out.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        w.write_all(format!("t{t} line {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let writes = out.0.lock().unwrap();
        let text = String::from_utf8(writes.concat()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 8000, "no line is lost or split");
        for t in 0..4 {
            let own: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("t{t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(
                own,
                (0..2000).collect::<Vec<_>>(),
                "thread {t}'s lines in order"
            );
        }
        assert!(
            writes.len() < 8000 / 4,
            "lines are written in batches, not one write each: {} writes",
            writes.len()
        );
    }

    #[test]
    fn a_single_line_is_written_within_the_linger_and_at_drop() {
        let out = Recorder::default();
        let (mut writer, guard) = LogWriter::new(out.clone()).unwrap();
        writer.write_all(b"first\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().unwrap().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the line was never written"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        writer.write_all(b"last\n").unwrap();
        drop(guard);
        assert_eq!(out.0.lock().unwrap().concat(), b"first\nlast\n");
    }

    #[test]
    fn a_stalled_output_holds_writers_back_instead_of_dropping() {
        /// An output that blocks until released.
        struct Gate(Arc<(Mutex<bool>, Condvar)>, Recorder);
        impl Write for Gate {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let (open, cv) = &*self.0;
                let mut o = open.lock().unwrap();
                while !*o {
                    o = cv.wait(o).unwrap();
                }
                self.1.write(b)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let out = Recorder::default();
        let (writer, guard) = LogWriter::new(Gate(gate.clone(), out.clone())).unwrap();
        let line = vec![b'x'; 1023];
        let total = 3 * MAX_BUFFER / 1024;
        let mut w = writer.clone();
        let l = line.clone();
        let producer = std::thread::spawn(move || {
            for _ in 0..total {
                w.write_all(&l).unwrap();
                w.write_all(b"\n").unwrap();
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !producer.is_finished(),
            "the producer waits for the stalled output"
        );
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        producer.join().unwrap();
        drop(guard);
        let bytes: usize = out.0.lock().unwrap().iter().map(Vec::len).sum();
        assert_eq!(bytes, total * 1024);
    }
}
