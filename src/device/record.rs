//! Recording and replay of a device's traffic, like fwupd's device emulation.
//!
//! A user attaches a recording of a real key's behaviour to a bug report; a developer replays
//! it as a device and the daemon runs the same exchange again, byte for byte. The format is
//! JSON lines, documented in `docs/recording.md`:
//!
//! ```text
//! {"format":"passkeyd-recording","version":1,"transport":"usb","description":{...}}
//! {"t_us":0,"kind":"nonce","hex":"0102030405060708"}
//! {"t_us":41,"dir":"out","kind":"report","hex":"ffffffff860008..."}
//! {"t_us":1210,"dir":"in","kind":"report","hex":"ffffffff860011..."}
//! ```
//!
//! - [`record`] taps a [`Connection`]: it hands back a connection that behaves exactly like
//!   the original and logs every report or APDU that passes, with its direction and time.
//! - [`Recorder::note_randomness`] (or a [`LoggedRng`] wrapped around the RNG) logs the host
//!   randomness a ceremony draws (the CTAPHID INIT nonce, the platform's ephemeral ECDH key,
//!   PIN/UV protocol two IVs), without which a replay could not reproduce the host's writes.
//! - [`Replay`] reads a recording ([`RecordingFile::read`]), serves it as a [`Connection`] in
//!   strict order ([`Replay::serve`]) and feeds the recorded randomness back through
//!   [`ReplayRandomness`], an `RngCore + CryptoRng`.
//!
//! The device layer does both for whole keys: with
//! [`DeviceConfig::record_dir`](super::DeviceConfig::record_dir) every key is recorded and its
//! host randomness noted as drawn, and [`RegistryHandle::add`](super::RegistryHandle::add)
//! with [`HostRandomness::Replay`](super::HostRandomness::Replay) serves a recording as a key.
//!
//! Recordings are read as hostile input: lines and files are bounded ([`MAX_LINE_LEN`],
//! [`MAX_FILE_LEN`]), every member is checked against the transport, and every problem is a
//! typed [`RecordingError`] naming its line. Nothing here panics on a recording's content.
//!
//! **Recordings are secrets** when they cover PIN entry: with the recorded ECDH key anyone can
//! recompute the PIN/UV shared secret and decrypt the PIN hash, a new PIN and the
//! pinUvAuthToken from the traffic (see `docs/recording.md`, "Privacy").

use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::io::{self, BufRead, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use zeroize::Zeroizing;

use crate::transport::{
    ApduLink, ApduRequest, Connection, DeviceDescription, LINK_CAPACITY, LinkError, Report,
    ReportLink, Transport,
};

/// The `format` member of a recording's header line.
pub const FORMAT: &str = "passkeyd-recording";

/// The format version this module writes and reads.
pub const VERSION: u64 = 1;

/// Longest line accepted, newline excluded. The longest legitimate line holds an extended
/// APDU ([`MAX_APDU_LEN`] bytes, twice that in hex) plus a few dozen bytes of JSON.
pub const MAX_LINE_LEN: usize = 192 * 1024;

/// Largest recording accepted. A ceremony takes a few dozen lines of about 170 bytes; this
/// leaves room for long sessions while bounding what a hostile file can make the reader
/// allocate.
pub const MAX_FILE_LEN: u64 = 32 * 1024 * 1024;

/// Longest APDU (command or response) in a recording: an extended case-4 command APDU,
/// 4 header bytes + 3 Lc bytes + 65535 data bytes + 2 Le bytes (ISO 7816-4 §5.1).
pub const MAX_APDU_LEN: usize = 65_544;

/// Longest randomness entry. The daemon draws 8 bytes (nonce), 16 (IV) or 32 (P-256 scalar).
pub const MAX_RANDOMNESS_LEN: usize = 1024;

/// Events that may wait for the writer thread before the taps wait for it (backpressure).
const EVENT_CAPACITY: usize = 1024;

/// What [`ReplayRandomness`] hands out once it cannot serve a draw through the infallible
/// `fill_bytes`. Any byte below 0xFF makes 32 of them a valid non-zero P-256 scalar, so a
/// key generation fed with it terminates instead of looping; the writes it produces then
/// differ from the recording and the replay reports a mismatch.
pub(super) const FILLER: u8 = 0x5A;

/// Direction of a traffic event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Host to device (`"out"`).
    Out,
    /// Device to host (`"in"`).
    In,
}

impl Direction {
    /// `"out"` or `"in"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Out => "out",
            Self::In => "in",
        }
    }
}

/// What a piece of recorded host randomness was used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RandomnessKind {
    /// `"nonce"`: the CTAPHID_INIT nonce (CTAP 2.2 §11.2.9.1.3), 8 bytes.
    Nonce,
    /// `"ecdh-key"`: the platform's ephemeral key-agreement private scalar of a PIN/UV auth
    /// protocol (CTAP 2.2 §6.5.6, §6.5.7), 32 big-endian bytes for P-256. Secret.
    EcdhKey,
    /// `"iv"`: an AES-CBC IV drawn by PIN/UV auth protocol two when it encrypts a PIN or PIN
    /// hash (CTAP 2.2 §6.5.7), 16 bytes. It travels in clear in front of the ciphertext.
    Iv,
}

impl RandomnessKind {
    /// The `kind` member in a recording.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nonce => "nonce",
            Self::EcdhKey => "ecdh-key",
            Self::Iv => "iv",
        }
    }

    /// Whether the bytes must never be shown (decoders print only their length).
    pub fn is_secret(self) -> bool {
        self == Self::EcdhKey
    }

    fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "nonce" => Some(Self::Nonce),
            "ecdh-key" => Some(Self::EcdhKey),
            "iv" => Some(Self::Iv),
            _ => None,
        }
    }
}

/// Bytes of recorded randomness: wiped on drop and left out of `Debug` when secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RandomBytes {
    kind: RandomnessKind,
    bytes: Zeroizing<Vec<u8>>,
}

