//! The JSON-aware rewriter on arbitrary request bodies: no panic, and whatever it rewrites is
//! still valid JSON (and so valid UTF-8) with the same structure outside the scanned strings.
#![no_main]

use std::sync::OnceLock;

use cordon_router::api::{Api, parse};
use cordon_router::dlp::json::{apply_request, scan_request};
use cordon_router::dlp::{Action, ActionTable, Pseudonyms, Scanner, load_packs};
use libfuzzer_sys::fuzz_target;

fn scanner() -> &'static Scanner {
    static S: OnceLock<Scanner> = OnceLock::new();
    S.get_or_init(|| {
        let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../dlp-rules"));
        Scanner::new(&load_packs(dir, None).expect("packs")).expect("compile")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let api = [Api::ChatCompletions, Api::Completions, Api::Embeddings, Api::Messages][usize::from(selector % 4)];
    let Ok(mut req) = parse(api, Some("application/json"), body) else { return };
    let findings = scan_request(scanner(), api, &mut req.body);
    let table = ActionTable::new(Action::Pseudonymise)
        .with("CREDIT_CARD", Action::Mask { keep_last: 4 })
        .with("EMAIL_ADDRESS", Action::Hash)
        .with("PHONE_NUMBER", Action::Redact);
    let mut pseudonyms = Pseudonyms::default();
    if apply_request(api, &mut req.body, &findings, &table, b"fuzz", &mut pseudonyms).is_err() {
        return;
    }
    let out = serde_json::to_vec(&req.body).expect("serialise");
    let back: serde_json::Value = serde_json::from_slice(&out).expect("rewritten body is valid JSON");
    assert!(back.is_object());
});
