//! Precision and recall of the bundled packs over a generated, labelled corpus (English and
//! Chinese, PII next to Chinese characters, full-width digits, separators, hard negatives).
//! Run with `--nocapture` to see the per-type table.

use std::collections::BTreeMap;
use std::path::Path;

use cordon_router::dlp::corpus::Generator;
use cordon_router::dlp::{Scanner, load_packs};

const CHECKSUM_VALIDATED: [&str; 7] = [
    "CREDIT_CARD",
    "CN_RESIDENT_ID",
    "IBAN_CODE",
    "CN_USCC",
    "HK_ID",
    "TW_ID",
    "UK_NHS",
];

#[test]
fn precision_and_recall_meet_targets() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
    let scanner = Scanner::new(&load_packs(dir, None).unwrap()).unwrap();
    let mut generator = Generator::new(20261122);
    // (true positives, false negatives, false positives) per entity type.
    let mut counts: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    let mut negative_hits = Vec::new();
    let mut examples: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for _ in 0..20_000 {
        let sample = generator.sample();
        let found = scanner.scan(&sample.text);
        if sample.negative && !found.is_empty() {
            let hits: Vec<_> = found
                .iter()
                .map(|f| (&*f.entity, &sample.text[f.start..f.end]))
                .collect();
            negative_hits.push((sample.kind, format!("{:?}: {hits:?}", sample.text)));
        }
        for &(entity, start, end) in &sample.labels {
            let hit = found
                .iter()
                .any(|f| &*f.entity == entity && f.start == start && f.end == end);
            let c = counts.entry(entity.to_owned()).or_default();
            if hit {
                c.0 += 1
            } else {
                c.1 += 1;
                examples
                    .entry(format!("{entity} missed"))
                    .or_default()
                    .push(format!("{:?} [{}]", sample.text, &sample.text[start..end]));
            }
        }
        for f in &found {
            let expected = sample
                .labels
                .iter()
                .any(|&(e, s, t)| e == &*f.entity && s == f.start && t == f.end);
            if !expected {
                counts.entry(f.entity.to_string()).or_default().2 += 1;
                examples
                    .entry(format!("{} false", f.entity))
                    .or_default()
                    .push(format!(
                        "{:?} [{}]",
                        sample.text,
                        &sample.text[f.start..f.end]
                    ));
            }
        }
    }
    println!(
        "{:<16} {:>6} {:>6} {:>6} {:>9} {:>7}",
        "entity", "tp", "fn", "fp", "precision", "recall"
    );
    let (mut tp_all, mut fp_all) = (0, 0);
    let mut failures = Vec::new();
    for (entity, (tp, fneg, fp)) in &counts {
        let precision = f64::from(*tp) / f64::from((tp + fp).max(1));
        let recall = f64::from(*tp) / f64::from((tp + fneg).max(1));
        println!("{entity:<16} {tp:>6} {fneg:>6} {fp:>6} {precision:>9.4} {recall:>7.4}");
        tp_all += tp;
        fp_all += fp;
        let target = if CHECKSUM_VALIDATED.contains(&entity.as_str()) {
            0.99
        } else {
            0.95
        };
        if tp + fneg > 0 && recall < target {
            failures.push(format!("{entity}: recall {recall:.4} < {target}"));
        }
    }
    let precision = f64::from(tp_all) / f64::from((tp_all + fp_all).max(1));
    println!("overall precision {precision:.4}");
    if precision < 0.98 {
        failures.push(format!("overall precision {precision:.4} < 0.98"));
    }
    // A look-alike that fails its checksum may not be found as anything.
    let checksum_negatives: Vec<_> = negative_hits
        .iter()
        .filter(|(kind, _)| CHECKSUM_VALIDATED.contains(kind))
        .map(|(_, h)| h)
        .collect();
    if !checksum_negatives.is_empty() {
        failures.push(format!(
            "{} checksum-failing look-alikes were found, e.g. {}",
            checksum_negatives.len(),
            checksum_negatives[0]
        ));
    }
    for (kind, list) in &examples {
        println!(
            "{kind}: {} e.g. {}",
            list.len(),
            list.iter().take(3).cloned().collect::<Vec<_>>().join(" | ")
        );
    }
    println!("hard negatives with a finding: {}", negative_hits.len());
    // Order numbers, timestamps, amounts and version strings may not be found either.
    if negative_hits.len() > checksum_negatives.len() {
        failures.push(format!(
            "{} other hard negatives were found",
            negative_hits.len() - checksum_negatives.len()
        ));
    }
    for (_, h) in negative_hits.iter().take(8) {
        println!("  {h}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