impl RandomBytes {
    /// What the bytes were used for.
    pub fn kind(&self) -> RandomnessKind {
        self.kind
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for RandomBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind.is_secret() {
            write!(
                f,
                "{}(<{} secret bytes>)",
                self.kind.as_str(),
                self.bytes.len()
            )
        } else {
            write!(f, "{}({})", self.kind.as_str(), hex::encode(&*self.bytes))
        }
    }
}

/// One recorded event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventBody {
    /// `"report"`: a 64-byte HID report (USB and virtual keys).
    Report {
        /// Which way it went.
        dir: Direction,
        /// The report, without the Linux report-ID byte.
        report: Report,
    },
    /// `"apdu"` (out): a command APDU (NFC).
    Apdu(Vec<u8>),
    /// `"apdu-response"` (in): a response APDU, data then SW1 SW2 (NFC).
    ApduResponse(Vec<u8>),
    /// `"disconnect"` (in): the device side reported the device gone (a link error or a
    /// closed channel). Replaying it closes the link.
    Disconnect,
    /// Host randomness (no direction).
    Randomness(RandomBytes),
}

impl EventBody {
    /// The `kind` member in a recording.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Report { .. } => "report",
            Self::Apdu(_) => "apdu",
            Self::ApduResponse(_) => "apdu-response",
            Self::Disconnect => "disconnect",
            Self::Randomness(r) => r.kind.as_str(),
        }
    }

    /// The direction, for traffic events.
    pub fn direction(&self) -> Option<Direction> {
        match self {
            Self::Report { dir, .. } => Some(*dir),
            Self::Apdu(_) => Some(Direction::Out),
            Self::ApduResponse(_) | Self::Disconnect => Some(Direction::In),
            Self::Randomness(_) => None,
        }
    }

    /// The event's bytes (none for a disconnect).
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Report { report, .. } => report,
            Self::Apdu(bytes) | Self::ApduResponse(bytes) => bytes,
            Self::Disconnect => &[],
            Self::Randomness(r) => r.bytes(),
        }
    }
}

/// One event of a recording and where it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its line in the file (the header is line 1).
    pub line: usize,
    /// Microseconds since the recording started.
    pub t_us: u64,
    /// What happened.
    pub body: EventBody,
}

/// What the transport knew about the recorded device (the header's `description`). Every
/// member is optional in a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedDevice {
    /// The daemon's device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Device node, reader name or socket path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// USB vendor id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_id: Option<u16>,
    /// USB product id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<u16>,
    /// Product name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Manufacturer name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manufacturer: Option<String>,
}

impl From<&DeviceDescription> for RecordedDevice {
    fn from(d: &DeviceDescription) -> Self {
        Self {
            id: Some(d.id.as_str().to_owned()),
            path: Some(d.path.clone()),
            vendor_id: d.vendor_id,
            product_id: d.product_id,
            product: d.product.clone(),
            manufacturer: d.manufacturer.clone(),
        }
    }
}

/// The header line of a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The transport the traffic went over; it decides which event kinds may follow.
    pub transport: Transport,
    /// The recorded device.
    pub device: RecordedDevice,
    /// What wrote the recording (`"passkeyd 0.1.0"`), if known.
    pub recorder: Option<String>,
}

/// The header line as JSON.
#[derive(Serialize, Deserialize)]
struct HeaderLine {
    format: String,
    version: u64,
    transport: String,
    #[serde(default)]
    description: RecordedDevice,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recorder: Option<String>,
}

/// An event line as JSON. Members this version does not know are ignored.
#[derive(Deserialize)]
struct EventLine {
    t_us: u64,
    #[serde(default)]
    dir: Option<String>,
    kind: String,
    #[serde(default)]
    hex: Option<String>,
}

/// Why a recording could not be read. Every variant that concerns a line names it (the header
/// is line 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// Reading failed.
    #[error("line {line}: read failed")]
    Io {
        /// The line being read.
        line: usize,
        /// The IO error.
        #[source]
        source: io::Error,
    },
    /// The file is empty: no header line.
    #[error("empty recording: no header line")]
    Empty,
    /// The file is larger than [`MAX_FILE_LEN`].
    #[error("line {line}: recording exceeds {max} bytes")]
    FileTooLarge {
        /// The line at which the limit was passed.
        line: usize,
        /// [`MAX_FILE_LEN`].
        max: u64,
    },
    /// A line is longer than [`MAX_LINE_LEN`].
    #[error("line {line}: longer than {max} bytes")]
    LineTooLong {
        /// The line.
        line: usize,
        /// [`MAX_LINE_LEN`].
        max: usize,
    },
    /// A line is not UTF-8.
    #[error("line {line}: not UTF-8")]
    NotUtf8 {
        /// The line.
        line: usize,
    },
    /// A line is not the JSON object its position requires (including a line cut off by a
    /// truncated file).
    #[error("line {line}: malformed JSON")]
    Json {
        /// The line.
        line: usize,
        /// What serde_json found.
        #[source]
        source: serde_json::Error,
    },
    /// The first line's `format` is not [`FORMAT`].
    #[error("line 1: not a passkeyd recording (format {found:?})")]
    NotARecording {
        /// The `format` found, empty if absent.
        found: String,
    },
    /// The header's `version` is not [`VERSION`].
    #[error("line 1: unsupported recording version {0}")]
    UnsupportedVersion(u64),
    /// The header's `transport` is not `usb`, `nfc` or `virtual`.
    #[error("line 1: unknown transport {0:?}")]
    UnknownTransport(String),
    /// An event `kind` this version does not know.
    #[error("line {line}: unknown event kind {kind:?}")]
    UnknownKind {
        /// The line.
        line: usize,
        /// The kind found.
        kind: String,
    },
    /// An event kind that cannot occur on the header's transport (a report on NFC, an APDU
    /// on USB).
    #[error("line {line}: a {kind} event cannot occur on transport {transport}")]
    KindNotForTransport {
        /// The line.
        line: usize,
        /// The event kind.
        kind: &'static str,
        /// The header's transport.
        transport: &'static str,
    },
    /// `dir` is missing, unknown, or wrong for the kind (randomness has none).
    #[error("line {line}: direction {dir:?} does not fit a {kind} event")]
    BadDirection {
        /// The line.
        line: usize,
        /// The event kind.
        kind: &'static str,
        /// The `dir` found, if any.
        dir: Option<String>,
    },
    /// `hex` is missing where the kind needs bytes.
    #[error("line {line}: a {kind} event needs hex bytes")]
    MissingHex {
        /// The line.
        line: usize,
        /// The event kind.
        kind: &'static str,
    },
    /// `hex` is present on a kind that carries no bytes (a disconnect).
    #[error("line {line}: a {kind} event carries no bytes")]
    UnexpectedHex {
        /// The line.
        line: usize,
        /// The event kind.
        kind: &'static str,
    },
    /// `hex` is not an even number of hex digits.
    #[error("line {line}: bad hex")]
    BadHex {
        /// The line.
        line: usize,
        /// What the hex decoder found.
        #[source]
        source: hex::FromHexError,
    },
    /// The bytes have a length the kind cannot have.
    #[error("line {line}: a {kind} event of {len} bytes (allowed: {allowed})")]
    BadLength {
        /// The line.
        line: usize,
        /// The event kind.
        kind: &'static str,
        /// The decoded length.
        len: usize,
        /// The allowed lengths, for the message.
        allowed: &'static str,
    },
    /// `t_us` is smaller than the previous event's: events are written in the order they
    /// happened.
    #[error("line {line}: time {t_us} µs goes back before {previous} µs")]
    TimeWentBack {
        /// The line.
        line: usize,
        /// Its time.
        t_us: u64,
        /// The previous event's time.
        previous: u64,
    },
}

