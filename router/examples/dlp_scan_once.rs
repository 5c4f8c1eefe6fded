//! One scan of the DLP bench's generated text, for instruction counts that repeat exactly
//! (callgrind) where wall-clock figures on a shared machine do not:
//! `valgrind --tool=callgrind --toggle-collect='*Scanner::scan*' \
//!   target/release/examples/dlp_scan_once dense 2`
//! The text is the bench's (`Generator::new(7).prose`), `dense` or `sparse`, of the given MiB.

use std::path::Path;

use cordon_router::dlp::corpus::Generator;
use cordon_router::dlp::{Scanner, load_packs};

fn main() {
    let mut args = std::env::args().skip(1);
    let dense = match args.next().as_deref() {
        Some("dense") => true,
        Some("sparse") => false,
        _ => {
            eprintln!("usage: dlp_scan_once dense|sparse [MIB]");
            std::process::exit(2);
        }
    };
    let mib: usize = args
        .next()
        .map_or(2, |s| s.parse().expect("MiB as a number"));
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
    let scanner = Scanner::new(&load_packs(dir, None).expect("bundled packs")).expect("compile");
    let text = Generator::new(7).prose(mib << 20, dense);
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
