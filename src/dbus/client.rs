//! A typed client of passkeyd's D-Bus API (`docs/dbus-api.md`): what `passkeyctl`, the
//! benchmarks and the Rust tests use to talk to the service as any other local UI would.
//!
//! - [`Client`] talks to `org.passkeyd.Manager1` and the `org.passkeyd.Authenticator1`
//!   objects: [`Client::authenticators`], [`Client::authenticator`], [`Client::wink`],
//!   [`Client::pin_retries`], [`Client::verify_token`], [`Client::events`] and
//!   [`Client::create_passkey`].
//! - [`CeremonyHandle`] follows one `org.passkeyd.Ceremony1`: [`CeremonyHandle::next_state`]
//!   yields its states in order, each once, and the PIN, cancellation and the result go through
//!   it.
//! - Every error reply keeps its D-Bus error name and message ([`ServiceError`]); the
//!   `org.passkeyd.Error.*` names map back to [`ErrorKind`].
//!
//! # Not missing a state
//!
//! `StateChanged` is unicast to the ceremony's owner. [`Client::create_passkey`] subscribes
//! to the signal (from the service's unique name only, so no other peer can inject states)
//! before it calls `CreatePasskey`; the first [`CeremonyHandle::next_state`] then calls
//! `GetState`, whose reply the bus delivers after every signal sent before it, and merges the
//! two by `seq`. Every state arrives once and in order, and a ceremony that has already moved
//! on is seen in its current state.
//!
//! No zbus type appears in this API: keys and ceremonies are named by their object paths as
//! text, D-Bus values are converted to Rust types here.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use serde::Serialize;
use zbus::fdo::{DBusProxy, ObjectManagerProxy, PropertiesProxy};
use zbus::message::Type as MessageType;
use zbus::names::{BusName, InterfaceName, OwnedUniqueName};
use zbus::proxy::CacheProperties;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};
use zbus::{Connection, MatchRule, MessageStream};
use zeroize::Zeroizing;

use super::{AUTHENTICATOR_PATH_PREFIX, BUS_NAME, Bus, CEREMONY_PATH_PREFIX, MANAGER_PATH};
use crate::ceremony::{DBUS_ERROR_PREFIX, ErrorKind, State};
use crate::loginid::Token;

/// `org.passkeyd.Manager1`.
pub const MANAGER_INTERFACE: &str = "org.passkeyd.Manager1";
/// `org.passkeyd.Authenticator1`.
pub const AUTHENTICATOR_INTERFACE: &str = "org.passkeyd.Authenticator1";
/// `org.passkeyd.Ceremony1`.
pub const CEREMONY_INTERFACE: &str = "org.passkeyd.Ceremony1";

/// How many signals of one subscription may wait for the reader. A ceremony sends about ten;
/// a burst of keys plugged in at once a few per key.
const SIGNAL_QUEUE: usize = 256;

/// D-Bus errors that mean "nobody answers under that name".
const NOT_RUNNING: [&str; 3] = [
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.NoReply",
];

#[zbus::proxy(interface = "org.passkeyd.Manager1", gen_blocking = false)]
trait Manager1 {
    fn create_passkey(
        &self,
        username: &str,
        authz_token: &str,
        options: HashMap<&str, Value<'_>>,
    ) -> zbus::Result<OwnedObjectPath>;

    fn verify_token(
        &self,
        token: &str,
        username: &str,
    ) -> zbus::Result<HashMap<String, OwnedValue>>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn authenticators(&self) -> zbus::Result<Vec<OwnedObjectPath>>;

    #[zbus(property)]
    fn ceremonies(&self) -> zbus::Result<Vec<OwnedObjectPath>>;
}

#[zbus::proxy(interface = "org.passkeyd.Authenticator1", gen_blocking = false)]
trait Authenticator1 {
    fn wink(&self) -> zbus::Result<()>;

    fn pin_retries(&self) -> zbus::Result<u32>;
}

#[zbus::proxy(interface = "org.passkeyd.Ceremony1", gen_blocking = false)]
trait Ceremony1 {
    fn get_state(&self) -> zbus::Result<(u32, String, HashMap<String, OwnedValue>)>;

    fn submit_pin(&self, pin: &str) -> zbus::Result<()>;

    fn set_new_pin(&self, pin: &str) -> zbus::Result<()>;

    fn cancel(&self) -> zbus::Result<()>;

    fn result(&self) -> zbus::Result<HashMap<String, OwnedValue>>;

    fn release(&self) -> zbus::Result<()>;
}

/// An error reply: its D-Bus error name and message, as the service (or the bus) sent them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceError {
    #[serde(rename = "error")]
    name: String,
    message: String,
}

impl ServiceError {
    /// An error with this name and message.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
        }
    }

    /// The full D-Bus error name, e.g. `org.passkeyd.Error.PinInvalid`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The message that came with it (may be empty).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The passkeyd error kind, for an `org.passkeyd.Error.*` name.
    pub fn kind(&self) -> Option<ErrorKind> {
        error_kind(&self.name)
    }

    /// Whether the name says that no one owns the service's name (not running, not
    /// activatable, or it left the bus while a call was pending).
    pub fn is_service_absent(&self) -> bool {
        NOT_RUNNING.contains(&self.name.as_str())
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.message.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}: {}", self.name, self.message)
        }
    }
}

/// The [`ErrorKind`] whose D-Bus name is `name`.
pub fn error_kind(name: &str) -> Option<ErrorKind> {
    if !name.starts_with(DBUS_ERROR_PREFIX) {
        return None;
    }
    ErrorKind::ALL
        .into_iter()
        .find(|kind| kind.dbus_name() == name)
}

/// A failure of the bus connection itself (IO, authentication, a closed socket, a malformed
/// message). Its source is the D-Bus library's error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BusFailure(#[source] zbus::Error);

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The service, or the bus on its behalf, answered with an error.
    #[error("{0}")]
    Service(ServiceError),
    /// The connection to the bus failed.
    #[error("D-Bus connection failed")]
    Bus(#[source] BusFailure),
    /// A reply or signal does not follow the D-Bus API.
    #[error("unexpected reply from passkeyd: {0}")]
    UnexpectedReply(String),
    /// No authenticator has this DeviceId or path.
    #[error("no such authenticator: {0}")]
    NoSuchAuthenticator(String),
    /// The name is neither a DeviceId (`[A-Za-z0-9_]+`) nor an object path of the service.
    #[error("not an authenticator or ceremony name: {0:?}")]
    InvalidName(String),
    /// The service left the bus while a ceremony was being followed.
    #[error("passkeyd left the bus")]
    ServiceGone,
}

impl ClientError {
    /// The D-Bus error name that stands for this error: the reply's own name, or the nearest
    /// `org.passkeyd.Error.*` / `org.freedesktop.DBus.Error.*` name for the client's own
    /// failures.
    pub fn dbus_name(&self) -> &str {
        match self {
            Self::Service(error) => error.name(),
            Self::Bus(_) => "org.freedesktop.DBus.Error.Disconnected",
            Self::UnexpectedReply(_) => "org.freedesktop.DBus.Error.InvalidSignature",
            Self::NoSuchAuthenticator(_) => ErrorKind::NoAuthenticator.dbus_name(),
            Self::InvalidName(_) => ErrorKind::InvalidArgument.dbus_name(),
            Self::ServiceGone => "org.freedesktop.DBus.Error.ServiceUnknown",
        }
    }

