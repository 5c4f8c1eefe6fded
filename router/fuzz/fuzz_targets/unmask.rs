//! The stream un-masker: for any text cut into any chunks, the streamed output equals restoring
//! the whole text at once, and nothing is lost or duplicated.
#![no_main]

use cordon_router::dlp::Pseudonyms;
use cordon_router::dlp::unmask::{Unmasker, restore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut pseudonyms = Pseudonyms::default();
    pseudonyms.token("EMAIL_ADDRESS", "a@b.cn");
    pseudonyms.token("EMAIL_ADDRESS", "c@d.cn");
    pseudonyms.token("PHONE_NUMBER", "13812345678");
    // Chunk boundaries come from the input's own bytes, on character boundaries.
    let mut cuts: Vec<usize> = data
        .iter()
        .enumerate()
        .filter(|(_, b)| **b % 7 == 0)
        .map(|(i, _)| i)
        .filter(|&i| text.is_char_boundary(i))
        .collect();
    cuts.push(text.len());
    let mut u = Unmasker::new();
    let mut out = String::new();
    let mut from = 0;
    for cut in cuts {
        if cut < from || cut > text.len() {
            continue;
        }
        out.push_str(&u.push(&pseudonyms, &text[from..cut]));
        from = cut;
    }
    out.push_str(&u.finish(&pseudonyms));
    assert_eq!(out, restore(&pseudonyms, &text));
});
