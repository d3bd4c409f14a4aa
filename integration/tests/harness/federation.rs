//! The federation harness: two real Synapses federating over TLS from the test CA, and a
//! TLS-terminating nginx on a homeserver's public federation port. Synapse starts take
//! seconds, so each test starts only the homeservers it needs (three in all).

use std::io::ErrorKind;
use std::time::Duration;

use integration::{free_port, pid_exists, wait_until, FederatingSynapse, Nginx, TestCa};

use super::connect_error;

/// Bound for one request; a federated download includes a key fetch and a TLS handshake each
/// way on a loaded machine.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How long Synapse or nginx may take to log a request after answering it.
const LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// A client that trusts exactly the test CA (no built-in roots), or none at all.
fn https_client(ca: Option<&TestCa>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .tls_built_in_root_certs(false);
    if let Some(ca) = ca {
        let pem = ca.cert_pem().unwrap();
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

fn get_json(client: &reqwest::blocking::Client, url: &str) -> serde_json::Value {
    let response = client.get(url).send().unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.json().unwrap()
}

/// Every pid gone and every port refusing connections: nothing of the process is left.
fn assert_stopped<const P: usize>(pids: [u32; 2], ports: [u16; P], what: &str) {
    for pid in pids {
        assert!(!pid_exists(pid), "{what}: pid {pid} survived its drop");
    }
    for port in ports {
        assert_eq!(
            connect_error(port),
            Some(ErrorKind::ConnectionRefused),
            "{what}: port {port} still answers"
        );
    }
}

#[test]
fn a_user_on_one_synapse_downloads_media_uploaded_on_another_over_federation() {
    let ca = TestCa::new().unwrap();
    // Concurrently: each start is seconds of Python start-up.
    let (hs1, hs2) = std::thread::scope(|s| {
        let hs1 = s.spawn(|| FederatingSynapse::start(&ca));
        let hs2 = s.spawn(|| FederatingSynapse::start(&ca));
        (hs1.join().unwrap().unwrap(), hs2.join().unwrap().unwrap())
    });
    assert_ne!(hs1.server_name, hs2.server_name);
    assert_eq!(
        hs2.server_name,
        format!("127.0.0.1:{}", hs2.federation_port())
    );
    assert_ne!(hs1.dir(), hs2.dir());
    let key = std::fs::read_to_string(hs2.signing_key_path()).unwrap();
    let version = hs2.key_id().strip_prefix("ed25519:").unwrap();
    assert!(key.starts_with(&format!("ed25519 {version} ")), "{key}");

    // hs2's federation port speaks TLS with a certificate from the CA, and serves its key.
    let keys = get_json(
        &https_client(Some(&ca)),
        &format!("{}/_matrix/key/v2/server", hs2.federation_url()),
    );
    assert_eq!(keys["server_name"], hs2.server_name.as_str());
    assert!(keys["verify_keys"][hs2.key_id()].is_object(), "{keys}");

    let (bob, alice) = (
        hs2.user_token("bob").unwrap(),
        hs1.user_token("alice").unwrap(),
    );
    let http = reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let uploaded: serde_json::Value = http
        .post(format!(
            "{}/_matrix/media/v3/upload?filename=federated.bin",
            hs2.client_url()
        ))
        .bearer_auth(&bob)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .unwrap();
    let uri = uploaded["content_uri"].as_str().unwrap();
    let id = uri
        .strip_prefix(&format!("mxc://{}/", hs2.server_name))
        .unwrap_or_else(|| panic!("{uri} is not on {}", hs2.server_name));

    let response = http
        .get(format!(
            "{}/_matrix/client/v1/media/download/{}/{id}",
            hs1.client_url(),
            hs2.server_name
        ))
        .bearer_auth(&alice)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().unwrap().as_ref() == bytes.as_slice(),
        "identical bytes through hs1 from hs2"
    );
    // It really went over federation: hs2 answered hs1's signed request, and checked the
    // signature with the key it fetched from hs1.
    wait_until("hs2 to log the federation download", LOG_TIMEOUT, || {
        hs2.count_requests(&format!("/_matrix/federation/v1/media/download/{id}")) == 1
    })
    .unwrap();
    assert!(hs1.count_requests("/_matrix/key/v2/server") >= 1);

    let pids = [hs1.pid(), hs1.watchdog_pid()];
    let ports = [hs1.federation_port(), port_of(&hs1.client_url())];
    drop(hs1);
    assert_stopped(pids, ports, "hs1");
    let dir = hs2.dir().to_owned();
    drop(hs2);
    assert!(!dir.exists(), "{} survived its drop", dir.display());
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn tls_nginx_on_a_federation_port_routes_and_is_trusted_only_with_the_test_ca() {
    let ca = TestCa::new().unwrap();
    let hs = FederatingSynapse::builder(&ca)
        .behind_proxy()
        .enable_media_repo(false)
        .start()
        .unwrap();
    // The public federation port is left for nginx.
    assert_eq!(
        connect_error(hs.federation_port()),
        Some(ErrorKind::ConnectionRefused)
    );
    // Nothing listens here: media paths answer 502, and the access log shows where they went.
    let media_port = free_port();
    let internal = hs.internal_federation_url().unwrap();
    let cert = ca.issue(&["127.0.0.1"]).unwrap();
    let nginx = Nginx::tls(&cert)
        .port(hs.federation_port())
        .media_upstream(&format!("http://127.0.0.1:{media_port}"))
        .federation_upstream(&internal)
        .client_upstream(&hs.client_url())
        .start()
        .unwrap();
    assert_eq!(nginx.base_url(), hs.federation_url());

    let trusting = https_client(Some(&ca));
    let base = hs.federation_url();
    let versions = get_json(&trusting, &format!("{base}/_matrix/client/versions"));
    assert!(versions["versions"].is_array(), "{versions}");
    let keys = get_json(&trusting, &format!("{base}/_matrix/key/v2/server"));
    assert_eq!(keys["server_name"], hs.server_name.as_str());
    assert!(keys["verify_keys"][hs.key_id()].is_object(), "{keys}");
    let version = get_json(&trusting, &format!("{base}/_matrix/federation/v1/version"));
    assert_eq!(version["server"]["name"], "Synapse");
    const MEDIA_PATHS: [&str; 3] = [
        "/_matrix/client/v1/media/config",
        "/_matrix/media/v3/config",
        "/_matrix/federation/v1/media/download/abc",
    ];
    for path in MEDIA_PATHS {
        let media = trusting.get(format!("{base}{path}")).send().unwrap();
        assert_eq!(media.status(), 502, "{path}");
    }

    wait_until("nginx to log six requests", LOG_TIMEOUT, || {
        nginx.access_log().lines().count() == 6
    })
    .unwrap();
    let log = nginx.access_log();
    let upstream_of = |path: &str| {
        let line = log.lines().find(|l| l.contains(path)).unwrap();
        line.rsplit(' ').next().unwrap().to_owned()
    };
    let client_addr = hs.client_url().replace("http://", "");
    assert_eq!(upstream_of("/_matrix/client/versions"), client_addr);
    assert_eq!(
        upstream_of("/_matrix/key/v2/server"),
        internal.replace("http://", "")
    );
    for path in MEDIA_PATHS {
        assert_eq!(
            upstream_of(path),
            format!("127.0.0.1:{media_port}"),
            "{path}"
        );
    }
    assert_eq!(nginx.count_requests("/_matrix/key/"), 1);
    wait_until("Synapse to log the proxied requests", LOG_TIMEOUT, || {
        hs.count_requests("/_matrix/key/v2/server") == 1
            && hs.count_requests("/_matrix/federation/v1/version") == 1
    })
    .unwrap();
    assert_eq!(hs.count_requests("/media/"), 0);

    // Without the CA the certificate is not trusted.
    let err = https_client(None)
        .get(format!("{base}/_matrix/client/versions"))
        .send()
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // A self-signed certificate is refused even by a client that trusts the CA…
    let stranger = TestCa::self_signed(&["127.0.0.1"]).unwrap();
    let untrusted = Nginx::tls(&stranger)
        .client_upstream(&hs.client_url())
        .start()
        .unwrap();
    let url = format!("{}/_matrix/client/versions", untrusted.base_url());
    let err = trusting.get(&url).send().unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // …and only because of trust: without verification the same server answers.
    let insecure = reqwest::blocking::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    assert_eq!(insecure.get(&url).send().unwrap().status(), 200);

    let nginx_pid = nginx.pid();
    drop(nginx);
    assert!(
        !pid_exists(nginx_pid),
        "nginx {nginx_pid} survived its drop"
    );
    let pids = [hs.pid(), hs.watchdog_pid()];
    let ports = [port_of(&internal), port_of(&hs.client_url())];
    drop(hs);
    assert_stopped(pids, ports, "Synapse behind nginx");
}

#[test]
fn a_panicking_test_still_kills_its_tls_nginx() {
    let (tx, rx) = std::sync::mpsc::channel();
    let outcome = std::thread::spawn(move || {
        let ca = TestCa::new().unwrap();
        let cert = ca.issue(&["127.0.0.1"]).unwrap();
        let nginx = Nginx::tls(&cert).start().unwrap();
        tx.send(([nginx.pid(), nginx.watchdog_pid()], nginx.port()))
            .unwrap();
        panic!("simulated test failure");
    })
    .join();
    assert!(outcome.is_err());
    let (pids, port) = rx.recv().unwrap();
    assert_stopped(pids, [port], "nginx of a panicking test");
}
