//! Postgres: the rows of concurrent uploads written in batches, one statement and one WAL
//! flush for every upload waiting.
//!
//! An upload's row and its claim's release were one autocommit statement each, so every
//! upload paid a commit that waits for the WAL to reach the disk (and, on a VM, the disk
//! kick that goes with it), plus a second statement for the standing quarantine. Now a
//! task takes every row waiting (at most [`MAX_BATCH_ROWS`]) and writes them with one
//! statement: each row is inserted only if its claim was still there to be released, as
//! before, and a row whose id is taken is skipped, not an error for the others. Once that
//! statement has committed, one more marks the batch's rows under a standing quarantine
//! (after the commit, as `quarantine.rs` requires). A caller learns its row's fate after
//! both.
//!
//! If Postgres refuses the batch statement (a value it does not take), nothing of it was
//! written, and each row is then written on its own with the one-row statement, so one bad
//! row fails only its own upload. Without a connection (pool timeout, closed pool, broken
//! socket) every row of the batch fails at once instead of waiting again one by one. Two uploads of the same
//! id never share a batch (the later one waits for the next), so each row's outcome is
//! known exactly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::database::{already_exists, conflict_or, INSERT_MEDIA_RELEASING_CLAIM};
use crate::error::{Error, Result};
use crate::quarantine::{APPLY_STANDING, APPLY_STANDING_TO_BATCH};
use crate::records::MediaRecord;
use crate::row_cache::MediaRowCache;

/// Most rows written by one statement. Bounds the statement's size and how long the first
/// row of a batch waits for the others.
pub const MAX_BATCH_ROWS: usize = 64;

/// Rows that may wait for the writer task; a caller beyond that waits to enqueue.
pub const QUEUE_ROWS: usize = 1024;

/// Inserts each input row whose claim it releases, skipping ids already taken; answers per
/// input row, in order, whether its claim was there and whether its row was written.
const INSERT_BATCH_RELEASING_CLAIMS: &str = "WITH input AS ( \
       SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
         $6::int8[], $7::text[], $8::text[], $9::text[], $10::int8[], $11::text[], \
         $12::int8[], $13::text[]) WITH ORDINALITY AS t(origin, media_id, user_id, \
         content_type, upload_name, size_bytes, sha256, datastore_id, location, \
         created_at_ms, quarantined_by, safe_from_quarantine, claim_id, ord)), \
     released AS ( \
       DELETE FROM content_claims c USING input i WHERE c.claim_id = i.claim_id \
       RETURNING c.claim_id), \
     written AS ( \
       INSERT INTO media (origin, media_id, user_id, content_type, upload_name, size_bytes, \
         sha256, datastore_id, location, created_at_ms, quarantined_by, safe_from_quarantine) \
       SELECT i.origin, i.media_id, i.user_id, i.content_type, i.upload_name, i.size_bytes, \
         i.sha256, i.datastore_id, i.location, i.created_at_ms, i.quarantined_by, \
         i.safe_from_quarantine \
       FROM input i JOIN released r ON r.claim_id = i.claim_id \
       ON CONFLICT DO NOTHING \
       RETURNING origin, media_id) \
     SELECT i.ord, r.claim_id IS NOT NULL, w.origin IS NOT NULL \
     FROM input i \
       LEFT JOIN released r ON r.claim_id = i.claim_id \
       LEFT JOIN written w ON w.origin = i.origin AND w.media_id = i.media_id \
     ORDER BY i.ord";

/// One upload's row, waiting to be written.
struct RowJob {
    row: MediaRecord,
    /// `row.size_bytes` as the database stores it (checked by the caller).
    size: i64,
    claim_id: String,
    /// The standing-quarantine mark the row got (None: it may be served), or why it was
    /// not written.
    answer: oneshot::Sender<Result<Option<String>>>,
}

/// The queue in front of the batch-writing task; cheap to clone.
#[derive(Clone)]
pub(crate) struct RowBatcher {
    jobs: mpsc::Sender<RowJob>,
}

impl RowBatcher {
    /// Starts the writer task on the current tokio runtime; it ends when every clone is
    /// dropped. Rows it marks are forgotten in `rows`.
    pub(crate) fn start(pool: PgPool, rows: Arc<MediaRowCache>) -> RowBatcher {
        let (jobs, queue) = mpsc::channel(QUEUE_ROWS);
        tokio::spawn(run(pool, queue, rows));
        RowBatcher { jobs }
    }

