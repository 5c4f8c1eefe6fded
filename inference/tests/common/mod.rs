//! Shared by the inference tests: the reference models and outputs made by `reference.py`
//! with transformers and sentence-transformers (once per version of the script, kept in
//! cargo's target tmpdir).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

/// The Python of the libtorch virtualenv (`source inference/setup.sh` sets it).
pub fn python() -> PathBuf {
    std::env::var_os("CORDON_TORCH_PYTHON").map(PathBuf::from).expect(
        "CORDON_TORCH_PYTHON is unset: run the tests with tests/run.sh, or `source inference/setup.sh` first",
    )
}

pub struct Fixtures {
    pub dir: PathBuf,
    pub reference: Value,
}

impl Fixtures {
    pub fn model_dir(&self, name: &str) -> PathBuf {
        PathBuf::from(self.reference[name]["path"].as_str().expect("model path"))
    }
}

pub fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference.py");
        let source = std::fs::read(&script).expect("reference.py");
        let digest = source.iter().fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("inference-reference-{digest:016x}"));
        let json = dir.join("reference.json");
        if !json.exists() {
            let _ = std::fs::remove_dir_all(&dir);
            let status = std::process::Command::new(python())
                .arg(&script)
                .arg(&dir)
                .env("HF_HUB_OFFLINE", "1")
                .status()
                .expect("run reference.py");
            assert!(status.success(), "reference.py failed");
        }
        let reference =
            serde_json::from_slice(&std::fs::read(&json).expect("reference.json")).expect("JSON");
        Fixtures { dir, reference }
    })
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}
