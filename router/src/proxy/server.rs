//! Builds and runs the Pingora server: HTTP and HTTPS listeners, worker threads, graceful
//! shutdown on SIGTERM (Pingora's own signal handling).

use pingora::proxy::http_proxy_service;
use pingora::server::Server;
use pingora::server::configuration::ServerConf;

use std::sync::Arc;

use super::Gateway;
use crate::audit::writer::{AuditLog, AuditSettings};
use crate::config::Config;
use crate::db::{Database, DbError};
use crate::metrics::Metrics;
use crate::policy::PolicySet;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Database(#[from] DbError),
    #[error("cannot start: {0}")]
    Start(String),
}

/// Runs until the process is told to stop (SIGTERM: graceful; SIGINT: at once).
pub fn run(config: Config) -> Result<(), ServeError> {
    // Open and migrate the database before listening, so that a bad URL fails now, clearly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Start(e.to_string()))?;
    rt.block_on(async {
        let db = Database::open(&config.database_url).await?;
        db.pool.close().await;
        Ok::<_, DbError>(())
    })?;
    drop(rt);

    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout_seconds),
        pid_file: config.data_dir.join("cordon.pid").display().to_string(),
        upgrade_sock: config
            .data_dir
            .join("cordon_upgrade.sock")
            .display()
            .to_string(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let http_listen = config.server.http_listen.clone();
    let https = config.server.https.clone();
    let hash_key = dlp_hash_key(&config)?;
    let metrics = Arc::new(Metrics::new());
    let policy = match &config.policy {
        Some(settings) => {
            let set = Arc::new(
                PolicySet::load(settings.clone(), metrics.clone())
                    .map_err(|e| ServeError::Start(format!("policy.dir: {e}")))?,
            );
            set.spawn_reloader()
                .map_err(|e| ServeError::Start(format!("cannot watch the policy bundle: {e}")))?;
            tracing::info!(
                version = set.active().bundle.short_version(),
                dir = %settings.dir.display(),
                shadow = settings.shadow_dir.is_some(),
                "policy bundle loaded"
            );
            Some(set)
        }
        None => {
            tracing::warn!("policy.enabled = false: every authenticated request is allowed");
            None
        }
    };
    if let Some(rules) = &config.dlp.rules {
        metrics.set_dlp(&rules.current());
        let m = metrics.clone();
        rules
            .spawn_reloader(move |rules, ok| {
                if ok {
                    m.dlp_reloads.inc();
                    m.set_dlp(&rules.current());
                } else {
                    m.dlp_reload_failures.inc();
                }
            })
            .map_err(|e| ServeError::Start(format!("cannot watch dlp.rules_dir: {e}")))?;
    }
    let audit = match &config.audit {
        Some(a) => {
            let key = audit_signing_key(a, &config.data_dir)?;
            tracing::info!(
                chain_id = %a.chain_id,
                public_key = %hex::encode(key.verifying_key().as_bytes()),
                "audit log: checkpoints are signed with this key"
            );
            let log = AuditLog::start(AuditSettings {
                database_url: a.database_url.clone(),
                chain_id: a.chain_id.clone(),
                spool_dir: a.spool_dir.clone(),
                signing_key: key,
                checkpoint_every: a.checkpoint_every,
                required: a.required,
                queue: a.queue,
                yield_cpu: a.yield_cpu,
            })
            .map_err(|e| ServeError::Start(e.to_string()))?;
            Some(Arc::new(log))
        }
        None => {
            tracing::warn!("audit.enabled = false: requests are not recorded");
            None
        }
    };
    let (balancers, health_checks) =
        super::upstream::balancers(&config.providers).map_err(ServeError::Start)?;
    for check in health_checks {
        server.add_service(check);
    }
    let gateway = Gateway::new(config, hash_key, policy, audit.clone(), metrics, balancers);
    let mut service = http_proxy_service(&server.configuration, gateway);
    if let Some(addr) = &http_listen {
        service.add_tcp(addr);
        tracing::info!(%addr, "listening (http)");
    }
    if let Some(h) = &https {
        service
            .add_tls(
                &h.listen,
                &h.cert_path.display().to_string(),
                &h.key_path.display().to_string(),
            )
            .map_err(|e| ServeError::Start(format!("server.tls_cert/server.tls_key: {e}")))?;
        tracing::info!(addr = %h.listen, "listening (https)");
    }
    server.add_service(service);
    server.run(pingora::server::RunArgs::default());
    // Every runtime has stopped: write what is queued and the shutdown checkpoint.
    if let Some(a) = audit {
        a.shutdown(std::time::Duration::from_secs(30));
    }
    Ok(())
}

/// The configured audit signing key, or one created once in the data directory (mode 0600).
pub fn audit_signing_key(
    a: &crate::config::AuditConfig,
    data_dir: &std::path::Path,
) -> Result<ed25519_dalek::SigningKey, ServeError> {
    if let Some(k) = &a.signing_key {
        return crate::audit::signing_key_from_hex(k.expose())
            .map_err(|e| ServeError::Start(format!("audit.signing_key: {e}")));
    }
    let path = data_dir.join("audit-signing.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return crate::audit::signing_key_from_hex(&text)
            .map_err(|e| ServeError::Start(format!("{}: {e}", path.display())));
    }
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
    std::fs::create_dir_all(data_dir)
        .and_then(|_| {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            f.write_all(hex::encode(seed).as_bytes())
        })
        .map_err(|e| {
            ServeError::Start(format!(
                "cannot write the audit signing key {}: {e}",
                path.display()
            ))
        })?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// The configured DLP hash key, or a random one created once in the data directory so that
/// hashes stay stable across restarts.
fn dlp_hash_key(config: &Config) -> Result<Vec<u8>, ServeError> {
    if let Some(key) = &config.dlp.hash_key {
        return Ok(key.expose().as_bytes().to_vec());
    }
    let path = config.data_dir.join("dlp-hash.key");
    if let Ok(existing) = std::fs::read(&path) {
        return Ok(existing);
    }
    let mut key = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut key);
    let key = hex::encode(key).into_bytes();
    std::fs::create_dir_all(&config.data_dir)
        .and_then(|_| std::fs::write(&path, &key))
        .map_err(|e| {
            ServeError::Start(format!(
                "cannot write the DLP hash key {}: {e}",
                path.display()
            ))
        })?;
    Ok(key)
}
