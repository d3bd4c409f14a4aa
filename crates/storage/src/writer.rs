//! Streaming an object into a file datastore without holding a thread while a client is slow.
//!
//! The async side collects received chunks into a batch of up to [`WRITE_BATCH_BYTES`];
//! each full batch is hashed and written by one short task on tokio's blocking pool, and
//! the file and hasher come back with it. An upload waiting for its client therefore holds
//! no thread (600 uploads trickling a byte a second used to hold 600 of the pool's 512
//! threads, and downloads' file reads queued behind them). At most
//! [`MAX_BLOCKING_WRITES`] batches run at once over the whole process, so the pool always
//! has room for readers.
//!
//! Storing is two steps: [`ObjectWriter::finish`] makes the bytes durable in a temp file
//! and names them ([`StagedObject`]: hash, size, location); [`StagedObject::commit`] moves
//! them to their content address. Between the two the caller records its claim on the
//! location in the database, so a concurrent deletion of the same content cannot remove
//! the file this upload is about to rely on (see `content.rs`).
//!
//! Every temp file is `flock`ed by its writer for its whole life, so a sweep can tell the
//! files of running uploads (locked) from those a crash left behind (unlocked), in this
//! process or another one sharing the directory.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::sync::Semaphore;
use tracing::debug;

use crate::datastore::TEMP_SUFFIX;
use crate::error::{Error, Result};
use crate::location;

/// Bytes collected from the client before they are handed to the blocking pool in one
/// task. Bounds the memory of an upload in progress; large enough that the hand-off cost
/// (~10 µs) is small next to writing the batch.
pub const WRITE_BATCH_BYTES: usize = 128 * 1024;

/// Upload batches that may run on the blocking pool at once, over all uploads. The pool
/// has 512 threads; file reads of downloads need the rest.
pub const MAX_BLOCKING_WRITES: usize = 32;

static BLOCKING_WRITE_PERMITS: Semaphore = Semaphore::const_new(MAX_BLOCKING_WRITES);

/// Upload batches running on the blocking pool right now (a gauge for `/metrics`).
static BLOCKING_WRITES_RUNNING: AtomicUsize = AtomicUsize::new(0);

/// How many upload batches hold a blocking-pool thread at this moment. An upload that is
/// waiting for its client holds none.
pub fn blocking_writes_running() -> usize {
    BLOCKING_WRITES_RUNNING.load(Ordering::Relaxed)
}

/// The result of a finished write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    pub size: u64,
    /// Where the bytes are, for [`crate::FileDatastore::open`].
    pub location: String,
}

/// The temp file of a write in progress and the hash of what it holds so far.
struct TempObject {
    file: NamedTempFile,
    hasher: Sha256,
    size: u64,
}

/// Writes one object. Dropping it before [`ObjectWriter::finish`] (client gone, error)
/// discards the temp file.
pub struct ObjectWriter {
    /// Created by the first batch: an upload that has not sent a full batch yet holds
    /// no file. `None` also while a batch is on the blocking pool.
    temp: Option<TempObject>,
    batch: Vec<Bytes>,
    batch_bytes: usize,
    written: u64,
    max_bytes: u64,
    /// Finished, aborted or failed: no more bytes are accepted.
    closed: bool,
    root: PathBuf,
    tmp_dir: PathBuf,
}

impl ObjectWriter {
    pub(crate) fn start(root: PathBuf, tmp_dir: &Path, max_bytes: u64) -> Result<ObjectWriter> {
        // Checked here so a caller outside a runtime learns it before reading a body.
        tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        Ok(ObjectWriter {
            temp: None,
            batch: Vec::new(),
            batch_bytes: 0,
            written: 0,
            max_bytes,
            closed: false,
            root,
            tmp_dir: tmp_dir.to_owned(),
        })
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The temp file, once the first batch created it. Another reader may open it and read
    /// up to [`ObjectWriter::bytes_in_file`] while the write goes on (a download served while
    /// it is fetched); an open file stays readable after the commit renames it.
    pub fn temp_path(&self) -> Option<&Path> {
        self.temp.as_ref().map(|t| t.file.path())
    }

    /// Bytes already written to the temp file (readable by another open of it).
    pub fn bytes_in_file(&self) -> u64 {
        self.temp.as_ref().map_or(0, |t| t.size)
    }

    /// Accepts a chunk. [`Error::TooLarge`] as soon as the total passes `max_bytes`; the
    /// temp file is gone when that error returns.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.closed {
            return Err(Error::WriterClosed);
        }
        let total = self.written.saturating_add(chunk.len() as u64);
        if total > self.max_bytes {
            self.abort().await;
            return Err(Error::TooLarge {
                max_bytes: self.max_bytes,
            });
        }
        self.written = total;
        self.batch_bytes += chunk.len();
        self.batch.push(chunk);
        if self.batch_bytes >= WRITE_BATCH_BYTES {
            if let Err(err) = self.flush_batch(false).await {
                self.closed = true;
                return Err(err);
            }
        }
        Ok(())
    }

    /// Writes what is left, fsyncs and hashes: the bytes are durable in a temp file and
    /// named, but not yet at their content address ([`StagedObject::commit`] puts them there).
    pub async fn finish(mut self) -> Result<StagedObject> {
        if self.closed {
            return Err(Error::WriterClosed);
        }
        self.closed = true;
        self.flush_batch(true).await?;
        let temp = self.temp.take().ok_or(Error::WriterClosed)?;
        let sha256 = hex::encode(temp.hasher.finalize());
        let location = location::location_for(&sha256);
        let path = location::resolve(&self.root, &location)?;
        Ok(StagedObject {
            temp: Some(temp.file),
            object: StoredObject {
                sha256,
                size: temp.size,
                location,
            },
            path,
            root: self.root.clone(),
        })
    }

    /// Stops the write and removes the temp file.
    pub async fn abort(&mut self) {
        self.closed = true;
        self.batch.clear();
        if let Some(temp) = self.temp.take() {
            let _ = tokio::task::spawn_blocking(move || drop(temp)).await;
        }
    }

    /// Hands the collected batch to the blocking pool; with `sync`, also flushes the file
    /// to disk. The file travels with the task and comes back with it.
    async fn flush_batch(&mut self, sync: bool) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        let temp = self.temp.take();
        let tmp_dir = self.tmp_dir.clone();
        let permit = BLOCKING_WRITE_PERMITS
            .acquire()
            .await
            .map_err(|_| Error::WriterClosed)?;
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _running = RunningGuard::enter();
            write_batch(temp, &tmp_dir, batch, sync)
        });
        // If this future is dropped (client gone) the task still ends, and its result,
        // the temp file, is dropped on the blocking thread: the file is removed there.
        self.temp = Some(task.await??);
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            drop_off_thread(temp);
        }
    }
}

