//! What every handler shares: the running configuration and the long-lived services.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use mr_cache::Cache;
use mr_config::Config;
use mr_storage::{Database, FileDatastore};

use crate::admin::AdminAuth;
use crate::auth::Auth;
use crate::logging::LogLevelHandle;
use crate::media::access::AccessRecorder;
use crate::media::remote::RemoteMedia;
use crate::media::slots::UploadSlots;
use crate::media::thumbnail::Thumbnailer;
use crate::pending::PendingUploads;

/// Shared by all actix workers through `web::Data`.
pub struct AppState {
    /// The configuration in force. Swapped whole on reload so a request sees one consistent
    /// version from start to end (it loads the `Arc` once).
    config: ArcSwap<Config>,
    /// Where reloads read from; `None` when running on the embedded default.
    pub config_path: Option<PathBuf>,
    pub db: Database,
    /// Where new uploads are written (the first configured datastore).
    pub datastore: FileDatastore,
    pub cache: Cache,
    pub auth: Auth,
    /// The homeserver-side admin check of the admin API, with its remembered answers.
    pub admin: AdminAuth,
    pub pending: PendingUploads,
    /// Uploads in progress, for the per-user and overall caps.
    pub upload_slots: UploadSlots,
    /// Fetching media of other servers over federation.
    pub remote: RemoteMedia,
    /// The bounded thumbnail pool and generations in progress.
    pub thumbnails: Thumbnailer,
    /// Media served since the last write of last-access times.
    pub access: AccessRecorder,
    pub log_level: LogLevelHandle,
}

impl AppState {
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        db: Database,
        datastore: FileDatastore,
        cache: Cache,
        log_level: LogLevelHandle,
    ) -> Self {
        let auth = Auth::new(&config);
        let admin = AdminAuth::new(&config);
        let remote = RemoteMedia::new(&config);
        AppState {
            config: ArcSwap::from_pointee(config),
            config_path,
            db,
            datastore,
            cache,
            auth,
            admin,
            pending: PendingUploads::default(),
            upload_slots: UploadSlots::default(),
            remote,
            thumbnails: Thumbnailer::default(),
            access: AccessRecorder::default(),
            log_level,
        }
    }

    /// The configuration in force now; hold the returned `Arc` for the whole request.
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub(crate) fn replace_config(&self, config: Config) {
        self.config.store(Arc::new(config));
    }
}
