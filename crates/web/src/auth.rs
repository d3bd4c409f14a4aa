//! Who is asking: access tokens checked with the user's homeserver.
//!
//! The token comes from `Authorization: Bearer` or the deprecated `access_token` query
//! parameter. The homeserver is the configured one whose server name matches the request's
//! Host (`X-Forwarded-Host` / `Forwarded` only from `server.trusted_proxies`); with a single
//! homeserver configured it is that one. Its `/_matrix/client/v3/account/whoami` answers
//! who the token belongs to (a body of at most [`MAX_WHOAMI_BODY_BYTES`]), and the user must
//! belong to that homeserver: a homeserver vouches only for its own users, so no token can
//! act in another homeserver's namespace. Answers are cached for `auth.whoami_cache_secs`
//! and concurrent checks of one token share one request; each worker thread also remembers
//! the tokens it saw vouched for, never past that lifetime (`recent_tokens.rs`).

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::HttpRequest;
use arc_swap::ArcSwap;
use mr_config::{Cidr, Config, HomeserverConfig};
use serde::Deserialize;

use crate::error::{MatrixError, MatrixResult};
use crate::query::{self, AccessTokenQuery};
use crate::recent_tokens;
use mr_remote::read_limited;

/// How long a rejected token is remembered, so a client retrying a bad token does not
/// hammer its homeserver, while a token that was just issued works again soon.
const REJECTED_TOKEN_CACHE: Duration = Duration::from_secs(2);
/// Upper bound on remembered tokens (each entry is a few hundred bytes).
const MAX_CACHED_TOKENS: u64 = 100_000;
/// Longest token accepted; longer ones are rejected without asking the homeserver.
const MAX_TOKEN_LEN: usize = 4096;
/// Largest whoami answer read. A real one is well under 1 KiB; a homeserver streaming
/// 200 MiB used to take the process from 24 MB to 1.5 GB RSS.
pub const MAX_WHOAMI_BODY_BYTES: usize = 64 * 1024;

/// An authenticated user.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    /// Server name of the homeserver that vouched for the user.
    pub homeserver: String,
}

#[derive(Clone, Debug)]
enum Verdict {
    /// The homeserver vouched for this user at `vouched_at`.
    Valid {
        user_id: String,
        vouched_at: Instant,
    },
    Rejected,
}

/// The cache of vouched-for tokens and how long it keeps them (`auth.whoami_cache_secs`).
struct AcceptedTokens {
    cache: moka::future::Cache<(String, String), Verdict>,
    lifetime: Duration,
}

pub struct Auth {
    http: reqwest::Client,
    homeservers: ArcSwap<Vec<HomeserverConfig>>,
    /// `None` when `auth.whoami_cache_secs` is 0: every request asks the homeserver.
    accepted: ArcSwap<Option<AcceptedTokens>>,
    rejected: moka::future::Cache<(String, String), Verdict>,
    /// `server.trusted_proxies` (restart-only, so fixed for the process's life).
    trusted_proxies: Vec<Cidr>,
}

#[derive(Deserialize)]
struct WhoAmI {
    user_id: String,
}

fn accepted_cache(config: &Config) -> Option<AcceptedTokens> {
    let lifetime = Duration::from_secs(config.auth.whoami_cache_secs);
    (!lifetime.is_zero()).then(|| AcceptedTokens {
        cache: moka::future::Cache::builder()
            .max_capacity(MAX_CACHED_TOKENS)
            .time_to_live(lifetime)
            .build(),
        lifetime,
    })
}

pub(crate) fn http_client(config: &Config) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(config.auth.homeserver_timeout_ms))
        .connect_timeout(Duration::from_millis(config.auth.homeserver_timeout_ms))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

impl Auth {
    pub fn new(config: &Config) -> Self {
        Auth {
            http: http_client(config),
            homeservers: ArcSwap::from_pointee(config.homeservers.clone()),
            accepted: ArcSwap::from_pointee(accepted_cache(config)),
            rejected: moka::future::Cache::builder()
                .max_capacity(MAX_CACHED_TOKENS)
                .time_to_live(REJECTED_TOKEN_CACHE)
                .build(),
            trusted_proxies: config.server.trusted_proxy_ranges(),
        }
    }

