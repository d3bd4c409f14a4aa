//! The one connection that writes to a SQLite database, with group commit.
//!
//! SQLite lets one connection write at a time. When every pooled connection could write,
//! concurrent uploads found the database locked and waited in SQLite's busy handler, which
//! sleeps and polls (1, 2, 5, 10, ... up to 100 ms per try) instead of queueing: the
//! median upload took 4 ms and the 99th percentile 400–680 ms. So every write now goes
//! through one connection (a pool of one, so a waiting writer queues in order instead of
//! polling), and reading connections are `query_only`.
//!
//! Each commit costs one fsync of the WAL (`synchronous = FULL`: an acknowledged upload
//! survives a power cut). The small writes on the upload path (an upload's claim, its
//! row, releasing the claim, ...) are therefore *jobs* sent to [`GroupWriter`]: its task
//! takes every job waiting (at most [`MAX_GROUP_JOBS`]), runs each in its own savepoint
//! inside one transaction and commits once, so one fsync covers them all. A caller learns
//! its job's result only after that commit; a job that fails is rolled back to its
//! savepoint alone and the others stand. A job of one statement (an upload's claim) needs
//! no savepoint: SQLite applies a statement wholly or not at all and a failed one leaves
//! the transaction going, so it runs bare, saving the two extra round trips to the
//! connection's thread (each a pair of thread wake-ups) a savepoint costs. Other writes
//! (purges, quarantine, housekeeping) take the same connection between groups.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnection, SqlitePool};
use sqlx::Connection;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::{Error, Result};

/// Most jobs committed together. Bounds how long the first job of a group waits for the
/// others' statements (each a few tens of microseconds) before its commit.
pub const MAX_GROUP_JOBS: usize = 64;

/// Jobs that may wait for the writer; a caller beyond that waits to enqueue.
pub const QUEUE_JOBS: usize = 1024;

/// Told whether the group's commit succeeded; hands the caller its result.
type Completion = Box<dyn FnOnce(std::result::Result<(), Arc<str>>) + Send>;

/// A job's body as the writer task runs it: its statements on the connection, then whether
/// they succeeded (the savepoint is kept or rolled back) and how to answer its caller.
type JobBody =
    Box<dyn for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, (bool, Completion)> + Send>;

/// A queued job and what makes it atomic within its group.
struct Job {
    body: JobBody,
    /// Run inside a savepoint of its own; `false` for a body of exactly one statement,
    /// which SQLite itself applies wholly or not at all.
    savepoint: bool,
}

/// The queue in front of the SQLite writer connection; cheap to clone.
#[derive(Clone)]
pub(crate) struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Starts the writer task on the current tokio runtime; it ends when every
    /// `GroupWriter` clone is dropped.
    pub(crate) fn start(pool: SqlitePool) -> GroupWriter {
        let (jobs, queue) = mpsc::channel(QUEUE_JOBS);
        tokio::spawn(run(pool, queue));
        GroupWriter { jobs }
    }

    /// Runs `job` in the next group, in a savepoint of its own, and answers once the group
    /// is committed. The job's statements must use the connection it is given, never
    /// another pool: the writer connection is held while it runs.
    pub(crate) async fn run<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.enqueue(job, true).await
    }

    /// [`GroupWriter::run`] for a job that runs exactly one statement and cannot fail once
    /// that statement succeeded (nothing fallible is decoded from it): it runs without a
    /// savepoint, since SQLite undoes a failed statement by itself and the transaction goes
    /// on. The same contract as `write_statement!` on Postgres, where such a body runs in
    /// autocommit. A job may follow its one deciding statement with others only if their
    /// failure leaves nothing its caller relies on undone, and it then logs that failure
    /// instead of returning it (an upload's row, then its claim's release).
    pub(crate) async fn run_statement<T, F>(&self, job: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        self.enqueue(job, false).await
    }

    async fn enqueue<T, F>(&self, job: F, savepoint: bool) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (answer, answered) = oneshot::channel();
        let body: JobBody = Box::new(move |conn| {
            Box::pin(async move {
                let result = job(conn).await;
                let ok = result.is_ok();
                let complete: Completion = Box::new(move |commit| {
                    let result = match (result, commit) {
                        (Ok(value), Ok(())) => Ok(value),
                        (Err(err), _) => Err(err),
                        (Ok(_), Err(message)) => Err(Error::GroupCommit(message.to_string())),
                    };
                    // The caller may have gone away; its write stands all the same.
                    let _ = answer.send(result);
                });
                (ok, complete)
            })
        });
        self.jobs
            .send(Job { body, savepoint })
            .await
            .map_err(|_| Error::WriterStopped)?;
        // A dropped answer: the group broke before this job ran (logged by the writer).
        answered.await.map_err(|_| Error::WriterStopped)?
    }
}

