//! Each worker thread's memory of the tokens it saw vouched for, in front of the shared
//! whoami cache (`auth.rs`).
//!
//! The shared cache is a concurrent moka cache: a hit there hashes the key with SipHash,
//! walks a lock-free table and records the read for its eviction policy, about 3,400
//! instructions, as much as the rest of authentication and more than a small download's
//! cache read. A token a worker saw vouched for is answered here by one lookup in a plain
//! map owned by the thread.
//!
//! What makes it as safe as the shared cache: an entry lives only until the moment the
//! homeserver's answer expires in the shared cache (`vouched_at + auth.whoami_cache_secs`),
//! so a token is never trusted longer than the configured lifetime after the homeserver
//! last vouched for it; a config reload ([`forget_all`]) empties every thread's memory
//! before the new settings are used; only tokens a homeserver vouched for get in, so a
//! client cannot fill it with made-up tokens, and it holds at most
//! [`MAX_TOKENS_PER_THREAD`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Tokens one thread remembers; past it the memory starts over (the shared cache still
/// has them). Each entry is a token, a user id and a server name: about 200 bytes.
pub const MAX_TOKENS_PER_THREAD: usize = 4096;

/// Bumped by [`forget_all`]; a thread whose memory is older empties it first.
static GENERATION: AtomicU64 = AtomicU64::new(0);

struct Vouched {
    homeserver: Box<str>,
    user_id: Box<str>,
    /// When the shared cache's entry expires.
    until: Instant,
}

#[derive(Default)]
struct Memory {
    generation: u64,
    tokens: HashMap<Box<str>, Vouched, foldhash::fast::RandomState>,
}

impl Memory {
    /// Empties the memory if a reload happened since it was filled.
    fn current(&mut self) -> &mut Self {
        let generation = GENERATION.load(Ordering::Acquire);
        if self.generation != generation {
            self.tokens.clear();
            self.generation = generation;
        }
        self
    }
}

thread_local! {
    static MEMORY: RefCell<Memory> = RefCell::default();
}

/// The user `homeserver` vouched for as the owner of `token`, if this thread remembers it
/// and the vouching has not expired.
pub fn lookup(homeserver: &str, token: &str, now: Instant) -> Option<String> {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        let memory = memory.current();
        let vouched = memory.tokens.get(token)?;
        if vouched.until <= now {
            memory.tokens.remove(token);
            return None;
        }
        (*vouched.homeserver == *homeserver).then(|| vouched.user_id.to_string())
    })
}

/// Remembers that `homeserver` vouched for `user_id` as the owner of `token`, until `until`
/// (when the shared cache forgets it). `generation` is [`generation`] read before the
/// homeserver was asked: an answer that straddles a reload is not remembered.
pub fn remember(generation: u64, homeserver: &str, token: &str, user_id: &str, until: Instant) {
    MEMORY.with(|memory| {
        let mut memory = memory.borrow_mut();
        let memory = memory.current();
        if memory.generation != generation {
            return;
        }
        if memory.tokens.len() >= MAX_TOKENS_PER_THREAD {
            memory.tokens.clear();
        }
        memory.tokens.insert(
            token.into(),
            Vouched {
                homeserver: homeserver.into(),
                user_id: user_id.into(),
                until,
            },
        );
    });
}

/// The reload generation now (see [`remember`]).
pub fn generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// Makes every thread forget what it remembers (on a config reload), before its next use.
pub fn forget_all() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// One of these tests bumps the global generation, which would empty the others'
    /// memory mid-test: they take turns.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[test]
    fn remembered_tokens_answer_until_they_expire_and_only_for_their_homeserver() {
        let _serial = serial();
        let now = Instant::now();
        let generation = generation();
        remember(
            generation,
            "a.example",
            "tok",
            "@u:a.example",
            now + Duration::from_secs(5),
        );
        assert_eq!(
            lookup("a.example", "tok", now).as_deref(),
            Some("@u:a.example")
        );
        assert_eq!(
            lookup("b.example", "tok", now),
            None,
            "another homeserver's request"
        );
        assert_eq!(lookup("a.example", "other", now), None);
        assert_eq!(
            lookup("a.example", "tok", now + Duration::from_secs(5)),
            None,
            "expired"
        );
        assert_eq!(
            lookup("a.example", "tok", now),
            None,
            "an expired entry is dropped"
        );
    }

    #[test]
    fn a_reload_forgets_everything_and_a_straddling_answer_is_not_kept() {
        let _serial = serial();
        let now = Instant::now();
        let until = now + Duration::from_secs(60);
        remember(generation(), "a.example", "kept", "@u:a.example", until);
        let before_reload = generation();
        forget_all();
        assert_eq!(lookup("a.example", "kept", now), None);
        remember(before_reload, "a.example", "late", "@u:a.example", until);
        assert_eq!(lookup("a.example", "late", now), None);
        // Other threads see the reload too.
        std::thread::spawn(move || {
            remember(generation(), "a.example", "t", "@u:a.example", until);
            assert!(lookup("a.example", "t", now).is_some());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_memory_is_bounded() {
        let _serial = serial();
        let now = Instant::now();
        let until = now + Duration::from_secs(60);
        for i in 0..=MAX_TOKENS_PER_THREAD {
            remember(
                generation(),
                "a.example",
                &format!("t{i}"),
                "@u:a.example",
                until,
            );
        }
        MEMORY.with(|m| assert!(m.borrow().tokens.len() <= MAX_TOKENS_PER_THREAD));
        let last = format!("t{MAX_TOKENS_PER_THREAD}");
        assert!(lookup("a.example", &last, now).is_some());
    }
}
