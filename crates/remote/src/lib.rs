//! Dialling other Matrix servers safely.
//!
//! * [`server_name`] — a server name split into host and port, IP literals recognised.
//! * [`discovery`] — where a server name's federation API is: IP literal, explicit port,
//!   `.well-known/matrix/server` delegation (cached 24 h, failures 1 h), SRV
//!   `_matrix-fed._tcp` then `_matrix._tcp`, else port 8448.
//! * [`dialer`] — the HTTPS client every outgoing federation request uses: certificate
//!   checks always on (an extra CA may be added), and every address it connects to passes
//!   the caller's address policy (no private, loopback or otherwise special address unless
//!   allow-listed), whether it came from DNS, SRV, delegation or a redirect.
//! * [`keys`] — other servers' signing keys, fetched from them, checked and cached.
//! * [`limited_body`] — every body read from another server into memory is capped.

mod dialer;
mod discovery;
mod error;
mod keys;
mod limited_body;
mod server_name;

pub use dialer::{AddressPolicy, Dialer, DialerSettings};
pub use discovery::{Destination, Discovery};
pub use error::{Error, Result};
pub use keys::KeyStore;
pub use limited_body::{read_limited, LimitedBodyError};
pub use server_name::{Host, ServerName};
