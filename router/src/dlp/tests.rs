//! Scanner tests over the bundled packs: every rule's own examples, then the hard cases.

use std::path::Path;

use super::*;

fn scanner() -> Scanner {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
    Scanner::new(&load_packs(dir, None).unwrap()).unwrap()
}

fn entities(s: &Scanner, text: &str) -> Vec<(String, String)> {
    s.scan(text)
        .into_iter()
        .map(|f| (f.entity.to_string(), text[f.start..f.end].to_owned()))
        .collect()
}

#[test]
fn scanner_is_send_and_sync() {
    fn assert<T: Send + Sync>() {}
    assert::<Scanner>();
}

#[test]
fn every_rule_passes_its_examples() {
    let s = scanner();
    let failures = examples::run(&s);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn digits_next_to_chinese_characters() {
    let s = scanner();
    assert_eq!(
        entities(&s, "电话13812345678谢谢"),
        [("PHONE_NUMBER".into(), "13812345678".into())]
    );
    assert_eq!(
        entities(&s, "身份证号11010519491231002X，"),
        [("CN_RESIDENT_ID".into(), "11010519491231002X".into())]
    );
    // A phone number inside a longer digit run is not a phone number.
    assert!(entities(&s, "流水号213812345678901").is_empty());
}

#[test]
fn full_width_digits_keep_original_offsets() {
    let s = scanner();
    let text = "手机：１３８１２３４５６７８。";
    let found = s.scan(text);
    assert_eq!(found.len(), 1);
    assert_eq!(
        &text[found[0].start..found[0].end],
        "１３８１２３４５６７８"
    );
}

#[test]
fn checksum_failures_are_not_found() {
    let s = scanner();
    for text in [
        "卡号4111 1111 1111 1112",
        "身份证110105194912310021",
        "IBAN GB82 WEST 1234 5698 7654 33",
        "代码91350100M000100Y44",
    ] {
        assert!(
            entities(&s, text).is_empty(),
            "{text}: {:?}",
            entities(&s, text)
        );
    }
}

#[test]
fn validated_beats_unvalidated_in_overlaps() {
    let s = scanner();
    // 16 digits that pass Luhn: a card, not a phone number inside it.
    assert_eq!(
        entities(&s, "pay 4111111111111111 now"),
        [("CREDIT_CARD".into(), "4111111111111111".into())]
    );
}

#[test]
fn secrets_are_gated_and_found() {
    let s = scanner();
    let key = "ghp_0123456789abcdefghijABCDEFGHIJ012345";
    assert_eq!(
        entities(&s, &format!("use {key} please")),
        [("SECRET_GITHUB_TOKEN".into(), key.into())]
    );
}

#[test]
fn custom_dictionaries_match_whole_terms() {
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dlp-rules/examples"
    ));
    let s = Scanner::new(&load_packs(dir, None).unwrap()).unwrap();
    let text = "Status of project bluefin for Contoso Holdings; 天穹计划进展; not Fabrikamx, nor fabrikam.";
    assert_eq!(
        entities(&s, text),
        [
            ("CUSTOM_PROJECTS".into(), "project bluefin".into()),
            ("CUSTOM_CUSTOMERS".into(), "Contoso Holdings".into()),
            ("CUSTOM_PROJECTS".into(), "天穹计划".into()),
        ]
    );
}

#[test]
fn bundled_personal_data_patterns_are_all_gated() {
    // Every bundled pattern needs a trigger byte, so no automaton runs over trigger-free prose.
    assert_eq!(scanner().ungated_patterns(), 0);
}
