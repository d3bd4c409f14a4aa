//! The threads a shard's Redis connections live on. A `ConnectionManager`'s I/O task runs on
//! the thread that created it (and so does every reconnect it starts), so a shard whose
//! managers all live on the actor's own arbiter does all of its encoding, copying and reply
//! parsing on that one thread. The actor owns a few small "connection arbiters" besides:
//! every connection but the actor-local one is created on one of them, and every command,
//! PING and INFO on it is run there too.

use std::future::Future;

use actix::{Arbiter, ArbiterHandle};
use tokio::sync::oneshot;

/// Connection threads per shard at most. Each connection slot but the actor-local one gets a
/// thread of its own up to this many; further slots share them round-robin. More threads than
/// cores only adds context switches, and every shard has its own set.
pub const MAX_IO_THREADS_PER_SHARD: usize = 4;

/// The connection thread stopped before the work sent to it finished.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IoThreadGone;

/// The connection arbiters of one shard actor. Started lazily on the first connect (so a shard
/// with an unusable URL never starts any) and stopped when this is dropped, i.e. when the actor
/// is gone (stopped or panicked).
pub(crate) struct IoThreads {
    arbiters: Vec<Option<Arbiter>>,
}

impl IoThreads {
    /// Room for the threads of the `slots` connection slots that are not actor-local.
    pub(crate) fn new(slots: usize) -> IoThreads {
        let count = slots.clamp(1, MAX_IO_THREADS_PER_SHARD);
        IoThreads {
            arbiters: (0..count).map(|_| None).collect(),
        }
    }

    /// The thread the `slot`-th non-local connection lives on, started (or started anew, if it died) on
    /// demand. Errors only when the OS refuses a thread.
    pub(crate) fn for_slot(&mut self, slot: usize) -> std::io::Result<ArbiterHandle> {
        let idx = slot % self.arbiters.len();
        let entry = &mut self.arbiters[idx];
        if let Some(arbiter) = entry {
            if arbiter.alive() {
                return Ok(arbiter.handle());
            }
        }
        let arbiter = Arbiter::try_new()?;
        let handle = arbiter.handle();
        if let Some(dead) = entry.replace(arbiter) {
            dead.stop();
        }
        Ok(handle)
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        // Stop, don't join: joining would block whatever thread drops the actor, and a stopped
        // arbiter drops its tasks (and with them the managers' I/O tasks) and ends at once.
        for arbiter in self.arbiters.iter().flatten() {
            arbiter.stop();
        }
    }
}

/// Runs `work` on the thread of `io` and hands its output back.
pub(crate) async fn run_on<T, Fut>(io: &ArbiterHandle, work: Fut) -> Result<T, IoThreadGone>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let spawned = io.spawn(async move {
        // The caller may have stopped waiting (its own timeout); nothing to do then.
        let _ = tx.send(work.await);
    });
    if !spawned {
        return Err(IoThreadGone);
    }
    rx.await.map_err(|_| IoThreadGone)
}
