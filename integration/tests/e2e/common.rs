//! Shared setup for the end-to-end tests: a media-repo in front of the shared Synapse,
//! on SQLite or on Postgres, with logged-in users.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use integration::{MediaRepo, PgSchema, Synapse};
use reqwest::blocking::{Client, RequestBuilder, Response};

/// Which metadata database a test runs on.
#[derive(Clone, Copy, Debug)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Access tokens of the test users, logged in once per test binary.
pub struct Users {
    pub alice: String,
    pub bob: String,
}

pub fn users() -> &'static Users {
    static USERS: OnceLock<Users> = OnceLock::new();
    USERS.get_or_init(|| {
        let synapse = Synapse::shared();
        Users {
            alice: synapse.user_token("alice").expect("alice"),
            bob: synapse.user_token("bob").expect("bob"),
        }
    })
}

/// A media-repo for one test, with its database (and schema, for Postgres) of its own.
pub struct Stack {
    pub repo: MediaRepo,
    pub http: Client,
    pub server_name: String,
    /// Kept alive for the test; dropped (schema dropped) after the repo.
    pub schema: Option<PgSchema>,
}

/// Settings a test may change; the rest is the same for every stack.
pub struct Options<'a> {
    pub db: Db,
    pub max_upload_bytes: u64,
    pub cache_yaml: &'a str,
    pub extra_yaml: &'a str,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            db: Db::Sqlite,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            cache_yaml: "cache:\n  backend: memory\n",
            extra_yaml: "",
        }
    }
}

/// The upload limit of the test stacks (8 MiB): small, so limit tests stay fast.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 8_388_608;

pub fn config_yaml(
    synapse: &Synapse,
    database_url: &str,
    max_upload_bytes: u64,
    cache_yaml: &str,
    extra_yaml: &str,
) -> String {
    format!(
        "server:\n  bind: \"127.0.0.1:{{port}}\"\n\
         homeservers:\n  - name: \"{name}\"\n    client_api_url: \"{url}\"\n\
         database:\n  url: \"{database_url}\"\n\
         datastores:\n  - id: default\n    kind: file\n    path: \"{{dir}}/media\"\n\
         uploads:\n  max_bytes: {max_upload_bytes}\n  max_pending_per_user: 3\n\
         {cache_yaml}{extra_yaml}",
        name = synapse.server_name,
        url = synapse.base_url(),
    )
}

impl Stack {
    pub fn start(options: Options<'_>) -> Stack {
        let synapse = Synapse::shared();
        users();
        let schema = match options.db {
            Db::Sqlite => None,
            Db::Postgres => Some(PgSchema::create().expect("Postgres schema")),
        };
        let database_url = match &schema {
            Some(schema) => schema.url(),
            None => "sqlite://{dir}/media-repo.db".to_owned(),
        };
        let repo = MediaRepo::start(&config_yaml(
            synapse,
            &database_url,
            options.max_upload_bytes,
            options.cache_yaml,
            options.extra_yaml,
        ))
        .expect("media-repo starts");
        Stack {
            repo,
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            server_name: synapse.server_name.clone(),
            schema,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.repo.base_url(), path)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        with_token(self.http.get(self.url(path)), token)
            .send()
            .unwrap()
    }

    /// `POST /_matrix/media/v3/upload` as `token`; returns the response.
    pub fn upload_raw(
        &self,
        token: &str,
        bytes: Vec<u8>,
        content_type: Option<&str>,
        query: &str,
    ) -> Response {
        let mut request = self
            .http
            .post(self.url(&format!("/_matrix/media/v3/upload{query}")))
            .bearer_auth(token);
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        request.body(bytes).send().unwrap()
    }

    /// Uploads and returns `(server, media_id)`.
    pub fn upload(
        &self,
        token: &str,
        bytes: Vec<u8>,
        content_type: &str,
        filename: Option<&str>,
    ) -> (String, String) {
        let query = match filename {
            Some(name) => format!("?filename={}", urlencode(name)),
            None => String::new(),
        };
        let response = self.upload_raw(token, bytes, Some(content_type), &query);
        assert_eq!(
            response.status(),
            200,
            "upload failed: {}",
            response.text().unwrap_or_default()
        );
        let body: serde_json::Value = response.json().unwrap();
        let uri = body["content_uri"]
            .as_str()
            .expect("content_uri")
            .to_owned();
        let rest = uri.strip_prefix("mxc://").expect("mxc uri");
        let (server, id) = rest.split_once('/').expect("server/id");
        (server.to_owned(), id.to_owned())
    }

    pub fn download(&self, server: &str, id: &str, token: &str) -> Response {
        self.get(
            &format!("/_matrix/client/v1/media/download/{server}/{id}"),
            Some(token),
        )
    }

    /// Rows in the `media` table (SQLite file or Postgres schema).
    pub fn media_rows(&self) -> u64 {
        self.count_rows("media")
    }

    pub fn count_rows(&self, table: &str) -> u64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let out = match &self.schema {
            Some(schema) => schema.psql(&sql).unwrap(),
            None => {
                let db = self.repo.dir().join("media-repo.db");
                sqlite_count(&db, &sql)
            }
        };
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("row count from {out:?}"))
    }

    /// Files in the datastore: (stored objects, temp files).
    pub fn datastore_files(&self) -> (usize, usize) {
        let root = self.repo.dir().join("media");
        let temp = count_files(&root.join("tmp"));
        (count_files(&root) - temp, temp)
    }
}

/// Row count through Python's sqlite3 (the venv's Python; no sqlite3 CLI needed).
pub fn sqlite_count(db: &Path, sql: &str) -> String {
    let python = Synapse::shared().python();
    let out = std::process::Command::new(python)
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])"])
        .arg(db)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                n += 1;
            }
        }
    }
    n
}

pub fn with_token(request: RequestBuilder, token: Option<&str>) -> RequestBuilder {
    match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `POST {base_url}/_matrix/media/v3/upload` of `bytes` as `token` on any server (a
/// media-repo or a Synapse with its own media repo); panics unless 200; returns the media id.
pub fn upload_to(http: &Client, base_url: &str, token: &str, bytes: &[u8]) -> String {
    let body: serde_json::Value = http
        .post(format!("{base_url}/_matrix/media/v3/upload"))
        .bearer_auth(token)
        .body(bytes.to_vec())
        .send()
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .unwrap();
    media_id_in(&body)
}

/// The media id of a 200 upload answer.
pub fn media_id(response: Response) -> String {
    assert_eq!(response.status(), 200);
    media_id_in(&response.json().unwrap())
}

/// The media id in an upload answer's `content_uri`.
pub fn media_id_in(answer: &serde_json::Value) -> String {
    let uri = answer["content_uri"].as_str().expect("content_uri");
    uri.rsplit('/').next().unwrap().to_owned()
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// The Matrix error of a response: (status, errcode).
pub fn matrix_error(response: Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().unwrap_or_default();
    (
        status,
        body["errcode"]
            .as_str()
            .unwrap_or("<no errcode>")
            .to_owned(),
    )
}

/// Generates `sqlite::<test>` and `postgres::<test>` for each `fn(Db)`.
#[macro_export]
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $test() { super::$test($crate::common::Db::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $test() { super::$test($crate::common::Db::Postgres) } )*
        }
    };
}
