//! The subcommands that talk to passkeyd over D-Bus, their output and their failures.

use std::fmt::Write as _;
use std::future::Future;
use std::io::{BufRead, IsTerminal as _, Write as _};
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use passkeyd::dbus::client::{AuthenticatorInfo, Client, ClientError, Event, authenticator_path};
use passkeyd::dbus::{BUS_NAME, Bus};
use passkeyd::loginid::Token;
use serde_json::{Value as Json, json};
use zeroize::Zeroizing;

use crate::register::{self, RegisterArgs};

/// Exit status: passkeyd refused, or the ceremony failed.
pub(crate) const EXIT_FAILED: u8 = 1;
/// Exit status: bad input (the token or PIN could not be read).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit status: passkeyd cannot be reached.
pub(crate) const EXIT_UNREACHABLE: u8 = 3;
/// Exit status: passkeyctl's own deadline passed (as `timeout(1)`).
pub(crate) const EXIT_TIMED_OUT: u8 = 124;
/// Exit status: interrupted by a signal (128 + SIGINT, as shells report it).
pub(crate) const EXIT_INTERRUPTED: u8 = 130;

/// How long one method call may take before passkeyctl gives up (the D-Bus default).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(25);

/// Which bus, and which service on it.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("bus").args(["system", "session", "address"])))]
pub(crate) struct BusArgs {
    /// Talk to passkeyd on the system bus (the default).
    #[arg(long, global = true, help_heading = "Bus")]
    system: bool,

    /// Talk to passkeyd on the session bus.
    #[arg(long, global = true, help_heading = "Bus")]
    session: bool,

    /// Talk to passkeyd on the bus at this D-Bus address (e.g. `unix:path=/run/bus`).
    #[arg(long, global = true, value_name = "ADDR", help_heading = "Bus")]
    address: Option<String>,

    /// The service's bus name.
    #[arg(long, global = true, value_name = "NAME", default_value = BUS_NAME, help_heading = "Bus")]
    service: String,
}

/// The subcommands that need passkeyd.
#[derive(Debug, Subcommand)]
pub(crate) enum RemoteCmd {
    /// List the security keys passkeyd knows.
    List(JsonFlag),
    /// Show one security key: getInfo, PIN state, USB ids.
    Info(KeyArgs),
    /// Create a passkey for a LoginID user on a security key.
    Register(RegisterArgs),
    /// Follow keys coming and going, keys busy, and ceremonies starting and ending.
    Watch(JsonFlag),
    /// Cancel a ceremony (only the caller that started it may; Ctrl-C during `register`
    /// cancels that one).
    Cancel(CancelArgs),
    /// Make a security key blink or beep, to find it.
    Wink(KeyArgs),
    /// Check a LoginID token against the application's keys and show its claims.
    VerifyToken(VerifyArgs),
}

/// `--json`.
#[derive(Debug, Args)]
pub(crate) struct JsonFlag {
    /// Print JSON on stdout (`watch`: one object per line).
    #[arg(long)]
    json: bool,
}

/// A key and `--json`.
#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// The key: its id (`virtual_key0`, `usb_...`) or its object path.
    #[arg(value_name = "KEY")]
    key: String,

    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `cancel CEREMONY`.
#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The ceremony: its number or its object path (`/org/passkeyd/ceremony/7`).
    #[arg(value_name = "CEREMONY")]
    ceremony: String,

    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `verify-token [TOKEN] --username U`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The LoginID token; read from the first line of stdin when absent or `-` (a token on
    /// the command line is visible to other local users).
    #[arg(value_name = "TOKEN")]
    token: Option<Secret>,

    /// The user the token must be for.
    #[arg(long, value_name = "USERNAME")]
    username: String,

    /// Print JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// A secret from the command line (token, PIN): zeroized, and never in `Debug` output.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) Zeroizing<String>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(Zeroizing::new(text.to_owned())))
    }
}

/// Reads one line from stdin, without its line end.
pub(crate) fn read_stdin_line(what: &str) -> Result<Zeroizing<String>, Failure> {
    let mut line = Zeroizing::new(String::new());
    match std::io::stdin().lock().read_line(&mut line) {
        Ok(0) => Err(Failure::usage(format!("no {what} on stdin"))),
        Ok(_) => {
            let trimmed = line.trim_end_matches(['\r', '\n']);
            Ok(Zeroizing::new(trimmed.to_owned()))
        }
        Err(error) => Err(Failure::usage(format!("cannot read the {what}: {error}"))),
    }
}

