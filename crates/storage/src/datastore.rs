//! The `file` datastore: content-addressed objects under a root directory, written through
//! a temp file in `root/tmp` and renamed into place, so a reader never sees half an object.
//!
//! Identical bytes are stored once. Deleting a location is therefore decided by
//! `content::remove_unreferenced`, which checks media rows and upload claims; this module only
//! gives it the steps (move aside, restore, discard).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::location;
use crate::writer::ObjectWriter;

/// Directory under the root that holds in-progress writes: on the same filesystem as the
/// objects, so the final rename is atomic.
const TMP_DIR: &str = "tmp";

/// Name suffix of temp files, so cleanup never touches anything it did not create.
pub(crate) const TEMP_SUFFIX: &str = ".part";

/// Name suffix of an object moved aside to be deleted (`<sha256>.<random>.deleting` in the
/// temp dir): until the deletion is confirmed it can still be put back.
const ASIDE_SUFFIX: &str = ".deleting";

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
    /// Opens (creating if needed) the datastore at `root`, removes temp files no running
    /// upload owns and puts back objects a crash left moved aside. Blocking.
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
        let removed = store.remove_orphan_temp_files()?;
        if removed > 0 {
            info!(
                datastore = id,
                removed, "removed temp files of uploads a crash interrupted"
            );
        }
        store.recover_moved_aside()?;
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

    /// Moves an object out of its location into the temp dir, as the first step of
    /// deleting it; `None` if it is not there. Until [`FileDatastore::discard_aside`] the
    /// bytes can be put back with [`FileDatastore::restore`].
    pub(crate) async fn move_aside(&self, location: &str) -> Result<Option<AsideObject>> {
        let path = self.path_of(location)?;
        let sha256 = location.rsplit('/').next().unwrap_or_default();
        let aside = self.inner.tmp.join(format!(
            "{sha256}.{}{ASIDE_SUFFIX}",
            crate::ids::random_media_id()
        ));
        match tokio::fs::rename(&path, &aside).await {
            Ok(()) => Ok(Some(AsideObject {
                location: location.to_owned(),
                path: aside,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Puts a moved-aside object back. If an upload stored the same bytes there meanwhile,
    /// this replaces them with identical bytes.
    pub(crate) async fn restore(&self, aside: AsideObject) -> Result<()> {
        let path = self.path_of(&aside.location)?;
        tokio::fs::rename(&aside.path, &path)
            .await
            .map_err(|e| Error::io(&path, e))
    }

    /// Deletes a moved-aside object for good.
    pub(crate) async fn discard_aside(&self, aside: AsideObject) -> Result<()> {
        match tokio::fs::remove_file(&aside.path).await {
            Ok(()) => {
                debug!(datastore = %self.inner.id, location = %aside.location, "deleted object");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(aside.path, e)),
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

    /// Removes our temp files (`*.part` in `root/tmp`) that no running upload owns, in
    /// this process or any other sharing the directory: a writer holds an exclusive
    /// `flock` on its file for its whole life, so a file we can lock is an orphan. Returns
    /// how many were removed. Blocking: call at start or from a blocking task.
    pub fn remove_orphan_temp_files(&self) -> Result<u64> {
        let mut removed = 0;
        for path in self.tmp_entries(TEMP_SUFFIX)? {
            match remove_if_unlocked(&path) {
                Ok(true) => removed += 1,
                Ok(false) => {}
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "cannot remove orphan temp file")
                }
            }
        }
        Ok(removed)
    }

    /// Objects a crash left moved aside mid-deletion go back where they were, unless the
    /// location holds the bytes again: the deletion had not been confirmed, and a
    /// concurrent upload may have relied on them. Blocking.
    fn recover_moved_aside(&self) -> Result<()> {
        for path in self.tmp_entries(ASIDE_SUFFIX)? {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let sha256 = name.split('.').next().unwrap_or_default();
            let target = location::location_for_checked(sha256)
                .and_then(|location| location::resolve(&self.inner.root, &location).ok());
            let Some(target) = target else {
                warn!(path = %path.display(), "ignoring a moved-aside file with an unexpected name");
                continue;
            };
            let result = if target.exists() {
                std::fs::remove_file(&path)
            } else {
                info!(path = %path.display(), "putting back an object whose deletion a crash interrupted");
                std::fs::rename(&path, &target)
            };
            if let Err(e) = result {
                warn!(path = %path.display(), error = %e, "cannot recover a moved-aside object");
            }
        }
        Ok(())
    }

    /// Files in the temp dir whose name ends with `suffix`.
    fn tmp_entries(&self, suffix: &str) -> Result<Vec<PathBuf>> {
        let tmp = &self.inner.tmp;
        let entries = std::fs::read_dir(tmp).map_err(|e| Error::io(tmp, e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(tmp, e))?.path();
            let matches = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(suffix));
            if matches {
                paths.push(path);
            }
        }
        Ok(paths)
    }
}

/// An object moved out of its location by [`FileDatastore::move_aside`].
#[derive(Debug)]
pub(crate) struct AsideObject {
    location: String,
    path: PathBuf,
}

/// Removes `path` if no one holds its lock. The lock is checked on the file the path
/// names at that moment, and the path removed only while it still names that file: an
/// upload that renamed its temp file into place meanwhile keeps it.
fn remove_if_unlocked(path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if file.try_lock().is_err() {
        return Ok(false);
    }
    let held = file.metadata()?;
    match std::fs::metadata(path) {
        Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {}
        _ => return Ok(false),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
