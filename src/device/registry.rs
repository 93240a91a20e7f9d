//! The registry: the one owner of the device map.
//!
//! A task that consumes [`TransportEvent`]s, spawns a device actor per key, keeps a
//! [`DeviceInfo`] per key up to date from what the actors report, and publishes
//! [`RegistryEvent`]s. Everything reaches it through channels; [`RegistryHandle`] is the way
//! to ask it questions.
//!
//! A key is announced ([`RegistryEvent::Added`]) only once its actor has probed it, so every
//! announced key already has its getInfo (when it has one). A key removed before its probe
//! ends is never announced.
//!
//! With [`DeviceConfig::record_dir`] set, every key added is recorded from its first exchange
//! (see [`record`](super::record)): its link is tapped and its host randomness noted, into
//! `DIR/<device id>-<unix time>.jsonl`, a file only the daemon's user may read.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ctap::command::get_info;
use ctap::ctaphid::{Capabilities, DeviceVersion};
use ctap::iso7816::AppletVersion;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::DeviceConfig;
use super::actor::{ActorStatus, DeviceActor, Engine, MAILBOX};
use super::authenticator::Authenticator;
use super::record::{Recorder, Writer};
use super::rng::{DeviceRng, HostRandomness};
use crate::transport::{Connection, DeviceDescription, DeviceId, Transport, TransportEvent};

/// How many registry events a slow subscriber may fall behind before it misses some (it then
/// gets [`broadcast::error::RecvError::Lagged`] and should call [`RegistryHandle::list`]).
const EVENT_CAPACITY: usize = 64;

/// How many actor reports may wait for the registry.
const STATUS_CAPACITY: usize = 64;

/// How many queries may wait for the registry.
const QUERY_CAPACITY: usize = 16;

/// What the first exchanges with a key told about its link.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LinkInfo {
    /// From the CTAPHID_INIT answer (CTAP 2.2 §11.2.9.1.3).
    Hid {
        /// CTAPHID protocol version (2).
        protocol_version: u8,
        /// The device's version numbers.
        device_version: DeviceVersion,
        /// CBOR, WINK, NMSG.
        capabilities: Capabilities,
    },
    /// From the answer to the SELECT of the FIDO applet (CTAP 2.2 §11.3.3).
    Apdu {
        /// `U2F_V2`, `FIDO_2_0`...
        applet: AppletVersion,
    },
}

impl LinkInfo {
    /// Whether the link can carry CTAP2 at all: the CBOR capability over HID; over NFC only
    /// getInfo can tell (a `U2F_V2` applet may speak CTAP2 too).
    pub(super) fn ctap2_capable(&self) -> bool {
        match self {
            Self::Hid { capabilities, .. } => capabilities.cbor(),
            Self::Apdu { .. } => true,
        }
    }
}

/// What the registry knows about a key.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    /// What the transport told.
    pub description: DeviceDescription,
    /// The authenticatorGetInfo answer, read once when the key appeared (and again after a PIN
    /// change); `None` for U2F-only keys and keys that did not answer it.
    pub info: Option<Arc<get_info::Response>>,
    /// Link details; `None` when the key did not answer CTAPHID_INIT.
    pub link: Option<LinkInfo>,
    /// Whether a request is in flight.
    pub busy: bool,
    /// The handle to use the key.
    pub authenticator: Authenticator,
}

impl DeviceInfo {
    /// The key's stable id.
    pub fn id(&self) -> &DeviceId {
        &self.description.id
    }

    /// The key's transport.
    pub fn transport(&self) -> Transport {
        self.description.transport
    }
}

/// A change in the set of keys, or in one key.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum RegistryEvent {
    /// A key appeared and has been probed.
    Added(DeviceInfo),
    /// A key is gone.
    Removed(DeviceId),
    /// A key's busy flag or getInfo changed.
    Changed(DeviceInfo),
    /// A transport has reported every device present at its start.
    EnumerationComplete(Transport),
    /// A transport cannot work for now; it keeps trying.
    TransportUnavailable {
        /// Which one.
        transport: Transport,
        /// Why, for logs.
        reason: String,
    },
}

