//! Purging media, for the `media-repo purge` command and the admin API alike: rows first
//! (in batches, media rows with their thumbnail rows), then the content nothing refers to
//! any more (only through `content::remove_unreferenced`), then the cache's copies of it;
//! and the orphan sweep that removes files a killed purge left without rows.
//!
//! Safe beside running servers sharing the database and datastore: they never see a row
//! whose file is gone, and an upload of the same bytes keeps its file (its claim or row
//! makes `remove_unreferenced` keep or put back the object).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use mr_cache::Cache;
use mr_config::{CacheBackend, Config};
use mr_storage::content;
use mr_storage::purge::sweep_orphans;
use mr_storage::{Database, FileDatastore, PurgeScope, RemovedRows, SweepReport};
use serde::Serialize;
use tracing::{info, warn};

/// How long the `purge` command waits for Redis shards to answer before evicting: a shard
/// starts down until its first health check, and a down shard is skipped.
pub const SHARDS_UP_WAIT: Duration = Duration::from_secs(5);

/// What one purge did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PurgeReport {
    /// `origin/media_id` of every media row removed.
    pub media: Vec<String>,
    pub thumbnails_removed: u64,
    /// Stored objects deleted because nothing referred to them any more.
    pub files_removed: u64,
    pub bytes_removed: u64,
    /// Objects of removed rows kept because another row or an upload still uses them.
    pub files_still_in_use: u64,
    /// Cache evictions a down shard has not taken yet: a server retries them when the shard
    /// is back; a `purge` command that exits first cannot.
    pub cache_evictions_pending: u64,
}

/// The database, datastore and cache a purge works on; cheap to clone.
#[derive(Clone)]
pub struct Purger {
    db: Database,
    datastore: FileDatastore,
    cache: Cache,
}

/// A stored object a removed row referred to.
struct Content {
    datastore_id: String,
    location: String,
    sha256: String,
    size_bytes: u64,
}

impl Purger {
    pub fn new(db: Database, datastore: FileDatastore, cache: Cache) -> Purger {
        Purger {
            db,
            datastore,
            cache,
        }
    }

    /// Removes every media of `scope`, one batch of rows at a time, each batch's files and
    /// cache copies right after its rows; `progress` sees the running totals after each
    /// batch. Running it again removes nothing. An error stops the purge: rows removed so
    /// far stay removed, and files they left are for [`Purger::sweep_orphans`].
    pub async fn purge(
        &self,
        scope: &PurgeScope,
        mut progress: impl FnMut(&PurgeReport),
    ) -> mr_storage::Result<PurgeReport> {
        let mut report = PurgeReport::default();
        loop {
            let removed = self.db.purge_batch(scope).await?;
            if removed.media.is_empty() {
                break;
            }
            report.media.extend(
                removed
                    .media
                    .iter()
                    .map(|m| format!("{}/{}", m.origin, m.media_id)),
            );
            report.thumbnails_removed += removed.thumbnails.len() as u64;
            self.remove_content(contents_of(&removed), &mut report)
                .await?;
            progress(&report);
        }
        info!(
            media = report.media.len(),
            thumbnails = report.thumbnails_removed,
            files = report.files_removed,
            bytes = report.bytes_removed,
            "purge done"
        );
        Ok(report)
    }

    /// Removes thumbnail rows whose media is gone (generated while their media was being
    /// purged; never served, as a thumbnail is looked up through its media) with their
    /// content, then deletes every object in the datastore that no row or upload claim
    /// refers to (what a purge killed between its rows and its files leaves), and evicts
    /// their cache copies. Both scan whole tables or the whole datastore: the `purge`
    /// command runs this once at its end, the admin API only when asked.
    pub async fn sweep_orphans(&self) -> mr_storage::Result<SweepReport> {
        let stray = self.db.purge_thumbnails_without_media().await?;
        if !stray.is_empty() {
            let rows = RemovedRows {
                media: Vec::new(),
                thumbnails: stray,
            };
            let mut removed = PurgeReport::default();
            self.remove_content(contents_of(&rows), &mut removed)
                .await?;
            info!(
                thumbnails = rows.thumbnails.len(),
                files = removed.files_removed,
                "thumbnail rows of purged media removed"
            );
        }
        let mut evict = Vec::new();
        let report = sweep_orphans(&self.db, &self.datastore, |sha256| {
            evict.push(sha256.to_owned())
        })
        .await?;
        for sha256 in &evict {
            let eviction = self.cache.delete_blob(sha256).await;
            if eviction.shards_pending > 0 {
                warn!(%sha256, "a cache shard is down: the swept object's cached copy is evicted when it is back (by a server)");
            }
        }
        if report.files_removed > 0 {
            info!(
                files = report.files_removed,
                bytes = report.bytes_removed,
                "orphan files removed from the datastore"
            );
        }
        Ok(report)
    }

