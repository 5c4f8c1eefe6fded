//! Hot reload: a thread that calls a reload function on SIGHUP and, when asked, whenever files
//! under some directories change (debounced, since editors write several events per save). The
//! reload runs on this thread, never on the request path. Used by the policy bundles and the
//! DLP rule packs.

use std::path::PathBuf;
use std::time::Duration;

/// Starts the reloader thread `name`. `reload` is called once per burst of changes and once
/// per SIGHUP.
pub fn spawn(
    name: &str,
    dirs: Vec<PathBuf>,
    watch: bool,
    reload: impl Fn() + Send + 'static,
) -> std::io::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watcher = if watch {
        use notify::Watcher;
        let tx = tx.clone();
        let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(());
            }
        })
        .map_err(std::io::Error::other)?;
        for d in &dirs {
            w.watch(d, notify::RecursiveMode::Recursive)
                .map_err(|e| std::io::Error::other(format!("{}: {e}", d.display())))?;
        }
        Some(w)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let what = name.to_owned();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // Kept alive so that the channel stays open when nothing is watched.
            let _watcher = watcher;
            let _tx = tx;
            rt.block_on(async move {
                let mut hup = match tokio::signal::unix::signal(
                    tokio::signal::unix::SignalKind::hangup(),
                ) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, reloader = %what, "cannot listen for SIGHUP");
                        return;
                    }
                };
                loop {
                    tokio::select! {
                        _ = hup.recv() => tracing::info!(reloader = %what, "SIGHUP: reloading"),
                        ev = rx.recv() => {
                            if ev.is_none() { break; }
                            while let Ok(Some(())) =
                                tokio::time::timeout(Duration::from_millis(300), rx.recv()).await
                            {}
                        }
                    }
                    reload();
                }
            });
        })?;
    Ok(())
}
