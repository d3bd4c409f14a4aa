//! Rendezvous (highest random weight) hashing over shard names. Pure: no I/O, no state.
//!
//! Every shard scores every key; the key lives on the highest-scoring shard. Adding a shard
//! moves only the keys it now wins (≈ 1/(n+1) of them); removing one moves only its own keys.
//! The score mixes the xxh64 of the routing part with the xxh64 of the shard name the way
//! go-redis' Ring (the Go media repo's router) does, and must never change: every media repo
//! sharing a set of shards has to agree on it, across releases.

use xxhash_rust::xxh64::xxh64;

/// Seed of both xxh64 hashes. Part of the routing contract: never change it.
const SEED: u64 = 0;
/// Multiplier of the xorshift* finaliser that spreads the combined hash.
const MIX_MULTIPLIER: u64 = 2_685_821_657_736_338_717;

/// The part of `key` that decides its shard: the text inside the first `{...}` when that is
/// non-empty (as Redis Cluster hash tags), otherwise the whole key. So `mr1:blob:{sha}:m` and
/// `mr1:blob:{sha}:3` land on the same shard.
pub fn routing_part(key: &str) -> &str {
    if let Some(open) = key.find('{') {
        let rest = &key[open + 1..];
        if let Some(close) = rest.find('}') {
            if close > 0 {
                return &rest[..close];
            }
        }
    }
    key
}

/// The weight of `shard_name` for a routing part. Fixed forever (see module docs).
pub fn score(shard_name: &str, routing: &str) -> u64 {
    score_hashed(name_hash(shard_name), routing_hash(routing))
}

/// A shard name's share of every [`score`]: a ring computes it once per shard.
pub fn name_hash(shard_name: &str) -> u64 {
    xxh64(shard_name.as_bytes(), SEED)
}

/// A routing part's share of every [`score`]: computed once per key, not once per shard.
fn routing_hash(routing: &str) -> u64 {
    xxh64(routing.as_bytes(), SEED)
}

/// [`score`] from the two hashes it combines.
fn score_hashed(name_hash: u64, routing_hash: u64) -> u64 {
    mix(routing_hash ^ name_hash)
}

/// xorshift* finaliser: xoring two hashes keeps too much structure on its own.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x.wrapping_mul(MIX_MULTIPLIER)
}

/// The shard `key` belongs to among `names`; `None` when there are none. Ties (practically
/// never) go to the smaller name so the answer never depends on iteration order.
pub fn pick<'a>(names: impl Iterator<Item = &'a str>, key: &str) -> Option<&'a str> {
    pick_hashed(names.map(|name| (name, name_hash(name), name)), key)
}