    /// The passkeyd error kind, when the error is one of `org.passkeyd.Error.*`.
    pub fn kind(&self) -> Option<ErrorKind> {
        error_kind(self.dbus_name())
    }

    /// The message to show with [`Self::dbus_name`]: the reply's message, or this error's
    /// text.
    pub fn message(&self) -> String {
        match self {
            Self::Service(error) => error.message().to_owned(),
            Self::Bus(failure) => format!("D-Bus connection failed: {failure}"),
            other => other.to_string(),
        }
    }

    /// Whether passkeyd is not there to answer (not running, or gone).
    pub fn is_service_absent(&self) -> bool {
        match self {
            Self::Service(error) => error.is_service_absent(),
            Self::ServiceGone | Self::Bus(_) => true,
            _ => false,
        }
    }
}

/// The zbus errors, converted without putting zbus into the public API (no `From` impls).
trait IntoClientError {
    fn into_client_error(self) -> ClientError;
}

impl IntoClientError for zbus::Error {
    fn into_client_error(self) -> ClientError {
        match self {
            Self::MethodError(name, message, _) => ClientError::Service(ServiceError::new(
                name.as_str(),
                message.unwrap_or_default(),
            )),
            Self::FDO(error) => error.into_client_error(),
            Self::Variant(error) => ClientError::UnexpectedReply(error.to_string()),
            other => ClientError::Bus(BusFailure(other)),
        }
    }
}

impl IntoClientError for zbus::fdo::Error {
    fn into_client_error(self) -> ClientError {
        use zbus::DBusError as _;
        match self {
            Self::ZBus(error) => error.into_client_error(),
            other => ClientError::Service(ServiceError::new(
                other.name().as_str(),
                other.description().unwrap_or_default(),
            )),
        }
    }
}

impl<E: IntoClientError> IntoClientError for Box<E> {
    fn into_client_error(self) -> ClientError {
        (*self).into_client_error()
    }
}

/// For `map_err`.
fn err(error: impl IntoClientError) -> ClientError {
    error.into_client_error()
}

/// An `org.passkeyd.Authenticator1` object: a security key the service knows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AuthenticatorInfo {
    /// The object path, `/org/passkeyd/authenticator/<id>`.
    pub path: String,
    /// The DeviceId, the last component of the path (`virtual_key0`, `usb_...`).
    pub id: String,
    /// `usb`, `nfc` or `virtual`.
    pub transport: String,
    /// USB vendor id, 0 when unknown.
    pub vendor_id: u16,
    /// USB product id, 0 when unknown.
    pub product_id: u16,
    /// Product name, "" when unknown.
    pub product: String,
    /// Manufacturer, "" when unknown.
    pub manufacturer: String,
    /// getInfo versions (`FIDO_2_0`, `FIDO_2_1`, `U2F_V2`...).
    pub versions: Vec<String>,
    /// getInfo AAGUID as UUID text, "" without getInfo.
    pub aaguid: String,
    /// getInfo options.
    pub options: BTreeMap<String, bool>,
    /// Whether the key has a PIN (`clientPin` is true).
    pub pin_set: bool,
    /// The shortest PIN the key accepts.
    pub min_pin_length: u32,
    /// Whether a request is running on the key.
    pub busy: bool,
}

impl AuthenticatorInfo {
    fn from_properties(
        path: &str,
        properties: &HashMap<String, OwnedValue>,
    ) -> Result<Self, ClientError> {
        let mut info = Self {
            path: path.to_owned(),
            id: path
                .strip_prefix(AUTHENTICATOR_PATH_PREFIX)
                .unwrap_or(path)
                .to_owned(),
            min_pin_length: 4,
            ..Self::default()
        };
        for (name, value) in properties {
            let value: &Value<'_> = value;
            let what = || format!("Authenticator1.{name}");
            match name.as_str() {
                "Transport" => info.transport = string(value, what)?,
                "VendorId" => info.vendor_id = u16_of(value, what)?,
                "ProductId" => info.product_id = u16_of(value, what)?,
                "Product" => info.product = string(value, what)?,
                "Manufacturer" => info.manufacturer = string(value, what)?,
                "Versions" => info.versions = strings(value, what)?,
                "Aaguid" => info.aaguid = string(value, what)?,
                "Options" => info.options = bool_map(value, what)?,
                "PinSet" => info.pin_set = bool_of(value, what)?,
                "MinPinLength" => info.min_pin_length = u32_of(value, what)?,
                "Busy" => info.busy = bool_of(value, what)?,
                // Properties added later are not an error.
                _ => {}
            }
        }
        Ok(info)
    }
}

/// A passkey to create: the arguments of `CreatePasskey`.
#[derive(Debug)]
#[non_exhaustive]
pub struct PasskeyRequest {
    /// The LoginID username.
    pub username: String,
    /// The authorization token from the UI's backend (LoginID `mgmt/grant`, `reg:write`).
    pub authz_token: Token,
    /// The user's display name.
    pub display_name: Option<String>,
    /// `email`, `phone` or `other`.
    pub username_type: Option<String>,
    /// A name for the passkey at LoginID.
    pub passkey_name: Option<String>,
    /// The key to use (its object path); without it the service picks one or asks for a touch.
    pub authenticator: Option<String>,
    /// The ceremony's overall timeout; the service clamps it to its range.
    pub timeout: Option<Duration>,
    /// The key's PIN, for unattended use: the service tries it once and fails with
    /// `PinInvalid` when it is wrong, instead of asking.
    pub pin: Option<Zeroizing<String>>,
}

impl PasskeyRequest {
    /// A request for `username` with `authz_token` and no options.
    pub fn new(username: impl Into<String>, authz_token: Token) -> Self {
        Self {
            username: username.into(),
            authz_token,
            display_name: None,
            username_type: None,
            passkey_name: None,
            authenticator: None,
            timeout: None,
            pin: None,
        }
    }

    fn options(&self) -> Result<HashMap<&'static str, Value<'_>>, ClientError> {
        let mut options = HashMap::new();
        if let Some(name) = &self.display_name {
            options.insert("display_name", Value::from(name.as_str()));
        }
        if let Some(kind) = &self.username_type {
            options.insert("username_type", Value::from(kind.as_str()));
        }
        if let Some(name) = &self.passkey_name {
            options.insert("passkey_name", Value::from(name.as_str()));
        }
        if let Some(path) = &self.authenticator {
            let path = ObjectPath::try_from(path.as_str())
                .map_err(|_| ClientError::InvalidName(path.clone()))?;
            options.insert("authenticator", Value::from(path));
        }
        if let Some(timeout) = self.timeout {
            let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
            options.insert("timeout_ms", Value::from(millis));
        }
        if let Some(pin) = &self.pin {
            options.insert("pin", Value::from(pin.as_str()));
        }
        Ok(options)
    }
}

