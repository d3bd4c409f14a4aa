//! Config reload through a real SIGHUP to the real binary.

use std::time::Duration;

use integration::{MediaRepo, RedisServer};

fn config_with_shards(shards: &[(&str, &RedisServer)]) -> String {
    let mut yaml = String::from(
        "server:\n  bind: \"127.0.0.1:{port}\"\n\
         homeservers:\n  - name: \"localhost\"\n    client_api_url: \"http://127.0.0.1:9\"\n\
         database:\n  url: \"sqlite://{dir}/media.db\"\n\
         datastores:\n  - id: default\n    kind: file\n    path: \"{dir}/media\"\n\
         cache:\n  backend: redis\n  redis:\n    reshard_drain_secs: 1\n    shards:\n",
    );
    for (name, server) in shards {
        yaml.push_str(&format!(
            "      - name: {name}\n        addr: \"{}\"\n",
            server.url()
        ));
    }
    yaml
}

fn shard_up(repo: &MediaRepo, name: &str) -> Option<f64> {
    repo.metric_value(&format!("media_repo_cache_shard_up{{shard=\"{name}\"}}"))
}

#[test]
fn sighup_adds_a_shard_and_a_broken_config_is_refused() {
    let a = RedisServer::start().unwrap();
    let b = RedisServer::start().unwrap();
    let repo = MediaRepo::start(&config_with_shards(&[("a", &a)])).unwrap();
    repo.wait_for("shard a up", Duration::from_secs(10), || {
        shard_up(&repo, "a") == Some(1.0)
    })
    .unwrap();
    assert_eq!(shard_up(&repo, "b"), None);

    repo.write_config(&config_with_shards(&[("a", &a), ("b", &b)]))
        .unwrap();
    repo.sighup();
    repo.wait_for("shard b added and up", Duration::from_secs(10), || {
        shard_up(&repo, "b") == Some(1.0)
    })
    .unwrap();
    assert_eq!(repo.metric_value("media_repo_config_generation"), Some(2.0));
    let status: serde_json::Value = serde_json::from_str(&repo.cache_status().unwrap()).unwrap();
    let names: Vec<&str> = status["shards"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{status}");

    // A config with an unknown key is refused; the server keeps serving with the two shards.
    repo.write_config("cache:\n  backend: redis\n  bogus_key: 1\n")
        .unwrap();
    repo.sighup();
    repo.wait_for("reload rejected", Duration::from_secs(10), || {
        repo.metric_value("media_repo_config_reloads_total{result=\"rejected\"}") == Some(1.0)
    })
    .unwrap();
    assert!(repo.logs().contains("bogus_key"), "the log says why");
    assert_eq!(repo.metric_value("media_repo_config_generation"), Some(2.0));
    assert_eq!(shard_up(&repo, "a"), Some(1.0));
    assert_eq!(shard_up(&repo, "b"), Some(1.0));
    let health = reqwest::blocking::get(format!("{}/healthz", repo.base_url())).unwrap();
    assert_eq!(health.status(), 200);

    // Removing a shard drains it for reshard_drain_secs (1 s here), then forgets it (its
    // metrics vanish: they tell the truth).
    repo.write_config(&config_with_shards(&[("b", &b)]))
        .unwrap();
    repo.sighup();
    repo.wait_for("shard a removed", Duration::from_secs(10), || {
        shard_up(&repo, "a").is_none()
    })
    .unwrap();
    assert_eq!(shard_up(&repo, "b"), Some(1.0));

    // A new database URL needs a restart: applied parts go ahead, the log says what waits.
    let moved_db =
        config_with_shards(&[("a", &a), ("b", &b)]).replace("{dir}/media.db", "{dir}/other.db");
    repo.write_config(&moved_db).unwrap();
    repo.sighup();
    repo.wait_for("shard a back", Duration::from_secs(10), || {
        shard_up(&repo, "a") == Some(1.0)
    })
    .unwrap();
    let logs = repo.logs();
    assert!(
        logs.contains("only takes effect after a restart") && logs.contains("database.url"),
        "the log names the setting that needs a restart:\n{logs}"
    );
    assert!(
        !repo.dir().join("other.db").exists(),
        "the running database is kept"
    );
    let health = reqwest::blocking::get(format!("{}/healthz", repo.base_url())).unwrap();
    assert_eq!(health.status(), 200);
}