/// A whole recording, read and checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingFile {
    /// The header line.
    pub header: Header,
    /// The events, in file order.
    pub events: Vec<Event>,
}

impl RecordingFile {
    /// Reads and checks a recording (see the module docs for the bounds). Blank lines are
    /// skipped; unknown members of a line are ignored.
    pub fn read(reader: impl BufRead) -> Result<Self, RecordingError> {
        Self::read_limited(reader, MAX_LINE_LEN, MAX_FILE_LEN)
    }

    fn read_limited(
        reader: impl BufRead,
        max_line: usize,
        max_file: u64,
    ) -> Result<Self, RecordingError> {
        let mut lines = BoundedLines::new(reader, max_line, max_file);
        let header = loop {
            match lines.next()? {
                None => return Err(RecordingError::Empty),
                Some((_, text)) if text.trim().is_empty() => {}
                Some((line, text)) => break parse_header(line, text)?,
            }
        };
        let mut events = Vec::new();
        let mut previous = 0;
        while let Some((line, text)) = lines.next()? {
            if text.trim().is_empty() {
                continue;
            }
            let event = parse_event(line, text, header.transport)?;
            if event.t_us < previous {
                return Err(RecordingError::TimeWentBack {
                    line,
                    t_us: event.t_us,
                    previous,
                });
            }
            previous = event.t_us;
            events.push(event);
        }
        Ok(Self { header, events })
    }

    /// Writes the recording in the format [`RecordingFile::read`] reads (line numbers of the
    /// events are not written).
    pub fn write(&self, mut out: impl Write) -> io::Result<()> {
        out.write_all(&header_line(&self.header)?)?;
        for event in &self.events {
            out.write_all(event_line(event.t_us, &event.body).as_bytes())?;
        }
        out.flush()
    }
}

/// Reads lines of at most `max_line` bytes ([`MAX_LINE_LEN`]) from a file of at most
/// `max_file` bytes ([`MAX_FILE_LEN`]), never buffering more than one line and its newline.
struct BoundedLines<R> {
    reader: R,
    buf: Vec<u8>,
    line: usize,
    total: u64,
    max_line: usize,
    max_file: u64,
}

impl<R: BufRead> BoundedLines<R> {
    fn new(reader: R, max_line: usize, max_file: u64) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            line: 0,
            total: 0,
            max_line,
            max_file,
        }
    }

    fn next(&mut self) -> Result<Option<(usize, &str)>, RecordingError> {
        self.buf.clear();
        self.line = self.line.saturating_add(1);
        let line = self.line;
        // Room for "\r\n" plus one byte tells "exactly at the limit" from "too long".
        let limit = u64::try_from(self.max_line)
            .unwrap_or(u64::MAX)
            .saturating_add(3);
        let read = (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| RecordingError::Io { line, source })?;
        if read == 0 {
            return Ok(None);
        }
        self.total = self
            .total
            .saturating_add(u64::try_from(read).unwrap_or(u64::MAX));
        if self.total > self.max_file {
            return Err(RecordingError::FileTooLarge {
                line,
                max: self.max_file,
            });
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
        }
        if self.buf.len() > self.max_line {
            return Err(RecordingError::LineTooLong {
                line,
                max: self.max_line,
            });
        }
        let text = std::str::from_utf8(&self.buf).map_err(|_| RecordingError::NotUtf8 { line })?;
        Ok(Some((line, text)))
    }
}

fn transport_from_str(s: &str) -> Option<Transport> {
    match s {
        "usb" => Some(Transport::Usb),
        "nfc" => Some(Transport::Nfc),
        "virtual" => Some(Transport::Virtual),
        _ => None,
    }
}

fn parse_header(line: usize, text: &str) -> Result<Header, RecordingError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|source| RecordingError::Json { line, source })?;
    let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if format != FORMAT {
        return Err(RecordingError::NotARecording {
            found: format.to_owned(),
        });
    }
    let header: HeaderLine =
        serde_json::from_value(value).map_err(|source| RecordingError::Json { line, source })?;
    if header.version != VERSION {
        return Err(RecordingError::UnsupportedVersion(header.version));
    }
    let transport = transport_from_str(&header.transport)
        .ok_or(RecordingError::UnknownTransport(header.transport))?;
    Ok(Header {
        transport,
        device: header.description,
        recorder: header.recorder,
    })
}

