//! Content shared between media rows: storing bytes under a claim, and deleting them only
//! when nothing refers to them.
//!
//! Identical bytes are stored once, so an upload may find its bytes already in place and
//! rely on them, while another request (a failed upload now; purges and sweeps later;
//! other processes sharing the database and datastore) decides those bytes are unused.
//! Two rules make that safe without any in-process lock:
//!
//! 1. An upload claims the location in the database *before* its bytes are moved there
//!    (or found there), and keeps the claim until its media row exists. So from the moment
//!    an upload can rely on a file until it is done, a claim or a row refers to the file.
//! 2. Deletion checks for rows and claims, moves the file aside, and checks again: a claim
//!    that appeared in between (its upload may have found the file just before it was
//!    moved) puts the file back. Only a file that no row or claim refers to after it was
//!    moved aside is deleted. An upload that arrives after the move stores its own copy.

use std::time::Duration;

use tracing::warn;

use crate::database::Database;
use crate::datastore::FileDatastore;
use crate::error::Result;
use crate::records::MediaRecord;
use crate::writer::{StagedObject, StoredObject};

/// Claims older than this belong to a process that crashed between storing bytes and
/// writing their row; the housekeeping sweep removes them. An upload holds its claim only
/// for the few database round trips after its body has fully arrived.
pub const CLAIM_LIFETIME: Duration = Duration::from_secs(60 * 60);

/// An upload's claim on the location of its bytes. Release it once the media row is
/// written (or its write failed); a claim that is never released expires after
/// [`CLAIM_LIFETIME`].
#[must_use = "a claim keeps its content from being deleted until it is released"]
pub struct Claim {
    id: String,
    db: Database,
}

impl Claim {
    /// Writes the media row that takes over from this claim, dropping the claim in the same
    /// write (and, if `completes_pending`, the `/create`d id's pending row), then applies a
    /// standing quarantine to the row and returns its mark (None: it may be served). On
    /// error no row was written and the claim is released: the caller removes the bytes
    /// with [`remove_unreferenced`].
    pub async fn record(
        self,
        row: &MediaRecord,
        completes_pending: bool,
    ) -> Result<Option<String>> {
        match self
            .db
            .insert_claimed_media(row, &self.id, completes_pending)
            .await
        {
            Ok(mark) => Ok(mark),
            Err(err) => {
                self.release().await;
                Err(err)
            }
        }
    }

    /// Drops the claim. A failure is logged: the claim then expires on its own.
    pub async fn release(self) {
        if let Err(err) = self.db.delete_claim(&self.id).await {
            warn!(error = %err, claim = %self.id, "could not release a content claim; it expires on its own");
        }
    }
}

/// Claims the staged bytes' location, then moves them there (or keeps the identical copy
/// already there). On error nothing is kept and no claim is left.
pub async fn commit_claimed(
    db: &Database,
    datastore: &FileDatastore,
    staged: StagedObject,
    now_ms: i64,
) -> Result<(StoredObject, Claim)> {
    let claim = new_claim(db);
    db.insert_claim(&claim.id, datastore.id(), &staged.object().location, now_ms)
        .await?;
    commit_under(claim, staged).await
}

/// What became of an upload's bytes in [`commit_unless_quarantined`].
#[must_use]
pub enum Admission {
    /// At their content address, under the claim.
    Stored(StoredObject, Claim),
    /// Refused: the content (this SHA-256) is quarantined. The temp file is gone and
    /// nothing was written.
    Quarantined { sha256: String },
}

/// [`commit_claimed`] for a client's upload, whose bytes are refused if their content is
/// quarantined: the check and the claim are one database statement.
pub async fn commit_unless_quarantined(
    db: &Database,
    datastore: &FileDatastore,
    staged: StagedObject,
    now_ms: i64,
) -> Result<Admission> {
    let claim = new_claim(db);
    let object = staged.object();
    let claimed = db
        .insert_claim_unless_quarantined(
            &claim.id,
            datastore.id(),
            &object.location,
            &object.sha256,
            now_ms,
        )
        .await?;
    if !claimed {
        let sha256 = object.sha256.clone();
        // Dropping the staged object removes its temp file.
        drop(staged);
        return Ok(Admission::Quarantined { sha256 });
    }
    let (object, claim) = commit_under(claim, staged).await?;
    Ok(Admission::Stored(object, claim))
}

fn new_claim(db: &Database) -> Claim {
    Claim {
        id: crate::ids::random_media_id(),
        db: db.clone(),
    }
}

/// Moves claimed bytes to their content address; on error the claim is released.
async fn commit_under(claim: Claim, staged: StagedObject) -> Result<(StoredObject, Claim)> {
    match staged.commit().await {
        Ok(object) => Ok((object, claim)),
        Err(err) => {
            claim.release().await;
            Err(err)
        }
    }
}

/// Deletes the object at `location` if no media row and no upload claim refers to it;
/// returns whether it was deleted. Safe against a concurrent upload of the same bytes (see
/// the module docs).
pub async fn remove_unreferenced(
    db: &Database,
    datastore: &FileDatastore,
    location: &str,
) -> Result<bool> {
    if db.location_in_use(datastore.id(), location).await? {
        return Ok(false);
    }
    let Some(aside) = datastore.move_aside(location).await? else {
        return Ok(false);
    };
    match db.location_in_use(datastore.id(), location).await {
        Ok(false) => {
            datastore.discard_aside(aside).await?;
            Ok(true)
        }
        Ok(true) => {
            datastore.restore(aside).await?;
            Ok(false)
        }
        Err(err) => {
            // Unsure whether it is needed: keep it.
            datastore.restore(aside).await?;
            Err(err)
        }
    }
}