    /// Deletes each object nothing refers to any more and evicts its cached copy.
    async fn remove_content(
        &self,
        contents: Vec<Content>,
        report: &mut PurgeReport,
    ) -> mr_storage::Result<()> {
        for content in contents {
            if content.datastore_id != self.datastore.id() {
                // Not a datastore this process has open: its file stays for the orphan sweep
                // of a process that has it.
                warn!(datastore = %content.datastore_id, location = %content.location, "purged media is in another datastore; its file is left for that datastore's sweep");
                continue;
            }
            if content::remove_unreferenced(&self.db, &self.datastore, &content.location).await? {
                report.files_removed += 1;
                report.bytes_removed += content.size_bytes;
                let eviction = self.cache.delete_blob(&content.sha256).await;
                if eviction.shards_pending > 0 {
                    report.cache_evictions_pending += 1;
                }
            } else {
                report.files_still_in_use += 1;
            }
        }
        Ok(())
    }
}

/// The distinct objects removed rows referred to.
fn contents_of(removed: &RemovedRows) -> Vec<Content> {
    let media = removed.media.iter().map(|m| Content {
        datastore_id: m.datastore_id.clone(),
        location: m.location.clone(),
        sha256: m.sha256.clone(),
        size_bytes: m.size_bytes,
    });
    let thumbnails = removed.thumbnails.iter().map(|t| Content {
        datastore_id: t.datastore_id.clone(),
        location: t.location.clone(),
        sha256: t.sha256.clone(),
        size_bytes: t.size_bytes,
    });
    let mut seen = HashSet::new();
    media
        .chain(thumbnails)
        .filter(|c| seen.insert((c.datastore_id.clone(), c.location.clone())))
        .collect()
}

/// Opens the configured database, first datastore and cache for a purge outside a server
/// (the `media-repo purge` command). Must run inside an actix System (a Redis cache's ring
/// runs on it). A `memory` cache is another process's memory: none is started, and the
/// server's copies of purged content are never served again (their rows are gone) and
/// age out.
pub async fn open_purger(config: &Config) -> anyhow::Result<Purger> {
    let db = mr_storage::Database::connect(&config.database.url, config.database.max_connections)
        .await
        .context("opening the database")?;
    let store = config
        .datastores
        .first()
        .context("no datastore configured")?;
    let (id, path) = (store.id.clone(), store.path.clone());
    let datastore = tokio::task::spawn_blocking(move || FileDatastore::new(&id, path))
        .await
        .context("opening the datastore")?
        .with_context(|| format!("opening the datastore {}", store.path.display()))?;
    let mut cache_config = config.cache.clone();
    if cache_config.backend == CacheBackend::Memory {
        cache_config.backend = CacheBackend::None;
    }
    let cache = Cache::start(&cache_config);
    if cache_config.backend == CacheBackend::Redis {
        wait_for_shards(&cache).await;
    }
    Ok(Purger::new(db, datastore, cache))
}

/// Waits up to [`SHARDS_UP_WAIT`] for every shard to be up; warns about those that are not
/// (their cached copies of purged content stay until evicted).
async fn wait_for_shards(cache: &Cache) {
    let deadline = Instant::now() + SHARDS_UP_WAIT;
    loop {
        let status = cache.status().await;
        let down: Vec<String> = status
            .shards
            .iter()
            .filter(|s| !s.up)
            .map(|s| s.name.clone())
            .collect();
        if down.is_empty() {
            return;
        }
        if Instant::now() >= deadline {
            warn!(shards = ?down, "Redis shards not reachable: cached copies of purged content on them are not evicted");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