/// The details that come with a ceremony state (members present by state, see
/// `docs/dbus-api.md`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateDetails {
    /// selecting: the keys taking part (object paths).
    pub authenticators: Vec<String>,
    /// The key in use (object path), once chosen.
    pub authenticator: Option<String>,
    /// needs-pin: `first`, `wrong-pin`, `malformed`; needs-new-pin: why; cancelled: by whom.
    pub reason: Option<String>,
    /// needs-pin: PIN retries left, when the key said.
    pub retries: Option<u32>,
    /// needs-new-pin: the shortest PIN the key accepts.
    pub min_length: Option<u32>,
    /// completed: the new credential's id.
    pub credential_id: Option<Vec<u8>>,
    /// failed: the error.
    pub error: Option<ServiceError>,
}

impl StateDetails {
    fn from_dict(details: &HashMap<String, OwnedValue>) -> Result<Self, ClientError> {
        let mut out = Self::default();
        let mut error_name = None;
        let mut message = None;
        for (name, value) in details {
            let value: &Value<'_> = value;
            let what = || format!("details.{name}");
            match name.as_str() {
                "authenticators" => out.authenticators = paths(value, what)?,
                "authenticator" => out.authenticator = Some(path_of(value, what)?),
                "reason" => out.reason = Some(string(value, what)?),
                "retries" => {
                    // -1: unknown.
                    out.retries = u32::try_from(i32_of(value, what)?).ok();
                }
                "min_length" => out.min_length = Some(u32_of(value, what)?),
                "credential_id" => out.credential_id = Some(bytes(value, what)?),
                "error" => error_name = Some(string(value, what)?),
                "message" => message = Some(string(value, what)?),
                _ => {}
            }
        }
        if let Some(name) = error_name {
            out.error = Some(ServiceError::new(name, message.unwrap_or_default()));
        }
        Ok(out)
    }
}

/// One state of a ceremony, from `StateChanged` or `GetState`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateUpdate {
    /// 1 for the first state, one more for each next.
    pub seq: u32,
    /// The state.
    pub state: State,
    /// Its details.
    pub details: StateDetails,
}

impl StateUpdate {
    fn new(
        seq: u32,
        state: &str,
        details: &HashMap<String, OwnedValue>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            seq,
            state: parse_state(state)?,
            details: StateDetails::from_dict(details)?,
        })
    }
}

/// The [`State`] named `name` (`needs-pin`...).
pub fn parse_state(name: &str) -> Result<State, ClientError> {
    const STATES: [State; 8] = [
        State::Selecting,
        State::NeedsPin,
        State::NeedsNewPin,
        State::NeedsTouch,
        State::Registering,
        State::Completed,
        State::Failed,
        State::Cancelled,
    ];
    STATES
        .into_iter()
        .find(|state| state.as_str() == name)
        .ok_or_else(|| ClientError::UnexpectedReply(format!("unknown ceremony state {name:?}")))
}

/// What a completed ceremony gives its owner (`Result()`).
#[derive(Debug)]
#[non_exhaustive]
pub struct Registration {
    /// The LoginID token (jwtAccess).
    pub token: Token,
    /// LoginID's user id.
    pub user_id: Option<String>,
    /// LoginID's id of the passkey.
    pub passkey_id: Option<String>,
    /// The credential id on the key.
    pub credential_id: Option<Vec<u8>>,
    /// The key's object path.
    pub authenticator: Option<String>,
    /// `packed`, `fido-u2f`, `none`...
    pub attestation_format: Option<String>,
}

impl Registration {
    fn from_dict(result: &HashMap<String, OwnedValue>) -> Result<Self, ClientError> {
        let mut token = None;
        let mut out = Self {
            token: Token::new(String::new()),
            user_id: None,
            passkey_id: None,
            credential_id: None,
            authenticator: None,
            attestation_format: None,
        };
        for (name, value) in result {
            let value: &Value<'_> = value;
            let what = || format!("result.{name}");
            match name.as_str() {
                "token" => token = Some(Token::new(string(value, what)?)),
                "user_id" => out.user_id = Some(string(value, what)?),
                "passkey_id" => out.passkey_id = Some(string(value, what)?),
                "credential_id" => out.credential_id = Some(bytes(value, what)?),
                "authenticator" => out.authenticator = Some(path_of(value, what)?),
                "attestation_format" => out.attestation_format = Some(string(value, what)?),
                _ => {}
            }
        }
        out.token = token
            .ok_or_else(|| ClientError::UnexpectedReply("the result has no token".to_owned()))?;
        Ok(out)
    }
}

/// A claim of a verified LoginID token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum Claim {
    /// Text (`sub`, `iss`, `username`...).
    Text(String),
    /// A number (`iat`, `exp`...).
    Int(i64),
    /// An unsigned number too large for `Int`.
    UInt(u64),
    /// A flag.
    Bool(bool),
    /// A list of text (`aud`).
    List(Vec<String>),
}

impl fmt::Display for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Int(n) => write!(f, "{n}"),
            Self::UInt(n) => write!(f, "{n}"),
            Self::Bool(b) => write!(f, "{b}"),
            Self::List(items) => f.write_str(&items.join(", ")),
        }
    }
}

fn claim(value: &Value<'_>, what: impl Fn() -> String) -> Result<Claim, ClientError> {
    Ok(match value {
        Value::Value(inner) => return claim(inner, what),
        Value::Str(text) => Claim::Text(text.as_str().to_owned()),
        Value::ObjectPath(path) => Claim::Text(path.as_str().to_owned()),
        Value::Bool(b) => Claim::Bool(*b),
        Value::U8(n) => Claim::Int(i64::from(*n)),
        Value::I16(n) => Claim::Int(i64::from(*n)),
        Value::U16(n) => Claim::Int(i64::from(*n)),
        Value::I32(n) => Claim::Int(i64::from(*n)),
        Value::U32(n) => Claim::Int(i64::from(*n)),
        Value::I64(n) => Claim::Int(*n),
        Value::U64(n) => i64::try_from(*n).map_or(Claim::UInt(*n), Claim::Int),
        Value::Array(_) => Claim::List(strings(value, what)?),
        _ => return Err(mismatch(value, "a string, number or list", what)),
    })
}

/// A change seen by [`Client::events`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A key appeared.
    AuthenticatorAdded(AuthenticatorInfo),
    /// A key went away.
    AuthenticatorRemoved {
        /// Its object path.
        path: String,
    },
    /// A key became busy or idle.
    AuthenticatorBusy {
        /// Its object path.
        path: String,
        /// Whether a request runs on it now.
        busy: bool,
    },
    /// A ceremony object appeared (any caller's; its states go to its owner only).
    CeremonyAdded {
        /// Its object path.
        path: String,
    },
    /// A ceremony object was removed.
    CeremonyRemoved {
        /// Its object path.
        path: String,
    },
}