/// [`pick`] over candidates given as `(name, name_hash(name), item)`, for a caller that
/// keeps each name's hash (a ring's shards): the same answer, with the key hashed once.
pub fn pick_hashed<'a, T>(
    candidates: impl Iterator<Item = (&'a str, u64, T)>,
    key: &str,
) -> Option<T> {
    let routing = routing_hash(routing_part(key));
    candidates
        .map(|(name, hash, item)| (score_hashed(hash, routing), name, item))
        .max_by(|(sa, na, _), (sb, nb, _)| sa.cmp(sb).then_with(|| nb.cmp(na)))
        .map(|(_, _, item)| item)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: usize = 100_000;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("shard-{i}")).collect()
    }

    fn key(i: usize) -> String {
        format!("mr1:blob:{{{i:064x}}}:m")
    }

    fn placement(names: &[String]) -> Vec<String> {
        (0..KEYS)
            .map(|i| {
                pick(names.iter().map(String::as_str), &key(i))
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    fn assert_balanced(n: usize) {
        let names = names(n);
        let placed = placement(&names);
        let ideal = KEYS as f64 / n as f64;
        for name in &names {
            let count = placed.iter().filter(|p| *p == name).count() as f64;
            let deviation = (count - ideal).abs() / ideal;
            assert!(
                deviation <= 0.03,
                "{name}: {count} keys, ideal {ideal}, off by {:.2} %",
                deviation * 100.0
            );
        }
    }

    #[test]
    fn routing_part_is_the_hash_tag() {
        assert_eq!(routing_part("mr1:blob:{abc}:m"), "abc");
        assert_eq!(routing_part("mr1:blob:{abc}:17"), "abc");
        assert_eq!(
            routing_part("mr1:remote:{example.org/xyz}"),
            "example.org/xyz"
        );
        assert_eq!(routing_part("{a}{b}"), "a", "first tag wins");
        assert_eq!(routing_part("plain"), "plain");
        assert_eq!(
            routing_part("empty{}tag"),
            "empty{}tag",
            "empty tag: whole key"
        );
        assert_eq!(routing_part("open{only"), "open{only");
    }

    #[test]
    fn keys_with_the_same_tag_share_a_shard() {
        let names = names(5);
        let iter = || names.iter().map(String::as_str);
        for i in 0..100 {
            let sha = format!("{i:064x}");
            let header = pick(iter(), &format!("mr1:blob:{{{sha}}}:m"));
            for chunk in 0..8 {
                assert_eq!(pick(iter(), &format!("mr1:blob:{{{sha}}}:{chunk}")), header);
            }
        }
    }

    #[test]
    fn no_shards_no_pick() {
        assert_eq!(pick(std::iter::empty(), "k"), None);
    }

    #[test]
    fn balanced_over_three_shards() {
        assert_balanced(3);
    }

    #[test]
    fn balanced_over_eight_shards() {
        assert_balanced(8);
    }

    #[test]
    fn adding_a_shard_moves_about_one_in_n_plus_one() {
        for n in [3, 5, 8] {
            let before_names = names(n);
            let after_names = names(n + 1);
            let before = placement(&before_names);
            let after = placement(&after_names);
            let new = &after_names[n];
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after) {
                if b != a {
                    moved += 1;
                    assert_eq!(a, new, "a key may only move to the new shard");
                }
            }
            let ideal = KEYS as f64 / (n + 1) as f64;
            let off = (moved as f64 - ideal).abs() / ideal;
            assert!(off <= 0.10, "n={n}: moved {moved}, ideal {ideal}");
        }
    }

    #[test]
    fn removing_a_shard_moves_only_its_keys() {
        let all = names(6);
        let before = placement(&all);
        let removed = &all[2];
        let rest: Vec<String> = all.iter().filter(|n| *n != removed).cloned().collect();
        let after = placement(&rest);
        for (b, a) in before.iter().zip(&after) {
            if b != removed {
                assert_eq!(a, b, "a key of a surviving shard moved");
            }
        }
    }

    /// The routing contract: these must never change, or media repos of different versions
    /// sharing shards would disagree about where keys live.
    #[test]
    fn pinned_vectors() {
        // The underlying hash is standard xxh64 (reference value of the empty input).
        assert_eq!(xxh64(b"", SEED), 0xef46_db37_51d8_e999);
        assert_eq!(score("shard-0", "abc"), PINNED_SCORE);
        let names = ["a", "b", "c"];
        let got: Vec<&str> = PINNED_KEYS
            .iter()
            .map(|(k, _)| pick(names.iter().copied(), k).unwrap())
            .collect();
        let want: Vec<&str> = PINNED_KEYS.iter().map(|(_, s)| *s).collect();
        assert_eq!(got, want);
    }

    const PINNED_SCORE: u64 = 3_800_229_921_202_297_864;
    const PINNED_KEYS: &[(&str, &str)] = &[
        (
            "mr1:blob:{e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855}:m",
            "c",
        ),
        ("mr1:remote:{example.org/abcdef}", "c"),
        ("mr1:lock:{example.org/abcdef}", "c"),
        ("plain-key", "a"),
        ("another", "b"),
        ("{x}", "c"),
    ];
}
