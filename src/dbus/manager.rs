//! `org.passkeyd.Manager1` on `/org/passkeyd`.

use std::collections::HashMap;

use zbus::interface;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

use super::args::create_passkey_request;
use super::error::Error;

/// The root object's interface.
pub(super) struct Manager;

#[interface(name = "org.passkeyd.Manager1")]
impl Manager {
    /// Starts a ceremony for `username` with the authorization token; returns its object.
    async fn create_passkey(
        &self,
        username: String,
        authz_token: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, Error> {
        let _request = create_passkey_request(username, authz_token, &options)?;
        Err(Error::busy("no ceremony can start"))
    }

    /// The crate version.
    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    /// The authenticator objects.
    #[zbus(property)]
    fn authenticators(&self) -> Vec<OwnedObjectPath> {
        Vec::new()
    }

    /// The live ceremony objects.
    #[zbus(property)]
    fn ceremonies(&self) -> Vec<OwnedObjectPath> {
        Vec::new()
    }
}
