//! The D-Bus service: `org.passkeyd.Manager1`, one `org.passkeyd.Authenticator1` per key, one
//! `org.passkeyd.Ceremony1` per ceremony, and an `org.freedesktop.DBus.ObjectManager` at
//! `/org/passkeyd`. The only module that knows zbus. See `docs/dbus-api.md`.
//!
//! ```text
//!  caller ──CreatePasskey──▶ Manager1 ─(auth, args)─▶ hub: limits ─▶ ceremony actor ─▶ Ceremony
//!                                                                     │  (owns the handle,
//!  owner ◀──StateChanged/Completed (unicast)──────────────────────────┘   state, PIN reply)
//!  owner ──GetState/SubmitPin/Cancel/Result/Release──▶ Ceremony1 ─(owner check)─▶ actor
//!  registry ──Added/Removed/Changed──▶ follower ──▶ Authenticator1 objects, Busy changes
//!  bus ──NameOwnerChanged──▶ hub: the gone owner's ceremonies are cancelled and removed
//! ```
//!
//! Every piece of mutable state has one owner task: the hub (ceremony table, per-caller
//! counts, the credentials cache), one actor per ceremony (its `Ceremony`, state, pending PIN
//! prompt and result), the follower (the authenticator objects). Method handlers run
//! concurrently (zbus spawns a task per call and the interfaces only take `&self`); they
//! send requests over channels and await the replies, and hold no lock.

mod access;
mod args;
mod authenticator;
mod ceremony;
pub mod client;
mod error;
mod hub;
mod manager;
mod service;

use std::time::Duration;

pub use access::Credentials;
pub use args::{InvalidArgument, MAX_OPTIONS, MAX_PIN_BYTES, decode_create_passkey};
pub use service::{Service, serve};

/// The service's well-known bus name.
pub const BUS_NAME: &str = "org.passkeyd";

/// The root object: `org.freedesktop.DBus.ObjectManager` and `org.passkeyd.Manager1`.
pub const MANAGER_PATH: &str = "/org/passkeyd";

/// The prefix of authenticator object paths: `/org/passkeyd/authenticator/<DeviceId>`.
pub const AUTHENTICATOR_PATH_PREFIX: &str = "/org/passkeyd/authenticator/";

/// The prefix of ceremony object paths: `/org/passkeyd/ceremony/<n>`.
pub const CEREMONY_PATH_PREFIX: &str = "/org/passkeyd/ceremony/";

/// The polkit action checked for `CreatePasskey` when [`AccessPolicy::polkit`] is set.
pub const POLKIT_CREATE_PASSKEY: &str = "org.passkeyd.create-passkey";

/// The object path of the key `id`.
fn authenticator_path(id: &crate::transport::DeviceId) -> zbus::zvariant::OwnedObjectPath {
    // INVARIANT: a DeviceId holds only [A-Za-z0-9_] and is not empty (transport prefix), so
    // the path is valid.
    zbus::zvariant::ObjectPath::from_string_unchecked(format!("{AUTHENTICATOR_PATH_PREFIX}{id}"))
        .into()
}

/// The object path of ceremony `id`.
fn ceremony_path(id: u64) -> zbus::zvariant::OwnedObjectPath {
    zbus::zvariant::ObjectPath::from_string_unchecked(format!("{CEREMONY_PATH_PREFIX}{id}")).into()
}

/// A connection to a message bus.
#[derive(Clone, Debug)]
pub struct Bus {
    connection: zbus::Connection,
}

impl Bus {
    /// Connects to the system bus.
    pub async fn system() -> Result<Self, DbusError> {
        let connection = zbus::Connection::system()
            .await
            .map_err(|e| DbusError::Connect(e.into()))?;
        Ok(Self { connection })
    }

    /// Connects to the session bus.
    pub async fn session() -> Result<Self, DbusError> {
        let connection = zbus::Connection::session()
            .await
            .map_err(|e| DbusError::Connect(e.into()))?;
        Ok(Self { connection })
    }

    /// Connects to the bus at `address` (a D-Bus address such as `unix:path=/run/bus`).
    pub async fn address(address: &str) -> Result<Self, DbusError> {
        let connection = async { zbus::connection::Builder::address(address)?.build().await }
            .await
            .map_err(|e| DbusError::Connect(e.into()))?;
        Ok(Self { connection })
    }

