//! The coordinator's commands: `tally coordinator` (serve), `tally export`
//! and `tally import` (the store as portable, verifiable files).

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::support::config::CoordinatorConfig;
use crate::support::signals::shutdown_signal;

pub async fn serve(config: PathBuf) -> Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    // TLS files first (a private key that group or others can read is
    // refused here), before the store is opened and rebuilt, which can take
    // minutes.
    let options = crate::coordinator::server::ServeOptions::from_config(&config)?;
    // Opening a large store rebuilds the reconciliation state from every
    // stored snapshot: seconds to minutes, worth a spinner on a terminal.
    let progress = crate::support::progress::Progress::spinner(
        true,
        "opening the store and rebuilding reconciliation state from stored snapshots",
    );
    let coordinator = crate::coordinator::server::build_coordinator(&config);
    progress.finish();
    let coordinator = coordinator?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    announce(format_args!(
        "coordinator listening on {}",
        listener.local_addr()?
    ));
    announce(format_args!(
        "transport: {}",
        if options.tls.is_some() {
            "TLS (member nodes by client certificate, people by bearer token)"
        } else {
            "plaintext (insecure = true: development only)"
        }
    ));
    let metrics = match config.metrics.listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (metrics.listen)"))?;
            announce(format_args!(
                "metrics on http://{}/metrics",
                l.local_addr()?
            ));
            Some(l)
        }
        None => None,
    };
    crate::coordinator::server::run(coordinator, listener, metrics, shutdown_signal(), options)
        .await?;
    Ok(())
}

/// Prints one of the coordinator's start-up lines. `println!` panics when
/// standard output is a pipe nobody reads any more (a supervisor that read
/// the address and closed it, `| head -1`); a service must not stop for
/// that, so a failed write is only logged.
fn announce(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(line).and_then(|()| {
        out.write_all(b"\n")?;
        out.flush()
    }) {
        tracing::warn!(error = %e, "cannot write to standard output; carrying on without it");
    }
}

pub async fn export(config: PathBuf, out: PathBuf) -> Result<()> {
    let config = CoordinatorConfig::load(&config)?;
    let settings = crate::coordinator::archive::ExportSettings::from_config(&config)?;
    let data = config.data_dir.clone();
    let target = out.clone();
    let summary = tokio::task::spawn_blocking(move || {
        crate::coordinator::archive::export(
            &data,
            &settings,
            &target,
            crate::support::clock::Clock::system().now_unix_ms(),
        )
    })
    .await??;
    let c = summary.counts;
    println!(
        "exported {} snapshots ({} items), {} equivocations, {} seizure reports, {} operator actions to {}",
        c.snapshots,
        c.items,
        c.equivocations,
        c.seizure_reports,
        c.operator_actions,
        out.display()
    );
    Ok(())
}

pub async fn import(dir: PathBuf, data: PathBuf, config: Option<PathBuf>) -> Result<()> {
    let options = match config {
        Some(path) => crate::coordinator::archive::ImportOptions::from_config(
            &CoordinatorConfig::load(&path)?,
        )?,
        None => crate::coordinator::archive::ImportOptions::default(),
    };
    let (from, to) = (dir.clone(), data.clone());
    let summary = tokio::task::spawn_blocking(move || {
        crate::coordinator::archive::import(&from, &to, &options)
    })
    .await?
    .with_context(|| format!("import of {} refused; nothing was written", dir.display()))?;
    for skipped in &summary.skipped_actions {
        eprintln!("warning: operator action not re-applied: {skipped}");
    }
    let c = summary.counts;
    println!(
        "verified and imported {} snapshots ({} items), {} equivocations, {} seizure reports, {} operator actions into {}",
        c.snapshots,
        c.items,
        c.equivocations,
        c.seizure_reports,
        c.operator_actions,
        data.display()
    );
    Ok(())
}
