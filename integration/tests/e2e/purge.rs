//! Purge with the real `media-repo purge` command beside a running server: shared content
//! survives until its last row goes, an upload of the same bytes racing a purge keeps its
//! file, and a purge killed with SIGKILL leaves no row without its file (and, rerun, no
//! file without a row).

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};

use crate::common::{random_bytes, upload_to, users, Db, Options, Stack};

/// No cache: a purged file cannot hide behind a cached copy.
fn stack(db: Db) -> Stack {
    Stack::start(Options {
        db,
        cache_yaml: "cache:\n  backend: none\n",
        extra_yaml: "",
        ..Options::default()
    })
}

/// Runs `media-repo purge ARGS` on the stack's config; panics with its output unless it
/// succeeds; returns its stdout.
fn purge(s: &Stack, args: &[&str]) -> String {
    let output = run_purge(s, args);
    assert!(
        output.status.success(),
        "purge {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn run_purge(s: &Stack, args: &[&str]) -> Output {
    let mut full = vec!["purge"];
    full.extend_from_slice(args);
    s.repo
        .command(&full)
        .output()
        .expect("running media-repo purge")
}

/// The number in `line` after `prefix` (e.g. "purged 3 media" with "purged ").
fn number_after(out: &str, prefix: &str) -> u64 {
    let at = out
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix:?} not in {out:?}"));
    out[at + prefix.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {prefix:?} in {out:?}"))
}

fn object_path(s: &Stack, bytes: &[u8]) -> std::path::PathBuf {
    s.repo.content_file(bytes)
}

fn assert_serves(s: &Stack, server: &str, id: &str, bytes: &[u8]) {
    let response = s.download(server, id, &users().alice);
    assert_eq!(response.status(), 200, "mxc://{server}/{id}");
    assert!(
        response.bytes().unwrap().as_ref() == bytes,
        "mxc://{server}/{id}: wrong bytes"
    );
}

#[test]
fn shared_content_survives_until_its_last_row_goes() {
    let s = stack(Db::Sqlite);
    let bytes = random_bytes(10_000);
    let (server, first) = s.upload(&users().alice, bytes.clone(), "image/png", None);
    let (_, second) = s.upload(&users().bob, bytes.clone(), "image/png", None);
    let path = object_path(&s, &bytes);
    assert!(path.exists());

    let out = purge(&s, &["media", &format!("{server}/{first}")]);
    assert_eq!(number_after(&out, "purged "), 1, "{out}");
    assert_eq!(number_after(&out, "deleted "), 0, "{out}");
    assert_eq!(
        s.download(&server, &first, &users().alice).status(),
        404,
        "the purged media is gone"
    );
    assert!(path.exists(), "the other media still uses the bytes");
    assert_serves(&s, &server, &second, &bytes);

    let out = purge(&s, &["media", &format!("mxc://{server}/{second}")]);
    assert_eq!(number_after(&out, "purged "), 1, "{out}");
    assert_eq!(number_after(&out, "deleted "), 1, "{out}");
    assert_eq!(number_after(&out, "files ("), bytes.len() as u64, "{out}");
    assert!(!path.exists(), "the last row took the file with it");
    assert_eq!(s.download(&server, &second, &users().alice).status(), 404);

    // Idempotent: nothing more to remove, and no failure.
    let out = purge(&s, &["media", &format!("{server}/{second}")]);
    assert_eq!(number_after(&out, "purged "), 0, "{out}");
    assert_eq!(s.media_rows(), 0);
    assert_eq!(s.datastore_files(), (0, 0));
}

#[test]
fn bad_purge_arguments_fail_with_a_clear_message() {
    let s = stack(Db::Sqlite);
    for (args, expected) in [
        (vec!["media", "no-slash"], "SERVER/MEDIA_ID"),
        (
            vec!["media", "example.org/../x"],
            "not a valid SERVER/MEDIA_ID",
        ),
        (vec!["user", "alice"], "not a user id"),
    ] {
        let output = run_purge(&s, &args);
        assert!(!output.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = s
        .repo
        .command(&["purge", "remote"])
        .output()
        .expect("running media-repo purge");
    assert!(!output.status.success(), "remote needs an age");
}

/// Rounds of: a media is purged while uploads of the same bytes arrive, some of them held
/// between storing their bytes (under a claim) and writing their row. Every upload answered
/// 200 must download afterwards with its bytes.
#[test]
fn an_upload_racing_a_purge_of_the_same_bytes_never_loses_its_file() {
    const ROUNDS: usize = 20;
    const UPLOADS_PER_ROUND: usize = 4;
    let s = stack(Db::Sqlite);
    let alice = users().alice.clone();
    let mut acknowledged = Vec::new();
    for round in 0..ROUNDS {
        let bytes = random_bytes(5_000);
        let (server, victim) = s.upload(&alice, bytes.clone(), "image/png", None);
        let target = format!("{server}/{victim}");
        std::thread::scope(|scope| {
            let purging = scope.spawn(|| purge(&s, &["media", &target]));
            let uploads: Vec<_> = (0..UPLOADS_PER_ROUND)
                .map(|i| {
                    let (http, url, alice, bytes) = (
                        s.http.clone(),
                        s.url("/_matrix/media/v3/upload"),
                        &alice,
                        &bytes,
                    );
                    scope.spawn(move || {
                        let mut request = http.post(url).bearer_auth(alice).body(bytes.clone());
                        // Half of them wait inside the window a claim protects.
                        if i % 2 == 0 {
                            let pause = 50 + 100 * ((round + i) % 4);
                            request =
                                request.header("X-Media-Repo-Test-Pause-Ms", pause.to_string());
                        }
                        let response = request.send().unwrap();
                        assert_eq!(response.status(), 200);
                        let body: serde_json::Value = response.json().unwrap();
                        body["content_uri"].as_str().unwrap().to_owned()
                    })
                })
                .collect();
            for upload in uploads {
                acknowledged.push((upload.join().unwrap(), bytes.clone()));
            }
            purging.join().unwrap();
        });
        assert_eq!(s.download(&server, &victim, &alice).status(), 404);
    }
    // Another purge run's sweep must not take any of them either.
    purge(&s, &["orphans"]);
    for (uri, bytes) in &acknowledged {
        let (server, id) = uri.strip_prefix("mxc://").unwrap().split_once('/').unwrap();
        assert_serves(&s, server, id, bytes);
    }
    assert_eq!(acknowledged.len(), ROUNDS * UPLOADS_PER_ROUND);
}

/// Every `location` a media or thumbnail row names.
fn referenced_locations(s: &Stack) -> Vec<String> {
    let schema = s.schema.as_ref().expect("a Postgres stack");
    let out = schema
        .psql("SELECT location FROM media UNION ALL SELECT location FROM thumbnails")
        .unwrap();
    out.lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Datastore objects (not temp files) as locations `ab/cd/<sha>`.
fn stored_locations(root: &Path) -> HashSet<String> {
    let mut found = HashSet::new();
    for a in std::fs::read_dir(root).unwrap().flatten() {
        let a_name = a.file_name().to_string_lossy().into_owned();
        if a_name == "tmp" || !a.path().is_dir() {
            continue;
        }
        for b in std::fs::read_dir(a.path()).unwrap().flatten() {
            let b_name = b.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(b.path()).unwrap().flatten() {
                found.insert(format!(
                    "{a_name}/{b_name}/{}",
                    f.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

/// 1000 media of alice (50 of them sharing bytes with bob's media) on Postgres; `purge user`
/// is SIGKILLed once it reports its first batch, then rerun.
#[test]
fn kill_9_during_a_purge_of_1000_media_leaves_no_row_without_its_file() {
    const MEDIA: usize = 1000;
    const SHARED: usize = 50;
    const UPLOADERS: usize = 4;
    let s = stack(Db::Postgres);
    let alice_id = format!("@alice:{}", s.server_name);
    let shared: Vec<Vec<u8>> = (0..SHARED).map(|_| random_bytes(300)).collect();
    let bobs: Vec<(String, String)> = shared
        .iter()
        .map(|bytes| s.upload(&users().bob, bytes.clone(), "image/png", None))
        .collect();
    std::thread::scope(|scope| {
        for t in 0..UPLOADERS {
            let (s, shared) = (&s, &shared);
            scope.spawn(move || {
                for i in (t..MEDIA).step_by(UPLOADERS) {
                    let bytes = if i < SHARED {
                        shared[i].clone()
                    } else {
                        random_bytes(300)
                    };
                    s.upload(&users().alice, bytes, "image/png", None);
                }
            });
        }
    });
    let alice_rows = |s: &Stack| -> u64 {
        let schema = s.schema.as_ref().unwrap();
        let n = schema
            .psql(&format!(
                "SELECT COUNT(*) FROM media WHERE user_id = '{alice_id}'"
            ))
            .unwrap();
        n.trim().parse().unwrap()
    };
    assert_eq!(alice_rows(&s), MEDIA as u64);

    let mut child = s
        .repo
        .command(&["purge", "user", &alice_id])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting media-repo purge");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .expect("a progress line")
        .expect("reading the purge's output");
    assert!(first.starts_with("progress:"), "{first}");
    child.kill().unwrap();
    child.wait().unwrap();

    let left = alice_rows(&s);
    assert!(
        left > 0 && left < MEDIA as u64,
        "killed mid-run: {left} of {MEDIA} rows left"
    );
    let root = s.repo.dir().join("media");
    let on_disk = stored_locations(&root);
    for location in referenced_locations(&s) {
        assert!(
            on_disk.contains(&location),
            "row without its file: {location}"
        );
    }

    let out = purge(&s, &["user", &alice_id]);
    assert_eq!(alice_rows(&s), 0, "{out}");
    let referenced: HashSet<String> = referenced_locations(&s).into_iter().collect();
    let on_disk = stored_locations(&root);
    assert_eq!(
        on_disk, referenced,
        "no orphan file and no row without its file"
    );
    assert_eq!(
        referenced.len(),
        SHARED,
        "bob's media, shared with alice's, stay"
    );
    for ((server, id), bytes) in bobs.iter().zip(&shared) {
        assert_serves(&s, server, id, bytes);
    }
    let aside = std::fs::read_dir(root.join("tmp")).unwrap().count();
    assert_eq!(aside, 0, "nothing left moved aside in the temp dir");
}

/// Remote media (hs2's, fetched by the repo of hs1) not downloaded since a time is purged;
/// media downloaded after it stays, and so does local media however old. Last access is
/// written in batches: here by the flush every stop (SIGTERM) makes.
#[test]
fn remote_media_is_purged_by_last_access() {
    use integration::federated_repo::{start_repo_for, start_synapses};
    use integration::{wait_until, TestCa};
    use std::time::Duration;

    let ca = TestCa::new().unwrap();
    let [hs1, hs2] = start_synapses(&ca).unwrap();
    let mut repo = start_repo_for(&hs1, &ca, "cache:\n  backend: none\n").unwrap();
    let alice = hs1.user_token("alice").unwrap();
    let bob = hs2.user_token("bob").unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let upload = |url: String, token: &str, bytes: &[u8]| upload_to(&http, &url, token, bytes);
    let (idle_bytes, used_bytes, local_bytes) = (
        random_bytes(4_000),
        random_bytes(4_000),
        random_bytes(4_000),
    );
    let idle = upload(hs2.client_url(), &bob, &idle_bytes);
    let used = upload(hs2.client_url(), &bob, &used_bytes);
    let local = upload(repo.base_url(), &alice, &local_bytes);
    let download = |repo: &integration::MediaRepo, server: &str, id: &str| -> Vec<u8> {
        let response = http
            .get(format!(
                "{}/_matrix/client/v1/media/download/{server}/{id}",
                repo.base_url()
            ))
            .bearer_auth(&alice)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{server}/{id}");
        response.bytes().unwrap().to_vec()
    };
    let stop = |repo: &integration::MediaRepo| {
        repo.sigterm();
        wait_until("media-repo to stop", Duration::from_secs(30), || {
            !repo.is_alive()
        })
        .unwrap();
    };
    assert_eq!(download(&repo, &hs2.server_name, &idle), idle_bytes);
    assert_eq!(download(&repo, &hs2.server_name, &used), used_bytes);
    stop(&repo);
    std::thread::sleep(Duration::from_millis(20));
    let cutoff = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    std::thread::sleep(Duration::from_millis(20));
    repo.restart().unwrap();
    assert_eq!(download(&repo, &hs2.server_name, &used), used_bytes);
    stop(&repo);

    let output = repo
        .command(&["purge", "remote", "--before-ts", &cutoff])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(number_after(&out, "purged "), 1, "{out}");
    assert_eq!(number_after(&out, "deleted "), 1, "{out}");
    let stored = |bytes: &[u8]| repo.content_file(bytes).exists();
    assert!(
        !stored(&idle_bytes),
        "not downloaded since the cutoff: purged"
    );
    assert!(stored(&used_bytes), "downloaded after the cutoff: kept");
    assert!(
        stored(&local_bytes),
        "local media is never a remote purge's"
    );
    let again = repo
        .command(&["purge", "remote", "--older-than-days", "0"])
        .output()
        .unwrap();
    assert!(again.status.success());
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    assert_eq!(number_after(&again, "purged "), 1, "{again}");
    assert!(stored(&local_bytes));

    // Purged remote media is fetched again on the next download.
    repo.restart().unwrap();
    assert_eq!(download(&repo, &hs2.server_name, &idle), idle_bytes);
    assert_eq!(download(&repo, &hs1.server_name, &local), local_bytes);
}

/// The Synapse-shaped purge endpoints answer as Synapse (its media repo on) answers the same
/// calls, and `/_media_repo/v1/admin/purge/...` purges quarantined media and sweeps.
#[test]
fn admin_purge_endpoints_answer_in_synapses_shape() {
    use integration::federated_repo::start_repo_for;
    use integration::{FederatingSynapse, TestCa};
    use reqwest::Method;
    use serde_json::{json, Value};
    use std::time::Duration;

    let ca = TestCa::new().unwrap();
    let hs = FederatingSynapse::start(&ca).unwrap();
    let repo = start_repo_for(&hs, &ca, "cache:\n  backend: none\n").unwrap();
    let admin = hs.admin_token("admin").unwrap();
    let alice = hs.user_token("alice").unwrap();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let synapse = hs.client_url();
    let ours = repo.base_url();
    let upload = |base: &str, token: &str| upload_to(&http, base, token, &random_bytes(2_000));
    // (status, body) of a call on one server.
    let call = |method: Method, base: &str, path: &str, token: Option<&str>| -> (u16, Value) {
        let mut request = http.request(method, format!("{base}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        let status = response.status().as_u16();
        (status, response.json().unwrap_or(Value::Null))
    };
    let errcode = |(status, body): (u16, Value)| (status, body["errcode"].clone());
    let server = hs.server_name.clone();

    // One media.
    let (theirs, mine) = (upload(&synapse, &alice), upload(&ours, &alice));
    let path = |id: &str| format!("/_synapse/admin/v1/media/{server}/{id}");
    assert_eq!(
        call(Method::DELETE, &synapse, &path(&theirs), Some(&admin)),
        (200, json!({"deleted_media": [theirs], "total": 1}))
    );
    assert_eq!(
        call(Method::DELETE, &ours, &path(&mine), Some(&admin)),
        (200, json!({"deleted_media": [mine], "total": 1}))
    );
    for (p, token) in [
        (path(&mine), Some(admin.as_str())),
        (
            "/_synapse/admin/v1/media/elsewhere.example/abc".to_owned(),
            Some(&admin),
        ),
        (path("abc"), Some(&alice)),
        (path("abc"), None),
    ] {
        let expected = errcode(call(Method::DELETE, &synapse, &p, token));
        assert_eq!(
            errcode(call(Method::DELETE, &ours, &p, token)),
            expected,
            "{p} {token:?}"
        );
        assert!(expected.0 >= 400, "{p}: {expected:?}");
    }

    // A user's media.
    let mut theirs = vec![upload(&synapse, &alice), upload(&synapse, &alice)];
    let mut mine = vec![upload(&ours, &alice), upload(&ours, &alice)];
    let user_path = format!("/_synapse/admin/v1/users/@alice:{server}/media");
    let sorted = |(status, mut body): (u16, Value)| {
        if let Some(list) = body["deleted_media"].as_array_mut() {
            list.sort_by_key(|v| v.as_str().unwrap_or_default().to_owned());
        }
        (status, body)
    };
    theirs.sort();
    mine.sort();
    assert_eq!(
        sorted(call(Method::DELETE, &synapse, &user_path, Some(&admin))),
        (200, json!({"deleted_media": theirs, "total": 2}))
    );
    assert_eq!(
        sorted(call(Method::DELETE, &ours, &user_path, Some(&admin))),
        (200, json!({"deleted_media": mine, "total": 2}))
    );
    assert_eq!(
        call(Method::DELETE, &ours, &user_path, Some(&admin)),
        (200, json!({"deleted_media": [], "total": 0})),
        "nothing left"
    );

    // The remote media cache.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    for query in [
        format!("?before_ts={now}"),
        String::new(),
        "?before_ts=1000".to_owned(),
    ] {
        let p = format!("/_synapse/admin/v1/purge_media_cache{query}");
        let expected = call(Method::POST, &synapse, &p, Some(&admin));
        let got = call(Method::POST, &ours, &p, Some(&admin));
        if expected.0 == 200 {
            assert_eq!(got, expected, "{p}");
            assert_eq!(got.1, json!({"deleted": 0}));
        } else {
            assert_eq!(errcode(got), errcode(expected), "{p}");
        }
    }

    // Ours: quarantined media, then the sweep.
    let bad = upload(&ours, &alice);
    let (status, _) = call(
        Method::POST,
        &ours,
        &format!("/_synapse/admin/v1/media/quarantine/{server}/{bad}"),
        Some(&admin),
    );
    assert_eq!(status, 200);
    let (status, report) = call(
        Method::POST,
        &ours,
        "/_media_repo/v1/admin/purge/quarantined",
        Some(&admin),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["media"], json!([format!("{server}/{bad}")]));
    assert_eq!(report["files_removed"], 1);
    let (status, report) = call(
        Method::POST,
        &ours,
        "/_media_repo/v1/admin/purge/orphans",
        Some(&admin),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["files_removed"], 0);
    assert_eq!(
        errcode(call(
            Method::POST,
            &ours,
            "/_media_repo/v1/admin/purge/quarantined",
            Some(&alice)
        )),
        (403, json!("M_FORBIDDEN"))
    );
}