/// The stream of [`Event`]s from [`Client::events`].
pub struct Events {
    signals: MessageStream,
    owner: MessageStream,
    pending: VecDeque<Event>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Events {
    /// The next change. [`ClientError::ServiceGone`] when the service leaves the bus.
    pub async fn next(&mut self) -> Result<Event, ClientError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            tokio::select! {
                message = self.signals.next() => {
                    let message = message.ok_or(ClientError::ServiceGone)?.map_err(err)?;
                    self.parse(&message)?;
                }
                _ = self.owner.next() => return Err(ClientError::ServiceGone),
            }
        }
    }

    fn parse(&mut self, message: &zbus::Message) -> Result<(), ClientError> {
        let header = message.header();
        let (Some(interface), Some(member), Some(path)) =
            (header.interface(), header.member(), header.path())
        else {
            return Ok(());
        };
        match (interface.as_str(), member.as_str()) {
            ("org.freedesktop.DBus.ObjectManager", "InterfacesAdded") => {
                let (path, interfaces): (
                    OwnedObjectPath,
                    HashMap<String, HashMap<String, OwnedValue>>,
                ) = message.body().deserialize().map_err(err)?;
                if let Some(properties) = interfaces.get(AUTHENTICATOR_INTERFACE) {
                    self.pending.push_back(Event::AuthenticatorAdded(
                        AuthenticatorInfo::from_properties(path.as_str(), properties)?,
                    ));
                }
                if interfaces.contains_key(CEREMONY_INTERFACE) {
                    self.pending.push_back(Event::CeremonyAdded {
                        path: path.to_string(),
                    });
                }
            }
            ("org.freedesktop.DBus.ObjectManager", "InterfacesRemoved") => {
                let (path, interfaces): (OwnedObjectPath, Vec<String>) =
                    message.body().deserialize().map_err(err)?;
                let path = path.to_string();
                if interfaces.iter().any(|i| i == AUTHENTICATOR_INTERFACE) {
                    self.pending
                        .push_back(Event::AuthenticatorRemoved { path: path.clone() });
                }
                if interfaces.iter().any(|i| i == CEREMONY_INTERFACE) {
                    self.pending.push_back(Event::CeremonyRemoved { path });
                }
            }
            ("org.freedesktop.DBus.Properties", "PropertiesChanged") => {
                let (interface, changed, _): (String, HashMap<String, OwnedValue>, Vec<String>) =
                    message.body().deserialize().map_err(err)?;
                if interface == AUTHENTICATOR_INTERFACE
                    && let Some(busy) = changed.get("Busy")
                {
                    self.pending.push_back(Event::AuthenticatorBusy {
                        path: path.to_string(),
                        busy: bool_of(busy, || "Authenticator1.Busy".to_owned())?,
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// A connection to passkeyd on a bus.
#[derive(Clone, Debug)]
pub struct Client {
    connection: Connection,
    service: String,
}

impl Client {
    /// A client of the service under its well-known name (`org.passkeyd`) on `bus`. Reads the
    /// service's `Version` first, which starts it when it is D-Bus activatable and tells at
    /// once when it is not there.
    pub async fn new(bus: &Bus) -> Result<Self, ClientError> {
        Self::with_service(bus, BUS_NAME).await
    }

    /// A client of the service that owns `service` (tests run it under other names).
    pub async fn with_service(bus: &Bus, service: &str) -> Result<Self, ClientError> {
        BusName::try_from(service).map_err(|_| ClientError::InvalidName(service.to_owned()))?;
        let client = Self {
            connection: bus.connection.clone(),
            service: service.to_owned(),
        };
        client.version().await?;
        Ok(client)
    }

    /// The bus name the client talks to.
    pub fn service(&self) -> &str {
        &self.service
    }

    async fn manager(&self) -> Result<Manager1Proxy<'static>, ClientError> {
        Manager1Proxy::builder(&self.connection)
            .destination(self.service.clone())
            .map_err(err)?
            .path(MANAGER_PATH)
            .map_err(err)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)
    }

    async fn authenticator_proxy(
        &self,
        path: &str,
    ) -> Result<Authenticator1Proxy<'static>, ClientError> {
        Authenticator1Proxy::builder(&self.connection)
            .destination(self.service.clone())
            .map_err(err)?
            .path(path.to_owned())
            .map_err(err)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)
    }

    /// The unique name that owns the service's name now.
    async fn owner(&self) -> Result<OwnedUniqueName, ClientError> {
        let dbus = DBusProxy::new(&self.connection).await.map_err(err)?;
        let name = BusName::try_from(self.service.as_str())
            .map_err(|_| ClientError::InvalidName(self.service.clone()))?;
        dbus.get_name_owner(name).await.map_err(err)
    }

    /// A stream that ends when the current owner `owner` of the service's name leaves.
    async fn owner_watch(&self, owner: &OwnedUniqueName) -> Result<MessageStream, ClientError> {
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender("org.freedesktop.DBus")
            .map_err(err)?
            .interface("org.freedesktop.DBus")
            .map_err(err)?
            .member("NameOwnerChanged")
            .map_err(err)?
            .arg(0, self.service.as_str())
            .map_err(err)?
            .arg(1, owner.as_str())
            .map_err(err)?
            .build();
        MessageStream::for_match_rule(rule, &self.connection, Some(8))
            .await
            .map_err(err)
    }

    /// The service's version (`Manager1.Version`).
    pub async fn version(&self) -> Result<String, ClientError> {
        self.manager().await?.version().await.map_err(err)
    }

    /// The object paths of the live ceremonies (`Manager1.Ceremonies`).
    pub async fn ceremonies(&self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .manager()
            .await?
            .ceremonies()
            .await
            .map_err(err)?
            .into_iter()
            .map(|path| path.to_string())
            .collect())
    }

    /// Every key with its properties, in the order of `Manager1.Authenticators`.
    pub async fn authenticators(&self) -> Result<Vec<AuthenticatorInfo>, ClientError> {
        let objects = ObjectManagerProxy::builder(&self.connection)
            .destination(self.service.clone())
            .map_err(err)?
            .path(MANAGER_PATH)
            .map_err(err)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)?
            .get_managed_objects()
            .await
            .map_err(err)?;
        let order = self.manager().await?.authenticators().await.map_err(err)?;
        let mut keys = Vec::new();
        for path in order {
            let Some(properties) = objects.get(&path).and_then(|interfaces| {
                interfaces
                    .iter()
                    .find(|(name, _)| name.as_str() == AUTHENTICATOR_INTERFACE)
                    .map(|(_, properties)| properties)
            }) else {
                // Removed between the two calls.
                continue;
            };
            keys.push(AuthenticatorInfo::from_properties(
                path.as_str(),
                properties,
            )?);
        }
        Ok(keys)
    }

    /// One key, by DeviceId or object path (see [`authenticator_path`]).
    pub async fn authenticator(&self, key: &str) -> Result<AuthenticatorInfo, ClientError> {
        let path = authenticator_path(key)?;
        let properties = PropertiesProxy::builder(&self.connection)
            .destination(self.service.clone())
            .map_err(err)?
            .path(path.clone())
            .map_err(err)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)?
            .get_all(InterfaceName::from_static_str_unchecked(
                AUTHENTICATOR_INTERFACE,
            ))
            .await
            .map_err(|error| no_such_object(err(error), key))?;
        AuthenticatorInfo::from_properties(&path, &properties)
    }

    /// Blinks the key's light or beeps (CTAPHID_WINK); `org.passkeyd.Error.NotSupported` when
    /// it cannot.
    pub async fn wink(&self, key: &str) -> Result<(), ClientError> {
        let path = authenticator_path(key)?;
        self.authenticator_proxy(&path)
            .await?
            .wink()
            .await
            .map_err(|error| no_such_object(err(error), key))
    }

    /// The key's PIN retries left.
    pub async fn pin_retries(&self, key: &str) -> Result<u32, ClientError> {
        let path = authenticator_path(key)?;
        self.authenticator_proxy(&path)
            .await?
            .pin_retries()
            .await
            .map_err(|error| no_such_object(err(error), key))
    }

    /// Checks a LoginID token for `username` against the application's keys
    /// (`Manager1.VerifyToken`) and returns its claims.
    pub async fn verify_token(
        &self,
        token: &Token,
        username: &str,
    ) -> Result<BTreeMap<String, Claim>, ClientError> {
        let claims = self
            .manager()
            .await?
            .verify_token(token.expose(), username)
            .await
            .map_err(err)?;
        claims
            .iter()
            .map(|(name, value)| Ok((name.clone(), claim(value, || format!("claims.{name}"))?)))
            .collect()
    }

    /// Follows the service's keys and ceremonies: keys coming, going, busy; ceremonies
    /// appearing and removed.
    pub async fn events(&self) -> Result<Events, ClientError> {
        let owner = self.owner().await?;
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(owner.as_str())
            .map_err(err)?
            .path_namespace(MANAGER_PATH)
            .map_err(err)?
            .build();
        let signals = MessageStream::for_match_rule(rule, &self.connection, Some(SIGNAL_QUEUE))
            .await
            .map_err(err)?;
        let owner = self.owner_watch(&owner).await?;
        Ok(Events {
            signals,
            owner,
            pending: VecDeque::new(),
        })
    }

    /// Starts a ceremony (`Manager1.CreatePasskey`), subscribed to its states first.
    pub async fn create_passkey(
        &self,
        request: &PasskeyRequest,
    ) -> Result<CeremonyHandle, ClientError> {
        let options = request.options()?;
        let owner = self.owner().await?;
        let states = self.state_stream(&owner).await?;
        let owner_watch = self.owner_watch(&owner).await?;
        let path = self
            .manager()
            .await?
            .create_passkey(&request.username, request.authz_token.expose(), options)
            .await
            .map_err(err)?;
        self.handle(path.to_string(), owner, states, owner_watch)
            .await
    }

    /// A handle on an existing ceremony, by id or object path. Only its owner may use it; the
    /// service answers anyone else `org.passkeyd.Error.NotAuthorized`. States that passed
    /// before this call are not replayed: the first [`CeremonyHandle::next_state`] gives the
    /// current one.
    pub async fn ceremony(&self, ceremony: &str) -> Result<CeremonyHandle, ClientError> {
        let path = ceremony_path(ceremony)?;
        let owner = self.owner().await?;
        let states = self.state_stream(&owner).await?;
        let owner_watch = self.owner_watch(&owner).await?;
        self.handle(path, owner, states, owner_watch).await
    }

    async fn state_stream(&self, owner: &OwnedUniqueName) -> Result<MessageStream, ClientError> {
        // From the owner's unique name only: another peer could send us a unicast signal with
        // the same interface and member.
        let rule = MatchRule::builder()
            .msg_type(MessageType::Signal)
            .sender(owner.as_str())
            .map_err(err)?
            .interface(CEREMONY_INTERFACE)
            .map_err(err)?
            .member("StateChanged")
            .map_err(err)?
            .build();
        MessageStream::for_match_rule(rule, &self.connection, Some(SIGNAL_QUEUE))
            .await
            .map_err(err)
    }

    async fn handle(
        &self,
        path: String,
        owner: OwnedUniqueName,
        states: MessageStream,
        owner_watch: MessageStream,
    ) -> Result<CeremonyHandle, ClientError> {
        // Calls go to the unique name that runs the ceremony, not to whoever owns the
        // well-known name later.
        let proxy = Ceremony1Proxy::builder(&self.connection)
            .destination(owner)
            .map_err(err)?
            .path(path.clone())
            .map_err(err)?
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)?;
        Ok(CeremonyHandle {
            path,
            proxy,
            states,
            owner_watch,
            queue: StateQueue::default(),
            synced: false,
        })
    }
}

