//! `org.passkeyd.Manager1` on `/org/passkeyd`.

use std::collections::HashMap;

use tokio::sync::watch;
use tracing::debug;
use zbus::fdo::DBusProxy;
use zbus::interface;
use zbus::message::Header;
use zbus::names::BusName;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use super::access::Gate;
use super::args::create_passkey_request;
use super::error::Error;
use super::hub::HubHandle;
use crate::ceremony::{Ceremonies, ErrorKind, MAX_TOKEN_BYTES, MAX_USERNAME_CHARS};
use crate::loginid::{self, LoginIdClaims, Token, jwt::Audience};

/// The interface's name.
pub(super) const INTERFACE: &str = "org.passkeyd.Manager1";

/// The root object's interface.
pub(super) struct Manager {
    pub(super) gate: Gate,
    pub(super) hub: HubHandle,
    pub(super) dbus: DBusProxy<'static>,
    pub(super) ceremonies: Ceremonies,
    pub(super) authenticators: watch::Receiver<Vec<OwnedObjectPath>>,
    pub(super) ceremony_paths: watch::Receiver<Vec<OwnedObjectPath>>,
}

#[interface(name = "org.passkeyd.Manager1")]
impl Manager {
    /// Starts a ceremony for `username` with the authorization token; returns its object,
    /// owned by the caller.
    #[zbus(out_args("ceremony"))]
    async fn create_passkey(
        &self,
        #[zbus(header)] header: Header<'_>,
        username: String,
        authz_token: String,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath, Error> {
        let owner = self.gate.check(&header).await?;
        let request = create_passkey_request(username, authz_token, &options)?;
        drop(options);
        if self.gate.polkit_enabled() {
            self.gate.polkit(&header).await?;
        }
        let admitted = self.hub.admit(owner.clone(), request).await?;
        admitted.exported.await.map_err(|_| Error::gone())??;
        // An owner that left before its ceremony was in the hub's table was missed by the
        // NameOwnerChanged watch; this catches it (later leaves are seen by the watch).
        if let Ok(name) = BusName::try_from(owner.as_str())
            && let Ok(false) = self.dbus.name_has_owner(name).await
        {
            debug!(%owner, "owner left while its ceremony started");
            self.hub.owner_gone(owner).await;
        }
        Ok(admitted.path)
    }

    /// Verifies a LoginID token against the application's JWKS and that it was issued for
    /// `username`; returns its claims.
    #[zbus(out_args("claims"))]
    async fn verify_token(
        &self,
        #[zbus(header)] header: Header<'_>,
        token: String,
        username: String,
    ) -> Result<HashMap<String, Value<'static>>, Error> {
        self.gate.check(&header).await?;
        let token = Token::new(token);
        if token.expose().is_empty() || token.expose().len() > MAX_TOKEN_BYTES {
            return Err(Error::invalid(format!(
                "the token is empty or longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        if username.is_empty() || username.chars().count() > MAX_USERNAME_CHARS {
            return Err(Error::invalid(format!(
                "the username is empty or longer than {MAX_USERNAME_CHARS} characters"
            )));
        }
        let claims = self
            .ceremonies
            .verify_token(&token, &username)
            .await
            .map_err(|error| verify_error(&error))?;
        Ok(claims_map(claims))
    }

    /// The crate version.
    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_owned()
    }

    /// The authenticator objects.
    #[zbus(property)]
    fn authenticators(&self) -> Vec<OwnedObjectPath> {
        self.authenticators.borrow().clone()
    }

    /// The live ceremony objects (running or ended, not yet removed).
    #[zbus(property)]
    fn ceremonies(&self) -> Vec<OwnedObjectPath> {
        self.ceremony_paths.borrow().clone()
    }
}

fn verify_error(error: &loginid::Error) -> Error {
    let kind = match error {
        loginid::Error::Token(_) => ErrorKind::TokenRejected,
        loginid::Error::Api(api) if (400..500).contains(&api.status) => ErrorKind::BackendRejected,
        _ => ErrorKind::BackendUnavailable,
    };
    Error::new(kind, super::error::describe(error))
}

/// The claims as `a{sv}`: strings, string arrays and 64-bit integers.
fn claims_map(claims: LoginIdClaims) -> HashMap<String, Value<'static>> {
    let mut map: HashMap<String, Value<'static>> = HashMap::new();
    let aud = match claims.aud {
        Audience::One(aud) => vec![aud],
        Audience::Many(auds) => auds,
    };
    map.insert("aud".into(), Value::from(aud));
    map.insert("iss".into(), Value::from(claims.iss));
    map.insert("username".into(), Value::from(claims.username));
    map.insert("exp".into(), Value::from(claims.exp));
    let strings = [
        ("sub", claims.sub),
        ("cred_id", claims.cred_id),
        ("token_type", claims.token_type),
        ("verify", claims.verify),
        ("rp_id", claims.rp_id),
    ];
    for (key, value) in strings {
        if let Some(value) = value {
            map.insert(key.into(), Value::from(value));
        }
    }
    for (key, value) in [("iat", claims.iat), ("nbf", claims.nbf)] {
        if let Some(value) = value {
            map.insert(key.into(), Value::from(value));
        }
    }
    if !claims.scopes.is_empty() {
        map.insert("scopes".into(), Value::from(claims.scopes));
    }
    map
}
