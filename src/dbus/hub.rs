//! The hub: the one owner of the service-wide state. It admits ceremonies against the limits,
//! keeps the table of ceremony objects (owner, running or ended), tells an owner's
//! ceremonies when the owner leaves the bus, and caches callers' credentials per unique name.
//! Method handlers ask it over a channel and await the answer.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info};
use zbus::zvariant::OwnedObjectPath;

use super::access::Credentials;
use super::ceremony::{self, Close};
use super::error::Error;
use super::{Limits, ceremony_path};
use crate::ceremony::{Ceremonies, CeremonyRequest};

/// Requests that may wait for the hub.
const CAPACITY: usize = 64;

/// Cached callers' credentials; beyond this the cache starts over (a name that left
/// between its lookup and its caching stays until then).
const CREDENTIALS_CAPACITY: usize = 4096;

/// Ended ceremonies waiting for their owners, per allowed running ceremony: beyond this the
/// oldest ended one is removed at once.
const LINGERING_PER_SLOT: usize = 4;

/// A ceremony admitted: its object path and the news of its export.
pub(super) struct Admitted {
    pub(super) path: OwnedObjectPath,
    pub(super) exported: oneshot::Receiver<Result<(), Error>>,
}

enum Request {
    Admit {
        owner: String,
        request: CeremonyRequest,
        reply: oneshot::Sender<Result<Admitted, Error>>,
    },
    Exported(u64),
    Ended(u64),
    Removed(u64),
    OwnerGone(String),
    Credentials {
        name: String,
        reply: oneshot::Sender<Option<Credentials>>,
    },
    Remember {
        name: String,
        credentials: Credentials,
    },
    Count(oneshot::Sender<usize>),
    Shutdown(oneshot::Sender<Vec<JoinHandle<()>>>),
}

/// The way to the hub; cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct HubHandle {
    tx: mpsc::Sender<Request>,
}

impl HubHandle {
    /// Starts the hub. `paths` receives the live ceremony paths for `Manager1.Ceremonies`.
    pub(super) fn spawn(
        connection: zbus::Connection,
        ceremonies: Ceremonies,
        limits: Limits,
        paths: watch::Sender<Vec<OwnedObjectPath>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let handle = Self { tx };
        let hub = Hub {
            connection,
            ceremonies,
            limits,
            paths,
            me: handle.clone(),
            entries: BTreeMap::new(),
            credentials: HashMap::new(),
            ended_order: 0,
        };
        tokio::spawn(hub.run(rx));
        handle
    }

    /// Checks the limits for `owner` and starts the ceremony and its object.
    pub(super) async fn admit(
        &self,
        owner: String,
        request: CeremonyRequest,
    ) -> Result<Admitted, Error> {
        self.ask(|reply| Request::Admit {
            owner,
            request,
            reply,
        })
        .await
        .ok_or_else(Error::gone)?
    }

    pub(super) async fn exported(&self, id: u64) {
        let _ = self.tx.send(Request::Exported(id)).await;
    }

    pub(super) async fn ended(&self, id: u64) {
        let _ = self.tx.send(Request::Ended(id)).await;
    }

    pub(super) async fn removed(&self, id: u64) {
        let _ = self.tx.send(Request::Removed(id)).await;
    }

    /// `name` left the bus.
    pub(super) async fn owner_gone(&self, name: String) {
        let _ = self.tx.send(Request::OwnerGone(name)).await;
    }

    pub(super) async fn credentials(&self, name: String) -> Option<Credentials> {
        self.ask(|reply| Request::Credentials { name, reply })
            .await
            .flatten()
    }

    pub(super) async fn remember(&self, name: String, credentials: Credentials) {
        let _ = self.tx.send(Request::Remember { name, credentials }).await;
    }

    /// Live ceremonies (running or lingering).
    pub(super) async fn count(&self) -> usize {
        self.ask(Request::Count).await.unwrap_or(0)
    }

    /// Closes every ceremony (cancelled for shutdown) and ends the hub; the actors' tasks
    /// end once their ceremonies have and their objects are removed.
    pub(super) async fn shutdown(&self) -> Vec<JoinHandle<()>> {
        self.ask(Request::Shutdown).await.unwrap_or_default()
    }

    async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(request(reply)).await.ok()?;
        answer.await.ok()
    }
}

struct Entry {
    owner: String,
    /// `None` while running; the order it ended in otherwise.
    ended: Option<u64>,
    exported: bool,
    close: watch::Sender<Option<Close>>,
    task: JoinHandle<()>,
}