/// Maps "no such object/interface" to [`ClientError::NoSuchAuthenticator`].
fn no_such_object(error: ClientError, key: &str) -> ClientError {
    match &error {
        ClientError::Service(reply)
            if matches!(
                reply.name(),
                "org.freedesktop.DBus.Error.UnknownObject"
                    | "org.freedesktop.DBus.Error.UnknownInterface"
                    | "org.freedesktop.DBus.Error.UnknownMethod"
            ) =>
        {
            ClientError::NoSuchAuthenticator(key.to_owned())
        }
        _ => error,
    }
}

/// Whether `name` is a DeviceId: `[A-Za-z0-9_]+`, as the service names keys.
fn is_device_id(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The object path of a key named by its DeviceId (`virtual_key0`) or by its full path
/// (`/org/passkeyd/authenticator/virtual_key0`).
pub fn authenticator_path(key: &str) -> Result<String, ClientError> {
    if let Some(id) = key.strip_prefix(AUTHENTICATOR_PATH_PREFIX)
        && is_device_id(id)
    {
        return Ok(key.to_owned());
    }
    if is_device_id(key) {
        return Ok(format!("{AUTHENTICATOR_PATH_PREFIX}{key}"));
    }
    Err(ClientError::InvalidName(key.to_owned()))
}

/// The object path of a ceremony named by its id (`7`) or its full path
/// (`/org/passkeyd/ceremony/7`).
pub fn ceremony_path(ceremony: &str) -> Result<String, ClientError> {
    let id = ceremony
        .strip_prefix(CEREMONY_PATH_PREFIX)
        .unwrap_or(ceremony);
    if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && id.parse::<u64>().is_ok() {
        Ok(format!("{CEREMONY_PATH_PREFIX}{id}"))
    } else {
        Err(ClientError::InvalidName(ceremony.to_owned()))
    }
}

/// States in `seq` order, each handed out once: signals and `GetState` replies may bring the
/// same state twice, or out of order relative to each other.
#[derive(Debug, Default)]
struct StateQueue {
    /// States received but not handed out yet, in `seq` order.
    pending: VecDeque<StateUpdate>,
    /// The highest `seq` handed out.
    last_seq: u32,
    /// Whether a final state has been handed out.
    ended: bool,
}

impl StateQueue {
    /// Queues `update` in `seq` order, unless it was handed out or queued already.
    fn push(&mut self, update: StateUpdate) {
        if update.seq <= self.last_seq || self.pending.iter().any(|u| u.seq == update.seq) {
            return;
        }
        let at = self
            .pending
            .iter()
            .position(|u| u.seq > update.seq)
            .unwrap_or(self.pending.len());
        self.pending.insert(at, update);
    }

    /// The next state to hand out; nothing after a final state.
    fn pop(&mut self) -> Option<StateUpdate> {
        if self.ended {
            return None;
        }
        while let Some(update) = self.pending.pop_front() {
            if update.seq > self.last_seq {
                self.last_seq = update.seq;
                self.ended = update.state.is_final();
                return Some(update);
            }
        }
        None
    }
}

/// The caller's side of one ceremony.
pub struct CeremonyHandle {
    path: String,
    proxy: Ceremony1Proxy<'static>,
    states: MessageStream,
    owner_watch: MessageStream,
    queue: StateQueue,
    /// Whether `GetState` has been merged in.
    synced: bool,
}

impl fmt::Debug for CeremonyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CeremonyHandle")
            .field("path", &self.path)
            .field("last_seq", &self.queue.last_seq)
            .field("ended", &self.queue.ended)
            .finish_non_exhaustive()
    }
}

