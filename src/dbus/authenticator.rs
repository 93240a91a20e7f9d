//! `org.passkeyd.Authenticator1` objects, one per key, following the device registry: the
//! follower task owns the objects' property values and exports, updates and removes them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{oneshot, watch};
use tracing::debug;
use zbus::fdo::Properties;
use zbus::interface;
use zbus::message::Header;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, Value};

use super::access::Gate;
use super::error::Error;
use super::{MANAGER_PATH, authenticator_path};
use crate::ceremony::ErrorKind;
use crate::device::{Authenticator, DeviceInfo, RegistryEvent, RegistryHandle, Subscription};
use crate::transport::DeviceId;

/// The interface's name.
pub(super) const INTERFACE: &str = "org.passkeyd.Authenticator1";

/// What the properties show.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Props {
    transport: &'static str,
    vendor_id: u16,
    product_id: u16,
    product: String,
    manufacturer: String,
    versions: Vec<String>,
    aaguid: String,
    options: BTreeMap<String, bool>,
    pin_set: bool,
    min_pin_length: u32,
    busy: bool,
}

impl Props {
    fn new(device: &DeviceInfo) -> Self {
        let description = &device.description;
        let info = device.info.as_deref();
        let options: BTreeMap<String, bool> = info
            .and_then(|info| info.options.as_ref())
            .map(|options| options.iter().map(|(k, v)| (sanitize(k), v)).collect())
            .unwrap_or_default();
        Self {
            transport: device.transport().as_str(),
            vendor_id: description.vendor_id.unwrap_or(0),
            product_id: description.product_id.unwrap_or(0),
            product: description
                .product
                .as_deref()
                .map(sanitize)
                .unwrap_or_default(),
            manufacturer: description
                .manufacturer
                .as_deref()
                .map(sanitize)
                .unwrap_or_default(),
            versions: info
                .map(|info| info.versions.iter().map(|v| sanitize(v.as_str())).collect())
                .unwrap_or_default(),
            aaguid: info
                .map(|info| uuid::Uuid::from_bytes(info.aaguid).to_string())
                .unwrap_or_default(),
            pin_set: options.get("clientPin").copied().unwrap_or(false),
            min_pin_length: info.and_then(|info| info.min_pin_length).unwrap_or(4),
            options,
            busy: device.busy,
        }
    }

    /// The properties that differ from `old`, by name.
    fn changes(&self, old: &Self) -> HashMap<&'static str, Value<'static>> {
        let mut changed = HashMap::new();
        if self.versions != old.versions {
            changed.insert("Versions", Value::from(self.versions.clone()));
        }
        if self.aaguid != old.aaguid {
            changed.insert("Aaguid", Value::from(self.aaguid.clone()));
        }
        if self.options != old.options {
            changed.insert("Options", Value::from(self.options_map()));
        }
        if self.pin_set != old.pin_set {
            changed.insert("PinSet", Value::from(self.pin_set));
        }
        if self.min_pin_length != old.min_pin_length {
            changed.insert("MinPinLength", Value::from(self.min_pin_length));
        }
        if self.busy != old.busy {
            changed.insert("Busy", Value::from(self.busy));
        }
        changed
    }

