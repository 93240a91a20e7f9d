//! Who is calling: the caller's uid and groups from the bus (`GetConnectionCredentials`,
//! cached per unique name by the hub), the allow-list decision, and polkit.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};
use zbus::fdo::DBusProxy;
use zbus::message::{Flags, Header};
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use super::error::Error;
use super::hub::HubHandle;
use super::{AccessPolicy, POLKIT_CREATE_PASSKEY};

/// How long polkit may take to answer.
const POLKIT_DEADLINE: Duration = Duration::from_secs(5);

/// How long the bus may take to tell a caller's credentials.
const CREDENTIALS_DEADLINE: Duration = Duration::from_secs(5);

/// A caller's identity as the bus daemon vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `UnixUserID`.
    pub uid: u32,
    /// `UnixGroupIDs`: the primary and supplementary groups (empty when the bus does not
    /// tell).
    pub gids: Vec<u32>,
}

/// Checks callers; cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct Gate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    connection: zbus::Connection,
    dbus: DBusProxy<'static>,
    hub: HubHandle,
    policy: AccessPolicy,
    own_uid: u32,
}

impl Gate {
    pub(super) fn new(
        connection: zbus::Connection,
        dbus: DBusProxy<'static>,
        hub: HubHandle,
        policy: AccessPolicy,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                connection,
                dbus,
                hub,
                policy,
                own_uid: rustix::process::getuid().as_raw(),
            }),
        }
    }

    pub(super) fn polkit_enabled(&self) -> bool {
        self.inner.policy.polkit
    }

    /// The caller's unique name, if the allow-list lets it call.
    pub(super) async fn check(&self, header: &Header<'_>) -> Result<String, Error> {
        let Some(sender) = header.sender() else {
            return Err(Error::not_authorized("the call has no sender"));
        };
        let name = sender.as_str().to_owned();
        let credentials = match self.inner.hub.credentials(name.clone()).await {
            Some(credentials) => credentials,
            None => {
                let credentials = self.fetch(&name).await?;
                self.inner
                    .hub
                    .remember(name.clone(), credentials.clone())
                    .await;
                credentials
            }
        };
        if self.inner.policy.allows(&credentials, self.inner.own_uid) {
            Ok(name)
        } else {
            debug!(caller = %name, uid = credentials.uid, "caller not allowed");
            Err(Error::not_authorized(format!(
                "uid {} may not use passkeyd",
                credentials.uid
            )))
        }
    }

    async fn fetch(&self, name: &str) -> Result<Credentials, Error> {
        let refused = || Error::not_authorized("the caller's credentials are unknown");
        let bus_name = BusName::try_from(name).map_err(|_| refused())?;
        let answer = tokio::time::timeout(
            CREDENTIALS_DEADLINE,
            self.inner.dbus.get_connection_credentials(bus_name),
        )
        .await
        .map_err(|_| refused())?
        .map_err(|error| {
            debug!(caller = name, %error, "GetConnectionCredentials failed");
            refused()
        })?;
        let uid = answer.unix_user_id().ok_or_else(refused)?;
        let gids = answer.unix_group_ids().cloned().unwrap_or_default();
        Ok(Credentials { uid, gids })
    }

    /// polkit's answer for `CreatePasskey` (with user interaction when the call allows it),
    /// within [`POLKIT_DEADLINE`]. Anything but a yes is `NotAuthorized`.
    pub(super) async fn polkit(&self, header: &Header<'_>) -> Result<(), Error> {
        let refused = |why: &str| Error::not_authorized(format!("polkit: {why}"));
        let subject = Subject::new_for_message_header(header)
            .map_err(|_| refused("the call has no sender"))?;
        let flags = if header
            .primary()
            .flags()
            .contains(Flags::AllowInteractiveAuth)
        {
            CheckAuthorizationFlags::AllowUserInteraction.into()
        } else {
            Default::default()
        };
        let check = async {
            // No property cache: nothing but this one call goes to the authority.
            let authority = AuthorityProxy::builder(&self.inner.connection)
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            authority
                .check_authorization(&subject, POLKIT_CREATE_PASSKEY, &HashMap::new(), flags, "")
                .await
        };
        match tokio::time::timeout(POLKIT_DEADLINE, check).await {
            Ok(Ok(result)) if result.is_authorized => Ok(()),
            Ok(Ok(result)) if result.is_challenge => Err(refused("authentication required")),
            Ok(Ok(_)) => Err(refused("not authorized")),
            Ok(Err(error)) => {
                warn!(%error, "polkit check failed");
                Err(refused("the authority could not be asked"))
            }
            Err(_) => Err(refused("no answer in time")),
        }
    }
}