impl CeremonyHandle {
    /// The ceremony's object path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The ceremony's id (the last component of its path).
    pub fn id(&self) -> Option<u64> {
        self.path
            .strip_prefix(CEREMONY_PATH_PREFIX)
            .and_then(|id| id.parse().ok())
    }

    /// The current state (`GetState`), without touching the order of
    /// [`Self::next_state`].
    pub async fn state(&self) -> Result<StateUpdate, ClientError> {
        let (seq, state, details) = self.proxy.get_state().await.map_err(err)?;
        StateUpdate::new(seq, &state, &details)
    }

    /// The next state not handed out before, in `seq` order; `None` after a final state
    /// (completed, failed, cancelled). Waits as long as the ceremony does: callers put their
    /// own deadline on it. [`ClientError::ServiceGone`] when the service leaves the bus.
    pub async fn next_state(&mut self) -> Result<Option<StateUpdate>, ClientError> {
        if self.queue.ended {
            return Ok(None);
        }
        if !self.synced {
            self.sync().await?;
        }
        loop {
            if let Some(update) = self.queue.pop() {
                return Ok(Some(update));
            }
            tokio::select! {
                message = self.states.next() => {
                    let message = message.ok_or(ClientError::ServiceGone)?.map_err(err)?;
                    if let Some(update) = self.parse(&message)? {
                        self.queue.push(update);
                    }
                }
                _ = self.owner_watch.next() => return Err(ClientError::ServiceGone),
            }
        }
    }

    /// Merges `GetState` with the signals that arrived before its reply (the bus keeps the
    /// order of messages from one sender, so all of them are queued by now).
    async fn sync(&mut self) -> Result<(), ClientError> {
        let current = self.state().await?;
        while let Some(Some(message)) = self.states.next().now_or_never() {
            if let Some(update) = self.parse(&message.map_err(err)?)? {
                self.queue.push(update);
            }
        }
        self.queue.push(current);
        self.synced = true;
        Ok(())
    }

    /// A `StateChanged` of this ceremony, or `None` for another ceremony's.
    fn parse(&self, message: &zbus::Message) -> Result<Option<StateUpdate>, ClientError> {
        let header = message.header();
        if header.path().map(|path| path.as_str()) != Some(self.path.as_str()) {
            return Ok(None);
        }
        let (seq, state, details): (u32, String, HashMap<String, OwnedValue>) =
            message.body().deserialize().map_err(err)?;
        StateUpdate::new(seq, &state, &details).map(Some)
    }

    /// Answers `needs-pin` with the key's PIN.
    pub async fn submit_pin(&self, pin: &str) -> Result<(), ClientError> {
        self.proxy.submit_pin(pin).await.map_err(err)
    }

    /// Answers `needs-new-pin` with the PIN to set on the key.
    pub async fn set_new_pin(&self, pin: &str) -> Result<(), ClientError> {
        self.proxy.set_new_pin(pin).await.map_err(err)
    }

    /// Cancels the ceremony (idempotent); it ends in `cancelled`.
    pub async fn cancel(&self) -> Result<(), ClientError> {
        self.proxy.cancel().await.map_err(err)
    }

    /// The result of a completed ceremony; the ceremony's own error when it failed or was
    /// cancelled; `org.passkeyd.Error.Busy` while it runs.
    pub async fn result(&self) -> Result<Registration, ClientError> {
        Registration::from_dict(&self.proxy.result().await.map_err(err)?)
    }

    /// Tells the service the owner is done: the object goes (cancelling a running ceremony).
    pub async fn release(&self) -> Result<(), ClientError> {
        self.proxy.release().await.map_err(err)
    }
}

// Conversions of D-Bus values, by hand so that a wrong type names the member it was in.

fn mismatch(value: &Value<'_>, expected: &str, what: impl Fn() -> String) -> ClientError {
    ClientError::UnexpectedReply(format!(
        "{} is {} instead of {expected}",
        what(),
        value.value_signature()
    ))
}

fn string(value: &Value<'_>, what: impl Fn() -> String) -> Result<String, ClientError> {
    match value {
        Value::Str(text) => Ok(text.as_str().to_owned()),
        Value::Value(inner) => string(inner, what),
        other => Err(mismatch(other, "s", what)),
    }
}

fn path_of(value: &Value<'_>, what: impl Fn() -> String) -> Result<String, ClientError> {
    match value {
        Value::ObjectPath(path) => Ok(path.as_str().to_owned()),
        Value::Value(inner) => path_of(inner, what),
        other => Err(mismatch(other, "o", what)),
    }
}

fn bool_of(value: &Value<'_>, what: impl Fn() -> String) -> Result<bool, ClientError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Value(inner) => bool_of(inner, what),
        other => Err(mismatch(other, "b", what)),
    }
}

fn u16_of(value: &Value<'_>, what: impl Fn() -> String) -> Result<u16, ClientError> {
    match value {
        Value::U16(n) => Ok(*n),
        Value::Value(inner) => u16_of(inner, what),
        other => Err(mismatch(other, "q", what)),
    }
}

fn u32_of(value: &Value<'_>, what: impl Fn() -> String) -> Result<u32, ClientError> {
    match value {
        Value::U32(n) => Ok(*n),
        Value::Value(inner) => u32_of(inner, what),
        other => Err(mismatch(other, "u", what)),
    }
}

fn i32_of(value: &Value<'_>, what: impl Fn() -> String) -> Result<i32, ClientError> {
    match value {
        Value::I32(n) => Ok(*n),
        Value::Value(inner) => i32_of(inner, what),
        other => Err(mismatch(other, "i", what)),
    }
}

fn strings(value: &Value<'_>, what: impl Fn() -> String) -> Result<Vec<String>, ClientError> {
    match value {
        Value::Array(items) => items.iter().map(|item| string(item, &what)).collect(),
        Value::Value(inner) => strings(inner, what),
        other => Err(mismatch(other, "as", what)),
    }
}

fn paths(value: &Value<'_>, what: impl Fn() -> String) -> Result<Vec<String>, ClientError> {
    match value {
        Value::Array(items) => items.iter().map(|item| path_of(item, &what)).collect(),
        Value::Value(inner) => paths(inner, what),
        other => Err(mismatch(other, "ao", what)),
    }
}

fn bytes(value: &Value<'_>, what: impl Fn() -> String) -> Result<Vec<u8>, ClientError> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::U8(b) => Ok(*b),
                other => Err(mismatch(other, "y", &what)),
            })
            .collect(),
        Value::Value(inner) => bytes(inner, what),
        other => Err(mismatch(other, "ay", what)),
    }
}