    /// Writes an upload's row if its claim is still there (releasing it), then applies a
    /// standing quarantine; returns the mark. [`Error::ClaimLost`] without the claim,
    /// [`Error::AlreadyExists`] if the id is taken; on any error no row was written by it.
    pub(crate) async fn write(
        &self,
        row: MediaRecord,
        size: i64,
        claim_id: String,
    ) -> Result<Option<String>> {
        let (answer, answered) = oneshot::channel();
        let job = RowJob {
            row,
            size,
            claim_id,
            answer,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::WriterStopped)?;
        answered.await.map_err(|_| Error::WriterStopped)?
    }
}

async fn run(pool: PgPool, mut queue: mpsc::Receiver<RowJob>, rows: Arc<MediaRowCache>) {
    let mut waiting: Vec<RowJob> = Vec::with_capacity(MAX_BATCH_ROWS);
    loop {
        if waiting.is_empty() {
            if queue.recv_many(&mut waiting, MAX_BATCH_ROWS).await == 0 {
                return;
            }
        } else {
            while waiting.len() < MAX_BATCH_ROWS {
                match queue.try_recv() {
                    Ok(job) => waiting.push(job),
                    Err(_) => break,
                }
            }
        }
        let (batch, later) = one_per_media(std::mem::take(&mut waiting));
        waiting = later;
        write_batch(&pool, batch, &rows).await;
    }
}

/// Splits jobs into the first one of each `(origin, media_id)` and the rest (for the next
/// batch), keeping their order.
fn one_per_media(jobs: Vec<RowJob>) -> (Vec<RowJob>, Vec<RowJob>) {
    let mut seen = HashSet::with_capacity(jobs.len());
    jobs.into_iter()
        .partition(|job| seen.insert((job.row.origin.clone(), job.row.media_id.clone())))
}

/// What the batch statement did with one row.
enum Outcome {
    Written,
    /// Its claim was released, but the id was taken.
    IdTaken,
    ClaimLost,
}

async fn write_batch(pool: &PgPool, batch: Vec<RowJob>, rows: &MediaRowCache) {
    let outcomes = match insert_batch(pool, &batch).await {
        Ok(outcomes) if outcomes.len() == batch.len() => outcomes,
        Ok(outcomes) => {
            // Cannot happen (one answer per input row by construction); if it did, the
            // statement committed and which rows it wrote is unknown: no upload is told
            // it succeeded, and no cached row is trusted.
            let message = format!(
                "the batch insert answered for {} of {} rows",
                outcomes.len(),
                batch.len()
            );
            warn!(%message, "a batch of upload rows gave an unusable answer");
            rows.forget_all();
            for job in batch {
                let _ = job
                    .answer
                    .send(Err(Error::BatchOutcomeUnknown(message.clone())));
            }
            return;
        }
        Err(err) if refused_by_the_server(&err) => {
            // The statement is atomic: nothing of the batch was written, and the server
            // answered, so one of the rows may be what it refused.
            warn!(error = %err, rows = batch.len(), "a batch of upload rows was refused; writing them one by one");
            for job in batch {
                let result = write_one(pool, &job, rows).await;
                let _ = job.answer.send(result);
            }
            return;
        }
        Err(err) => {
            // No connection, a timeout: retrying row by row would only make each row wait
            // as long again, one after the other. Nothing was written unless the socket
            // broke after the commit, the same uncertainty a one-row statement has: the
            // uploads are not reported as stored either way.
            let message = err.to_string();
            for job in batch {
                let _ = job.answer.send(Err(Error::GroupCommit(message.clone())));
            }
            return;
        }
    };
    let written: Vec<&RowJob> = batch
        .iter()
        .zip(&outcomes)
        .filter(|(_, outcome)| matches!(outcome, Outcome::Written))
        .map(|(job, _)| job)
        .collect();
    let marks = mark_batch(pool, &written).await;
    if let Ok(marked) = &marks {
        rows.forget(marked.keys().map(|(o, m)| (o.as_str(), m.as_str())));
    }
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        let result = match outcome {
            Outcome::ClaimLost => Err(Error::ClaimLost {
                claim_id: job.claim_id.clone(),
            }),
            Outcome::IdTaken => Err(already_exists(&job.row.origin, &job.row.media_id)),
            Outcome::Written => match &marks {
                Ok(marked) => Ok(marked
                    .get(&(job.row.origin.clone(), job.row.media_id.clone()))
                    .cloned()),
                // The batch's marking was refused: each row is marked on its own.
                Err(err) if refused_by_the_server(err) => {
                    apply_standing_one(pool, &job.row, rows).await
                }
                // Unmarked for want of a connection: the upload fails, as a failed mark
                // of a single row does, and the row is not trusted from the cache.
                Err(err) => {
                    rows.forget([(job.row.origin.as_str(), job.row.media_id.as_str())]);
                    Err(Error::GroupCommit(err.to_string()))
                }
            },
        };
        let _ = job.answer.send(result);
    }
}

