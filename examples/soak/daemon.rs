//! The soak against a running `passkeyd` over D-Bus: one connection per key (so that the
//! per-caller limit never bites), each subscribed to its ceremonies' signals before its
//! first call; a ceremony is CreatePasskey (the key's object, the PIN unattended), the
//! signals until the final state, Result and Release. The figures are the daemon process's;
//! its live ceremonies are `Manager1.Ceremonies`.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use passkeyd::loginid::Token;
use passkeyd::transport::{DeviceId, Transport};
use tokio::sync::Mutex;
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::driver::{BoxFuture, Sample, SoakKey, Target};

const ROOT: &str = "/org/passkeyd";
const MANAGER: &str = "org.passkeyd.Manager1";
const CEREMONY: &str = "org.passkeyd.Ceremony1";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const AUTHENTICATOR_PREFIX: &str = "/org/passkeyd/authenticator/";

/// One caller's connection and its stream of Ceremony1 signals.
struct Caller {
    connection: zbus::Connection,
    signals: zbus::MessageStream,
}

/// A `passkeyd` process on a bus.
pub(crate) struct Daemon {
    service: String,
    pid: u32,
    watcher: zbus::Connection,
    callers: HashMap<String, Mutex<Caller>>,
}

async fn connect(address: &str) -> anyhow::Result<zbus::Connection> {
    Ok(zbus::connection::Builder::address(address)?.build().await?)
}

impl Daemon {
    /// Connects to the daemon at `address`, waits until it shows `keys` authenticators and
    /// opens a caller per key. Keys whose `PinSet` is true get `pin`.
    pub(crate) async fn connect(
        address: &str,
        service: &str,
        pid: u32,
        keys: usize,
        pin: Option<String>,
    ) -> anyhow::Result<(Self, Vec<SoakKey>)> {
        let watcher = connect(address).await?;
        let paths = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                let paths: Vec<OwnedObjectPath> =
                    get(&watcher, service, ROOT, MANAGER, "Authenticators")
                        .await
                        .and_then(|v| Ok(v.try_into()?))
                        .unwrap_or_default();
                if paths.len() >= keys {
                    return paths;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .context("the daemon did not show the keys")?;
        let mut soak_keys = Vec::new();
        let mut callers = HashMap::new();
        for path in paths.into_iter().take(keys) {
            let tail = path
                .as_str()
                .strip_prefix(AUTHENTICATOR_PREFIX)
                .context("an authenticator path")?;
            let name = tail
                .strip_prefix("virtual_")
                .context("the soak uses virtual keys")?;
            let pin_set: bool = get(
                &watcher,
                service,
                path.as_str(),
                "org.passkeyd.Authenticator1",
                "PinSet",
            )
            .await?
            .try_into()?;
            let id = DeviceId::new(Transport::Virtual, name);
            let connection = connect(address).await?;
            let rule = zbus::MatchRule::builder()
                .msg_type(zbus::message::Type::Signal)
                .interface(CEREMONY)?
                .build();
            let signals = zbus::MessageStream::for_match_rule(rule, &connection, Some(256)).await?;
            callers.insert(
                id.to_string(),
                Mutex::new(Caller {
                    connection,
                    signals,
                }),
            );
            soak_keys.push(SoakKey {
                id,
                pin: if pin_set { pin.clone() } else { None },
            });
        }
        Ok((
            Self {
                service: service.to_owned(),
                pid,
                watcher,
                callers,
            },
            soak_keys,
        ))
    }

    async fn live_paths(&self) -> usize {
        get(&self.watcher, &self.service, ROOT, MANAGER, "Ceremonies")
            .await
            .and_then(|v| Ok(Vec::<OwnedObjectPath>::try_from(v)?))
            .map_or(usize::MAX, |paths| paths.len())
    }
}

/// A property's value.
async fn get(
    connection: &zbus::Connection,
    service: &str,
    path: &str,
    interface: &str,
    name: &str,
) -> anyhow::Result<OwnedValue> {
    let reply = connection
        .call_method(
            Some(service),
            path,
            Some(PROPERTIES),
            "Get",
            &(interface, name),
        )
        .await?;
    Ok(reply.body().deserialize::<OwnedValue>()?)
}

fn failure(error: &zbus::Error) -> (String, String) {
    match error {
        zbus::Error::MethodError(name, message, _) => {
            (name.to_string(), message.clone().unwrap_or_default())
        }
        other => ("bus".to_owned(), other.to_string()),
    }
}

impl Target for Daemon {
    fn ceremony(
        &self,
        key: &SoakKey,
        username: String,
        token: Token,
    ) -> BoxFuture<'_, Result<(), (String, String)>> {
        let id = key.id.to_string();
        let pin = key.pin.clone();
        Box::pin(async move {
            let caller = self
                .callers
                .get(&id)
                .ok_or_else(|| ("soak".to_owned(), format!("no caller for {id}")))?;
            let mut caller = caller.lock().await;
            let Caller {
                connection,
                signals,
            } = &mut *caller;
            let service = Some(self.service.as_str());
            let key_path = OwnedObjectPath::try_from(format!("{AUTHENTICATOR_PREFIX}{id}"))
                .map_err(|e| ("soak".to_owned(), e.to_string()))?;
            let mut options: HashMap<&str, Value<'_>> =
                HashMap::from([("authenticator", Value::from(key_path))]);
            if let Some(pin) = &pin {
                options.insert("pin", Value::from(pin.as_str()));
            }
            let reply = connection
                .call_method(
                    service,
                    ROOT,
                    Some(MANAGER),
                    "CreatePasskey",
                    &(username.as_str(), token.expose(), options),
                )
                .await
                .map_err(|e| failure(&e))?;
            let path: OwnedObjectPath = reply.body().deserialize().map_err(|e| failure(&e))?;
            // The signals until the final state.
            loop {
                let Some(Ok(message)) = signals.next().await else {
                    return Err(("bus".to_owned(), "the signal stream ended".to_owned()));
                };
                let header = message.header();
                if header.path().map(|p| p.as_str()) != Some(path.as_str())
                    || header.member().map(|m| m.as_str()) != Some("StateChanged")
                {
                    continue;
                }
                let Ok((_seq, state, _details)) =
                    message
                        .body()
                        .deserialize::<(u32, String, HashMap<String, OwnedValue>)>()
                else {
                    continue;
                };
                if matches!(state.as_str(), "completed" | "failed" | "cancelled") {
                    break;
                }
            }
            let result = connection
                .call_method(service, path.as_str(), Some(CEREMONY), "Result", &())
                .await;
            let released = connection
                .call_method(service, path.as_str(), Some(CEREMONY), "Release", &())
                .await;
            let result = result.map_err(|e| failure(&e))?;
            released.map_err(|e| failure(&e))?;
            let result: HashMap<String, OwnedValue> =
                result.body().deserialize().map_err(|e| failure(&e))?;
            if result.contains_key("token") {
                Ok(())
            } else {
                Err(("soak".to_owned(), "no token in the result".to_owned()))
            }
        })
    }

    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for _ in 0..1000 {
                if self.live_paths().await == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    fn sample(&self) -> Sample {
        Sample::take(Some(self.pid))
    }

    fn live(&self) -> BoxFuture<'_, usize> {
        Box::pin(self.live_paths())
    }
}
