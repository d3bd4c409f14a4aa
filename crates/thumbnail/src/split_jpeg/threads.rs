//! Starting the decoder's second threads without depending on getting them.
//!
//! `std::thread::Scope::spawn` panics when the OS refuses a thread (a process at its
//! thread limit, or out of memory for a stack); a panic there would fail the thumbnail.
//! Every second thread of the decoder is started with [`spawn_or_none`] instead, and its
//! caller does that share of the work on its own thread when the answer is `None`: the
//! pixels never depend on how many threads ran (see the module docs of `split_jpeg`), so
//! the result is the same, only slower.

use std::thread::{Scope, ScopedJoinHandle};

/// Starts `work` on a new scoped thread, or returns `None` if the OS refused one (the
/// caller then does the work itself).
pub(super) fn spawn_or_none<'scope, 'env, T, F>(
    scope: &'scope Scope<'scope, 'env>,
    work: F,
) -> Option<ScopedJoinHandle<'scope, T>>
where
    F: FnOnce() -> T + Send + 'scope,
    T: Send + 'scope,
{
    if refused_for_tests() {
        return None;
    }
    std::thread::Builder::new()
        .name("jpeg-decode".into())
        .spawn_scoped(scope, work)
        .ok()
}

#[cfg(test)]
thread_local! {
    static REFUSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests: whether this thread's spawns are to be refused, as the OS might.
fn refused_for_tests() -> bool {
    #[cfg(test)]
    {
        REFUSE.with(|refuse| refuse.get())
    }
    #[cfg(not(test))]
    {
        false
    }
}

/// Tests: runs `f` with every [`spawn_or_none`] on this thread refused.
#[cfg(test)]
pub(super) fn with_spawns_refused<T>(f: impl FnOnce() -> T) -> T {
    REFUSE.with(|refuse| refuse.set(true));
    let out = f();
    REFUSE.with(|refuse| refuse.set(false));
    out
}
