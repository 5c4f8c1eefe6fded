//! DLP throughput, each figure beside a same-run baseline (a memchr pass over the same bytes):
//! (a) 8 MB of sparse mixed Chinese/English prose with every bundled pack, (b) the same size of
//! dense digits (dates, amounts, order numbers), (c) one typical 10 KB chat request end to end
//! (parse JSON, scan, pseudonymise, serialise), (d) streaming un-masking per SSE chunk, alone
//! and with the output rules' stream redaction.
//! `cargo bench -p cordon-router --bench dlp`; report MB/s from the `thrpt` lines.

use std::hint::black_box;
use std::path::Path;

use cordon_router::dlp::corpus::Generator;
use cordon_router::dlp::unmask::Unmasker;
use cordon_router::dlp::{Action, ActionTable, Pseudonyms, Scanner, load_packs};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// The allocator the `cordon` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn scanner() -> Scanner {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
    Scanner::new(&load_packs(dir, None).expect("bundled packs")).expect("packs compile")
}

fn baseline(text: &str) -> usize {
    memchr::memchr_iter(b'@', text.as_bytes()).count()
}

fn scan_throughput(c: &mut Criterion) {
    let scanner = scanner();
    for (name, dense) in [("sparse_prose_8mb", false), ("dense_digits_8mb", true)] {
        let text = Generator::new(7).prose(8 << 20, dense);
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.sample_size(10);
        group.bench_function("memchr_baseline", |b| b.iter(|| baseline(black_box(&text))));
        group.bench_function("scan_all_packs", |b| {
            b.iter(|| scanner.scan(black_box(&text)).len())
        });
        group.finish();
    }
}

fn chat_request(c: &mut Criterion) {
    let scanner = scanner();
    let body = Generator::new(11).chat_request(10 * 1024);
    let table = ActionTable::new(Action::Pseudonymise).with("SECRET_*", Action::Block);
    let mut group = c.benchmark_group("chat_request_10kb");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("memchr_baseline", |b| {
        b.iter(|| memchr::memchr_iter(b'@', black_box(&body)).count())
    });
    group.bench_function("parse_scan_pseudonymise_serialise", |b| {
        b.iter(|| Generator::chat_round_trip(&scanner, &table, black_box(&body)))
    });
    group.finish();
}

fn stream_unmask(c: &mut Criterion) {
    let mut p = Pseudonyms::default();
    let tokens: Vec<String> = (0..20)
        .map(|i| p.token("EMAIL_ADDRESS", &format!("user{i}@example.com")))
        .collect();
    // A model answer of ~4 KB in 4-character chunks, with tokens split across chunks.
    let mut answer = String::new();
    for (i, t) in tokens.iter().cycle().take(60).enumerate() {
        answer.push_str(&format!("Reply {i} goes to {t} as agreed. "));
    }
    let chars: Vec<char> = answer.chars().collect();
    let chunks: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
    let mut group = c.benchmark_group("stream_unmask");
    group.throughput(Throughput::Elements(chunks.len() as u64));
    group.bench_function("memchr_baseline_per_chunk", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| memchr::memchr_iter(b'@', c.as_bytes()).count())
                .sum::<usize>()
        })
    });
    // The output rules as the gateway compiles them (the default: SECRET_* redacted).
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules"));
    let live = cordon_router::dlp::live::LiveRules::load(cordon_router::dlp::live::RuleSettings {
        dir: dir.to_owned(),
        packs: None,
        redact: vec!["SECRET_*".to_owned()].into(),
        watch: false,
    })
    .expect("bundled packs");
    let output = live.current().output.clone().expect("output rules");
    group.bench_function("unmask_and_redact_per_chunk", |b| {
        b.iter(|| {
            let mut u = Unmasker::new();
            let mut r = cordon_router::dlp::redact::StreamRedactor::default();
            let mut n = 0;
            for c in &chunks {
                n += r.push(&output, &u.push(&p, black_box(c)), false).len();
            }
            n + r.push(&output, &u.finish(&p), true).len()
        })
    });
    group.bench_function("unmask_per_chunk", |b| {
        b.iter(|| {
            let mut u = Unmasker::new();
            let mut n = 0;
            for c in &chunks {
                n += u.push(&p, black_box(c)).len();
            }
            n + u.finish(&p).len()
        })
    });
    group.finish();
}

criterion_group!(benches, scan_throughput, chat_request, stream_unmask);
criterion_main!(benches);