    fn options_map(&self) -> HashMap<String, bool> {
        self.options.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// Text from a key, without control characters and bounded.
fn sanitize(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(256).collect()
}

/// The exported object: immutable fields and a view of the follower's values.
pub(super) struct AuthenticatorObject {
    gate: Gate,
    authenticator: Authenticator,
    props: watch::Receiver<Props>,
}

#[interface(name = "org.passkeyd.Authenticator1")]
impl AuthenticatorObject {
    /// Makes the key blink (CTAPHID_WINK).
    async fn wink(&self, #[zbus(header)] header: Header<'_>) -> Result<(), Error> {
        self.gate.check(&header).await?;
        self.authenticator
            .wink()
            .await
            .map_err(|error| Error::from_device(&error))
    }

    /// PIN attempts left before the key blocks its PIN.
    #[zbus(out_args("retries"))]
    async fn pin_retries(&self, #[zbus(header)] header: Header<'_>) -> Result<u32, Error> {
        self.gate.check(&header).await?;
        let pin_support = self
            .authenticator
            .info()
            .is_some_and(|info| info.client_pin().is_present());
        if !pin_support {
            return Err(Error::new(
                ErrorKind::NotSupported,
                "the key has no PIN support",
            ));
        }
        self.authenticator
            .pin_retries()
            .await
            .map(|retries| retries.pin_retries)
            .map_err(|error| Error::from_device(&error))
    }

    /// `usb`, `nfc` or `virtual`.
    #[zbus(property)]
    fn transport(&self) -> String {
        self.props.borrow().transport.to_owned()
    }

    /// USB vendor id; 0 when unknown.
    #[zbus(property)]
    fn vendor_id(&self) -> u16 {
        self.props.borrow().vendor_id
    }

    /// USB product id; 0 when unknown.
    #[zbus(property)]
    fn product_id(&self) -> u16 {
        self.props.borrow().product_id
    }

    /// Product name; empty when unknown.
    #[zbus(property)]
    fn product(&self) -> String {
        self.props.borrow().product.clone()
    }

    /// Manufacturer name; empty when unknown.
    #[zbus(property)]
    fn manufacturer(&self) -> String {
        self.props.borrow().manufacturer.clone()
    }

    /// getInfo versions.
    #[zbus(property)]
    fn versions(&self) -> Vec<String> {
        self.props.borrow().versions.clone()
    }

    /// getInfo AAGUID as UUID text; empty without getInfo.
    #[zbus(property)]
    fn aaguid(&self) -> String {
        self.props.borrow().aaguid.clone()
    }

    /// getInfo options.
    #[zbus(property)]
    fn options(&self) -> HashMap<String, bool> {
        self.props.borrow().options_map()
    }

    /// Whether the key has a PIN (options.clientPin).
    #[zbus(property)]
    fn pin_set(&self) -> bool {
        self.props.borrow().pin_set
    }

    /// getInfo minPINLength; 4 when absent.
    #[zbus(property)]
    fn min_pin_length(&self) -> u32 {
        self.props.borrow().min_pin_length
    }

    /// Whether a request is in flight on the key.
    #[zbus(property)]
    fn busy(&self) -> bool {
        self.props.borrow().busy
    }
}

/// Follows the registry: exports the keys present, then adds, updates and removes objects
/// until `stop` fires; then removes them all.
pub(super) struct Follower {
    connection: zbus::Connection,
    registry: RegistryHandle,
    gate: Gate,
    paths: watch::Sender<Vec<OwnedObjectPath>>,
    objects: BTreeMap<DeviceId, watch::Sender<Props>>,
}

impl Follower {
    /// Subscribes and exports the keys present; `None` if the registry has ended.
    pub(super) async fn start(
        connection: zbus::Connection,
        registry: RegistryHandle,
        gate: Gate,
        paths: watch::Sender<Vec<OwnedObjectPath>>,
    ) -> Option<(Self, Subscription)> {
        let subscription = registry.subscribe().await?;
        let mut follower = Self {
            connection,
            registry,
            gate,
            paths,
            objects: BTreeMap::new(),
        };
        for device in &subscription.devices {
            follower.added(device).await;
        }
        follower.publish(false).await;
        Some((follower, subscription))
    }

    pub(super) async fn run(
        mut self,
        mut events: tokio::sync::broadcast::Receiver<RegistryEvent>,
        mut stop: oneshot::Receiver<()>,
    ) {
        loop {
            tokio::select! {
                _ = &mut stop => break,
                event = events.recv() => match event {
                    Ok(RegistryEvent::Added(device)) => {
                        self.added(&device).await;
                        self.publish(true).await;
                    }
                    Ok(RegistryEvent::Changed(device)) => self.changed(&device).await,
                    Ok(RegistryEvent::Removed(id)) => {
                        self.removed(&id).await;
                        self.publish(true).await;
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => self.reconcile().await,
                    Err(RecvError::Closed) => break,
                },
            }
        }
        let ids: Vec<DeviceId> = self.objects.keys().cloned().collect();
        for id in ids {
            self.removed(&id).await;
        }
        self.publish(false).await;
    }

    async fn added(&mut self, device: &DeviceInfo) {
        if self.objects.contains_key(device.id()) {
            // The same id again (a new generation): the old object goes first.
            self.removed(device.id()).await;
        }
        let (tx, props) = watch::channel(Props::new(device));
        let object = AuthenticatorObject {
            gate: self.gate.clone(),
            authenticator: device.authenticator.clone(),
            props,
        };
        let path = authenticator_path(device.id());
        match self.connection.object_server().at(&path, object).await {
            Ok(_) => {
                self.objects.insert(device.id().clone(), tx);
            }
            Err(error) => debug!(device = %device.id(), %error, "cannot export the key"),
        }
    }

    async fn changed(&mut self, device: &DeviceInfo) {
        let Some(tx) = self.objects.get(device.id()) else {
            self.added(device).await;
            self.publish(true).await;
            return;
        };
        let new = Props::new(device);
        let changes = new.changes(&tx.borrow());
        if changes.is_empty() {
            return;
        }
        tx.send_replace(new);
        let path = authenticator_path(device.id());
        emit_changed(&self.connection, &path, INTERFACE, changes).await;
    }

    async fn removed(&mut self, id: &DeviceId) {
        if self.objects.remove(id).is_some() {
            let path = authenticator_path(id);
            let server = self.connection.object_server();
            if let Err(error) = server.remove::<AuthenticatorObject, _>(&path).await {
                debug!(device = %id, %error, "key object already gone");
            }
        }
    }

    /// Events were lost: the registry's list is the truth.
    async fn reconcile(&mut self) {
        let devices = self.registry.list().await;
        let present: Vec<DeviceId> = devices.iter().map(|d| d.id().clone()).collect();
        let gone: Vec<DeviceId> = self
            .objects
            .keys()
            .filter(|id| !present.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.removed(&id).await;
        }
        for device in &devices {
            if self.objects.contains_key(device.id()) {
                self.changed(device).await;
            } else {
                self.added(device).await;
            }
        }
        self.publish(true).await;
    }

    /// Updates `Manager1.Authenticators`, with PropertiesChanged when `signal`.
    async fn publish(&self, signal: bool) {
        let paths: Vec<OwnedObjectPath> = self.objects.keys().map(authenticator_path).collect();
        let modified = self.paths.send_if_modified(|current| {
            if *current == paths {
                false
            } else {
                *current = paths.clone();
                true
            }
        });
        if modified && signal {
            let changes = HashMap::from([("Authenticators", Value::from(paths))]);
            emit_changed(
                &self.connection,
                &OwnedObjectPath::from(zbus::zvariant::ObjectPath::from_static_str_unchecked(
                    MANAGER_PATH,
                )),
                super::manager::INTERFACE,
                changes,
            )
            .await;
        }
    }
}

/// Emits `org.freedesktop.DBus.Properties.PropertiesChanged` for `interface` at `path`.
pub(super) async fn emit_changed(
    connection: &zbus::Connection,
    path: &OwnedObjectPath,
    interface: &'static str,
    changes: HashMap<&'static str, Value<'static>>,
) {
    let Ok(emitter) = SignalEmitter::new(connection, path.as_ref()) else {
        return;
    };
    let changes: HashMap<&str, Value<'_>> = changes.into_iter().collect();
    let interface = InterfaceName::from_static_str_unchecked(interface);
    if let Err(error) =
        Properties::properties_changed(&emitter, interface, changes, Cow::Borrowed(&[])).await
    {
        debug!(%error, "cannot signal a property change");
    }
}
