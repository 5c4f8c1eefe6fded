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
    /// `llama`, `qwen2` or `minilm`.
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

/// A `cordon-inference serve` process on a port the OS picked; killed when dropped.
pub struct Server {
    child: std::process::Child,
    pub base: String,
    _config: tempfile::TempDir,
}

impl Server {
    /// Starts the server with `models` (TOML `[[models]]` tables) on the CPU.
    pub fn start(models: &str) -> Self {
        use std::io::BufRead;
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("inference.toml");
        std::fs::write(
            &config,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n[device]\nkind = \"cpu\"\nthreads = 1\n{models}"),
        )
        .expect("write config");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cordon-inference"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("CORDON_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start cordon-inference");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("cordon-inference did not start: {line:?}"))
            .to_owned();
        Self {
            child,
            base: format!("http://{addr}"),
            _config: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `[[models]]` tables for the reference models: `chat` (Qwen2), `base` (Llama), `minilm`.
pub fn model_tables(extra: &str) -> String {
    let f = fixtures();
    format!(
        "[[models]]\nname = \"chat\"\npath = {:?}\n{extra}\n[[models]]\nname = \"base\"\npath = {:?}\n{extra}\n[[models]]\nname = \"minilm\"\npath = {:?}\n",
        f.model_dir("qwen2"),
        f.model_dir("llama"),
        f.model_dir("minilm"),
    )
}