/// A consistent view: the keys present, and every event after that moment.
#[derive(Debug)]
pub struct Subscription {
    /// The keys present when the subscription was made.
    pub devices: Vec<DeviceInfo>,
    /// Every event since.
    pub events: broadcast::Receiver<RegistryEvent>,
}

enum Query {
    Add {
        description: DeviceDescription,
        connection: Connection,
        randomness: HostRandomness,
    },
    List(oneshot::Sender<Vec<DeviceInfo>>),
    Get(DeviceId, oneshot::Sender<Option<Authenticator>>),
    Subscribe(oneshot::Sender<Subscription>),
}

/// Asks the registry questions. Cheap to clone; the registry ends, and with it every device
/// actor, when the last handle is dropped.
#[derive(Clone, Debug)]
pub struct RegistryHandle {
    queries: mpsc::Sender<Query>,
}

impl RegistryHandle {
    /// The keys present (probed), ordered by id. Empty if the registry has ended.
    pub async fn list(&self) -> Vec<DeviceInfo> {
        self.ask(Query::List).await.unwrap_or_default()
    }

    /// The handle of the key with this id, if present.
    pub async fn get(&self, id: &DeviceId) -> Option<Authenticator> {
        let id = id.clone();
        self.ask(|reply| Query::Get(id, reply)).await.flatten()
    }

    /// The keys present and a receiver of every later event, with nothing lost in between.
    /// `None` if the registry has ended.
    pub async fn subscribe(&self) -> Option<Subscription> {
        self.ask(Query::Subscribe).await
    }

    /// Adds a key that no transport reports, drawing its host randomness from `randomness`:
    /// a [`Replay`](super::record::Replay)'s connection with its recorded randomness
    /// ([`HostRandomness::Replay`]), so that the daemon replays a recorded session byte for
    /// byte. Otherwise it is handled like a transport's
    /// [`TransportEvent::Added`]: probed, announced, and recorded when
    /// [`DeviceConfig::record_dir`] is set; it stays until its link closes (a replay ends) or
    /// a transport reports the same id removed. Returns `false` if the registry has ended.
    pub async fn add(
        &self,
        description: DeviceDescription,
        connection: Connection,
        randomness: HostRandomness,
    ) -> bool {
        let query = Query::Add {
            description,
            connection,
            randomness,
        };
        self.queries.send(query).await.is_ok()
    }

    async fn ask<T>(&self, query: impl FnOnce(oneshot::Sender<T>) -> Query) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.queries.send(query(reply)).await.ok()?;
        answer.await.ok()
    }
}

/// The registry task.
#[derive(Debug)]
pub struct Registry;

impl Registry {
    /// Starts the registry on the current tokio runtime. `transport_events` is fed by the
    /// transports (every transport holds a clone of its sender).
    pub fn spawn(
        transport_events: mpsc::Receiver<TransportEvent>,
        config: DeviceConfig,
    ) -> RegistryHandle {
        let (queries_tx, queries) = mpsc::channel(QUERY_CAPACITY);
        let (status_tx, status) = mpsc::channel(STATUS_CAPACITY);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let state = State {
            config,
            devices: BTreeMap::new(),
            status_tx,
            events,
            next_generation: 0,
        };
        tokio::spawn(state.run(transport_events, queries, status));
        RegistryHandle {
            queries: queries_tx,
        }
    }
}

/// A key in the map.
struct Entry {
    generation: u64,
    /// `None` while the actor probes.
    info: Option<DeviceInfo>,
    description: DeviceDescription,
    authenticator: Authenticator,
    task: JoinHandle<()>,
}

struct State {
    config: DeviceConfig,
    devices: BTreeMap<DeviceId, Entry>,
    status_tx: mpsc::Sender<ActorStatus>,
    events: broadcast::Sender<RegistryEvent>,
    next_generation: u64,
}

