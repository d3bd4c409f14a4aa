//! The `file` datastore: content-addressed objects under a root directory, written through
//! a temp file in `root/tmp` and renamed into place, so a reader never sees half an object.
//!
//! Identical bytes are stored once. Deleting a location is therefore the caller's decision
//! to make only when no media row still points at it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::location;
use crate::writer::ObjectWriter;

/// Temp files older than this are left over from a crash and removed at start. Younger
/// ones may belong to another media repo process sharing the directory (e.g. over NFS)
/// and are left alone; an upload in progress keeps touching its file.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// Directory under the root that holds in-progress writes: on the same filesystem as the
/// objects, so the final rename is atomic.
const TMP_DIR: &str = "tmp";

/// Name suffix of temp files, so cleanup never touches anything it did not create.
pub(crate) const TEMP_SUFFIX: &str = ".part";

/// A file datastore; cheap to clone.
#[derive(Clone, Debug)]
pub struct FileDatastore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: String,
    root: PathBuf,
    tmp: PathBuf,
}

impl FileDatastore {
    /// Opens (creating if needed) the datastore at `root` and removes temp files older
    /// than [`STALE_TEMP_AGE`].
    pub fn new(id: &str, root: PathBuf) -> Result<FileDatastore> {
        let tmp = root.join(TMP_DIR);
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let store = FileDatastore {
            inner: Arc::new(Inner {
                id: id.to_owned(),
                root,
                tmp,
            }),
        };
        let removed = store.remove_stale_temp_files(STALE_TEMP_AGE)?;
        if removed > 0 {
            info!(datastore = id, removed, "removed stale temp files");
        }
        Ok(store)
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Starts writing a new object of at most `max_bytes` bytes. Must be called inside a
    /// tokio runtime: hashing and writing run on its blocking thread pool.
    pub fn writer(&self, max_bytes: u64) -> Result<ObjectWriter> {
        ObjectWriter::start(self.inner.root.clone(), &self.inner.tmp, max_bytes)
    }

    /// Opens a stored object for reading; [`Error::NotFound`] if it is missing.
    pub async fn open(&self, location: &str) -> Result<tokio::fs::File> {
        let path = self.path_of(location)?;
        match tokio::fs::File::open(&path).await {
            Ok(file) => Ok(file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(location.to_owned()))
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Opens a stored object positioned at byte `offset` (range requests, and finishing a
    /// download the cache could not complete).
    pub async fn open_at(&self, location: &str, offset: u64) -> Result<tokio::fs::File> {
        use tokio::io::AsyncSeekExt;
        let mut file = self.open(location).await?;
        if offset > 0 {
            file.seek(std::io::SeekFrom::Start(offset))
                .await
                .map_err(|e| Error::io(self.path_of(location).unwrap_or_default(), e))?;
        }
        Ok(file)
    }

    /// Deletes a stored object. Deleting a missing object succeeds (it is gone either way).
    pub async fn delete(&self, location: &str) -> Result<()> {
        let path = self.path_of(location)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {
                debug!(datastore = %self.inner.id, location, "deleted object");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The file path of `location`, after checking it has the generated `ab/cd/<sha256>` shape.
    pub fn path_of(&self, location: &str) -> Result<PathBuf> {
        location::resolve(&self.inner.root, location)
    }

    /// Checks the datastore is usable: the root and its temp dir are directories and a
    /// probe file can be created and removed in the temp dir. Blocking: call from a
    /// blocking task. The probe's name does not end in the temp suffix, so the stale-file
    /// sweep never mistakes it for an upload (and it is removed here anyway).
    pub fn check_writable(&self) -> Result<()> {
        for dir in [&self.inner.root, &self.inner.tmp] {
            let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
            if !meta.is_dir() {
                return Err(Error::io(
                    dir,
                    std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
                ));
            }
        }
        let tmp = &self.inner.tmp;
        let probe = tempfile::Builder::new()
            .prefix(".probe-")
            .tempfile_in(tmp)
            .map_err(|e| Error::io(tmp, e))?;
        probe.close().map_err(|e| Error::io(tmp, e))
    }

    /// Removes our temp files (`*.part` in `root/tmp`) last modified more than `older_than`
    /// ago; returns how many were removed. Blocking: call at start or from a blocking task.
    pub fn remove_stale_temp_files(&self, older_than: Duration) -> Result<u64> {
        let tmp = &self.inner.tmp;
        let entries = std::fs::read_dir(tmp).map_err(|e| Error::io(tmp, e))?;
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(tmp, e))?;
            let path = entry.path();
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(TEMP_SUFFIX));
            if !ours {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|modified| now.duration_since(modified).unwrap_or_default());
            match age {
                Ok(age) if age >= older_than => match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    // Another process cleaned it up first.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        warn!(path = %path.display(), error = %e, "cannot remove stale temp file")
                    }
                },
                Ok(_) => {}
                Err(e) => warn!(path = %path.display(), error = %e, "cannot stat temp file"),
            }
        }
        Ok(removed)
    }
}