fn parse_event(line: usize, text: &str, transport: Transport) -> Result<Event, RecordingError> {
    let raw: EventLine =
        serde_json::from_str(text).map_err(|source| RecordingError::Json { line, source })?;
    // Resolve the kind to a static name first, so every later error can name it.
    let (kind, randomness): (&'static str, Option<RandomnessKind>) = match raw.kind.as_str() {
        "report" => ("report", None),
        "apdu" => ("apdu", None),
        "apdu-response" => ("apdu-response", None),
        "disconnect" => ("disconnect", None),
        other => match RandomnessKind::from_kind(other) {
            Some(r) => (r.as_str(), Some(r)),
            None => {
                return Err(RecordingError::UnknownKind {
                    line,
                    kind: raw.kind,
                });
            }
        },
    };
    let hid = matches!(transport, Transport::Usb | Transport::Virtual);
    let fits_transport = match kind {
        "report" => hid,
        "apdu" | "apdu-response" => !hid,
        _ => true,
    };
    if !fits_transport {
        return Err(RecordingError::KindNotForTransport {
            line,
            kind,
            transport: transport.as_str(),
        });
    }

    let dir = match raw.dir.as_deref() {
        None => None,
        Some("out") => Some(Direction::Out),
        Some("in") => Some(Direction::In),
        Some(_) => {
            return Err(RecordingError::BadDirection {
                line,
                kind,
                dir: raw.dir,
            });
        }
    };
    let dir_ok = match kind {
        "report" => dir.is_some(),
        "apdu" => dir == Some(Direction::Out),
        "apdu-response" | "disconnect" => dir == Some(Direction::In),
        _ => dir.is_none(),
    };
    if !dir_ok {
        return Err(RecordingError::BadDirection {
            line,
            kind,
            dir: raw.dir,
        });
    }

    let needs_bytes = kind != "disconnect";
    let bytes = match (raw.hex, needs_bytes) {
        (Some(hex), true) => Zeroizing::new(
            hex::decode(hex).map_err(|source| RecordingError::BadHex { line, source })?,
        ),
        (None, false) => Zeroizing::new(Vec::new()),
        (None, true) => return Err(RecordingError::MissingHex { line, kind }),
        (Some(_), false) => return Err(RecordingError::UnexpectedHex { line, kind }),
    };
    let bad_length = |allowed| RecordingError::BadLength {
        line,
        kind,
        len: bytes.len(),
        allowed,
    };

    let body = match (kind, dir, randomness) {
        ("report", Some(dir), _) => {
            let report: Report = bytes.as_slice().try_into().map_err(|_| bad_length("64"))?;
            EventBody::Report { dir, report }
        }
        ("apdu", ..) => {
            if !(4..=MAX_APDU_LEN).contains(&bytes.len()) {
                return Err(bad_length("4 to 65544"));
            }
            EventBody::Apdu(bytes.to_vec())
        }
        ("apdu-response", ..) => {
            if !(2..=MAX_APDU_LEN).contains(&bytes.len()) {
                return Err(bad_length("2 to 65544"));
            }
            EventBody::ApduResponse(bytes.to_vec())
        }
        (_, _, Some(kind)) => {
            if !(1..=MAX_RANDOMNESS_LEN).contains(&bytes.len()) {
                return Err(bad_length("1 to 1024"));
            }
            EventBody::Randomness(RandomBytes { kind, bytes })
        }
        _ => EventBody::Disconnect,
    };
    Ok(Event {
        line,
        t_us: raw.t_us,
        body,
    })
}

fn header_line(header: &Header) -> io::Result<Vec<u8>> {
    let line = HeaderLine {
        format: FORMAT.to_owned(),
        version: VERSION,
        transport: header.transport.as_str().to_owned(),
        description: header.device.clone(),
        recorder: header.recorder.clone(),
    };
    let mut out = serde_json::to_vec(&line).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(out)
}

/// One event line, newline included. Built by hand: every member is a number or plain ASCII,
/// so nothing needs escaping, and the buffer is sized up front and wiped on drop because it
/// may hold an ECDH private key in hex.
fn event_line(t_us: u64, body: &EventBody) -> Zeroizing<String> {
    let bytes = body.bytes();
    let mut line = Zeroizing::new(String::with_capacity(80 + 2 * bytes.len()));
    // Writing to a String cannot fail.
    let _ = write!(line, "{{\"t_us\":{t_us}");
    if let Some(dir) = body.direction() {
        let _ = write!(line, ",\"dir\":\"{}\"", dir.as_str());
    }
    let _ = write!(line, ",\"kind\":\"{}\"", body.kind());
    if !matches!(body, EventBody::Disconnect) {
        line.push_str(",\"hex\":\"");
        for byte in bytes {
            let _ = write!(line, "{byte:02x}");
        }
        line.push('"');
    }
    line.push_str("}\n");
    line
}

// ---------------------------------------------------------------------------------------------
// Recording
// ---------------------------------------------------------------------------------------------

/// Receives the host randomness a ceremony draws. The CTAPHID engine notes each INIT nonce and
/// the PIN/UV code each ECDH key and IV, so that a replay can feed the same bytes back.
pub trait RandomnessLog: Send + Sync {
    /// Notes `bytes` drawn for `kind`, in the order they were drawn.
    fn note_randomness(&self, kind: RandomnessKind, bytes: &[u8]);
}

/// Not recording: nothing is noted. Lets the engines always wrap their RNG in a [`LoggedRng`]
/// over an `Option<Recorder>`.
impl<T: RandomnessLog> RandomnessLog for Option<T> {
    fn note_randomness(&self, kind: RandomnessKind, bytes: &[u8]) {
        if let Some(log) = self {
            log.note_randomness(kind, bytes);
        }
    }
}

