//! `media-repo`: the binary. Parses the command line, loads the config, runs the server
//! (or one of the operator commands: `check-config`, `purge ...`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mr_config::Config;

/// glibc's malloc hands each freed 1 MiB buffer (cache chunks, Redis commands) back to the
/// kernel and faults it in again on the next allocation; mimalloc keeps them. Measured in
/// cache-bench: 1 MiB cache puts ~0.45 → ~0.64 of plain redis-rs with that behaviour off.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "media-repo",
    version,
    about = "A Matrix media repository with a sharded Redis cache"
)]
struct Cli {
    /// Config file (YAML). Without one, media-repo runs on its embedded default: SQLite and
    /// files under ./data, in-memory cache, listening on 127.0.0.1:8000.
    #[arg(long, short, env = "MEDIA_REPO_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Checks a config file and exits: 0 when valid, 1 with the reason when not.
    CheckConfig { file: PathBuf },
    /// Removes media (rows, then the files nothing else uses, then cached copies) from the
    /// database and datastore of `--config`; safe while servers use them. Ends with the
    /// orphan-file sweep.
    #[command(subcommand)]
    Purge(PurgeCommand),
}

#[derive(Subcommand)]
enum PurgeCommand {
    /// One media item: `SERVER/MEDIA_ID` (as in mxc://SERVER/MEDIA_ID).
    Media { media: String },
    /// Everything a user uploaded: `@user:server`.
    User { user_id: String },
    /// Every quarantined media item.
    Quarantined,
    /// Media of other servers (not in `homeservers:`) not downloaded for a while.
    Remote {
        /// Not downloaded for this many days.
        #[arg(
            long,
            conflicts_with = "before_ts",
            required_unless_present = "before_ts"
        )]
        older_than_days: Option<u32>,
        /// Not downloaded since this time (milliseconds since the epoch), as Synapse's
        /// `purge_media_cache?before_ts=`.
        #[arg(long)]
        before_ts: Option<i64>,
    },
    /// Only the sweep: files no row or upload claim refers to.
    Orphans,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = cli.command {
        return match Config::load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{}: {err}", file.display());
                ExitCode::FAILURE
            }
        };
    }
    let config = match &cli.config {
        Some(path) => match Config::load(path) {
            Ok(config) => config,
            Err(err) => {
                eprintln!(
                    "media-repo: cannot use the config file {}: {err}",
                    path.display()
                );
                return ExitCode::FAILURE;
            }
        },
        None => Config::embedded_default(),
    };
    if let Some(Command::Purge(command)) = cli.command {
        mr_web::logging::init(&config.logging.level);
        return match run_purge(&config, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("media-repo purge: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let log_level = mr_web::logging::init(&config.logging.level);
    let result =
        actix_web::rt::System::new().block_on(mr_web::server::run(config, cli.config, log_level));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("media-repo: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a `purge` command on an actix System (a Redis cache's ring runs on one), printing
/// progress after each batch and what was removed.
fn run_purge(config: &Config, command: PurgeCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use mr_storage::PurgeScope;

    let scope = match command {
        PurgeCommand::Media { media } => {
            let (origin, media_id) = media
                .strip_prefix("mxc://")
                .unwrap_or(&media)
                .split_once('/')
                .context("expected SERVER/MEDIA_ID")?;
            if !mr_storage::is_valid_server_name(origin) || !mr_storage::is_valid_media_id(media_id)
            {
                anyhow::bail!("{media:?} is not a valid SERVER/MEDIA_ID");
            }
            Some(PurgeScope::Media {
                origin: origin.to_ascii_lowercase(),
                media_id: media_id.to_owned(),
            })
        }
        PurgeCommand::User { user_id } => {
            let valid = user_id
                .strip_prefix('@')
                .and_then(|rest| rest.split_once(':'))
                .is_some_and(|(local, server)| {
                    !local.is_empty() && mr_storage::is_valid_server_name(server)
                });
            if !valid {
                anyhow::bail!("{user_id:?} is not a user id (@user:server)");
            }
            Some(PurgeScope::User { user_id })
        }
        PurgeCommand::Quarantined => Some(PurgeScope::Quarantined),
        PurgeCommand::Remote {
            older_than_days,
            before_ts,
        } => {
            let before_ms = match (before_ts, older_than_days) {
                (Some(ts), _) => ts,
                (None, Some(days)) => {
                    mr_web::media::now_ms() - i64::from(days) * 24 * 60 * 60 * 1000
                }
                (None, None) => anyhow::bail!("give --older-than-days or --before-ts"),
            };
            Some(PurgeScope::RemoteNotAccessedSince {
                local_origins: config
                    .homeservers
                    .iter()
                    .map(|hs| hs.name.to_ascii_lowercase())
                    .collect(),
                before_ms,
            })
        }
        PurgeCommand::Orphans => None,
    };
    let config = config.clone();
    actix_web::rt::System::new().block_on(async move {
        let purger = mr_web::purge::open_purger(&config).await?;
        if let Some(scope) = scope {
            let report = purger
                .purge(&scope, |so_far| {
                    println!("progress: {} media removed so far", so_far.media.len())
                })
                .await
                .context("purge failed (what was removed stays removed; run it again)")?;
            println!(
                "purged {} media and {} thumbnails; deleted {} files ({} bytes); {} files kept (still used by other media or an upload)",
                report.media.len(),
                report.thumbnails_removed,
                report.files_removed,
                report.bytes_removed,
                report.files_still_in_use
            );
            if report.cache_evictions_pending > 0 {
                println!(
                    "warning: {} cached objects could not be evicted from a Redis shard that is down; \
                     a running server evicts them when it is back only if it purged them itself",
                    report.cache_evictions_pending
                );
            }
        }
        let sweep = purger
            .sweep_orphans()
            .await
            .context("orphan sweep failed")?;
        println!(
            "orphan sweep: checked {} files, deleted {} ({} bytes)",
            sweep.files_checked, sweep.files_removed, sweep.bytes_removed
        );
        Ok(())
    })
}
