//! `etcd://` URLs (being written).

use std::sync::Arc;

use locks_core::{Backend, Error, ErrorKind, Result};

use super::BackendUrl;

pub(super) async fn open(url: &BackendUrl<'_>) -> Result<Arc<dyn Backend>> {
    Err(Error::new(
        ErrorKind::Unsupported,
        format!("{}: the etcd backend is not built yet", url.key),
    ))
}