async fn insert_batch(pool: &PgPool, batch: &[RowJob]) -> Result<Vec<Outcome>> {
    let column = |f: fn(&RowJob) -> String| batch.iter().map(f).collect::<Vec<String>>();
    let optional =
        |f: fn(&RowJob) -> Option<String>| batch.iter().map(f).collect::<Vec<Option<String>>>();
    let answers: Vec<(i64, bool, bool)> = sqlx::query_as(INSERT_BATCH_RELEASING_CLAIMS)
        .bind(column(|j| j.row.origin.clone()))
        .bind(column(|j| j.row.media_id.clone()))
        .bind(optional(|j| j.row.user_id.clone()))
        .bind(column(|j| j.row.content_type.clone()))
        .bind(optional(|j| j.row.upload_name.clone()))
        .bind(batch.iter().map(|j| j.size).collect::<Vec<i64>>())
        .bind(column(|j| j.row.sha256.clone()))
        .bind(column(|j| j.row.datastore_id.clone()))
        .bind(column(|j| j.row.location.clone()))
        .bind(
            batch
                .iter()
                .map(|j| j.row.created_at_ms)
                .collect::<Vec<i64>>(),
        )
        .bind(optional(|j| j.row.quarantined_by.clone()))
        .bind(
            batch
                .iter()
                .map(|j| i64::from(j.row.safe_from_quarantine))
                .collect::<Vec<i64>>(),
        )
        .bind(column(|j| j.claim_id.clone()))
        .fetch_all(pool)
        .await?;
    Ok(answers
        .into_iter()
        .map(|(_, claimed, written)| match (claimed, written) {
            (_, true) => Outcome::Written,
            (true, false) => Outcome::IdTaken,
            (false, false) => Outcome::ClaimLost,
        })
        .collect())
}

/// Whether a batch statement failed because the server refused it (so one of its rows
/// may be to blame, and writing them one by one is worth it), rather than for want of a
/// connection (a pool timeout, a closed pool, a broken socket), when each row on its own
/// would wait as long again.
fn refused_by_the_server(err: &Error) -> bool {
    matches!(err, Error::Database(sqlx::Error::Database(_)))
}

/// Marks the batch's rows under a standing quarantine; returns the marked ones.
async fn mark_batch(
    pool: &PgPool,
    written: &[&RowJob],
) -> Result<HashMap<(String, String), String>> {
    if written.is_empty() {
        return Ok(HashMap::new());
    }
    let origins: Vec<&str> = written.iter().map(|j| j.row.origin.as_str()).collect();
    let media_ids: Vec<&str> = written.iter().map(|j| j.row.media_id.as_str()).collect();
    let marked: Vec<(String, String, String)> = sqlx::query_as(APPLY_STANDING_TO_BATCH)
        .bind(origins)
        .bind(media_ids)
        .fetch_all(pool)
        .await?;
    Ok(marked
        .into_iter()
        .map(|(origin, media_id, mark)| ((origin, media_id), mark))
        .collect())
}

/// One row the way it was written before batches: its own statement, then its own mark.
async fn write_one(pool: &PgPool, job: &RowJob, rows: &MediaRowCache) -> Result<Option<String>> {
    let m = &job.row;
    let written =
        crate::database::bind_media!(sqlx::query(INSERT_MEDIA_RELEASING_CLAIM), m, job.size)
            .bind(&job.claim_id)
            .execute(pool)
            .await
            .map_err(|e| conflict_or(e, &m.origin, &m.media_id))?
            .rows_affected();
    if written == 0 {
        return Err(Error::ClaimLost {
            claim_id: job.claim_id.clone(),
        });
    }
    apply_standing_one(pool, m, rows).await
}

/// [`APPLY_STANDING`] for one written row; the row is forgotten unless it surely was not
/// marked.
async fn apply_standing_one(
    pool: &PgPool,
    m: &MediaRecord,
    rows: &MediaRowCache,
) -> Result<Option<String>> {
    let marked: std::result::Result<Option<Option<String>>, sqlx::Error> =
        sqlx::query_scalar(APPLY_STANDING)
            .bind(&m.origin)
            .bind(&m.media_id)
            .fetch_optional(pool)
            .await;
    if !matches!(marked, Ok(None) | Ok(Some(None))) {
        rows.forget([(m.origin.as_str(), m.media_id.as_str())]);
    }
    Ok(marked?.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_refusal_by_the_server_is_retried_row_by_row() {
        for unreachable in [
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
        ] {
            assert!(!refused_by_the_server(&Error::Database(unreachable)));
        }
        assert!(!refused_by_the_server(&Error::WriterStopped));
        // A refusal (a real server error) is covered by the storage tests: a NUL in one
        // row's name fails that upload alone (`rows_recorded_together_each_get_their_own_outcome`).
    }
}
