//! A throw-away certificate authority for tests that speak TLS on loopback: homeservers
//! federating with each other, nginx terminating TLS in front of media-repo, and a client that
//! trusts exactly this CA (or, for the failure cases, does not).
//!
//! Made with the `openssl` CLI (as operators make theirs) rather than a Rust crate, so the
//! certificates are the ordinary PEM files nginx and Synapse read. Keys are EC P-256: an
//! RSA-2048 key takes a noticeable part of a second to generate on a loaded 2-core machine,
//! and every TLS stack in play (rustls, OpenSSL in nginx and Synapse) accepts P-256.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tempfile::TempDir;

use crate::process::run_with_timeout;

/// Validity of the CA and of every certificate: longer than any test run, short enough that
/// a leaked file is useless soon.
const VALIDITY_DAYS: &str = "30";

/// One `openssl` call generates a key or signs a certificate in milliseconds; a hang means a
/// broken installation, not a slow machine.
const OPENSSL_TIMEOUT: Duration = Duration::from_secs(30);

/// Subject of the CA certificate (what a TLS error message names as the issuer).
const CA_SUBJECT: &str = "/CN=media-repo test CA";

/// The `openssl` binary: from the PATH, installed by `.ci/run` when missing.
fn openssl() -> Command {
    Command::new("openssl")
}

/// Runs `openssl args…` in `dir`; a missing binary is a loud error that says what to install.
fn run_openssl(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut cmd = openssl();
    cmd.args(args).current_dir(dir);
    run_with_timeout(cmd, OPENSSL_TIMEOUT)
        .with_context(|| format!("openssl {} (apt-get install openssl)", args.join(" ")))
}

/// `-newkey` arguments for an EC P-256 key (see the module doc for why not RSA).
const NEW_KEY: &[&str] = &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];

/// A CA key and self-signed CA certificate in a temp dir, removed on drop.
pub struct TestCa {
    dir: TempDir,
    /// Serial numbers must differ per issued certificate; a counter is enough within one CA.
    next_serial: AtomicU64,
}

/// A server certificate and its key, in a temp dir of its own (removed on drop), so it can
/// outlive the CA that issued it and be issued from several threads at once.
pub struct ServerCert {
    dir: TempDir,
}

impl TestCa {
    /// Creates the CA: an EC key and a CA certificate (`basicConstraints CA:TRUE`, usable only
    /// to sign certificates).
    pub fn new() -> anyhow::Result<TestCa> {
        let dir = tempfile::Builder::new().prefix("mr-test-ca-").tempdir()?;
        let mut args = vec!["req", "-x509"];
        args.extend_from_slice(NEW_KEY);
        args.extend_from_slice(&[
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            VALIDITY_DAYS,
            "-subj",
            CA_SUBJECT,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run_openssl(dir.path(), &args).context("creating the test CA")?;
        Ok(TestCa {
            dir,
            next_serial: AtomicU64::new(1),
        })
    }

    /// The CA certificate (PEM): what a client adds as its only trusted root.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The CA certificate's PEM bytes, e.g. for `reqwest::Certificate::from_pem`.
    pub fn cert_pem(&self) -> anyhow::Result<Vec<u8>> {
        std::fs::read(self.cert_path()).context("reading the test CA certificate")
    }

    /// Issues a server certificate signed by this CA for `hosts` (IP literals become
    /// `IP:` names, anything else `DNS:` names; `DNS:localhost` is always added).
    pub fn issue(&self, hosts: &[&str]) -> anyhow::Result<ServerCert> {
        let cert = ServerCert::new_dir()?;
        let d = cert.dir.path();
        let mut args = vec!["req", "-new"];
        args.extend_from_slice(NEW_KEY);
        let subject = format!("/CN={}", hosts.first().copied().unwrap_or("localhost"));
        args.extend_from_slice(&[
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &subject,
        ]);
        run_openssl(d, &args).context("creating a server key and request")?;
        std::fs::write(d.join("ext.cnf"), server_extensions(hosts))?;
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed).to_string();
        let (ca_crt, ca_key) = (self.cert_path(), self.dir.path().join("ca.key"));
        run_openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                path_str(&ca_crt)?,
                "-CAkey",
                path_str(&ca_key)?,
                "-set_serial",
                &serial,
                "-days",
                VALIDITY_DAYS,
                "-extfile",
                "ext.cnf",
                "-out",
                "server.crt",
            ],
        )
        .context("signing a server certificate with the test CA")?;
        // Leaf then CA: what a server should send so a client that trusts only the root can
        // build the chain.
        let chain = [
            std::fs::read(d.join("server.crt"))?,
            std::fs::read(&ca_crt)?,
        ]
        .concat();
        std::fs::write(d.join("fullchain.crt"), chain)?;
        Ok(cert)
    }

    /// A self-signed server certificate for `hosts` that no `TestCa` issued: a client that
    /// trusts only a test CA must refuse it (the "untrusted certificate" cases).
    pub fn self_signed(hosts: &[&str]) -> anyhow::Result<ServerCert> {
        let cert = ServerCert::new_dir()?;
        let d = cert.dir.path();
        std::fs::write(d.join("ext.cnf"), server_extensions(hosts))?;
        let subject = format!("/CN={}", hosts.first().copied().unwrap_or("localhost"));
        let mut args = vec!["req", "-x509"];
        args.extend_from_slice(NEW_KEY);
        args.extend_from_slice(&[
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.crt",
            "-days",
            VALIDITY_DAYS,
            "-subj",
            &subject,
            "-extensions",
            "v3_server",
            "-config",
            "ext.cnf",
        ]);
        run_openssl(d, &args).context("creating a self-signed certificate")?;
        std::fs::copy(d.join("server.crt"), d.join("fullchain.crt"))?;
        Ok(cert)
    }
}