/// An RNG that notes every draw of the RNG it wraps in a [`RandomnessLog`] under one kind.
///
/// The engines wrap their RNG in one of these for each use while recording, e.g. around
/// `PinSession::new` for [`RandomnessKind::EcdhKey`]; p256 draws a scalar as one 32-byte
/// fill, so the noted bytes are exactly the private scalar.
pub struct LoggedRng<'a, R> {
    rng: R,
    kind: RandomnessKind,
    log: &'a dyn RandomnessLog,
}

impl<'a, R> LoggedRng<'a, R> {
    /// Wraps `rng`; every draw is noted in `log` as `kind`.
    pub fn new(rng: R, kind: RandomnessKind, log: &'a dyn RandomnessLog) -> Self {
        Self { rng, kind, log }
    }
}

impl<R> fmt::Debug for LoggedRng<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoggedRng")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl<R: RngCore> RngCore for LoggedRng<'_, R> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.rng.fill_bytes(dest);
        self.log.note_randomness(self.kind, dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.rng.try_fill_bytes(dest)?;
        self.log.note_randomness(self.kind, dest);
        Ok(())
    }
}

impl<R: CryptoRng> CryptoRng for LoggedRng<'_, R> {}

/// Why a recording could not be made or was not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// Writing the recording failed. The device link kept working; the recording is cut
    /// short.
    #[error("writing the recording failed")]
    Io(#[source] io::Error),
    /// The writer thread could not be started.
    #[error("could not start the recording writer")]
    Spawn(#[source] io::Error),
    /// The writer thread stopped without a result.
    #[error("the recording writer stopped")]
    WriterStopped,
    /// Randomness notes were lost (the writer fell 1024 events behind, the
    /// recording had ended, or a note was longer than [`MAX_RANDOMNESS_LEN`]): the recording
    /// cannot be replayed deterministically.
    #[error("{count} randomness notes were lost; the recording will not replay")]
    RandomnessLost {
        /// How many.
        count: u64,
    },
}

/// What a finished recording holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordingSummary {
    /// Event lines written (the header not counted).
    pub events: u64,
}

enum Msg {
    /// An event and when it happened. The writer formats the line, so that it can keep the
    /// times in file order: two taps (or a tap and a randomness note) may take their times in
    /// one order and queue their events in the other.
    Event {
        t_us: u64,
        body: EventBody,
    },
    Finish,
}

struct Shared {
    start: Instant,
    events: mpsc::Sender<Msg>,
    lost: AtomicU64,
}

impl Shared {
    fn t_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Logs a traffic event, waiting if the writer is behind. A stopped writer (sink error)
    /// is ignored here and reported by the task: the device link must keep working.
    async fn log(&self, body: EventBody) {
        let t_us = self.t_us();
        let _ = self.events.send(Msg::Event { t_us, body }).await;
    }
}