    /// Reload: new homeserver list and cache lifetime; remembered answers are dropped.
    pub fn apply_config(&self, config: &Config) {
        self.homeservers.store(Arc::new(config.homeservers.clone()));
        self.accepted.store(Arc::new(accepted_cache(config)));
        self.rejected.invalidate_all();
        // After the new settings are in place: a thread that remembers under the old ones
        // forgets before its next lookup.
        recent_tokens::forget_all();
    }

    /// The homeserver that serves this request's Host.
    pub fn homeserver_for(&self, req: &HttpRequest) -> MatrixResult<HomeserverConfig> {
        let homeservers = self.homeservers.load();
        self.pick_homeserver(&homeservers, req).cloned()
    }

    /// The one of `homeservers` that serves this request's Host (compared without
    /// allocating: this runs on every authenticated request).
    fn pick_homeserver<'a>(
        &self,
        homeservers: &'a [HomeserverConfig],
        req: &HttpRequest,
    ) -> MatrixResult<&'a HomeserverConfig> {
        let host = self.request_host(req);
        if let Some(hs) = homeservers
            .iter()
            .find(|hs| hs.name.eq_ignore_ascii_case(&host))
        {
            return Ok(hs);
        }
        let host_without_port = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(&host);
        if let Some(hs) = homeservers
            .iter()
            .find(|hs| hs.name.eq_ignore_ascii_case(host_without_port))
        {
            return Ok(hs);
        }
        match homeservers {
            [only] => Ok(only),
            _ => Err(MatrixError::forbidden(format!(
                "This media repository does not serve the host {}",
                host.to_ascii_lowercase()
            ))),
        }
    }

    /// The host the request is for: `Host` (or the HTTP/2 authority), or the forwarded host
    /// when the peer is a trusted proxy.
    fn request_host<'r>(&self, req: &'r HttpRequest) -> Cow<'r, str> {
        let trusted = req
            .peer_addr()
            .is_some_and(|peer| self.is_trusted_proxy(peer.ip()));
        if trusted {
            return Cow::Owned(req.connection_info().host().to_owned());
        }
        Cow::Borrowed(
            req.headers()
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .or_else(|| req.uri().authority().map(|a| a.as_str()))
                .unwrap_or_default(),
        )
    }

    fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|range| range.contains(ip))
    }

    /// Checks the request's access token; nothing else about the request is looked at first.
    pub async fn authenticate(&self, req: &HttpRequest) -> MatrixResult<User> {
        let token = access_token(req)?;
        // Read before the settings: an answer obtained under settings a reload replaced
        // meanwhile is then not remembered by this thread.
        let generation = recent_tokens::generation();
        let homeservers = self.homeservers.load_full();
        let hs = self.pick_homeserver(&homeservers, req)?;
        if let Some(user_id) = recent_tokens::lookup(&hs.name, &token, Instant::now()) {
            return vouched_user(hs, user_id);
        }
        let cache_key = (hs.name.clone(), token);
        let accepted = self.accepted.load_full();
        let remember = |user_id: &str, vouched_at: Instant| {
            if let Some(accepted) = accepted.as_ref() {
                let until = vouched_at + accepted.lifetime;
                recent_tokens::remember(generation, &hs.name, &cache_key.1, user_id, until);
            }
        };
        // Then the shared cache, in one lookup: a token vouched for within the cache's
        // lifetime. A rejection forgets the token here before it is remembered as
        // rejected, so a token found valid here is not one rejected since. (Other workers'
        // memories are not told: they keep a token at most until the homeserver's answer
        // they saw expires, the cache's own lifetime. A rejection can only follow a valid
        // answer once the cache dropped it early, past `MAX_CACHED_TOKENS`.)
        if let Some(accepted) = accepted.as_ref() {
            if let Some(Verdict::Valid {
                user_id,
                vouched_at,
            }) = accepted.cache.get(&cache_key).await
            {
                remember(&user_id, vouched_at);
                return vouched_user(hs, user_id);
            }
        }
        if self.rejected.get(&cache_key).await.is_some() {
            return Err(MatrixError::unknown_token());
        }
        let lookup = match accepted.as_ref() {
            Some(accepted) => accepted
                .cache
                .try_get_with(cache_key.clone(), self.whoami(hs, &cache_key.1))
                .await
                .map_err(|err| (*err).clone()),
            None => self.whoami(hs, &cache_key.1).await,
        };
        match lookup? {
            Verdict::Valid {
                user_id,
                vouched_at,
            } => {
                remember(&user_id, vouched_at);
                vouched_user(hs, user_id)
            }
            Verdict::Rejected => {
                if let Some(accepted) = accepted.as_ref() {
                    accepted.cache.invalidate(&cache_key).await;
                }
                self.rejected.insert(cache_key, Verdict::Rejected).await;
                Err(MatrixError::unknown_token())
            }
        }
    }

    async fn whoami(&self, hs: &HomeserverConfig, token: &str) -> MatrixResult<Verdict> {
        let url = format!(
            "{}/_matrix/client/v3/account/whoami",
            hs.client_api_url.trim_end_matches('/')
        );
        let response = self.http.get(&url).bearer_auth(token).send().await.map_err(|err| {
            tracing::warn!(homeserver = %hs.name, error = %err, "homeserver unreachable for whoami");
            MatrixError::homeserver_unavailable(format!("Could not reach the homeserver {} to check the access token", hs.name))
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Ok(Verdict::Rejected);
        }
        if !status.is_success() {
            tracing::warn!(homeserver = %hs.name, %status, "homeserver answered whoami with an error");
            return Err(MatrixError::homeserver_unavailable(format!(
                "The homeserver {} answered {status} when checking the access token",
                hs.name
            )));
        }
        let unreadable = |err: &dyn std::fmt::Display| {
            tracing::warn!(homeserver = %hs.name, error = %err, "homeserver sent an unreadable whoami answer");
            MatrixError::homeserver_unavailable(format!(
                "The homeserver {} sent an unreadable whoami answer",
                hs.name
            ))
        };
        let body = read_limited(response, MAX_WHOAMI_BODY_BYTES)
            .await
            .map_err(|err| unreadable(&err))?;
        let who: WhoAmI = serde_json::from_slice(&body).map_err(|err| unreadable(&err))?;
        Ok(Verdict::Valid {
            user_id: who.user_id,
            vouched_at: Instant::now(),
        })
    }
}

