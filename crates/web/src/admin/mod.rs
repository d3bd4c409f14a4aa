//! The admin API: quarantine, protection and a user's media list, on the public listener
//! (the reverse proxy sends `/_synapse/admin/v1/media/...`, `/_synapse/admin/v1/user(s)/
//! {user}/media...` and `/_media_repo/v1/admin/...` here; the rest of `/_synapse/admin` to
//! the homeserver). Every call needs an admin (`auth.rs`).
//!
//! * `synapse.rs`: the Synapse admin media endpoints admin tools already call, answering in
//!   Synapse's shapes.
//! * `own.rs`: `/_media_repo/v1/admin/...`, the same and what Synapse lacks (quarantine by
//!   origin server and by content hash, and lifting those).
//!
//! POST routes are registered by [`configure`] (before the reads: see `routes::configure`);
//! the GETs (`users/{user_id}/media`, `media/{server}/{media_id}`) are in the route table
//! (`routes::get_routes`) like every read, and [`add_writes`] adds the other methods of
//! such a path (DELETE) to its resource.

pub mod auth;
pub mod own;
pub mod purge;
pub mod synapse;

use actix_web::{web, HttpRequest};

pub use auth::{require_admin, AdminAuth};

use crate::auth::User;
use crate::error::{MatrixError, MatrixResult};
use crate::media::MediaRef;
use crate::routes::{serve, Read};
use crate::state::AppState;

/// Prefix of the Synapse admin API.
pub const SYNAPSE_ADMIN: &str = "/_synapse/admin/v1";
/// Prefix of our own admin API.
pub const OWN_ADMIN: &str = "/_media_repo/v1/admin";

/// Registers every admin POST route on the public listener.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let s = SYNAPSE_ADMIN;
    let post = |cfg: &mut web::ServiceConfig, path: String, route: actix_web::Route| {
        serve(cfg, &path, |resource| resource.route(route));
    };
    post(
        cfg,
        format!("{s}/media/quarantine/{{server}}/{{media_id}}"),
        web::post().to(synapse::quarantine_media),
    );
    post(
        cfg,
        format!("{s}/media/unquarantine/{{server}}/{{media_id}}"),
        web::post().to(synapse::unquarantine_media),
    );
    post(
        cfg,
        format!("{s}/user/{{user_id}}/media/quarantine"),
        web::post().to(synapse::quarantine_user_media),
    );
    post(
        cfg,
        format!("{s}/media/protect/{{media_id}}"),
        web::post().to(synapse::protect),
    );
    post(
        cfg,
        format!("{s}/media/unprotect/{{media_id}}"),
        web::post().to(synapse::unprotect),
    );
    let o = OWN_ADMIN;
    post(
        cfg,
        format!("{o}/quarantine/media/{{server}}/{{media_id}}"),
        web::post().to(own::quarantine_media),
    );
    post(
        cfg,
        format!("{o}/unquarantine/media/{{server}}/{{media_id}}"),
        web::post().to(own::unquarantine_media),
    );
    post(
        cfg,
        format!("{o}/quarantine/user/{{user_id}}"),
        web::post().to(own::quarantine_user),
    );
    post(
        cfg,
        format!("{o}/quarantine/origin/{{server}}"),
        web::post().to(own::quarantine_origin),
    );
    post(
        cfg,
        format!("{o}/unquarantine/origin/{{server}}"),
        web::post().to(own::unquarantine_origin),
    );
    post(
        cfg,
        format!("{o}/quarantine/hash/{{sha256}}"),
        web::post().to(own::quarantine_hash),
    );
    post(
        cfg,
        format!("{o}/unquarantine/hash/{{sha256}}"),
        web::post().to(own::unquarantine_hash),
    );
    post(
        cfg,
        format!("{o}/protect/{{server}}/{{media_id}}"),
        web::post().to(own::protect),
    );
    post(
        cfg,
        format!("{o}/unprotect/{{server}}/{{media_id}}"),
        web::post().to(own::unprotect),
    );
    purge::configure(cfg);
}

/// The admin GET paths of the route table.
pub fn get_routes() -> Vec<(String, Read)> {
    vec![
        (
            format!("{SYNAPSE_ADMIN}/users/{{user_id}}/media"),
            Read::AdminUserMedia,
        ),
        (
            format!("{SYNAPSE_ADMIN}/media/{{server}}/{{media_id}}"),
            Read::AdminMediaInfo,
        ),
    ]
}

/// Adds the non-GET methods of an admin read's path to its resource (one resource per
/// path: a second one for the same path would never be reached).
pub fn add_writes(read: Read, resource: actix_web::Resource) -> actix_web::Resource {
    match read {
        Read::AdminUserMedia => resource.route(web::delete().to(purge::synapse_delete_user_media)),
        Read::AdminMediaInfo => resource.route(web::delete().to(purge::synapse_delete_media)),
        _ => resource,
    }
}

/// A user id of one of our homeservers, or 400 (Synapse: "Can only look up local users").
pub(crate) fn local_user(state: &AppState, user_id: &str) -> MatrixResult<String> {
    let server = user_id
        .strip_prefix('@')
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, server)| server)
        .filter(|server| mr_storage::is_valid_server_name(server))
        .ok_or_else(|| MatrixError::bad_param("Not a valid Matrix user id"))?;
    let ours = state
        .config()
        .homeservers
        .iter()
        .any(|hs| hs.name.eq_ignore_ascii_case(server));
    if !ours {
        return Err(MatrixError::bad_param("Can only look up local users"));
    }
    Ok(user_id.to_owned())
}

/// The admin making the call and the media its path names: how every admin endpoint on
/// `{server}/{media_id}` starts (the caller first, so a non-admin never learns whether an
/// id is valid).
pub(crate) async fn admin_and_media(
    req: &HttpRequest,
    state: &AppState,
    path: web::Path<(String, String)>,
) -> MatrixResult<(User, MediaRef)> {
    let admin = require_admin(req, state).await?;
    let (server, media_id) = path.into_inner();
    Ok((admin, MediaRef::parse(&server, &media_id)?))
}

pub(crate) fn db_error(err: mr_storage::Error) -> MatrixError {
    MatrixError::internal("admin database operation failed", &err)
}
