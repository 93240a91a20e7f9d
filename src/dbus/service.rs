//! Setting up the service on a bus, and taking it down.

use std::collections::HashMap;

use futures_util::StreamExt as _;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use zbus::fdo::{DBusProxy, ObjectManager, RequestNameFlags};
use zbus::names::WellKnownName;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, Value};

use super::access::Gate;
use super::authenticator::{Follower, emit_changed};
use super::hub::{HubHandle, SHUTDOWN_GRACE};
use super::manager::{self, Manager};
use super::{Bus, DbusError, MANAGER_PATH, ServiceConfig};
use crate::ceremony::Ceremonies;
use crate::device::RegistryHandle;

/// The running service. Call [`Service::shutdown`] to take it down; dropping it stops
/// watching the bus and the registry but leaves the objects exported.
#[derive(Debug)]
pub struct Service {
    bus: Bus,
    name: String,
    hub: HubHandle,
    follower_stop: oneshot::Sender<()>,
    follower: JoinHandle<()>,
    watcher: JoinHandle<()>,
    notifier: JoinHandle<()>,
}

/// Exports the objects, follows the registry (Authenticator1 objects come and go), then
/// requests the name (`DoNotQueue`; taken -> [`DbusError::NameTaken`]).
pub async fn serve(
    bus: &Bus,
    ceremonies: Ceremonies,
    registry: RegistryHandle,
    config: ServiceConfig,
) -> Result<Service, DbusError> {
    let name = WellKnownName::try_from(config.bus_name.as_str())
        .map_err(|_| DbusError::BadName(config.bus_name.clone()))?
        .into_owned();
    let connection = bus.connection().clone();
    let dbus = DBusProxy::new(&connection)
        .await
        .map_err(|e| DbusError::Export(e.into()))?;
    // Watch owners leaving before any ceremony can exist.
    let mut owner_changes = dbus
        .receive_name_owner_changed()
        .await
        .map_err(|e| DbusError::Export(e.into()))?;

    let (ceremony_paths_tx, ceremony_paths) = watch::channel(Vec::new());
    let (authenticators_tx, authenticators) = watch::channel(Vec::new());
    let hub = HubHandle::spawn(
        connection.clone(),
        ceremonies.clone(),
        config.limits.clone(),
        ceremony_paths_tx,
    );
    let gate = Gate::new(
        connection.clone(),
        dbus.clone(),
        hub.clone(),
        config.access.clone(),
    );

    let watcher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Some(signal) = owner_changes.next().await {
                let Ok(args) = signal.args() else { continue };
                let name = args.name();
                if name.starts_with(':') && args.new_owner().is_none() {
                    hub.owner_gone(name.to_string()).await;
                }
            }
        })
    };

    let server = connection.object_server();
    let exported = async {
        server.at(MANAGER_PATH, ObjectManager).await?;
        server
            .at(
                MANAGER_PATH,
                Manager {
                    gate: gate.clone(),
                    hub: hub.clone(),
                    dbus: dbus.clone(),
                    ceremonies,
                    authenticators,
                    ceremony_paths: ceremony_paths.clone(),
                },
            )
            .await
    };
    if let Err(error) = exported.await {
        watcher.abort();
        return Err(DbusError::Export(error.into()));
    }
    let Some((follower, subscription)) =
        Follower::start(connection.clone(), registry, gate, authenticators_tx).await
    else {
        watcher.abort();
        remove_root(&connection).await;
        return Err(DbusError::RegistryGone);
    };
    let (follower_stop, stop) = oneshot::channel();
    let follower = tokio::spawn(follower.run(subscription.events, stop));
    let notifier = tokio::spawn(notify_ceremonies(connection.clone(), ceremony_paths));

    let requested = connection
        .request_name_with_flags(name.clone(), RequestNameFlags::DoNotQueue.into())
        .await;
    let service = Service {
        bus: bus.clone(),
        name: config.bus_name.clone(),
        hub,
        follower_stop,
        follower,
        watcher,
        notifier,
    };
    match requested {
        Ok(_) => {
            info!(name = %name, "serving on the bus");
            Ok(service)
        }
        Err(error) => {
            service.shutdown().await;
            match error {
                zbus::Error::NameTaken => Err(DbusError::NameTaken(config.bus_name)),
                error => Err(DbusError::RequestName(error.into())),
            }
        }
    }
}

/// Emits `Manager1.Ceremonies` changes.
async fn notify_ceremonies(
    connection: zbus::Connection,
    mut paths: watch::Receiver<Vec<OwnedObjectPath>>,
) {
    let root = OwnedObjectPath::from(ObjectPath::from_static_str_unchecked(MANAGER_PATH));
    while paths.changed().await.is_ok() {
        let current = paths.borrow_and_update().clone();
        let changes = HashMap::from([("Ceremonies", Value::from(current))]);
        emit_changed(&connection, &root, manager::INTERFACE, changes).await;
    }
}

async fn remove_root(connection: &zbus::Connection) {
    let server = connection.object_server();
    let _ = server.remove::<Manager, _>(MANAGER_PATH).await;
    let _ = server.remove::<ObjectManager, _>(MANAGER_PATH).await;
}

impl Service {
    /// Cancels every ceremony, waits (at most 5 s) until they have ended (their keys got
    /// CANCEL), removes the objects and releases the name.
    pub async fn shutdown(self) {
        let Self {
            bus,
            name,
            hub,
            follower_stop,
            follower,
            watcher,
            notifier,
        } = self;
        let tasks = hub.shutdown().await;
        let count = tasks.len();
        let all = async {
            for task in tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, all).await.is_err() {
            warn!(count, "ceremonies did not end in time");
        }
        watcher.abort();
        let _ = follower_stop.send(());
        if let Err(error) = follower.await {
            debug!(%error, "the registry follower ended badly");
        }
        notifier.abort();
        let connection = bus.connection();
        remove_root(connection).await;
        if let Ok(name) = WellKnownName::try_from(name.as_str()) {
            let _ = connection.release_name(name).await;
        }
        info!("left the bus");
    }

    /// How many ceremonies are live (running or lingering).
    pub async fn ceremony_count(&self) -> usize {
        self.hub.count().await
    }
}