impl State {
    async fn run(
        mut self,
        transport_events: mpsc::Receiver<TransportEvent>,
        mut queries: mpsc::Receiver<Query>,
        mut status: mpsc::Receiver<ActorStatus>,
    ) {
        let mut transport_events = Some(transport_events);
        loop {
            tokio::select! {
                // Actor reports first: what an actor reported before it answered a request is
                // then visible to every query made after that answer.
                biased;
                // `self.status_tx` keeps this channel open.
                Some(report) = status.recv() => self.on_status(report),
                event = next_transport_event(&mut transport_events) => match event {
                    Some(event) => self.on_transport_event(event),
                    None => {
                        debug!("all transports stopped; no more hotplug");
                        transport_events = None;
                    }
                },
                query = queries.recv() => match query {
                    Some(query) => self.on_query(query),
                    None => break,
                },
            }
        }
        debug!("registry ends");
        for (_, entry) in std::mem::take(&mut self.devices) {
            entry.task.abort();
        }
    }

    fn on_transport_event(&mut self, event: TransportEvent) {
        match event {
            TransportEvent::Added {
                description,
                connection,
            } => self.add(description, connection, HostRandomness::Os),
            TransportEvent::Removed(id) => self.remove(&id),
            TransportEvent::EnumerationComplete(transport) => {
                self.publish(RegistryEvent::EnumerationComplete(transport));
            }
            TransportEvent::Unavailable { transport, reason } => {
                warn!(transport = transport.as_str(), %reason, "transport unavailable");
                self.publish(RegistryEvent::TransportUnavailable { transport, reason });
            }
        }
    }

    fn add(
        &mut self,
        description: DeviceDescription,
        connection: Connection,
        randomness: HostRandomness,
    ) {
        let id = description.id.clone();
        if self.devices.contains_key(&id) {
            // The transport missed a removal (or the same port came back): the old actor's
            // link is stale.
            debug!(device = %id, "added again; replacing");
            self.remove(&id);
        }
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let (connection, recorder) = match &self.config.record_dir {
            Some(dir) => start_recording(dir, &description, connection),
            None => (connection, None),
        };
        let rng = Arc::new(DeviceRng::new(randomness, recorder));
        let (requests_tx, requests) = mpsc::channel(MAILBOX);
        let (info_tx, info_rx) = watch::channel(None);
        let authenticator = Authenticator::new(
            id.clone(),
            description.transport,
            requests_tx,
            info_rx,
            self.config.command_timeout,
            Arc::clone(&rng),
        );
        let actor = DeviceActor::new(
            id.clone(),
            generation,
            self.config.clone(),
            Engine::new(connection, &self.config, rng),
            requests,
            self.status_tx.clone(),
            info_tx,
        );
        debug!(device = %id, path = %description.path, "probing");
        let task = tokio::spawn(actor.run());
        self.devices.insert(
            id,
            Entry {
                generation,
                info: None,
                description,
                authenticator,
                task,
            },
        );
    }

    fn remove(&mut self, id: &DeviceId) {
        let Some(entry) = self.devices.remove(id) else {
            return;
        };
        // The actor drops the link; a request in flight ends with DeviceRemoved (its reply
        // channel closes).
        entry.task.abort();
        if entry.info.is_some() {
            debug!(device = %id, "removed");
            self.publish(RegistryEvent::Removed(id.clone()));
        }
    }

    fn on_status(&mut self, report: ActorStatus) {
        match report {
            ActorStatus::Ready {
                id,
                generation,
                link,
                info,
            } => {
                let Some(entry) = self.entry(&id, generation) else {
                    return;
                };
                let device = DeviceInfo {
                    description: entry.description.clone(),
                    info,
                    link,
                    busy: false,
                    authenticator: entry.authenticator.clone(),
                };
                entry.info = Some(device.clone());
                debug!(device = %id, ctap2 = device.info.is_some(), "added");
                self.publish(RegistryEvent::Added(device));
            }
            ActorStatus::Rejected { id, generation } => {
                if self.entry(&id, generation).is_some() {
                    self.devices.remove(&id);
                }
            }
            ActorStatus::Busy {
                id,
                generation,
                busy,
            } => self.change(&id, generation, |device| device.busy = busy),
            ActorStatus::InfoChanged {
                id,
                generation,
                info,
            } => self.change(&id, generation, |device| device.info = Some(info)),
            ActorStatus::Gone { id, generation } => {
                if self.entry(&id, generation).is_some() {
                    self.remove(&id);
                }
            }
        }
    }

