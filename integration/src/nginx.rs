//! nginx in front of a homeserver and media-repo, as a real deployment has it: media paths to
//! media-repo, everything else to the homeserver. Also serves static files (a benchmark ceiling).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::free_port;

/// A running nginx, stopped on drop.
pub struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

fn nginx_bin() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("nginx")
}

impl Nginx {
    /// Proxies `/_matrix/media/`, `/_matrix/client/v1/media/` and
    /// `/_matrix/federation/v1/media/` to `media_repo`, everything else to `homeserver`
    /// (both `http://host:port`). `static_root`, when given, is served under `/static/`.
    pub fn start(
        media_repo: &str,
        homeserver: &str,
        static_root: Option<&Path>,
    ) -> anyhow::Result<Nginx> {
        let dir = tempfile::Builder::new().prefix("mr-nginx-").tempdir()?;
        let port = free_port();
        let d = dir.path().display();
        let static_block = static_root
            .map(|root| {
                format!(
                    "location /static/ {{ alias {}/; sendfile on; }}",
                    root.display()
                )
            })
            .unwrap_or_default();
        let conf = format!(
            r#"user root;
# One process, so that killing the child leaves no worker behind.
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_request_buffering off;
        proxy_buffering off;
        location ~ ^/_matrix/(media|client/v1/media|federation/v1/media)/ {{ proxy_pass {media_repo}; }}
        {static_block}
        location / {{ proxy_pass {homeserver}; }}
    }}
}}
"#
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = Command::new(nginx_bin())
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(dir.path())
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting nginx (apt-get install nginx-light)")?;
        let mut nginx = Nginx {
            child,
            port,
            _dir: dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(nginx);
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx._dir.path().join("error.log"))
                    .unwrap_or_default();
                bail!("nginx exited with {status}: {log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("nginx did not listen on {port} within 10 s")
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