fn bool_map(
    value: &Value<'_>,
    what: impl Fn() -> String,
) -> Result<BTreeMap<String, bool>, ClientError> {
    match value {
        Value::Dict(dict) => dict
            .iter()
            .map(|(key, value)| Ok((string(key, &what)?, bool_of(value, &what)?)))
            .collect(),
        Value::Value(inner) => bool_map(inner, what),
        other => Err(mismatch(other, "a{sb}", what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(value: Value<'_>) -> OwnedValue {
        value.try_to_owned().unwrap()
    }

    fn dict(entries: Vec<(&str, Value<'_>)>) -> HashMap<String, OwnedValue> {
        entries
            .into_iter()
            .map(|(name, value)| (name.to_owned(), owned(value)))
            .collect()
    }

    fn path(text: &str) -> Value<'static> {
        Value::from(ObjectPath::try_from(text.to_owned()).unwrap())
    }

    fn update(seq: u32, state: State) -> StateUpdate {
        StateUpdate {
            seq,
            state,
            details: StateDetails::default(),
        }
    }

    #[test]
    fn keys_are_named_by_device_id_or_path() {
        assert_eq!(
            authenticator_path("virtual_key0").unwrap(),
            "/org/passkeyd/authenticator/virtual_key0"
        );
        assert_eq!(
            authenticator_path("/org/passkeyd/authenticator/usb_1_2").unwrap(),
            "/org/passkeyd/authenticator/usb_1_2"
        );
        for bad in [
            "",
            "key-0",
            "/org/passkeyd/authenticator/",
            "/org/passkeyd/authenticator/a/b",
            "/org/passkeyd/ceremony/1",
            "../x",
        ] {
            assert!(
                matches!(authenticator_path(bad), Err(ClientError::InvalidName(name)) if name == bad),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ceremonies_are_named_by_id_or_path() {
        assert_eq!(ceremony_path("7").unwrap(), "/org/passkeyd/ceremony/7");
        assert_eq!(
            ceremony_path("/org/passkeyd/ceremony/18446744073709551615").unwrap(),
            "/org/passkeyd/ceremony/18446744073709551615"
        );
        for bad in [
            "",
            "-1",
            "x",
            "18446744073709551616",
            "/org/passkeyd/ceremony/",
        ] {
            assert!(ceremony_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_names_map_to_kinds() {
        for kind in ErrorKind::ALL {
            assert_eq!(error_kind(kind.dbus_name()), Some(kind));
        }
        assert_eq!(error_kind("org.passkeyd.Error.Nope"), None);
        assert_eq!(
            error_kind("org.freedesktop.DBus.Error.ServiceUnknown"),
            None
        );
        let error = ClientError::Service(ServiceError::new(
            "org.passkeyd.Error.PinInvalid",
            "wrong PIN; Some(7) retries left",
        ));
        assert_eq!(error.dbus_name(), "org.passkeyd.Error.PinInvalid");
        assert_eq!(error.kind(), Some(ErrorKind::PinInvalid));
        assert_eq!(error.message(), "wrong PIN; Some(7) retries left");
        assert!(!error.is_service_absent());
        let absent = ClientError::Service(ServiceError::new(
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "The name is not activatable",
        ));
        assert!(absent.is_service_absent());
        assert_eq!(
            ClientError::NoSuchAuthenticator("usb_x".into()).dbus_name(),
            "org.passkeyd.Error.NoAuthenticator"
        );
    }

    #[test]
    fn method_errors_keep_name_and_message() {
        let error = err(zbus::fdo::Error::AccessDenied("no".into()));
        assert_eq!(error.dbus_name(), "org.freedesktop.DBus.Error.AccessDenied");
        assert_eq!(error.message(), "no");
        let error = err(zbus::Error::FDO(Box::new(zbus::fdo::Error::UnknownObject(
            "gone".into(),
        ))));
        assert_eq!(
            error.dbus_name(),
            "org.freedesktop.DBus.Error.UnknownObject"
        );
        assert!(matches!(
            no_such_object(error, "virtual_key9"),
            ClientError::NoSuchAuthenticator(key) if key == "virtual_key9"
        ));
        let error = err(zbus::Error::InputOutput(std::sync::Arc::new(
            std::io::Error::from(std::io::ErrorKind::BrokenPipe),
        )));
        assert!(matches!(error, ClientError::Bus(_)));
        assert!(error.is_service_absent());
    }

    #[test]
    fn authenticator_properties_convert() {
        let options: HashMap<&str, bool> = [("clientPin", true), ("rk", false)].into();
        let properties = dict(vec![
            ("Transport", Value::from("virtual")),
            ("VendorId", Value::from(0x20a0_u16)),
            ("ProductId", Value::from(0x42b2_u16)),
            ("Product", Value::from("Nitrokey 3")),
            ("Manufacturer", Value::from("Nitrokey")),
            ("Versions", Value::from(vec!["FIDO_2_0", "FIDO_2_1"])),
            (
                "Aaguid",
                Value::from("ec99db19-cd1f-4c06-a2a9-940f17a6a30b"),
            ),
            ("Options", Value::from(options)),
            ("PinSet", Value::from(true)),
            ("MinPinLength", Value::from(6_u32)),
            ("Busy", Value::from(false)),
            ("FutureProperty", Value::from(1_u8)),
        ]);
        let info = AuthenticatorInfo::from_properties(
            "/org/passkeyd/authenticator/virtual_key0",
            &properties,
        )
        .unwrap();
        assert_eq!(info.id, "virtual_key0");
        assert_eq!(info.transport, "virtual");
        assert_eq!((info.vendor_id, info.product_id), (0x20a0, 0x42b2));
        assert_eq!(info.product, "Nitrokey 3");
        assert_eq!(info.manufacturer, "Nitrokey");
        assert_eq!(info.versions, ["FIDO_2_0", "FIDO_2_1"]);
        assert_eq!(info.aaguid, "ec99db19-cd1f-4c06-a2a9-940f17a6a30b");
        assert_eq!(
            info.options,
            BTreeMap::from([("clientPin".to_owned(), true), ("rk".to_owned(), false)])
        );
        assert!(info.pin_set);
        assert_eq!(info.min_pin_length, 6);
        assert!(!info.busy);

        // A wrong type names the property.
        let bad = dict(vec![("VendorId", Value::from(1_u32))]);
        let error = AuthenticatorInfo::from_properties("/x", &bad).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unexpected reply from passkeyd: Authenticator1.VendorId is u instead of q"
        );
    }

    #[test]
    fn state_details_convert() {
        let update = StateUpdate::new(
            3,
            "needs-pin",
            &dict(vec![
                (
                    "authenticator",
                    path("/org/passkeyd/authenticator/virtual_key0"),
                ),
                ("reason", Value::from("wrong-pin")),
                ("retries", Value::from(7_i32)),
            ]),
        )
        .unwrap();
        assert_eq!(update.seq, 3);
        assert_eq!(update.state, State::NeedsPin);
        assert_eq!(
            update.details.authenticator.as_deref(),
            Some("/org/passkeyd/authenticator/virtual_key0")
        );
        assert_eq!(update.details.reason.as_deref(), Some("wrong-pin"));
        assert_eq!(update.details.retries, Some(7));

        let unknown_retries = StateUpdate::new(
            2,
            "needs-pin",
            &dict(vec![("retries", Value::from(-1_i32))]),
        )
        .unwrap();
        assert_eq!(unknown_retries.details.retries, None);

        let selecting = StateUpdate::new(
            1,
            "selecting",
            &dict(vec![(
                "authenticators",
                Value::from(vec![
                    ObjectPath::try_from("/org/passkeyd/authenticator/a").unwrap(),
                    ObjectPath::try_from("/org/passkeyd/authenticator/b").unwrap(),
                ]),
            )]),
        )
        .unwrap();
        assert_eq!(
            selecting.details.authenticators,
            [
                "/org/passkeyd/authenticator/a",
                "/org/passkeyd/authenticator/b"
            ]
        );

        let failed = StateUpdate::new(
            5,
            "failed",
            &dict(vec![
                ("error", Value::from("org.passkeyd.Error.PinBlocked")),
                (
                    "message",
                    Value::from("the PIN is blocked; the key must be reset"),
                ),
            ]),
        )
        .unwrap();
        let error = failed.details.error.unwrap();
        assert_eq!(error.kind(), Some(ErrorKind::PinBlocked));
        assert_eq!(error.message(), "the PIN is blocked; the key must be reset");

        let completed = StateUpdate::new(
            6,
            "completed",
            &dict(vec![("credential_id", Value::from(vec![1_u8, 2, 0xff]))]),
        )
        .unwrap();
        assert_eq!(completed.details.credential_id, Some(vec![1, 2, 0xff]));

        assert!(matches!(
            StateUpdate::new(1, "dancing", &HashMap::new()),
            Err(ClientError::UnexpectedReply(_))
        ));
        assert!(matches!(
            StateUpdate::new(1, "needs-pin", &dict(vec![("retries", Value::from("7"))])),
            Err(ClientError::UnexpectedReply(text)) if text == "details.retries is s instead of i"
        ));
    }

    #[test]
    fn every_state_name_parses() {
        for name in [
            "selecting",
            "needs-pin",
            "needs-new-pin",
            "needs-touch",
            "registering",
            "completed",
            "failed",
            "cancelled",
        ] {
            assert_eq!(parse_state(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn results_convert_and_need_a_token() {
        let result = Registration::from_dict(&dict(vec![
            ("token", Value::from("eyJhbGciOiJFUzI1NiJ9.e30.sig")),
            ("user_id", Value::from("u-1")),
            ("passkey_id", Value::from("p-1")),
            ("credential_id", Value::from(vec![9_u8, 8, 7])),
            (
                "authenticator",
                path("/org/passkeyd/authenticator/virtual_key0"),
            ),
            ("attestation_format", Value::from("packed")),
        ]))
        .unwrap();
        assert_eq!(result.token.expose(), "eyJhbGciOiJFUzI1NiJ9.e30.sig");
        assert_eq!(result.user_id.as_deref(), Some("u-1"));
        assert_eq!(result.passkey_id.as_deref(), Some("p-1"));
        assert_eq!(result.credential_id, Some(vec![9, 8, 7]));
        assert_eq!(
            result.authenticator.as_deref(),
            Some("/org/passkeyd/authenticator/virtual_key0")
        );
        assert_eq!(result.attestation_format.as_deref(), Some("packed"));
        // The token never shows in Debug output.
        assert!(!format!("{result:?}").contains("eyJ"));

        assert!(matches!(
            Registration::from_dict(&dict(vec![("user_id", Value::from("u-1"))])),
            Err(ClientError::UnexpectedReply(_))
        ));
    }

    #[test]
    fn claims_convert() {
        let claims = dict(vec![
            ("sub", Value::from("u-1")),
            ("aud", Value::from(vec!["app"])),
            ("iat", Value::from(1_700_000_000_i64)),
            ("big", Value::from(u64::MAX)),
            ("flag", Value::from(true)),
        ]);
        let converted: BTreeMap<String, Claim> = claims
            .iter()
            .map(|(name, value)| (name.clone(), claim(value, || name.clone()).unwrap()))
            .collect();
        assert_eq!(converted["sub"], Claim::Text("u-1".into()));
        assert_eq!(converted["aud"], Claim::List(vec!["app".into()]));
        assert_eq!(converted["iat"], Claim::Int(1_700_000_000));
        assert_eq!(converted["big"], Claim::UInt(u64::MAX));
        assert_eq!(converted["flag"], Claim::Bool(true));
        assert_eq!(
            serde_json::to_string(&converted).unwrap(),
            r#"{"aud":["app"],"big":18446744073709551615,"flag":true,"iat":1700000000,"sub":"u-1"}"#
        );
        assert!(claim(&Value::from(1.5_f64), || "x".into()).is_err());
    }

    #[test]
    fn request_options_carry_only_what_is_set() {
        let mut request = PasskeyRequest::new("alice", Token::new("t"));
        assert!(request.options().unwrap().is_empty());
        request.display_name = Some("Alice".into());
        request.authenticator = Some("/org/passkeyd/authenticator/virtual_key0".into());
        request.timeout = Some(Duration::from_secs(30));
        request.pin = Some(Zeroizing::new("1234".into()));
        let options = request.options().unwrap();
        assert_eq!(options.len(), 4);
        assert_eq!(options["display_name"], Value::from("Alice"));
        assert_eq!(
            options["authenticator"],
            path("/org/passkeyd/authenticator/virtual_key0")
        );
        assert_eq!(options["timeout_ms"], Value::from(30_000_u32));
        assert_eq!(options["pin"], Value::from("1234"));
        // A timeout beyond u32 milliseconds saturates instead of wrapping.
        request.timeout = Some(Duration::from_secs(u64::from(u32::MAX)));
        assert_eq!(
            request.options().unwrap()["timeout_ms"],
            Value::from(u32::MAX)
        );
        request.authenticator = Some("not a path".into());
        assert!(matches!(
            request.options(),
            Err(ClientError::InvalidName(_))
        ));
    }

    #[test]
    fn states_come_out_once_in_order() {
        let mut queue = StateQueue::default();
        // GetState (seq 3) merged with signals 1..=3, one of them twice, out of order.
        queue.push(update(3, State::NeedsPin));
        queue.push(update(1, State::Selecting));
        queue.push(update(2, State::NeedsTouch));
        queue.push(update(1, State::Selecting));
        let seqs: Vec<u32> = std::iter::from_fn(|| queue.pop()).map(|u| u.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        // Late duplicates are dropped.
        queue.push(update(2, State::NeedsTouch));
        queue.push(update(3, State::NeedsPin));
        assert!(queue.pop().is_none());
        queue.push(update(5, State::Completed));
        queue.push(update(4, State::Registering));
        assert_eq!(queue.pop().unwrap().state, State::Registering);
        assert_eq!(queue.pop().unwrap().state, State::Completed);
        // Nothing after a final state.
        queue.push(update(6, State::Failed));
        assert!(queue.pop().is_none());
    }
}
