//! The media-repo web layer: actix-web handlers for the Matrix media API, the server
//! startup, config reload and metrics. The only crate that knows HTTP.

pub mod admin;
pub mod auth;
pub mod error;
pub mod federation;
pub mod headers;
pub mod health;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod pending;
pub mod purge;
pub mod query;
pub mod range;
mod recent_tokens;
pub mod reload;
pub mod route_metrics;
pub mod routes;
pub mod server;
pub mod state;
pub mod test_hooks;