/// Why a subcommand failed: a D-Bus error name, a message, and the exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) name: String,
    pub(crate) message: String,
    pub(crate) exit: u8,
}

impl Failure {
    pub(crate) fn new(name: impl Into<String>, message: impl Into<String>, exit: u8) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
            exit,
        }
    }

    /// Bad input from the command line or stdin.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new("org.passkeyd.Error.InvalidArgument", message, EXIT_USAGE)
    }

    /// A call that got no answer before passkeyctl's deadline.
    pub(crate) fn no_reply(what: &str) -> Self {
        Self::new(
            "org.freedesktop.DBus.Error.NoReply",
            format!("passkeyd did not answer {what} in time"),
            EXIT_TIMED_OUT,
        )
    }

    /// Prints the failure: one JSON object on stdout, or a line on stderr.
    pub(crate) fn report(&self, json: bool) {
        if json {
            print_json(&json!({ "error": self.name, "message": self.message }));
        } else if self.message.is_empty() {
            eprintln!("passkeyctl: {}", self.name);
        } else {
            eprintln!("passkeyctl: {} ({})", self.message, self.name);
        }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Self {
        let exit = if error.is_service_absent() {
            EXIT_UNREACHABLE
        } else {
            EXIT_FAILED
        };
        Self::new(error.dbus_name(), error.message(), exit)
    }
}

/// Prints one JSON value and a newline on stdout.
pub(crate) fn print_json(value: &Json) {
    print_stdout(&format!("{value}\n"));
}

/// Writes to stdout; a closed pipe is the reader's choice, not an error.
pub(crate) fn print_stdout(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    let _ = std::io::stdout().lock().flush();
}

/// Awaits `future` for at most `limit`.
pub(crate) async fn bounded<T>(
    what: &str,
    limit: Duration,
    future: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, Failure> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result.map_err(Failure::from),
        Err(_) => Err(Failure::no_reply(what)),
    }
}

/// Awaits one method call for at most [`CALL_TIMEOUT`].
pub(crate) async fn call<T>(
    what: &str,
    future: impl Future<Output = Result<T, ClientError>>,
) -> Result<T, Failure> {
    bounded(what, CALL_TIMEOUT, future).await
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, Ctrl-C alone.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Runs a subcommand; returns the exit status.
pub(crate) fn main(bus: &BusArgs, command: RemoteCmd) -> u8 {
    let json = match &command {
        RemoteCmd::List(flag) | RemoteCmd::Watch(flag) => flag.json,
        RemoteCmd::Info(args) | RemoteCmd::Wink(args) => args.json,
        RemoteCmd::Register(args) => args.json,
        RemoteCmd::Cancel(args) => args.json,
        RemoteCmd::VerifyToken(args) => args.json,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            Failure::new(
                "org.freedesktop.DBus.Error.Failed",
                format!("cannot start the runtime: {error}"),
                EXIT_FAILED,
            )
            .report(json);
            return EXIT_FAILED;
        }
    };
    let result = runtime.block_on(run(bus, command));
    // A PIN prompt abandoned when the ceremony ended may still block a thread on the terminal:
    // do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(()) => 0,
        Err(failure) => {
            failure.report(json);
            failure.exit
        }
    }
}

async fn connect(args: &BusArgs) -> Result<Client, Failure> {
    let bus = tokio::time::timeout(CALL_TIMEOUT, async {
        if let Some(address) = &args.address {
            Bus::address(address).await
        } else if args.session {
            Bus::session().await
        } else {
            Bus::system().await
        }
    })
    .await
    .map_err(|_| Failure::no_reply("the connection"))?
    .map_err(|error| {
        let mut message = String::from("cannot connect to the bus");
        let mut source: Option<&dyn std::error::Error> = Some(&error);
        while let Some(cause) = source {
            // Libraries often repeat their source's text in their own.
            let text = cause.to_string();
            if !message.contains(&text) {
                let _ = write!(message, ": {text}");
            }
            source = cause.source();
        }
        Failure::new(
            "org.freedesktop.DBus.Error.NoServer",
            message,
            EXIT_UNREACHABLE,
        )
    })?;
    call("the connection", Client::with_service(&bus, &args.service)).await
}

