//! One scan of the DLP bench's generated text, for instruction counts that repeat exactly
//! (callgrind) where wall-clock figures on a shared machine do not:
//! `valgrind --tool=callgrind --toggle-collect='*Scanner::scan*' \
//!   target/release/examples/dlp_scan_once dense 2`
//! The text is the bench's (`Generator::new(7).prose`), `dense` or `sparse`, of the given MiB.
//! `chat N` instead runs the bench's 10 KB chat request end to end (parse, scan, pseudonymise,
//! serialise) N times: `--toggle-collect='*chat_request_once*'`.

use std::hint::black_box;
use std::path::Path;

use cordon_router::dlp::corpus::Generator;
use cordon_router::dlp::{Action, ActionTable, Scanner, load_packs};

// The allocator the `cordon` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next();
    let count: usize = args
        .next()
        .map_or(2, |s| s.parse().expect("a count as a number"));
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
    let scanner = Scanner::new(&load_packs(dir, None).expect("bundled packs")).expect("compile");
    let dense = match mode.as_deref() {
        Some("dense") => true,
        Some("sparse") => false,
        Some("chat") => {
            let body = Generator::new(11).chat_request(10 * 1024);
            let table = ActionTable::new(Action::Pseudonymise).with("SECRET_*", Action::Block);
            let bytes: usize = (0..count)
                .map(|_| chat_request_once(&scanner, &table, black_box(&body)))
                .sum();
            println!(
                "{count} requests of {} bytes, {bytes} bytes out",
                body.len()
            );
            return;
        }
        _ => {
            eprintln!("usage: dlp_scan_once dense|sparse [MIB] | chat [COUNT]");
            std::process::exit(2);
        }
    };
    let text = Generator::new(7).prose(count << 20, dense);
    let findings = scanner.scan(&text);
    // A digest of every finding's place and rule, to compare two builds' findings exactly.
    let mut digest = 0xcbf2_9ce4_8422_2325u64;
    for f in &findings {
        for b in format!("{}:{}:{};", f.start, f.end, f.rule).bytes() {
            digest = (digest ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!(
        "{} bytes, {} findings, digest {digest:016x}",
        text.len(),
        findings.len()
    );
}

/// The bench's `chat_request_10kb`, once; a function of its own for callgrind to count.
#[inline(never)]
fn chat_request_once(scanner: &Scanner, table: &ActionTable, body: &[u8]) -> usize {
    Generator::chat_round_trip(scanner, table, body)
}
