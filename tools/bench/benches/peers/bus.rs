//! The D-Bus side of the daemon's measurements, through libdbus (the `dbus` crate): a private
//! bus, the wait for the daemon's well-known name, and ceremonies as a UI makes them
//! (`org.passkeyd.Manager1.CreatePasskey`, then the owner's unicast `StateChanged` signals until
//! a final state, then `Release`).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use dbus::arg::PropMap;
use dbus::blocking::Connection;
use dbus::channel::Channel;
use dbus::message::MatchRule;

use crate::util::{Proc, READY_DEADLINE};

pub const BUS_NAME: &str = "org.passkeyd";
const MANAGER_PATH: &str = "/org/passkeyd";
const MANAGER: &str = "org.passkeyd.Manager1";
const CEREMONY: &str = "org.passkeyd.Ceremony1";
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A private `dbus-daemon` (session configuration) on a socket in `work`.
pub struct PrivateBus {
    _proc: Proc,
    pub address: String,
}

impl PrivateBus {
    pub fn start(work: &Path) -> anyhow::Result<Self> {
        let socket = work.join("bus");
        let mut proc = Proc::spawn(
            "dbus-daemon",
            Command::new("dbus-daemon")
                .args(["--session", "--nofork", "--print-address=1"])
                .arg(format!("--address=unix:path={}", socket.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::piped()),
        )?;
        let stdout = proc.child.stdout.take().context("dbus-daemon's stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading dbus-daemon's address")?;
        let address = line.trim().to_owned();
        if address.is_empty() {
            bail!("dbus-daemon printed no address");
        }
        Ok(Self {
            _proc: proc,
            address,
        })
    }
}

/// A connection of our own to the bus at `address`.
pub fn connect(address: &str) -> anyhow::Result<Connection> {
    let mut channel = Channel::open_private(address)?;
    channel.register()?;
    Ok(Connection::from(channel))
}

/// Watches `NameOwnerChanged` for `name` on `conn`; `start()` then runs and the time from its
/// call to the name getting an owner is returned with what `start` returned.
pub fn time_to_name<T>(
    conn: &Connection,
    name: &'static str,
    start: impl FnOnce() -> anyhow::Result<T>,
    mut alive: impl FnMut(&mut T) -> anyhow::Result<()>,
) -> anyhow::Result<(Duration, T)> {
    let owned = Arc::new(Mutex::new(None::<Instant>));
    let seen = Arc::clone(&owned);
    let token = conn.add_match(
        MatchRule::new_signal("org.freedesktop.DBus", "NameOwnerChanged"),
        move |(changed, _old, new): (String, String, String), _, _| {
            if changed == name
                && !new.is_empty()
                && let Ok(mut seen) = seen.lock()
            {
                seen.get_or_insert_with(Instant::now);
            }
            true
        },
    )?;
    let started = Instant::now();
    let mut value = start()?;
    let result = loop {
        conn.process(Duration::from_millis(50))?;
        if let Some(at) = *owned.lock().map_err(|_| anyhow::anyhow!("poisoned"))? {
            break Ok((at - started, value));
        }
        alive(&mut value)?;
        if started.elapsed() > READY_DEADLINE {
            break Err(anyhow::anyhow!("{name} was not owned in time"));
        }
    };
    conn.remove_match(token)?;
    result
}

/// A UI's connection: the final states of its ceremonies, from their unicast signals.
pub struct Ui {
    conn: Connection,
    ended: Arc<Mutex<Vec<(String, String)>>>,
}

impl Ui {
    pub fn new(conn: Connection) -> anyhow::Result<Self> {
        let ended = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&ended);
        conn.add_match(
            MatchRule::new_signal(CEREMONY, "StateChanged"),
            move |(_seq, state, _details): (u32, String, PropMap), _, message| {
                if matches!(state.as_str(), "completed" | "failed" | "cancelled")
                    && let (Some(path), Ok(mut sink)) = (message.path(), sink.lock())
                {
                    sink.push((path.to_string(), state));
                }
                true
            },
        )?;
        Ok(Self { conn, ended })
    }

    /// One ceremony for `username` with the authorization token; on `authenticator` when
    /// given (an Authenticator1 path). Returns its wall time.
    pub fn ceremony(
        &self,
        username: &str,
        token: &str,
        authenticator: Option<&str>,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let manager = self.conn.with_proxy(BUS_NAME, MANAGER_PATH, CALL_TIMEOUT);
        let mut options = PropMap::new();
        if let Some(path) = authenticator {
            options.insert(
                "authenticator".to_owned(),
                dbus::arg::Variant(Box::new(
                    dbus::Path::new(path.to_owned()).map_err(anyhow::Error::msg)?,
                )),
            );
        }
        let (path,): (dbus::Path<'static>,) = manager
            .method_call(MANAGER, "CreatePasskey", (username, token, options))
            .context("CreatePasskey")?;
        let path = path.to_string();
        let state = loop {
            self.conn.process(Duration::from_millis(100))?;
            let mut ended = self.ended.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            if let Some(i) = ended.iter().position(|(p, _)| *p == path) {
                break ended.remove(i).1;
            }
            drop(ended);
            if started.elapsed() > CALL_TIMEOUT {
                bail!("ceremony {path} did not end in time");
            }
        };
        let wall = started.elapsed();
        let ceremony = self.conn.with_proxy(BUS_NAME, path.as_str(), CALL_TIMEOUT);
        if state != "completed" {
            let result: Result<(PropMap,), _> = ceremony.method_call(CEREMONY, "Result", ());
            bail!("ceremony {path} ended {state}: {:?}", result.err());
        }
        let () = ceremony.method_call(CEREMONY, "Release", ())?;
        Ok(wall)
    }
}