/// The handle the engines note randomness through while a recording runs. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    shared: Arc<Shared>,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Notes host randomness. Never blocks (the engines call it from synchronous code); a note
    /// that cannot be queued is counted and reported by the [`RecordingTask`] as
    /// [`RecordError::RandomnessLost`].
    pub fn note_randomness(&self, kind: RandomnessKind, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let queued = bytes.len() <= MAX_RANDOMNESS_LEN && {
            let body = EventBody::Randomness(RandomBytes {
                kind,
                bytes: Zeroizing::new(bytes.to_vec()),
            });
            let t_us = self.shared.t_us();
            self.shared
                .events
                .try_send(Msg::Event { t_us, body })
                .is_ok()
        };
        if !queued {
            self.shared.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl RandomnessLog for Recorder {
    fn note_randomness(&self, kind: RandomnessKind, bytes: &[u8]) {
        Self::note_randomness(self, kind, bytes);
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Drives a recording: forwards the traffic between the tapped connection and the device and
/// writes the events. Spawn or await it; the connection handed out by [`record`] only works
/// while it runs. It finishes when either side closes the link, with the recording flushed.
pub struct RecordingTask(BoxFuture<Result<RecordingSummary, RecordError>>);

impl fmt::Debug for RecordingTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingTask").finish_non_exhaustive()
    }
}

impl Future for RecordingTask {
    type Output = Result<RecordingSummary, RecordError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// A recording in progress: what [`record`] hands out.
#[derive(Debug)]
pub struct Recording {
    /// The connection to use instead of the original one; it behaves the same.
    pub connection: Connection,
    /// Where the engines note the randomness they draw.
    pub recorder: Recorder,
    /// The task that forwards and writes; spawn it.
    pub task: RecordingTask,
}

/// Starts recording `connection` into `sink`.
///
/// The header line is written (and flushed) before this returns, so a sink that cannot be
/// written fails here. Events are then written, one flushed line each, by a dedicated thread,
/// so that a slow disk never blocks the async runtime; if it falls far behind, the taps wait
/// for it (bounded memory). A sink that fails later does not disturb the device link: the
/// traffic keeps flowing and the [`RecordingTask`] reports the error.
pub fn record<W: Write + Send + 'static>(
    connection: Connection,
    description: &DeviceDescription,
    sink: W,
) -> Result<Recording, RecordError> {
    Ok(Writer::start(description, sink)?.tap(connection))
}

/// A recording whose header is written and whose writer thread runs, before it taps a
/// connection: the two halves of [`record`], for callers that must keep the connection when
/// the sink fails.
pub(super) struct Writer {
    shared: Arc<Shared>,
    done: oneshot::Receiver<io::Result<u64>>,
}

impl Writer {
    /// Writes the header and starts the writer thread.
    pub(super) fn start<W: Write + Send + 'static>(
        description: &DeviceDescription,
        mut sink: W,
    ) -> Result<Self, RecordError> {
        let header = Header {
            transport: description.transport,
            device: RecordedDevice::from(description),
            recorder: Some(format!("passkeyd {}", env!("CARGO_PKG_VERSION"))),
        };
        sink.write_all(&header_line(&header).map_err(RecordError::Io)?)
            .and_then(|()| sink.flush())
            .map_err(RecordError::Io)?;

        let (events_tx, events_rx) = mpsc::channel(EVENT_CAPACITY);
        let (done_tx, done) = oneshot::channel();
        std::thread::Builder::new()
            .name("passkeyd-recorder".into())
            .spawn(move || {
                let _ = done_tx.send(write_events(&mut sink, events_rx));
            })
            .map_err(RecordError::Spawn)?;

        let shared = Arc::new(Shared {
            start: Instant::now(),
            events: events_tx,
            lost: AtomicU64::new(0),
        });
        Ok(Self { shared, done })
    }

    /// Taps `connection`: everything that passes is written from now on.
    pub(super) fn tap(self, connection: Connection) -> Recording {
        let Self { shared, done } = self;
        let (connection, taps): (Connection, BoxFuture<()>) = match connection {
            Connection::Hid(device) => {
                let (host_tx, from_host) = mpsc::channel(LINK_CAPACITY);
                let (to_host, host_rx) = mpsc::channel(LINK_CAPACITY);
                let out = tap_reports_out(from_host, device.tx, Arc::clone(&shared));
                let inbound = tap_reports_in(device.rx, to_host, Arc::clone(&shared));
                let taps = Box::pin(async move {
                    tokio::join!(out, inbound);
                });
                let link = ReportLink {
                    tx: host_tx,
                    rx: host_rx,
                };
                (Connection::Hid(link), taps)
            }
            Connection::Apdu(device) => {
                let (host_tx, from_host) = mpsc::channel(LINK_CAPACITY);
                let taps = Box::pin(tap_apdus(from_host, device.tx, Arc::clone(&shared)));
                (Connection::Apdu(ApduLink { tx: host_tx }), taps)
            }
        };

        let recorder = Recorder {
            shared: Arc::clone(&shared),
        };
        let task = RecordingTask(Box::pin(async move {
            taps.await;
            // The writer stops at Finish even while Recorder clones keep the channel open.
            let _ = shared.events.send(Msg::Finish).await;
            let events = done
                .await
                .map_err(|_| RecordError::WriterStopped)?
                .map_err(RecordError::Io)?;
            match shared.lost.load(Ordering::Relaxed) {
                0 => Ok(RecordingSummary { events }),
                count => Err(RecordError::RandomnessLost { count }),
            }
        }));
        Recording {
            connection,
            recorder,
            task,
        }
    }
}

/// The writer thread: one flushed line per event, so a crash loses at most the event being
/// written, which is when a recording attached to a bug report matters most.
///
/// An event queued after a later-timed one gets that one's time: readers refuse a time that
/// goes back, and the queue order is the order that counts (randomness is queued in the order
/// it was drawn, traffic in the order it passed each tap).
fn write_events(sink: &mut impl Write, mut events: mpsc::Receiver<Msg>) -> io::Result<u64> {
    let mut written = 0u64;
    let mut last_t_us = 0;
    while let Some(Msg::Event { t_us, body }) = events.blocking_recv() {
        last_t_us = t_us.max(last_t_us);
        let line = event_line(last_t_us, &body);
        sink.write_all(line.as_bytes())?;
        sink.flush()?;
        written = written.saturating_add(1);
    }
    Ok(written)
}

/// Host → device reports. Ends when the host drops its link or the device side closes.
async fn tap_reports_out(
    mut from_host: mpsc::Receiver<Report>,
    to_device: mpsc::Sender<Report>,
    shared: Arc<Shared>,
) {
    loop {
        let report = tokio::select! {
            biased;
            report = from_host.recv() => match report {
                Some(report) => report,
                None => return,
            },
            () = to_device.closed() => return,
        };
        shared
            .log(EventBody::Report {
                dir: Direction::Out,
                report,
            })
            .await;
        if to_device.send(report).await.is_err() {
            return;
        }
    }
}

/// Device → host reports. An error or a closed channel means the device is gone: that is
/// recorded as a disconnect and passed on.
async fn tap_reports_in(
    mut from_device: mpsc::Receiver<Result<Report, LinkError>>,
    to_host: mpsc::Sender<Result<Report, LinkError>>,
    shared: Arc<Shared>,
) {
    loop {
        let item = tokio::select! {
            biased;
            () = to_host.closed() => return,
            item = from_device.recv() => item,
        };
        match item {
            Some(Ok(report)) => {
                shared
                    .log(EventBody::Report {
                        dir: Direction::In,
                        report,
                    })
                    .await;
                if to_host.send(Ok(report)).await.is_err() {
                    return;
                }
            }
            Some(Err(error)) => {
                shared.log(EventBody::Disconnect).await;
                let _ = to_host.send(Err(error)).await;
                return;
            }
            None => {
                shared.log(EventBody::Disconnect).await;
                return;
            }
        }
    }
}

/// APDUs: each request is logged, passed on with a reply channel of our own, and its response
/// logged on the way back. A failed transmission ends the link like a removed card.
async fn tap_apdus(
    mut from_host: mpsc::Receiver<ApduRequest>,
    to_card: mpsc::Sender<ApduRequest>,
    shared: Arc<Shared>,
) {
    loop {
        let request = tokio::select! {
            biased;
            request = from_host.recv() => match request {
                Some(request) => request,
                None => return,
            },
            () = to_card.closed() => {
                shared.log(EventBody::Disconnect).await;
                return;
            }
        };
        shared.log(EventBody::Apdu(request.apdu.clone())).await;
        let (reply, response) = oneshot::channel();
        let forwarded = ApduRequest {
            apdu: request.apdu,
            reply,
        };
        if to_card.send(forwarded).await.is_err() {
            shared.log(EventBody::Disconnect).await;
            let _ = request.reply.send(Err(LinkError::Disconnected));
            return;
        }
        match response.await {
            Ok(Ok(bytes)) => {
                shared.log(EventBody::ApduResponse(bytes.clone())).await;
                let _ = request.reply.send(Ok(bytes));
            }
            Ok(Err(error)) => {
                shared.log(EventBody::Disconnect).await;
                let _ = request.reply.send(Err(error));
                return;
            }
            Err(_) => {
                shared.log(EventBody::Disconnect).await;
                let _ = request.reply.send(Err(LinkError::Disconnected));
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replay
// ---------------------------------------------------------------------------------------------

/// Why a replay stopped before the host finished with the recording. The link is closed when
/// this is returned, so the host sees the device disappear.
///
/// The messages give positions and lengths only: the bytes (in the fields) may be PIN-protocol
/// material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayError {
    /// The host wrote something other than the recording's next "out" event.
    #[error(
        "line {line}: the host's write differs from the recording at byte {offset} ({} bytes written, {} recorded)",
        .got.len(),
        .expected.len()
    )]
    Mismatch {
        /// The line of the recorded write.
        line: usize,
        /// The recorded bytes.
        expected: Vec<u8>,
        /// What the host wrote.
        got: Vec<u8>,
        /// The first byte that differs (the shorter length if one is a prefix of the other).
        offset: usize,
    },
    /// The host closed the link before the end of the recording.
    #[error("line {line}: the host closed the link before this recorded event")]
    HostClosed {
        /// The line of the first event not served.
        line: usize,
    },
    /// The host wrote after the last recorded event.
    #[error("the host wrote {} bytes after the end of the recording", .got.len())]
    PastEnd {
        /// What it wrote.
        got: Vec<u8>,
    },
    /// A recorded APDU has no recorded response (the recording ends, or another APDU follows).
    #[error("line {line}: the recorded APDU has no response")]
    MissingResponse {
        /// The line of the APDU.
        line: usize,
    },
    /// An APDU response with no APDU before it.
    #[error("line {line}: a recorded APDU response answers no APDU")]
    UnexpectedResponse {
        /// Its line.
        line: usize,
    },
}

/// How a replay ended without error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Traffic events served (reports or APDUs in both directions).
    pub served: usize,
    /// Whether the recording ended with the device disconnecting (the link was closed then).
    pub disconnected: bool,
}

/// Drives a replay; spawn or await it. It finishes when the host closes the link after the
/// whole recording was served, when a recorded disconnect is reached, or with a
/// [`ReplayError`].
pub struct ReplayTask(BoxFuture<Result<ReplaySummary, ReplayError>>);

impl fmt::Debug for ReplayTask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayTask").finish_non_exhaustive()
    }
}

