//! `cordon-inference`: the private inference server's command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use cordon_inference::config::Config;
use cordon_inference::model::Architecture;
use cordon_inference::server::{self, AppState};

#[derive(Parser)]
#[command(
    name = "cordon-inference",
    version,
    about = "Cordon's private inference server (OpenAI-compatible, on libtorch)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load the configured models and serve the OpenAI API.
    Serve {
        #[arg(long, short, default_value = "inference.toml")]
        config: PathBuf,
    },
    /// Validate the config and each model directory's config.json, without loading weights.
    Check {
        #[arg(long, short, default_value = "inference.toml")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORDON_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cordon-inference: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), Box<dyn std::error::Error>> {
    match command {
        Command::Check { config } => {
            let config = Config::load(&config)?;
            for m in &config.models {
                let arch = Architecture::detect(&m.path)?;
                println!("{}: {:?} at {}", m.name, arch, m.path.display());
            }
            println!(
                "ok: {} models, device {:?}, dtype {:?}",
                config.models.len(),
                config.placement.device,
                config.placement.kind
            );
            Ok(())
        }
        Command::Serve { config } => {
            let config = Config::load(&config)?;
            tracing::info!(device = ?config.placement.device, dtype = ?config.placement.kind, "loading {} models", config.models.len());
            let state = Arc::new(AppState::load(&config)?);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(server::serve(&config, state))?;
            Ok(())
        }
    }
}