struct Hub {
    connection: zbus::Connection,
    ceremonies: Ceremonies,
    limits: Limits,
    paths: watch::Sender<Vec<OwnedObjectPath>>,
    me: HubHandle,
    entries: BTreeMap<u64, Entry>,
    credentials: HashMap<String, Credentials>,
    ended_order: u64,
}

impl Hub {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(request) = rx.recv().await {
            match request {
                Request::Admit {
                    owner,
                    request,
                    reply,
                } => {
                    let _ = reply.send(self.admit(owner, request));
                }
                Request::Exported(id) => {
                    if let Some(entry) = self.entries.get_mut(&id) {
                        entry.exported = true;
                        self.publish();
                    }
                }
                Request::Ended(id) => {
                    if let Some(entry) = self.entries.get_mut(&id) {
                        self.ended_order += 1;
                        entry.ended = Some(self.ended_order);
                    }
                }
                Request::Removed(id) => {
                    if self.entries.remove(&id).is_some() {
                        self.publish();
                    }
                }
                Request::OwnerGone(name) => {
                    self.credentials.remove(&name);
                    for (id, entry) in &self.entries {
                        if entry.owner == name {
                            debug!(ceremony = id, "owner left the bus");
                            entry.close.send_replace(Some(Close::OwnerGone));
                        }
                    }
                }
                Request::Credentials { name, reply } => {
                    let _ = reply.send(self.credentials.get(&name).cloned());
                }
                Request::Remember { name, credentials } => {
                    if self.credentials.len() >= CREDENTIALS_CAPACITY {
                        self.credentials.clear();
                    }
                    self.credentials.insert(name, credentials);
                }
                Request::Count(reply) => {
                    let _ = reply.send(self.entries.len());
                }
                Request::Shutdown(reply) => {
                    let mut tasks = Vec::new();
                    for (_, entry) in std::mem::take(&mut self.entries) {
                        entry.close.send_replace(Some(Close::Shutdown));
                        tasks.push(entry.task);
                    }
                    self.publish();
                    let _ = reply.send(tasks);
                    break;
                }
            }
        }
    }

    fn admit(&mut self, owner: String, request: CeremonyRequest) -> Result<Admitted, Error> {
        let running = self.entries.values().filter(|e| e.ended.is_none());
        let (mut total, mut mine) = (0, 0);
        for entry in running {
            total += 1;
            if entry.owner == owner {
                mine += 1;
            }
        }
        if mine >= self.limits.max_ceremonies_per_caller {
            return Err(Error::busy(format!(
                "this caller already runs {mine} ceremonies"
            )));
        }
        if total >= self.limits.max_ceremonies {
            return Err(Error::busy(format!("{total} ceremonies are running")));
        }
        self.evict_lingering();
        let ceremony = self
            .ceremonies
            .start(request)
            .map_err(|error| Error::from(&error))?;
        let id = ceremony.id();
        let path = ceremony_path(id);
        let (close, close_rx) = watch::channel(None);
        let (exported_tx, exported) = oneshot::channel();
        let task = tokio::spawn(
            ceremony::Actor {
                id,
                path: path.clone(),
                owner: owner.clone(),
                connection: self.connection.clone(),
                hub: self.me.clone(),
                linger: self.limits.linger,
            }
            .run(ceremony, close_rx, exported_tx),
        );
        info!(ceremony = id, %owner, "ceremony started");
        self.entries.insert(
            id,
            Entry {
                owner,
                ended: None,
                exported: false,
                close,
                task,
            },
        );
        Ok(Admitted { path, exported })
    }

    /// Keeps ended ceremonies waiting for their owners bounded.
    fn evict_lingering(&mut self) {
        let cap = self
            .limits
            .max_ceremonies
            .saturating_mul(LINGERING_PER_SLOT)
            .max(1);
        let mut ended: Vec<(u64, u64)> = self
            .entries
            .iter()
            .filter_map(|(id, e)| e.ended.map(|order| (order, *id)))
            .collect();
        if ended.len() < cap {
            return;
        }
        ended.sort_unstable();
        for (_, id) in ended.iter().take(ended.len() + 1 - cap) {
            if let Some(entry) = self.entries.get(id) {
                entry.close.send_replace(Some(Close::Evicted));
            }
        }
    }

    fn publish(&self) {
        let paths: Vec<OwnedObjectPath> = self
            .entries
            .iter()
            .filter(|(_, e)| e.exported)
            .map(|(id, _)| ceremony_path(*id))
            .collect();
        self.paths.send_if_modified(|current| {
            if *current == paths {
                false
            } else {
                *current = paths;
                true
            }
        });
    }
}

/// How long [`Service::shutdown`](super::Service::shutdown) waits for the ceremonies.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