async fn run(pool: SqlitePool, mut queue: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP_JOBS);
    while queue.recv_many(&mut group, MAX_GROUP_JOBS).await > 0 {
        commit_group(&pool, group.drain(..)).await;
    }
    debug!("SQLite group writer stopped");
}

/// Runs one group in one transaction and answers every job that ran. Jobs that could not
/// run (the transaction broke first) are dropped, and their callers get
/// [`Error::WriterStopped`].
async fn commit_group(pool: &SqlitePool, jobs: impl ExactSizeIterator<Item = Job>) {
    let started = Instant::now();
    let size = jobs.len();
    let mut completions: Vec<Completion> = Vec::with_capacity(size);
    let outcome: std::result::Result<(), sqlx::Error> = async {
        let mut tx = pool.begin().await?;
        for job in jobs {
            if !job.savepoint {
                // One statement: a failure undid itself (see the module docs).
                let (_, complete) = (job.body)(&mut tx).await;
                completions.push(complete);
                continue;
            }
            let mut savepoint = tx.begin().await?;
            let (ok, complete) = (job.body)(&mut savepoint).await;
            completions.push(complete);
            if ok {
                savepoint.commit().await?;
            } else {
                savepoint.rollback().await?;
            }
        }
        tx.commit().await
    }
    .await;
    let commit = match outcome {
        Ok(()) => Ok(()),
        Err(err) => {
            warn!(error = %err, jobs = size, "a SQLite group commit failed; its writes were not kept");
            Err(Arc::<str>::from(err.to_string()))
        }
    };
    for complete in completions {
        complete(commit.clone());
    }
    debug!(
        jobs = size,
        micros = started.elapsed().as_micros() as u64,
        "SQLite group committed"
    );
}

#[cfg(test)]
mod tests {
    use futures_util::future::join_all;
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    /// Jobs of both kinds queued together, so they share one group: each failure undoes
    /// only its own job, and every caller hears its own outcome.
    #[tokio::test]
    async fn each_job_in_a_group_stands_or_fails_alone() {
        // One connection, so the in-memory database is the same for every statement.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES ('taken')")
            .execute(&pool)
            .await
            .unwrap();
        let writer = GroupWriter::start(pool.clone());

        let statement = |key: &'static str| {
            writer.run_statement(move |conn| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO t VALUES (?)")
                        .bind(key)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            })
        };
        // Two rows, the second of which is taken: the first must go with it.
        let two_rows = |first: &'static str, second: &'static str| {
            writer.run(move |conn| {
                Box::pin(async move {
                    for key in [first, second] {
                        sqlx::query("INSERT INTO t VALUES (?)")
                            .bind(key)
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
        };
        let (statements, jobs) = tokio::join!(
            join_all([statement("a"), statement("taken"), statement("b")]),
            join_all([two_rows("c", "d"), two_rows("e", "taken")]),
        );
        let ok = |results: Vec<Result<()>>| results.iter().map(Result::is_ok).collect::<Vec<_>>();
        assert_eq!(ok(statements), [true, false, true]);
        assert_eq!(ok(jobs), [true, false]);

        let mut kept: Vec<String> = sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&pool)
            .await
            .unwrap();
        kept.sort();
        assert_eq!(kept, ["a", "b", "c", "d", "taken"]);
    }
}