    /// This connection's unique name (`:1.42`).
    pub fn unique_name(&self) -> Option<String> {
        self.connection.unique_name().map(|name| name.to_string())
    }

    pub(crate) fn connection(&self) -> &zbus::Connection {
        &self.connection
    }
}

/// Who may call the service's methods (property reads are open to everyone the bus policy
/// lets through). uid 0 and the daemon's own uid are always allowed; an empty policy allows
/// only them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Callers with one of these uids may call.
    pub allowed_uids: Vec<u32>,
    /// Callers with one of these gids (primary or supplementary) may call.
    pub allowed_gids: Vec<u32>,
    /// `CreatePasskey` also needs polkit's yes for [`POLKIT_CREATE_PASSKEY`].
    pub polkit: bool,
}

impl AccessPolicy {
    /// Whether a caller with `credentials` may call, for a daemon running as `own_uid`.
    pub fn allows(&self, credentials: &Credentials, own_uid: u32) -> bool {
        let uid = credentials.uid;
        uid == 0
            || uid == own_uid
            || self.allowed_uids.contains(&uid)
            || credentials
                .gids
                .iter()
                .any(|gid| self.allowed_gids.contains(gid))
    }
}

/// Bounds on ceremonies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Running ceremonies one caller (unique name) may have; more is `Busy`.
    pub max_ceremonies_per_caller: usize,
    /// Running ceremonies in total; more is `Busy`.
    pub max_ceremonies: usize,
    /// How long an ended ceremony's object stays for its owner to read the result.
    pub linger: Duration,
}

impl Default for Limits {
    /// 2 per caller, 16 in total, 60 s of linger.
    fn default() -> Self {
        Self {
            max_ceremonies_per_caller: 2,
            max_ceremonies: 16,
            linger: Duration::from_secs(60),
        }
    }
}

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The well-known name to own ([`BUS_NAME`]; tests may use another).
    pub bus_name: String,
    /// Who may call.
    pub access: AccessPolicy,
    /// Bounds on ceremonies.
    pub limits: Limits,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            bus_name: BUS_NAME.to_owned(),
            access: AccessPolicy::default(),
            limits: Limits::default(),
        }
    }
}

/// A failure of the bus connection or of setting up the service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbusError {
    /// The bus could not be reached or refused the connection.
    #[error("cannot connect to the message bus")]
    Connect(#[source] BusFailure),
    /// Another connection owns the name.
    #[error("the name {0} is already owned on the bus")]
    NameTaken(String),
    /// The name is not a valid well-known bus name.
    #[error("invalid bus name {0:?}")]
    BadName(String),
    /// Exporting an object failed.
    #[error("cannot export the D-Bus objects")]
    Export(#[source] BusFailure),
    /// Requesting the name failed for another reason than its being taken.
    #[error("cannot request the bus name")]
    RequestName(#[source] BusFailure),
    /// The device registry has ended.
    #[error("the device registry has ended")]
    RegistryGone,
}

/// A bus-level failure, with zbus's error kept private.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct BusFailure(zbus::Error);

impl From<zbus::Error> for BusFailure {
    fn from(error: zbus::Error) -> Self {
        Self(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(uid: u32, gids: &[u32]) -> Credentials {
        Credentials {
            uid,
            gids: gids.to_vec(),
        }
    }

    #[test]
    fn root_and_the_daemons_own_uid_are_always_allowed() {
        let empty = AccessPolicy::default();
        assert!(empty.allows(&caller(0, &[]), 990));
        assert!(empty.allows(&caller(990, &[]), 990));
        assert!(!empty.allows(&caller(1000, &[1000]), 990));
    }

    #[test]
    fn users_and_groups_on_the_list_are_allowed() {
        let policy = AccessPolicy {
            allowed_uids: vec![1001],
            allowed_gids: vec![990, 27],
            polkit: false,
        };
        assert!(policy.allows(&caller(1001, &[1001]), 990));
        assert!(policy.allows(&caller(1002, &[1002, 27]), 980));
        assert!(policy.allows(&caller(1003, &[990]), 980));
        assert!(!policy.allows(&caller(1004, &[1004, 100]), 980));
        assert!(!policy.allows(&caller(65534, &[]), 980));
    }
}
