//! The scanner on arbitrary text: no panic, and every finding is a non-empty, in-bounds span on
//! character boundaries, sorted and not overlapping.
#![no_main]

use std::sync::OnceLock;

use cordon_router::dlp::{Scanner, load_packs};
use libfuzzer_sys::fuzz_target;

fn scanner() -> &'static Scanner {
    static S: OnceLock<Scanner> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dlp-rules"));
        Scanner::new(&load_packs(dir, None).expect("packs")).expect("compile")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let findings = scanner().scan(&text);
    let mut last_end = 0;
    for f in &findings {
        assert!(f.start < f.end && f.end <= text.len());
        assert!(text.is_char_boundary(f.start) && text.is_char_boundary(f.end));
        assert!(f.start >= last_end, "findings overlap or are unsorted");
        last_end = f.end;
    }
});
