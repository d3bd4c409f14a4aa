//! Config for a media-repo that serves one federating homeserver (its client API, its
//! signing key), as the federation tests and the federation benchmark start it.

use anyhow::Context as _;

use crate::media_repo::MediaRepo;
use crate::redis_server::RedisServer;
use crate::synapse::FederatingSynapse;
use crate::test_ca::TestCa;

/// A config for `MediaRepo::start` serving `hs_name` (client API at `client_url`, signing as
/// it with the key file at `key_path`), SQLite and a file datastore in the repo's dir.
/// `federation` is the body of the `federation:` block (indented two spaces, e.g.
/// [`trusting`]); `extra` is appended. Without a top-level `cache:` key in `extra`, the
/// in-process memory cache.
pub fn repo_yaml(
    hs_name: &str,
    client_url: &str,
    key_path: &str,
    federation: &str,
    extra: &str,
) -> String {
    let cache = if extra.lines().any(|l| l.starts_with("cache:")) {
        ""
    } else {
        "cache:\n  backend: memory\n"
    };
    format!(
        "server:\n  bind: \"127.0.0.1:{{port}}\"\n\
         homeservers:\n  - name: \"{hs_name}\"\n    client_api_url: \"{client_url}\"\n    signing_key_path: \"{key_path}\"\n\
         database:\n  url: \"sqlite://{{dir}}/media-repo.db\"\n\
         datastores:\n  - id: default\n    kind: file\n    path: \"{{dir}}/media\"\n\
         federation:\n{federation}\
         {cache}{extra}"
    )
}

/// The `federation:` block body that lets a repo reach homeservers on loopback with
/// certificates from `ca`: 127.0.0.1 allowed, the test CA trusted besides the system roots.
pub fn trusting(ca: &TestCa) -> String {
    format!(
        "  allowed_networks: [\"127.0.0.1\"]\n  extra_ca_file: \"{}\"\n",
        ca.cert_path().display()
    )
}

/// hs1, hs2 and hs3: three [`FederatingSynapse`]s with default settings trusting `ca`,
/// started in parallel (see [`start_synapses`]).
pub fn start_three_synapses(
    ca: &TestCa,
) -> anyhow::Result<(FederatingSynapse, FederatingSynapse, FederatingSynapse)> {
    let [hs1, hs2, hs3] = start_synapses(ca)?;
    Ok((hs1, hs2, hs3))
}

/// `N` [`FederatingSynapse`]s with default settings trusting `ca`, started in parallel. All
/// are joined before an error is returned, so none outlives a failed start unowned.
pub fn start_synapses<const N: usize>(ca: &TestCa) -> anyhow::Result<[FederatingSynapse; N]> {
    std::thread::scope(|s| {
        let starts: Vec<_> = (0..N)
            .map(|_| s.spawn(|| FederatingSynapse::start(ca)))
            .collect();
        let results: Vec<anyhow::Result<FederatingSynapse>> = starts
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a Synapse start panicked"))?
            })
            .collect();
        let mut started = Vec::with_capacity(N);
        for (i, result) in results.into_iter().enumerate() {
            started.push(result.with_context(|| format!("starting hs{}", i + 1))?);
        }
        started
            .try_into()
            .map_err(|_| anyhow::anyhow!("started a different number of Synapses"))
    })
}

/// The `cache:` block for `backend: redis` over `shards`, named `shard-0`, `shard-1`, ….
pub fn redis_cache_yaml(shards: &[RedisServer]) -> String {
    let mut yaml = "cache:\n  backend: redis\n  redis:\n    shards:\n".to_owned();
    for (i, shard) in shards.iter().enumerate() {
        yaml += &format!(
            "      - name: shard-{i}\n        addr: \"{}\"\n",
            shard.url()
        );
    }
    yaml
}

/// Starts a media-repo serving `hs` (its client API, signing as it with its key), reaching
/// homeservers on loopback with certificates from `ca` ([`trusting`]); `extra` is appended
/// to the config as in [`repo_yaml`].
pub fn start_repo_for(
    hs: &FederatingSynapse,
    ca: &TestCa,
    extra: &str,
) -> anyhow::Result<MediaRepo> {
    MediaRepo::start(&repo_yaml(
        &hs.server_name,
        &hs.client_url(),
        &hs.signing_key_path().display().to_string(),
        &trusting(ca),
        extra,
    ))
    .with_context(|| format!("starting a media-repo for {}", hs.server_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_cache_unless_extra_names_one() {
        let yaml = repo_yaml("hs", "http://c", "/k", "  allowed_networks: []\n", "");
        assert!(yaml.contains("federation:\n  allowed_networks: []\ncache:\n  backend: memory\n"));
        let none = repo_yaml("hs", "http://c", "/k", "", "cache:\n  backend: none\n");
        assert_eq!(none.matches("cache:").count(), 1);
        assert!(none.ends_with("cache:\n  backend: none\n"));
    }
}