    /// Applies `change` to a probed key and publishes the result.
    fn change(&mut self, id: &DeviceId, generation: u64, change: impl FnOnce(&mut DeviceInfo)) {
        let Some(device) = self
            .entry(id, generation)
            .and_then(|entry| entry.info.as_mut())
        else {
            return;
        };
        change(device);
        let device = device.clone();
        self.publish(RegistryEvent::Changed(device));
    }

    /// The entry for `id`, if it belongs to the actor of this `generation` (a late report of
    /// a replaced actor is ignored).
    fn entry(&mut self, id: &DeviceId, generation: u64) -> Option<&mut Entry> {
        self.devices
            .get_mut(id)
            .filter(|entry| entry.generation == generation)
    }

    fn on_query(&mut self, query: Query) {
        // A caller that went away does not want its answer.
        match query {
            Query::Add {
                description,
                connection,
                randomness,
            } => self.add(description, connection, randomness),
            Query::List(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Query::Get(id, reply) => {
                let found = self
                    .devices
                    .get(&id)
                    .and_then(|entry| entry.info.as_ref())
                    .map(|device| device.authenticator.clone());
                let _ = reply.send(found);
            }
            Query::Subscribe(reply) => {
                let _ = reply.send(Subscription {
                    devices: self.snapshot(),
                    events: self.events.subscribe(),
                });
            }
        }
    }

    fn snapshot(&self) -> Vec<DeviceInfo> {
        self.devices
            .values()
            .filter_map(|entry| entry.info.clone())
            .collect()
    }

    fn publish(&self, event: RegistryEvent) {
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }
}

/// The next transport event; never resolves once the transports are gone.
async fn next_transport_event(
    events: &mut Option<mpsc::Receiver<TransportEvent>>,
) -> Option<TransportEvent> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}

/// Taps `connection` into a new recording in `dir`. A recording that cannot be started is
/// logged and the key is used unrecorded: recording is a diagnostic aid, never a reason to
/// lose a key.
///
/// The file is created and its header written here, on the registry task: one small local
/// write per plug. Events are written by the recording's own thread.
fn start_recording(
    dir: &Path,
    description: &DeviceDescription,
    connection: Connection,
) -> (Connection, Option<Recorder>) {
    let id = &description.id;
    let (path, file) = match create_recording_file(dir, id) {
        Ok(created) => created,
        Err(error) => {
            warn!(device = %id, dir = %dir.display(), %error, "cannot create a recording");
            return (connection, None);
        }
    };
    let writer = match Writer::start(description, file) {
        Ok(writer) => writer,
        Err(error) => {
            warn!(device = %id, path = %path.display(), %error, "cannot start the recording");
            return (connection, None);
        }
    };
    let recording = writer.tap(connection);
    info!(device = %id, path = %path.display(), "recording");
    let task = recording.task;
    let device = id.clone();
    tokio::spawn(async move {
        match task.await {
            Ok(summary) => {
                let events = summary.events;
                debug!(device = %device, path = %path.display(), events, "recording ended");
            }
            Err(error) => {
                warn!(device = %device, path = %path.display(), %error, "recording incomplete");
            }
        }
    });
    (recording.connection, Some(recording.recorder))
}

/// Creates `DIR/<id>-<unix time>.jsonl` (`-1`, `-2`... appended when a key comes back within
/// the same second), readable and writable by the daemon's user only: a recording of PIN
/// entry holds what it takes to recover the PIN. A missing directory is created, mode 0700.
fn create_recording_file(dir: &Path, id: &DeviceId) -> io::Result<(PathBuf, File)> {
    /// How many names are tried for one device within one second.
    const ATTEMPTS: u32 = 100;
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    for attempt in 0..ATTEMPTS {
        let name = match attempt {
            0 => format!("{id}-{now}.jsonl"),
            n => format!("{id}-{now}-{n}.jsonl"),
        };
        let path = dir.join(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    Err(io::ErrorKind::AlreadyExists.into())
}