async fn run(bus: &BusArgs, command: RemoteCmd) -> Result<(), Failure> {
    // Secrets from stdin are read before anything else waits.
    let token = match &command {
        RemoteCmd::VerifyToken(args) => Some(match &args.token {
            Some(token) if token.0.as_str() != "-" => token.0.clone(),
            _ => read_stdin_line("token")?,
        }),
        _ => None,
    };
    let client = connect(bus).await?;
    match command {
        RemoteCmd::List(flag) => list(&client, flag.json).await,
        RemoteCmd::Info(args) => info(&client, &args).await,
        RemoteCmd::Register(args) => register::run(&client, args).await,
        RemoteCmd::Watch(flag) => watch(&client, flag.json).await,
        RemoteCmd::Cancel(args) => cancel(&client, &args).await,
        RemoteCmd::Wink(args) => {
            call("Wink", client.wink(&args.key)).await?;
            if args.json {
                print_json(&json!({ "winked": authenticator_path(&args.key)? }));
            }
            Ok(())
        }
        RemoteCmd::VerifyToken(args) => {
            let token = Token::new(token.as_deref().map(String::as_str).unwrap_or_default());
            let claims = call("VerifyToken", client.verify_token(&token, &args.username)).await?;
            if args.json {
                print_json(&json!(claims));
            } else {
                let mut text = String::new();
                for (name, value) in &claims {
                    let _ = writeln!(text, "{name}: {value}");
                }
                print_stdout(&text);
            }
            Ok(())
        }
    }
}

fn yes_no(flag: bool) -> &'static str {
    if flag { "yes" } else { "no" }
}

fn usb_ids(key: &AuthenticatorInfo) -> String {
    if key.vendor_id == 0 && key.product_id == 0 {
        "-".to_owned()
    } else {
        format!("{:04x}:{:04x}", key.vendor_id, key.product_id)
    }
}

fn product(key: &AuthenticatorInfo) -> String {
    match (key.manufacturer.is_empty(), key.product.is_empty()) {
        (true, true) => "-".to_owned(),
        (true, false) => key.product.clone(),
        (false, true) => key.manufacturer.clone(),
        (false, false) => format!("{} {}", key.manufacturer, key.product),
    }
}

async fn list(client: &Client, json: bool) -> Result<(), Failure> {
    let keys = call("the key list", client.authenticators()).await?;
    if json {
        print_json(&json!({ "authenticators": keys }));
        return Ok(());
    }
    if keys.is_empty() {
        eprintln!("passkeyctl: no security keys");
        return Ok(());
    }
    let width = keys
        .iter()
        .map(|key| key.id.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let mut text = format!(
        "{:width$}  {:9}  {:9}  {:7}  {:4}  PRODUCT\n",
        "ID", "TRANSPORT", "USB", "PIN", "BUSY"
    );
    for key in &keys {
        let _ = writeln!(
            text,
            "{:width$}  {:9}  {:9}  {:7}  {:4}  {}",
            key.id,
            key.transport,
            usb_ids(key),
            if key.pin_set { "set" } else { "not set" },
            yes_no(key.busy),
            product(key),
        );
    }
    print_stdout(&text);
    Ok(())
}

async fn info(client: &Client, args: &KeyArgs) -> Result<(), Failure> {
    let key = call("the key's properties", client.authenticator(&args.key)).await?;
    // The retries count asks the key itself; the rest of the information stands without it.
    let retries = if key.pin_set {
        call("PinRetries", client.pin_retries(&key.path)).await.ok()
    } else {
        None
    };
    if args.json {
        let mut value = json!(key);
        if let Some(object) = value.as_object_mut() {
            object.insert("pin_retries".to_owned(), json!(retries));
        }
        print_json(&value);
        return Ok(());
    }
    let options = key
        .options
        .iter()
        .map(|(name, on)| format!("{name}={on}"))
        .collect::<Vec<_>>()
        .join(" ");
    let pin = match (key.pin_set, retries) {
        (false, _) => "not set".to_owned(),
        (true, Some(retries)) => format!("set, {retries} retries left"),
        (true, None) => "set".to_owned(),
    };
    let empty = |text: &str| {
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.to_owned()
        }
    };
    let text = format!(
        "id              {}\n\
         path            {}\n\
         transport       {}\n\
         usb ids         {}\n\
         manufacturer    {}\n\
         product         {}\n\
         versions        {}\n\
         aaguid          {}\n\
         options         {}\n\
         pin             {pin}\n\
         min pin length  {}\n\
         busy            {}\n",
        key.id,
        key.path,
        key.transport,
        usb_ids(&key),
        empty(&key.manufacturer),
        empty(&key.product),
        key.versions.join(" "),
        empty(&key.aaguid),
        empty(&options),
        key.min_pin_length,
        yes_no(key.busy),
    );
    print_stdout(&text);
    Ok(())
}