impl Future for ReplayTask {
    type Output = Result<ReplaySummary, ReplayError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

/// A recording served as a device.
#[derive(Clone, Debug)]
pub struct Replay {
    file: RecordingFile,
}

impl Replay {
    /// A replay of `file`.
    pub fn new(file: RecordingFile) -> Self {
        Self { file }
    }

    /// Reads a recording ([`RecordingFile::read`]) to replay.
    pub fn read(reader: impl BufRead) -> Result<Self, RecordingError> {
        RecordingFile::read(reader).map(Self::new)
    }

    /// The recording's header.
    pub fn header(&self) -> &Header {
        &self.file.header
    }

    /// The recording.
    pub fn file(&self) -> &RecordingFile {
        &self.file
    }

    /// The recorded host randomness, to be used as the engines' RNG so that the host writes
    /// what it wrote when recording.
    pub fn randomness(&self) -> ReplayRandomness {
        ReplayRandomness {
            entries: self
                .file
                .events
                .iter()
                .filter_map(|e| match &e.body {
                    EventBody::Randomness(r) => Some((e.line, r.clone())),
                    _ => None,
                })
                .collect(),
            error: None,
        }
    }

    /// Serves the recording as a connection of the recorded transport (reports for USB and
    /// virtual keys, APDUs for NFC), in strict order: each host write must equal the next
    /// recorded "out" event, then the recorded "in" events up to the next "out" are delivered
    /// at once (recorded times are not reproduced). The connection only works while the
    /// [`ReplayTask`] runs.
    pub fn serve(self) -> (Connection, ReplayTask) {
        let traffic: Vec<Event> = self
            .file
            .events
            .into_iter()
            .filter(|e| !matches!(e.body, EventBody::Randomness(_)))
            .collect();
        match self.file.header.transport {
            Transport::Usb | Transport::Virtual => {
                let (host_tx, from_host) = mpsc::channel(LINK_CAPACITY);
                let (to_host, host_rx) = mpsc::channel(LINK_CAPACITY);
                let task = ReplayTask(Box::pin(serve_reports(traffic, from_host, to_host)));
                let link = ReportLink {
                    tx: host_tx,
                    rx: host_rx,
                };
                (Connection::Hid(link), task)
            }
            Transport::Nfc => {
                let (host_tx, from_host) = mpsc::channel(LINK_CAPACITY);
                let task = ReplayTask(Box::pin(serve_apdus(traffic, from_host)));
                (Connection::Apdu(ApduLink { tx: host_tx }), task)
            }
        }
    }
}

fn mismatch(line: usize, expected: &[u8], got: &[u8]) -> ReplayError {
    let offset = expected
        .iter()
        .zip(got)
        .position(|(e, g)| e != g)
        .unwrap_or(expected.len().min(got.len()));
    ReplayError::Mismatch {
        line,
        expected: expected.to_vec(),
        got: got.to_vec(),
        offset,
    }
}

async fn serve_reports(
    traffic: Vec<Event>,
    mut from_host: mpsc::Receiver<Report>,
    to_host: mpsc::Sender<Result<Report, LinkError>>,
) -> Result<ReplaySummary, ReplayError> {
    let mut served = 0;
    for event in traffic {
        match event.body {
            EventBody::Report {
                dir: Direction::Out,
                report: expected,
            } => {
                let got = from_host
                    .recv()
                    .await
                    .ok_or(ReplayError::HostClosed { line: event.line })?;
                if got != expected {
                    return Err(mismatch(event.line, &expected, &got));
                }
            }
            EventBody::Report {
                dir: Direction::In,
                report,
            } => {
                let delivered = to_host.send(Ok(report)).await.is_ok();
                if !delivered {
                    return Err(ReplayError::HostClosed { line: event.line });
                }
            }
            EventBody::Disconnect => {
                let _ = to_host.send(Err(LinkError::Disconnected)).await;
                return Ok(ReplaySummary {
                    served,
                    disconnected: true,
                });
            }
            // The reader only lets reports, disconnects and randomness through for HID, and
            // randomness was filtered out.
            _ => {}
        }
        served += 1;
    }
    match from_host.recv().await {
        None => Ok(ReplaySummary {
            served,
            disconnected: false,
        }),
        Some(got) => Err(ReplayError::PastEnd { got: got.to_vec() }),
    }
}

async fn serve_apdus(
    traffic: Vec<Event>,
    mut from_host: mpsc::Receiver<ApduRequest>,
) -> Result<ReplaySummary, ReplayError> {
    let mut served = 0;
    let mut events = traffic.into_iter();
    while let Some(event) = events.next() {
        match event.body {
            EventBody::Apdu(expected) => {
                let request = from_host
                    .recv()
                    .await
                    .ok_or(ReplayError::HostClosed { line: event.line })?;
                if request.apdu != expected {
                    let _ = request.reply.send(Err(LinkError::Disconnected));
                    return Err(mismatch(event.line, &expected, &request.apdu));
                }
                served += 1;
                match events.next().map(|e| e.body) {
                    Some(EventBody::ApduResponse(response)) => {
                        // A host that dropped its reply channel gave up on this APDU; the
                        // next write decides how the replay goes on.
                        let _ = request.reply.send(Ok(response));
                        served += 1;
                    }
                    Some(EventBody::Disconnect) => {
                        let _ = request.reply.send(Err(LinkError::Disconnected));
                        return Ok(ReplaySummary {
                            served,
                            disconnected: true,
                        });
                    }
                    _ => {
                        let _ = request.reply.send(Err(LinkError::Disconnected));
                        return Err(ReplayError::MissingResponse { line: event.line });
                    }
                }
            }
            EventBody::Disconnect => {
                return Ok(ReplaySummary {
                    served,
                    disconnected: true,
                });
            }
            _ => return Err(ReplayError::UnexpectedResponse { line: event.line }),
        }
    }
    match from_host.recv().await {
        None => Ok(ReplaySummary {
            served,
            disconnected: false,
        }),
        Some(request) => {
            let _ = request.reply.send(Err(LinkError::Disconnected));
            Err(ReplayError::PastEnd { got: request.apdu })
        }
    }
}

/// Why [`ReplayRandomness`] could not serve a draw.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RandomnessError {
    /// Every recorded entry was used: the replayed ceremony draws more than the recorded one.
    #[error("recorded randomness exhausted ({requested} bytes requested)")]
    Exhausted {
        /// The size of the draw.
        requested: usize,
    },
    /// The next entry has another size than the draw: the replayed ceremony diverged.
    #[error("line {line}: recorded {kind} has {recorded} bytes, {requested} requested")]
    LengthMismatch {
        /// The entry's line.
        line: usize,
        /// The entry's kind.
        kind: &'static str,
        /// Its length.
        recorded: usize,
        /// The size of the draw.
        requested: usize,
    },
}

