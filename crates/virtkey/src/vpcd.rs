//! The key's NFC front end served to pcscd through vsmartcard's vpcd protocol.
//!
//! Placeholder with the final signature: [`serve`] is not implemented in this build and returns
//! [`VpcdError::Unsupported`].

use std::sync::{Arc, atomic::AtomicBool};

use crate::VirtKey;

/// Why serving the key to vpcd failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VpcdError {
    /// This build has no vpcd front end.
    #[error("vpcd is not supported by this build")]
    Unsupported,
    /// Talking to vpcd failed.
    #[error("vpcd IO failed")]
    Io(#[source] std::io::Error),
}

/// Serves `key` as a card to the vpcd reader at `addr` (`HOST:PORT`) until `stop` is set.
pub fn serve(key: Arc<VirtKey>, addr: &str, stop: &AtomicBool) -> Result<(), VpcdError> {
    let _ = (key, addr, stop);
    Err(VpcdError::Unsupported)
}
