//! The `cordon` command: run the gateway, check a config, manage API keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cordon_router::config::Config;
use cordon_router::db::Database;
use cordon_router::keys::{KeyStore, NewKey};

#[derive(Parser)]
#[command(name = "cordon", version, about = "Cordon: an on-prem AI gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file; without it, the embedded default (deploy/cordon.default.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file; exits non-zero and names each bad field.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Scan text with the DLP rule packs, test the packs, or rewrite text.
    Dlp {
        /// The directory of rule packs.
        #[arg(long, global = true, default_value = "dlp-rules")]
        rules: PathBuf,
        /// Only these packs (comma-separated names).
        #[arg(long, global = true, value_delimiter = ',')]
        packs: Option<Vec<String>>,
        #[command(subcommand)]
        command: DlpCommand,
    },
    /// Test, evaluate and check Rego policy bundles.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Verify, query, export and summarise the audit log.
    Audit {
        /// The gateway's config: its [audit], [data] and [database] tables are read.
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage API keys.
    Keys {
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum DlpCommand {
    /// Print every finding in FILE (or standard input): entity, byte offsets, confidence, rule.
    Scan {
        /// One JSON object per finding per line.
        #[arg(long)]
        json: bool,
        /// Also print the matched text (never done by default).
        #[arg(long)]
        show_values: bool,
        /// A file, or - for standard input.
        #[arg(default_value = "-")]
        input: String,
    },
    /// Run every rule's positive and negative examples; exits non-zero on any failure.
    Test,
    /// Print the text with actions applied, e.g. --action EMAIL_ADDRESS=pseudonymise
    /// --action default=redact (the default for unnamed types is redact).
    Mask {
        #[arg(long = "action", value_name = "ENTITY=ACTION")]
        actions: Vec<String>,
        #[arg(default_value = "-")]
        input: String,
    },
}

/// Which records an audit command reads.
#[derive(clap::Args, Debug, Default)]
struct AuditFilter {
    /// From this time (RFC 3339, e.g. 2026-11-01T00:00:00Z, or unix milliseconds).
    #[arg(long)]
    from: Option<String>,
    /// Until this time (exclusive).
    #[arg(long)]
    to: Option<String>,
    #[arg(long)]
    user: Option<String>,
    #[arg(long)]
    team: Option<String>,
    /// API key id.
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// private or hosted.
    #[arg(long)]
    route: Option<String>,
    /// allow, deny, error or none.
    #[arg(long)]
    decision: Option<String>,
    /// A policy reason code, e.g. secret_in_prompt.
    #[arg(long)]
    reason: Option<String>,
    /// A DLP entity type, e.g. CN_RESIDENT_ID.
    #[arg(long)]
    entity: Option<String>,
    /// One gateway instance's chain.
    #[arg(long)]
    chain: Option<String>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every chain and check the signed checkpoints; exits non-zero and names the
    /// first altered, inserted, deleted or reordered record.
    Verify {
        /// The Ed25519 public key (hex) checkpoints must be signed with; default: the key of
        /// the config (audit.signing_key or DATA_DIR/audit-signing.key).
        #[arg(long)]
        public_key: Option<String>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Print matching records as a table, or JSON lines with --json.
    Query {
        #[command(flatten)]
        filter: AuditFilter,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Write matching records as CSV or JSON lines.
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        #[arg(long, value_parser = ["csv", "jsonl"])]
        format: String,
        /// A file (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Requests, denials, tokens and cost by user, team and model.
    Stats {
        #[command(flatten)]
        filter: AuditFilter,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Run every `test_*` rule in the bundle's `*_test.rego` files (as `opa test -v` does) and
    /// report coverage per policy file; exits non-zero on any failure or below --threshold.
    Test {
        #[arg(default_value = "policies")]
        dir: PathBuf,
        /// Minimum total coverage in percent.
        #[arg(long, default_value_t = 0.0)]
        threshold: f64,
        /// One JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate `data.cordon.main.decision` for cordon.input/v1 documents (one JSON line of
    /// output per --input).
    Eval {
        #[arg(long, default_value = "policies")]
        dir: PathBuf,
        /// An input document (repeat for several).
        #[arg(long, required = true)]
        input: Vec<PathBuf>,
        /// Also show what contributed: covered lines per file and the policy's print output.
        #[arg(long)]
        explain: bool,
        #[arg(long, default_value_t = DEFAULT_MAX_INSTRUCTIONS)]
        max_instructions: usize,
    },
    /// Compile the bundle and report references to input fields that cordon.input/v1 does not
    /// define.
    Check {
        #[arg(default_value = "policies")]
        dir: PathBuf,
    },
}

const DEFAULT_MAX_INSTRUCTIONS: usize = cordon_router::config::DEFAULT_POLICY_MAX_INSTRUCTIONS;

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once; only its hash is stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        owner: String,
        #[arg(long, default_value = "")]
        team: String,
        /// A model the key may use (repeat); none means every model.
        #[arg(long = "model")]
        models: Vec<String>,
        /// A group of the key's holder, for policies (repeat).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// A role of the key's holder, for policies (repeat).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// An attribute for policies, such as department=risk (repeat).
        #[arg(long = "attr", value_name = "NAME=VALUE")]
        attributes: Vec<String>,
        /// Lifetime in days; none means no expiry.
        #[arg(long)]
        expires_in_days: Option<u32>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

// The gateway allocates per request on several worker threads; glibc's arenas contend there.
// Built without transparent huge pages (`no_thp`): with them, mimalloc's arena is backed by 2 MiB
// pages and resident memory grew by about 17 MiB at start and 25 MiB under load, for no
// throughput that the load bench could see. `MIMALLOC_ALLOW_THP=1` turns them back on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Log lines are written by a background thread in batches, so a slow disk never stalls a
    // request and a line costs no wakeup. Not lossy: when the buffer is full, the request waits
    // rather than a line being dropped.
    let (writer, _flush_on_exit) = match cordon_router::logwriter::LogWriter::new(std::io::stderr())
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: cannot start the log writer thread: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORDON_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p),
        None => Config::embedded_default(),
    }
    .map_err(|e| e.to_string())
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { config } => {
            let config = load(config.as_ref())?;
            cordon_router::proxy::server::run(config).map_err(|e| e.to_string())
        }
        Command::Check { config } => {
            let c = load(Some(&config))?;
            let policy = match &c.policy {
                Some(settings) => {
                    let b = cordon_router::policy::set::prepare(&settings.dir, settings)
                        .map_err(|e| format!("policy.dir: {e}"))?;
                    if let Some(dir) = &settings.shadow_dir {
                        cordon_router::policy::set::prepare(dir, settings)
                            .map_err(|e| format!("policy.shadow_dir: {e}"))?;
                    }
                    format!("policy {}", b.bundle.short_version())
                }
                None => "policy disabled".to_owned(),
            };
            println!(
                "{}: ok ({} providers, {} models, {} DLP rules, {policy})",
                config.display(),
                c.providers.len(),
                c.models.len(),
                c.dlp
                    .rules
                    .as_ref()
                    .map_or(0, |r| r.current().scanner.rules().len())
            );
            Ok(())
        }
        Command::Dlp {
            rules,
            packs,
            command,
        } => dlp(&rules, packs.as_deref(), command),
        Command::Policy { command } => policy(command),
        Command::Audit { config, command } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(audit(config.as_deref(), command))
        }
        Command::Keys { config, command } => {
            let url = cordon_router::config::database_url(config.as_deref())
                .map_err(|e| e.to_string())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(keys(&url, command))
        }
    }
}

async fn keys(database_url: &str, command: KeysCommand) -> Result<(), String> {
    let db = Database::open(database_url)
        .await
        .map_err(|e| e.to_string())?;
    let store = KeyStore::new(db);
    match command {
        KeysCommand::Create {
            name,
            owner,
            team,
            models,
            groups,
            roles,
            attributes,
            expires_in_days,
            json,
        } => {
            let attributes = attributes
                .iter()
                .map(|a| {
                    a.split_once('=')
                        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                        .ok_or_else(|| format!("--attr {a}: write it as NAME=VALUE"))
                })
                .collect::<Result<_, _>>()?;
            let expires_at =
                expires_in_days.map(|d| cordon_router::keys::now_unix() + i64::from(d) * 86_400);
            let (key, secret) = store
                .create(NewKey {
                    name,
                    owner,
                    team,
                    allowed_models: models,
                    groups,
                    roles,
                    attributes,
                    expires_at,
                })
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"id": key.id, "key": secret, "name": key.name})
                );
            } else {
                println!(
                    "id:  {}\nkey: {secret}\nThe key is shown only now; store it safely.",
                    key.id
                );
            }
        }
        KeysCommand::List { json } => {
            let keys = store.list().await.map_err(|e| e.to_string())?;
            if json {
                for k in keys {
                    println!("{}", serde_json::to_string(&k).map_err(|e| e.to_string())?);
                }
            } else {
                println!(
                    "{:<22} {:<11} {:<16} {:<12} {:<12} {:<8} MODELS",
                    "ID", "PREFIX", "NAME", "OWNER", "TEAM", "STATE"
                );
                let now = cordon_router::keys::now_unix();
                for k in keys {
                    let state = if k.revoked {
                        "revoked"
                    } else if k.expires_at.is_some_and(|t| t <= now) {
                        "expired"
                    } else {
                        "active"
                    };
                    let models = if k.allowed_models.is_empty() {
                        "*".to_owned()
                    } else {
                        k.allowed_models.join(",")
                    };
                    println!(
                        "{:<22} {:<11} {:<16} {:<12} {:<12} {:<8} {models}",
                        k.id, k.prefix, k.name, k.owner, k.team, state
                    );
                }
            }
        }
        KeysCommand::Revoke { id } => {
            if !store.revoke(&id).await.map_err(|e| e.to_string())? {
                return Err(format!(
                    "no key with id {id}; `cordon keys list` shows the ids"
                ));
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

fn policy(command: PolicyCommand) -> Result<(), String> {
    use cordon_router::policy::{Bundle, CompiledBundle, check, testing};
    match command {
        PolicyCommand::Test {
            dir,
            threshold,
            json,
        } => {
            let bundle = Bundle::load(&dir).map_err(|e| e.to_string())?;
            let report = testing::run_tests(&bundle).map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", report.render());
            }
            if report.results.is_empty() {
                return Err(format!("no tests found in {}", dir.display()));
            }
            if !report.all_passed() {
                return Err(format!(
                    "{} of {} tests failed",
                    report.results.len() - report.passed(),
                    report.results.len()
                ));
            }
            if report.coverage_percent < threshold {
                return Err(format!(
                    "coverage {:.2}% is below the threshold {threshold:.2}%",
                    report.coverage_percent
                ));
            }
            Ok(())
        }
        PolicyCommand::Eval {
            dir,
            input,
            explain,
            max_instructions,
        } => {
            let bundle = Bundle::load(&dir).map_err(|e| e.to_string())?;
            let compiled =
                CompiledBundle::compile(bundle, max_instructions).map_err(|e| e.to_string())?;
            for path in input {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let doc: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
                let out = if explain {
                    let x = compiled.explain(doc).map_err(|e| e.to_string())?;
                    serde_json::json!({
                        "input": path.display().to_string(),
                        "version": compiled.version(),
                        "decision": x.raw,
                        "enforced": x.decision,
                        "explain": {"covered": x.covered.into_iter().collect::<std::collections::BTreeMap<_, _>>(), "prints": x.prints},
                    })
                } else {
                    let (raw, enforced) = compiled.evaluate_json(doc);
                    serde_json::json!({
                        "input": path.display().to_string(),
                        "version": compiled.version(),
                        "decision": raw,
                        "enforced": enforced,
                    })
                };
                println!("{out}");
            }
            Ok(())
        }
        PolicyCommand::Check { dir } => {
            let bundle = Bundle::load(&dir).map_err(|e| e.to_string())?;
            let issues = check::check_input_refs(&bundle);
            let cache = match cordon_router::policy::cache::InputReads::of(&bundle) {
                Ok(reads) => format!("decision cache: on; decisions depend on {reads}"),
                Err(why) => format!("decision cache: off: {why}"),
            };
            let (modules, tests, version) = (
                bundle.modules.len(),
                bundle.tests.len(),
                bundle.version.clone(),
            );
            CompiledBundle::compile(bundle, DEFAULT_MAX_INSTRUCTIONS).map_err(|e| e.to_string())?;
            for i in &issues {
                println!("{}:{}: {}: {}", i.file, i.line, i.reference, i.message);
            }
            if !issues.is_empty() {
                return Err(format!(
                    "{} reference(s) to input fields that cordon.input/v1 does not define",
                    issues.len()
                ));
            }
            println!(
                "{}: ok ({modules} policy files, {tests} test files, {version})",
                dir.display()
            );
            println!("{cache}");
            Ok(())
        }
    }
}

fn parse_time(field: &str, v: &Option<String>) -> Result<Option<i64>, String> {
    let Some(v) = v else { return Ok(None) };
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(Some(ms));
    }
    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
        .map(|t| Some((t.unix_timestamp_nanos() / 1_000_000) as i64))
        .map_err(|e| format!("--{field} {v}: not RFC 3339 or unix milliseconds ({e})"))
}

