//! Small helpers the suites share: the repository root, polling, metrics text, `/readyz`.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Gateway;

pub fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

pub async fn get_text(gw: &Gateway, path: &str) -> String {
    reqwest::get(gw.url(path))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

pub async fn readyz(gw: &Gateway) -> Value {
    reqwest::get(gw.url("/readyz"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls until `f` holds or 10 s pass.
pub async fn eventually(mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