/// The user `hs` vouched for, if it is one of its own users.
fn vouched_user(hs: &HomeserverConfig, user_id: String) -> MatrixResult<User> {
    if !belongs_to(&user_id, &hs.name) {
        tracing::warn!(homeserver = %hs.name, user = %user_id, "a homeserver vouched for a user of another server; refused");
        return Err(MatrixError::forbidden(format!(
            "The homeserver {} vouched for {user_id}, who is not its user",
            hs.name
        )));
    }
    Ok(User {
        user_id,
        homeserver: hs.name.clone(),
    })
}

/// Whether `user_id` (`@local:server`) is a user of the homeserver named `server_name`.
/// Server names compare case-insensitively, like the host names they mostly are.
fn belongs_to(user_id: &str, server_name: &str) -> bool {
    user_id
        .split_once(':')
        .is_some_and(|(_, server)| server.eq_ignore_ascii_case(server_name))
}

/// The access token of a request, from the header or the query string.
pub(crate) fn access_token(req: &HttpRequest) -> MatrixResult<String> {
    let token = if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| MatrixError::unknown_token())?;
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                token.trim().to_owned()
            }
            _ => return Err(MatrixError::missing_token()),
        }
    } else {
        query::read::<AccessTokenQuery>(req)?
            .access_token
            .ok_or_else(MatrixError::missing_token)?
    };
    if token.is_empty() {
        return Err(MatrixError::missing_token());
    }
    // Every byte is looked at (no early exit), which lets the compiler check many at once.
    let printable = token.bytes().fold(true, |ok, b| ok & b.is_ascii_graphic());
    if token.len() > MAX_TOKEN_LEN || !printable {
        return Err(MatrixError::unknown_token());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::belongs_to;

    #[test]
    fn a_user_belongs_to_the_server_in_its_id() {
        assert!(belongs_to("@alice:a.test", "a.test"));
        assert!(belongs_to("@alice:A.Test", "a.test"));
        assert!(belongs_to("@alice:127.0.0.1:8448", "127.0.0.1:8448"));
        assert!(!belongs_to("@alice:a.test", "b.test"));
        assert!(!belongs_to("@alice:a.test:8448", "a.test"));
        assert!(!belongs_to("@alice", "a.test"));
    }
}
