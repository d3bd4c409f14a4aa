//! Who may call the admin API: a user listed in the config's `admins`, or one whom their
//! own homeserver reports as a server admin.
//!
//! The user is authenticated first, exactly like any media request (`crate::auth`: 401
//! `M_MISSING_TOKEN` / `M_UNKNOWN_TOKEN`). A user not in `admins` is looked up on their
//! homeserver with their own token: `GET /_synapse/admin/v1/users/{user}/admin` answers
//! 200 `{"admin": true}` for a server admin and 403 for everyone else (Synapse's rule: only
//! admins may ask). The answer is remembered for [`HOMESERVER_ANSWER_CACHE`] per
//! (homeserver, token), so an admin tool's burst of calls asks once. Not an admin: 403
//! `M_FORBIDDEN`. A homeserver without that endpoint (404, 405: not Synapse) makes nobody
//! an admin; one that cannot be asked is 502, never a silent yes.

use std::time::Duration;

use actix_web::HttpRequest;
use mr_config::HomeserverConfig;
use serde::Deserialize;

use crate::auth::{access_token, User, MAX_WHOAMI_BODY_BYTES};
use crate::error::{MatrixError, MatrixResult};
use crate::state::AppState;

/// How long a homeserver's admin answer for a token is remembered. Short: a demoted admin
/// loses access within this time.
pub const HOMESERVER_ANSWER_CACHE: Duration = Duration::from_secs(60);
/// Upper bound on remembered answers.
const MAX_CACHED_ANSWERS: u64 = 10_000;

/// The homeserver-side admin check, with its remembered answers.
pub struct AdminAuth {
    http: reqwest::Client,
    answers: moka::future::Cache<(String, String), bool>,
}

#[derive(Deserialize)]
struct AdminAnswer {
    #[serde(default)]
    admin: bool,
}

impl AdminAuth {
    pub fn new(config: &mr_config::Config) -> AdminAuth {
        AdminAuth {
            http: crate::auth::http_client(config),
            answers: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED_ANSWERS)
                .time_to_live(HOMESERVER_ANSWER_CACHE)
                .build(),
        }
    }

    /// Whether `user`'s homeserver says they are a server admin (remembered briefly).
    async fn homeserver_says_admin(
        &self,
        hs: &HomeserverConfig,
        user: &User,
        token: String,
    ) -> MatrixResult<bool> {
        let key = (hs.name.clone(), token.clone());
        self.answers
            .try_get_with(key, ask_homeserver(&self.http, hs, &user.user_id, token))
            .await
            .map_err(|err| (*err).clone())
    }
}

/// Checks that the request comes from an admin; returns who it is.
pub async fn require_admin(req: &HttpRequest, state: &AppState) -> MatrixResult<User> {
    let user = state.auth.authenticate(req).await?;
    let config = state.config();
    if config
        .admins
        .iter()
        .any(|admin| admin.eq_ignore_ascii_case(&user.user_id))
    {
        return Ok(user);
    }
    let token = access_token(req)?;
    let hs = state.auth.homeserver_for(req)?;
    if state.admin.homeserver_says_admin(&hs, &user, token).await? {
        return Ok(user);
    }
    tracing::info!(user = %user.user_id, "admin API refused: not an admin");
    Err(MatrixError::forbidden("You are not a server admin"))
}

async fn ask_homeserver(
    http: &reqwest::Client,
    hs: &HomeserverConfig,
    user_id: &str,
    token: String,
) -> MatrixResult<bool> {
    let user_segment: String =
        percent_encoding::utf8_percent_encode(user_id, percent_encoding::NON_ALPHANUMERIC)
            .collect();
    let url = format!(
        "{}/_synapse/admin/v1/users/{user_segment}/admin",
        hs.client_api_url.trim_end_matches('/')
    );
    let unavailable = |why: &dyn std::fmt::Display| {
        tracing::warn!(homeserver = %hs.name, error = %why, "homeserver admin check failed");
        MatrixError::homeserver_unavailable(format!(
            "Could not ask the homeserver {} whether you are an admin",
            hs.name
        ))
    };
    let response = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|err| unavailable(&err))?;
    let status = response.status();
    match status {
        reqwest::StatusCode::FORBIDDEN
        | reqwest::StatusCode::NOT_FOUND
        | reqwest::StatusCode::METHOD_NOT_ALLOWED => return Ok(false),
        s if s.is_success() => {}
        other => return Err(unavailable(&format!("answered {other}"))),
    }
    let body = mr_remote::read_limited(response, MAX_WHOAMI_BODY_BYTES)
        .await
        .map_err(|err| unavailable(&err))?;
    let answer: AdminAnswer = serde_json::from_slice(&body).map_err(|err| unavailable(&err))?;
    Ok(answer.admin)
}
