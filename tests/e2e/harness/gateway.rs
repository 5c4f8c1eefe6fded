//! The real `cordon` binary as a child process, on a loopback port, with its own data directory
//! and an API key created through `cordon keys create`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_cordon");

pub struct Gateway {
    child: Child,
    pub base: String,
    pub key: String,
    pub config_path: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `cordon serve` with the mock providers' keys, logging to `log`.
fn serve(config: &Path, log: std::fs::File) -> Child {
    Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("MOCK_OPENAI_KEY", super::mock::OPENAI_KEY)
        .env("MOCK_ANTHROPIC_KEY", super::mock::ANTHROPIC_KEY)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Runs `cordon` with arguments and returns (status, stdout, stderr).
pub fn cordon(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Gateway {
    /// Starts a gateway whose config is `[server]` with a free port, a data directory, then
    /// `rest` (providers, models, ...). `extra_server` is appended inside `[server]`.
    pub fn start(rest: &str) -> Self {
        Self::start_with(rest, "", |dir| {
            format!("[data]\ndir = \"{}\"\n", dir.display())
        })
    }

    pub fn start_with(rest: &str, extra_server: &str, data: impl Fn(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // The bundled rule packs, unless the test brings its own [dlp] table.
        let dlp = if rest.contains("[dlp]") {
            String::new()
        } else {
            format!(
                "[dlp]\nrules_dir = \"{}\"\n",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../dlp-rules")
            )
        };
        // The bundled policies, unless the test brings its own [policy] table.
        let policy = if rest.contains("[policy]") {
            String::new()
        } else {
            format!(
                "[policy]\ndir = \"{}\"\n",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../policies")
            )
        };
        let config = format!(
            "[server]\nhttp_listen = \"127.0.0.1:{port}\"\ngrace_period_seconds = 0\ngraceful_shutdown_timeout_seconds = 1\n{extra_server}\n{}\n[auth]\nkey_cache_ttl_seconds = 0\n{dlp}{policy}{rest}",
            data(dir.path())
        );
        let config_path = dir.path().join("cordon.toml");
        std::fs::write(&config_path, config).unwrap();
        let cfg = config_path.to_str().unwrap();
        let (ok, out, err) = cordon(&[
            "keys", "create", "--config", cfg, "--name", "e2e", "--owner", "tester", "--team",
            "qa", "--json",
        ]);
        assert!(ok, "keys create failed: {err}");
        let key = serde_json::from_str::<serde_json::Value>(&out).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned();
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let child = serve(&config_path, log);
        let gw = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            key,
            config_path,
            _dir: dir,
        };
        gw.wait_healthy();
        gw
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = self.base.trim_start_matches("http://").to_owned();
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                use std::io::{Read, Write};
                let _ =
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway did not become healthy; log:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("gateway.log")).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the process with SIGKILL (no cleanup of any kind) and starts it again on the same
    /// config and data directory.
    pub fn kill9_and_restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self._dir.path().join("gateway.log"))
            .unwrap();
        self.child = serve(&self.config_path, log);
        self.wait_healthy();
    }

    /// Creates another API key (team `qa` unless `extra` says otherwise) and returns it.
    pub fn create_key(&self, extra: &[&str]) -> String {
        let cfg = self.config_path.to_str().unwrap();
        let mut args = vec!["keys", "create", "--config", cfg, "--name", "k", "--json"];
        if !extra.contains(&"--team") {
            args.extend_from_slice(&["--team", "qa"]);
        }
        args.extend_from_slice(extra);
        let (ok, out, err) = cordon(&args);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit after a signal, returning whether it exited in time.
    pub fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
