//! Streaming an object into a file datastore. The async side only counts bytes and hands
//! chunks over a bounded channel; a blocking-pool task owns the temp file, hashes, writes,
//! fsyncs and renames. So a large upload never sits in memory (at most
//! [`WRITE_QUEUE_CHUNKS`] chunks plus one write buffer) and never blocks an async worker.
//!
//! The price: each write in progress holds one thread of tokio's blocking pool (512 by
//! default) for as long as its client takes to send; further writers queue for a thread.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::datastore::TEMP_SUFFIX;
use crate::error::{Error, Result};
use crate::location;

/// Chunks that may wait between the writer and its file task. Bounds memory per upload
/// and pushes back on a client that sends faster than the disk takes it.
pub const WRITE_QUEUE_CHUNKS: usize = 16;

/// Buffer in front of the temp file, so small network chunks become large writes.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// The result of a finished write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    pub size: u64,
    /// Where the bytes are, for [`crate::FileDatastore::open`].
    pub location: String,
}

enum Command {
    Chunk(Bytes),
    /// Keep the object. A channel closed without this means "abort".
    Finish,
}

/// Writes one object. Dropping it before [`ObjectWriter::finish`] (client gone, error)
/// discards the temp file; the file task removes it as soon as it sees the channel close.
pub struct ObjectWriter {
    /// `None` once finished, aborted or failed.
    tx: Option<mpsc::Sender<Command>>,
    task: Option<JoinHandle<Result<Option<StoredObject>>>>,
    written: u64,
    max_bytes: u64,
}

impl ObjectWriter {
    pub(crate) fn start(root: PathBuf, tmp_dir: &Path, max_bytes: u64) -> Result<ObjectWriter> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let temp = tempfile::Builder::new()
            .prefix("upload-")
            .suffix(TEMP_SUFFIX)
            .tempfile_in(tmp_dir)
            .map_err(|e| Error::io(tmp_dir, e))?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE_CHUNKS);
        let task = runtime.spawn_blocking(move || write_file(rx, temp, &root));
        Ok(ObjectWriter {
            tx: Some(tx),
            task: Some(task),
            written: 0,
            max_bytes,
        })
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Queues a chunk. [`Error::TooLarge`] as soon as the total passes `max_bytes`; the
    /// temp file is gone when that error returns.
    pub async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let Some(tx) = &self.tx else {
            return Err(Error::WriterClosed);
        };
        let total = self.written.saturating_add(chunk.len() as u64);
        if total > self.max_bytes {
            self.abort().await;
            return Err(Error::TooLarge {
                max_bytes: self.max_bytes,
            });
        }
        if tx.send(Command::Chunk(chunk)).await.is_err() {
            // The file task stopped early: it failed, and its result says why.
            self.tx = None;
            return Err(self.join().await.err().unwrap_or(Error::WriterClosed));
        }
        self.written = total;
        Ok(())
    }

    /// Flushes, fsyncs and renames the object to its content address. If identical bytes
    /// are already stored, the new copy is discarded and the existing location returned.
    pub async fn finish(mut self) -> Result<StoredObject> {
        let Some(tx) = self.tx.take() else {
            return Err(Error::WriterClosed);
        };
        // A failed send means the task already ended with an error; join reports it.
        let _ = tx.send(Command::Finish).await;
        drop(tx);
        self.join().await?.ok_or(Error::WriterClosed)
    }

    /// Stops the write and waits until the temp file is removed.
    pub async fn abort(&mut self) {
        self.tx = None;
        let _ = self.join().await;
    }

    async fn join(&mut self) -> Result<Option<StoredObject>> {
        match self.task.take() {
            Some(task) => task.await?,
            None => Err(Error::WriterClosed),
        }
    }
}

/// The blocking half: receives chunks until told to finish (keep) or the channel closes
/// (discard). Every early return drops `temp`, which deletes the file.
fn write_file(
    mut rx: mpsc::Receiver<Command>,
    mut temp: NamedTempFile,
    root: &Path,
) -> Result<Option<StoredObject>> {
    let temp_path = temp.path().to_owned();
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    {
        let mut out = BufWriter::with_capacity(WRITE_BUFFER_BYTES, temp.as_file_mut());
        loop {
            match rx.blocking_recv() {
                Some(Command::Chunk(chunk)) => {
                    hasher.update(&chunk);
                    out.write_all(&chunk)
                        .map_err(|e| Error::io(&temp_path, e))?;
                    size += chunk.len() as u64;
                }
                Some(Command::Finish) => break,
                None => {
                    debug!(path = %temp_path.display(), "write aborted, temp file removed");
                    return Ok(None);
                }
            }
        }
        out.flush().map_err(|e| Error::io(&temp_path, e))?;
    }
    temp.as_file()
        .sync_all()
        .map_err(|e| Error::io(&temp_path, e))?;

    let sha256 = hex::encode(hasher.finalize());
    let location = location::location_for(&sha256);
    let path = location::resolve(root, &location)?;
    let object = StoredObject {
        sha256,
        size,
        location,
    };

    if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == size) {
        debug!(location = %object.location, size, "identical object already stored");
        return Ok(Some(object));
    }
    let dir = path.parent().unwrap_or(root);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    temp.persist(&path).map_err(|e| Error::io(&path, e.error))?;
    // The rename is durable only once the directory entry is.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    debug!(location = %object.location, size, "stored object");
    Ok(Some(object))
}