impl AuditFilter {
    fn to_store(&self) -> Result<cordon_router::audit::store::Filter, String> {
        Ok(cordon_router::audit::store::Filter {
            from_ms: parse_time("from", &self.from)?,
            to_ms: parse_time("to", &self.to)?,
            chain_id: self.chain.clone(),
            user_id: self.user.clone(),
            team: self.team.clone(),
            api_key_id: self.key.clone(),
            model: self.model.clone(),
            route: self.route.clone(),
            decision: self.decision.clone(),
            reason_code: self.reason.clone(),
            entity_type: self.entity.clone(),
        })
    }
}

fn progress_bar(len: i64) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(len.max(0) as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} records ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

async fn audit(config: Option<&std::path::Path>, command: AuditCommand) -> Result<(), String> {
    use cordon_router::audit::{report, store::AuditStore, verify};
    let (settings, data_dir) =
        cordon_router::config::audit_settings(config).map_err(|e| e.to_string())?;
    let store = AuditStore::new(
        Database::open(&settings.database_url)
            .await
            .map_err(|e| e.to_string())?,
    );
    match command {
        AuditCommand::Verify {
            public_key,
            from,
            to,
            json,
        } => {
            let trusted = match public_key {
                Some(k) => cordon_router::audit::verifying_key_from_hex(&k)
                    .map_err(|e| format!("--public-key: {e}"))?,
                None => cordon_router::proxy::server::audit_signing_key(&settings, &data_dir)
                    .map_err(|e| e.to_string())?
                    .verifying_key(),
            };
            let filter = AuditFilter {
                from,
                to,
                ..Default::default()
            }
            .to_store()?;
            let pb = progress_bar(store.count(&filter).await.map_err(|e| e.to_string())?);
            let report = verify::verify(&store, &filter, &trusted, || pb.inc(1))
                .await
                .map_err(|e| e.to_string())?;
            pb.finish_and_clear();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
            } else {
                for (chain, last) in &report.chains {
                    println!("chain {chain}: records up to {last}");
                }
                for p in &report.problems {
                    println!(
                        "TAMPERED chain {} seq {}: {:?}: {}",
                        p.chain_id, p.seq, p.kind, p.detail
                    );
                }
                println!(
                    "{} records, {} valid checkpoints, {} problems",
                    report.records,
                    report.checkpoints,
                    report.problems.len()
                );
            }
            if report.problems.is_empty() {
                Ok(())
            } else {
                Err("the audit log does not verify".into())
            }
        }
        AuditCommand::Query {
            filter,
            limit,
            json,
        } => {
            let filter = filter.to_store()?;
            if !json {
                println!("{}", report::TABLE_HEADER);
            }
            let mut n = 0;
            store
                .scan(&filter, |row| {
                    if let Some(line) = report::Line::of(&row) {
                        if json {
                            println!("{}", serde_json::to_string(&line).unwrap_or_default());
                        } else {
                            println!("{}", report::table_row(&line));
                        }
                        n += 1;
                    }
                    n < limit
                })
                .await
                .map_err(|e| e.to_string())
        }
        AuditCommand::Export {
            filter,
            format,
            output,
        } => {
            let filter = filter.to_store()?;
            let out: Box<dyn std::io::Write> = match &output {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .map_err(|e| format!("cannot create {}: {e}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let pb = progress_bar(store.count(&filter).await.map_err(|e| e.to_string())?);
            let mut failed: Option<String> = None;
            if format == "csv" {
                let mut w = csv::Writer::from_writer(out);
                w.write_record(report::CSV_HEADER)
                    .map_err(|e| e.to_string())?;
                store
                    .scan(&filter, |row| {
                        pb.inc(1);
                        if let Some(line) = report::Line::of(&row)
                            && let Err(e) = w.write_record(report::csv_row(&line))
                        {
                            failed = Some(e.to_string());
                            return false;
                        }
                        true
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                w.flush().map_err(|e| e.to_string())?;
            } else {
                let mut out = out;
                store
                    .scan(&filter, |row| {
                        pb.inc(1);
                        if let Some(line) = report::Line::of(&row) {
                            let r = serde_json::to_writer(&mut out, &line)
                                .map_err(|e| e.to_string())
                                .and_then(|_| out.write_all(b"\n").map_err(|e| e.to_string()));
                            if let Err(e) = r {
                                failed = Some(e);
                                return false;
                            }
                        }
                        true
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            }
            pb.finish_and_clear();
            match failed {
                Some(e) => Err(format!("export failed: {e}")),
                None => Ok(()),
            }
        }
        AuditCommand::Stats { filter, json } => {
            let filter = filter.to_store()?;
            let mut stats = report::Stats::default();
            store
                .scan(&filter, |row| {
                    stats.add(&row);
                    true
                })
                .await
                .map_err(|e| e.to_string())?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&stats).map_err(|e| e.to_string())?
                );
            } else {
                print!("{}", stats.render());
            }
            Ok(())
        }
    }
}

fn read_input(input: &str) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    if input == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
    } else {
        text = std::fs::read_to_string(input).map_err(|e| format!("cannot read {input}: {e}"))?;
    }
    Ok(text)
}

fn dlp(
    rules: &std::path::Path,
    packs: Option<&[String]>,
    command: DlpCommand,
) -> Result<(), String> {
    use cordon_router::dlp::{self, Action, ActionTable, Pseudonyms, Scanner};
    let packs = dlp::load_packs(rules, packs).map_err(|e| e.to_string())?;
    let scanner = Scanner::new(&packs).map_err(|e| e.to_string())?;
    match command {
        DlpCommand::Scan {
            json,
            show_values,
            input,
        } => {
            let text = read_input(&input)?;
            let findings = scanner.scan(&text);
            if !json {
                println!(
                    "{:<22} {:>8} {:>8} {:>5}  RULE",
                    "ENTITY", "START", "END", "CONF"
                );
            }
            for f in findings {
                let value = show_values.then(|| &text[f.start..f.end]);
                if json {
                    let mut line = serde_json::json!({
                        "entity": &*f.entity, "start": f.start, "end": f.end,
                        "confidence": (f64::from(f.confidence) * 100.0).round() / 100.0, "rule": &*f.rule,
                    });
                    if let Some(v) = value {
                        line["value"] = serde_json::json!(v);
                    }
                    println!("{line}");
                } else {
                    println!(
                        "{:<22} {:>8} {:>8} {:>5.2}  {}{}",
                        f.entity,
                        f.start,
                        f.end,
                        f.confidence,
                        f.rule,
                        value.map(|v| format!("  {v:?}")).unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
        DlpCommand::Test => {
            let results = dlp::examples::check(&scanner);
            let failed: usize = results.iter().filter(|r| !r.failures.is_empty()).count();
            for r in &results {
                if r.failures.is_empty() {
                    println!("PASS {}", r.rule);
                } else {
                    println!("FAIL {}", r.rule);
                    for f in &r.failures {
                        println!("     {f}");
                    }
                }
            }
            println!("{} passed, {} failed", results.len() - failed, failed);
            if failed > 0 {
                return Err(format!("{failed} rules failed their examples"));
            }
            Ok(())
        }
        DlpCommand::Mask { actions, input } => {
            let mut table = ActionTable::new(Action::Redact);
            for a in actions {
                let (entity, action) = a
                    .split_once('=')
                    .ok_or_else(|| format!("--action {a}: write ENTITY=ACTION"))?;
                let action: Action = action.parse().map_err(|e| format!("--action {a}: {e}"))?;
                if entity == "default" {
                    table.default = action;
                } else {
                    table = table.with(entity, action);
                }
            }
            let text = read_input(&input)?;
            let findings = scanner.scan(&text);
            let mut pseudonyms = Pseudonyms::default();
            let key = std::env::var("CORDON_DLP_HASH_KEY").unwrap_or_default();
            match dlp::actions::apply(&text, &findings, &table, key.as_bytes(), &mut pseudonyms) {
                Ok(out) => {
                    print!("{out}");
                    Ok(())
                }
                Err(blocked) => Err(format!("blocked: the text contains {}", blocked.join(", "))),
            }
        }
    }
}