impl ServerCert {
    fn new_dir() -> anyhow::Result<ServerCert> {
        Ok(ServerCert {
            dir: tempfile::Builder::new().prefix("mr-test-cert-").tempdir()?,
        })
    }

    /// The leaf certificate alone (PEM).
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }

    /// Leaf followed by the issuing CA (PEM): what nginx and Synapse serve. For a self-signed
    /// certificate it is the leaf alone.
    pub fn chain_path(&self) -> PathBuf {
        self.dir.path().join("fullchain.crt")
    }

    /// The private key (PEM, unencrypted).
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
}

/// An OpenSSL config whose `[v3_server]` section makes an end-entity TLS server certificate
/// for `hosts`. Used both as `-extfile` (x509 reads the default section) and as `-config`.
fn server_extensions(hosts: &[&str]) -> String {
    let mut names: Vec<String> = hosts
        .iter()
        .map(|h| match h.parse::<IpAddr>() {
            Ok(_) => format!("IP:{h}"),
            Err(_) => format!("DNS:{h}"),
        })
        .collect();
    if !hosts.contains(&"localhost") {
        names.push("DNS:localhost".to_owned());
    }
    let section = format!(
        "basicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature,keyEncipherment\n\
         extendedKeyUsage = serverAuth\n\
         subjectAltName = {}\n",
        names.join(",")
    );
    // `req -config` needs a [req] section with a distinguished_name; x509 -extfile reads the
    // unnamed default section, so the extensions appear both there and in [v3_server].
    format!("{section}\n[req]\ndistinguished_name = dn\n[dn]\n[v3_server]\n{section}")
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("non-UTF-8 path {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verify(ca: &TestCa, cert: &ServerCert) -> anyhow::Result<String> {
        run_openssl(
            cert.dir.path(),
            &[
                "verify",
                "-CAfile",
                path_str(&ca.cert_path())?,
                "-verify_ip",
                "127.0.0.1",
                "-purpose",
                "sslserver",
                path_str(&cert.cert_path())?,
            ],
        )
    }

    #[test]
    fn issued_certificates_verify_against_the_ca_and_self_signed_ones_do_not() {
        let ca = TestCa::new().unwrap();
        let a = ca.issue(&["127.0.0.1"]).unwrap();
        let b = ca.issue(&["127.0.0.1"]).unwrap();
        verify(&ca, &a).unwrap();
        verify(&ca, &b).unwrap();
        let text = run_openssl(
            a.dir.path(),
            &["x509", "-noout", "-text", "-in", "server.crt"],
        )
        .unwrap();
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
        assert!(text.contains("DNS:localhost"), "{text}");
        let chain = std::fs::read_to_string(a.chain_path()).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);

        let stranger = TestCa::self_signed(&["127.0.0.1"]).unwrap();
        assert!(verify(&ca, &stranger).is_err());
        let text = run_openssl(
            stranger.dir.path(),
            &["x509", "-noout", "-text", "-in", "server.crt"],
        )
        .unwrap();
        assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    }
}