/// The recorded host randomness, handed out in order: an `RngCore + CryptoRng` to give the
/// engines instead of the system RNG during a replay.
///
/// Each draw (`fill_bytes`, `try_fill_bytes`, `next_u32`, `next_u64`) takes the next recorded
/// entry whole and must be exactly its size; entries are not split or joined, so a ceremony
/// that diverges is caught at its first differing draw. It never panics:
///
/// - `try_fill_bytes` returns the [`RandomnessError`] (inside a `rand_core::Error`; see
///   [`ReplayRandomness::error_of`]);
/// - the infallible `fill_bytes` latches the error ([`ReplayRandomness::error`]) and fills
///   with a fixed non-zero pattern, so the host's next write differs from the recording and
///   the replay reports a [`ReplayError::Mismatch`].
///
/// After the first error every later draw fails the same way.
///
/// It is deterministic by construction and only good for replays: it implements `CryptoRng`
/// because the engines require one, not because its output is secret.
#[derive(Clone)]
pub struct ReplayRandomness {
    entries: VecDeque<(usize, RandomBytes)>,
    error: Option<RandomnessError>,
}

impl fmt::Debug for ReplayRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayRandomness")
            .field("remaining", &self.entries.len())
            .field("error", &self.error)
            .finish()
    }
}

impl ReplayRandomness {
    /// Fills `dest` with the next entry.
    pub fn try_draw(&mut self, dest: &mut [u8]) -> Result<(), RandomnessError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = match self.entries.front() {
            None => Err(RandomnessError::Exhausted {
                requested: dest.len(),
            }),
            Some((line, entry)) if entry.bytes.len() != dest.len() => {
                Err(RandomnessError::LengthMismatch {
                    line: *line,
                    kind: entry.kind.as_str(),
                    recorded: entry.bytes.len(),
                    requested: dest.len(),
                })
            }
            Some((_, entry)) => {
                dest.copy_from_slice(&entry.bytes);
                Ok(())
            }
        };
        match &result {
            Ok(()) => {
                self.entries.pop_front();
            }
            Err(error) => self.error = Some(error.clone()),
        }
        result
    }

    /// The first error a draw met, if any.
    pub fn error(&self) -> Option<&RandomnessError> {
        self.error.as_ref()
    }

    /// Entries not used yet.
    pub fn remaining(&self) -> usize {
        self.entries.len()
    }

    /// The [`RandomnessError`] inside an error from `try_fill_bytes`, if it is one.
    pub fn error_of(error: &rand_core::Error) -> Option<&RandomnessError> {
        error.inner().downcast_ref()
    }
}

impl RngCore for ReplayRandomness {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if self.try_draw(dest).is_err() {
            dest.fill(FILLER);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.try_draw(dest).map_err(rand_core::Error::new)
    }
}

impl CryptoRng for ReplayRandomness {}

#[cfg(test)]
mod tests;