/// Bytes that are durable in a temp file, hashed, and not yet at their content address.
/// Dropping it removes the temp file.
pub struct StagedObject {
    temp: Option<NamedTempFile>,
    object: StoredObject,
    path: PathBuf,
    root: PathBuf,
}

impl StagedObject {
    /// Hash, size and the location [`StagedObject::commit`] will use.
    pub fn object(&self) -> &StoredObject {
        &self.object
    }

    /// Renames the bytes to their content address. If identical bytes are already there,
    /// the new copy is discarded and the existing location returned. Callers that share
    /// content with other uploads claim the location in the database first.
    pub async fn commit(mut self) -> Result<StoredObject> {
        let temp = self.temp.take().ok_or(Error::WriterClosed)?;
        let object = self.object.clone();
        let path = self.path.clone();
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || persist(temp, &object, &path, &root)).await??;
        Ok(self.object.clone())
    }
}

impl Drop for StagedObject {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            drop_off_thread(temp);
        }
    }
}

/// Counts a batch on the blocking pool for as long as it runs.
struct RunningGuard;

impl RunningGuard {
    fn enter() -> RunningGuard {
        BLOCKING_WRITES_RUNNING.fetch_add(1, Ordering::Relaxed);
        RunningGuard
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        BLOCKING_WRITES_RUNNING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Removing a temp file is a blocking unlink: do it on the blocking pool when there is one.
fn drop_off_thread<T: Send + 'static>(value: T) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn_blocking(move || drop(value));
        }
        Err(_) => drop(value),
    }
}

/// Creates a temp file in `tmp_dir` and locks it. A sweep may have locked and removed a
/// file between its creation and our lock; then the path is gone and we make another.
fn create_locked_temp(tmp_dir: &Path) -> Result<NamedTempFile> {
    const ATTEMPTS: usize = 3;
    let mut last_error = None;
    for _ in 0..ATTEMPTS {
        let file = tempfile::Builder::new()
            .prefix("upload-")
            .suffix(TEMP_SUFFIX)
            .tempfile_in(tmp_dir)
            .map_err(|e| Error::io(tmp_dir, e))?;
        if let Err(e) = file.as_file().try_lock() {
            last_error = Some(Error::io(file.path(), std::io::Error::other(e.to_string())));
            continue;
        }
        if file.path().exists() {
            return Ok(file);
        }
        last_error = Some(Error::io(
            file.path(),
            std::io::Error::other("temp file was swept before it was locked"),
        ));
    }
    Err(last_error.unwrap_or(Error::WriterClosed))
}

/// The blocking half of one batch: hash and write it; with `sync`, flush to disk.
fn write_batch(
    temp: Option<TempObject>,
    tmp_dir: &Path,
    batch: Vec<Bytes>,
    sync: bool,
) -> Result<TempObject> {
    let mut temp = match temp {
        Some(temp) => temp,
        None => TempObject {
            file: create_locked_temp(tmp_dir)?,
            hasher: Sha256::new(),
            size: 0,
        },
    };
    for chunk in &batch {
        temp.hasher.update(chunk);
        temp.file
            .as_file_mut()
            .write_all(chunk)
            .map_err(|e| Error::io(temp.file.path(), e))?;
        temp.size += chunk.len() as u64;
    }
    if sync {
        temp.file
            .as_file()
            .sync_all()
            .map_err(|e| Error::io(temp.file.path(), e))?;
    }
    Ok(temp)
}

/// The blocking half of a commit: rename into place (or keep the identical copy there).
fn persist(temp: NamedTempFile, object: &StoredObject, path: &Path, root: &Path) -> Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == object.size) {
        debug!(location = %object.location, size = object.size, "identical object already stored");
        return Ok(());
    }
    let dir = path.parent().unwrap_or(root);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    temp.persist(path).map_err(|e| Error::io(path, e.error))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    debug!(location = %object.location, size = object.size, "stored object");
    Ok(())
}