async fn cancel(client: &Client, args: &CancelArgs) -> Result<(), Failure> {
    let ceremony = call("the ceremony", client.ceremony(&args.ceremony)).await?;
    match call("Cancel", ceremony.cancel()).await {
        Ok(()) => {
            if args.json {
                print_json(&json!({ "cancelled": ceremony.path() }));
            }
            Ok(())
        }
        Err(mut failure) => {
            if failure.name == "org.passkeyd.Error.NotAuthorized" {
                failure.message = format!(
                    "{}; only the caller that started a ceremony may cancel it (Ctrl-C in \
                     `passkeyctl register` cancels its own)",
                    failure.message
                );
            }
            Err(failure)
        }
    }
}

fn event_json(event: &Event) -> Json {
    match event {
        Event::AuthenticatorAdded(key) => {
            json!({ "event": "authenticator-added", "authenticator": key })
        }
        Event::AuthenticatorRemoved { path } => {
            json!({ "event": "authenticator-removed", "path": path })
        }
        Event::AuthenticatorBusy { path, busy } => {
            json!({ "event": "authenticator-busy", "path": path, "busy": busy })
        }
        Event::CeremonyAdded { path } => json!({ "event": "ceremony-added", "path": path }),
        Event::CeremonyRemoved { path } => json!({ "event": "ceremony-removed", "path": path }),
        other => json!({ "event": format!("{other:?}") }),
    }
}

fn event_text(event: &Event) -> String {
    let id = |path: &str| path.rsplit('/').next().unwrap_or(path).to_owned();
    match event {
        Event::AuthenticatorAdded(key) => format!(
            "key added       {} ({}, {}, {})",
            key.id,
            key.transport,
            product(key),
            key.versions.join(" ")
        ),
        Event::AuthenticatorRemoved { path } => format!("key removed     {}", id(path)),
        Event::AuthenticatorBusy { path, busy: true } => format!("key busy        {}", id(path)),
        Event::AuthenticatorBusy { path, busy: false } => format!("key idle        {}", id(path)),
        Event::CeremonyAdded { path } => format!("ceremony        {} started", id(path)),
        Event::CeremonyRemoved { path } => format!("ceremony        {} removed", id(path)),
        other => format!("{other:?}"),
    }
}

async fn watch(client: &Client, json: bool) -> Result<(), Failure> {
    // Subscribed before the snapshot, so nothing falls between the two.
    let mut events = call("the subscription", client.events()).await?;
    let keys = call("the key list", client.authenticators()).await?;
    let ceremonies = call("the ceremony list", client.ceremonies()).await?;
    if json {
        print_json(
            &json!({ "event": "present", "authenticators": keys, "ceremonies": ceremonies }),
        );
    } else {
        let mut text = String::new();
        for key in &keys {
            let _ = writeln!(
                text,
                "{}",
                event_text(&Event::AuthenticatorAdded(key.clone()))
            );
        }
        for path in &ceremonies {
            let _ = writeln!(
                text,
                "ceremony        {} running",
                path.rsplit('/').next().unwrap_or(path)
            );
        }
        print_stdout(&text);
        if std::io::stderr().is_terminal() {
            eprintln!("passkeyctl: watching; Ctrl-C to stop");
        }
    }
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            () = &mut interrupt => return Ok(()),
            event = events.next() => {
                let event = event?;
                if json {
                    print_json(&event_json(&event));
                } else {
                    print_stdout(&format!("{}\n", event_text(&event)));
                }
            }
        }
    }
}
