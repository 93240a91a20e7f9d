//! CTAPHID framing for USB HID authenticators (CTAP 2.2 §11.2), platform side.
//!
//! A CTAPHID message (command + payload) travels in fixed 64-byte HID reports: one
//! *initialization packet* (`CID | CMD|0x80 | BCNT | 57 data bytes`) followed by up to 128
//! *continuation packets* (`CID | SEQ | 59 data bytes`), all zero padded (CTAP 2.2 §11.2.4).
//!
//! This module is sans-IO. It turns messages into reports ([`fragment`]) and reports back
//! into messages ([`Reassembler`]), and runs one request/response exchange on a channel as a
//! state machine ([`Transaction`]). It never reads a device, owns no clock and makes no
//! random numbers: the caller writes the reports, feeds back what the device sent, keeps the
//! deadlines and supplies the INIT nonce.
//!
//! Input from the device is treated as hostile: every malformed report yields a typed
//! [`FramingError`], buffers are bounded by the declared length which is itself bounded by
//! [`MAX_MESSAGE_LEN`] or a smaller caller-given limit, and nothing here panics on device data.
//!
//! # Frames for other channels
//!
//! Linux hidraw hands every input report to every open file descriptor, so a daemon sees the
//! traffic of other processes talking to the same key. Such frames are not errors: the
//! reassembler reports them as [`PushOutcome::Foreign`] so a caller can count and drop them.
//!
//! # Short reports
//!
//! A report shorter than 64 bytes only comes from a broken device or transport. The policy
//! here: a short report is accepted when every byte that is cut off would have been zero
//! padding, that is when it still holds the packet header and all message bytes that this
//! packet carries; otherwise it is [`FramingError::ReportTooShort`]. This keeps real captures
//! whose trailing padding was trimmed working while never guessing at missing payload bytes.
//! Reports longer than 64 bytes are rejected ([`FramingError::ReportTooLong`]); strip the
//! hidraw report-ID byte before pushing.
//!
//! # Driving a channel
//!
//! ```
//! use ctap::ctaphid::{
//!     self, Cid, Command, Reassembler, PushOutcome, Transaction, TransactionEvent,
//! };
//!
//! // 1. Allocate a channel: INIT on the broadcast CID with a fresh random nonce.
//! let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
//! let _request = ctaphid::init_request(&nonce); // write this (with a 0x00 report id on hidraw)
//! // A device answer, as read from hidraw:
//! let mut answer = [0u8; 64];
//! answer[..7].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF, 0x86, 0x00, 0x11]);
//! answer[7..15].copy_from_slice(&nonce);
//! answer[15..24].copy_from_slice(&[0x00, 0x22, 0x00, 0x02, 0x02, 0x05, 0x02, 0x01, 0x05]);
//! let mut rx = Reassembler::new(Cid::BROADCAST, ctaphid::MAX_MESSAGE_LEN);
//! let init = match rx.push(&answer)? {
//!     PushOutcome::Complete(m) if m.cmd == Command::Init => {
//!         // A NonceMismatch here is another client's answer: keep reading.
//!         ctaphid::parse_init_response(&m.payload, &nonce)?
//!     }
//!     other => panic!("unexpected {other:?}"),
//! };
//! assert_eq!(init.cid, Cid::new(0x0022_0002));
//!
//! // 2. Run a CBOR request on the new channel.
//! let mut tx = Transaction::new(init.cid, Command::Cbor, &[0x04], 1024)?;
//! assert_eq!(tx.reports().len(), 1); // write each report in order
//! let mut reply = [0u8; 64];
//! reply[..8].copy_from_slice(&[0x00, 0x22, 0x00, 0x02, 0x90, 0x00, 0x01, 0x00]);
//! assert_eq!(tx.on_report(&reply)?, TransactionEvent::Response(vec![0x00]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;

use zeroize::Zeroizing;

/// Length of a CTAPHID report on the wire, without a report ID (CTAP 2.2 §11.2.4).
pub const REPORT_LEN: usize = 64;

/// Length of the 65-byte form written to Linux hidraw: a leading report ID `0x00` and the
/// 64-byte report.
pub const HIDRAW_REPORT_LEN: usize = REPORT_LEN + 1;

/// Payload bytes carried by an initialization packet: 64 minus CID(4), CMD(1), BCNT(2).
pub const INIT_DATA_LEN: usize = REPORT_LEN - 7;

/// Payload bytes carried by a continuation packet: 64 minus CID(4), SEQ(1).
pub const CONT_DATA_LEN: usize = REPORT_LEN - 5;

/// Highest continuation sequence number; SEQ runs `0..=0x7F` (CTAP 2.2 §11.2.4).
pub const MAX_SEQ: u8 = 0x7F;

/// Largest message CTAPHID can carry: one initialization packet and 128 continuation
/// packets, 57 + 128 × 59 = 7609 bytes (CTAP 2.2 §11.2.4).
pub const MAX_MESSAGE_LEN: usize = INIT_DATA_LEN + (MAX_SEQ as usize + 1) * CONT_DATA_LEN;

/// Length of the INIT nonce (CTAP 2.2 §11.2.9.1.3).
pub const INIT_NONCE_LEN: usize = 8;

/// Bit 7 of the command byte marks an initialization packet (CTAP 2.2 §11.2.4).
const INIT_BIT: u8 = 0x80;

/// Offset of the first payload byte in an initialization packet.
const INIT_HEADER_LEN: usize = 7;

/// Offset of the first payload byte in a continuation packet.
const CONT_HEADER_LEN: usize = 5;

/// Length of a CTAPHID_INIT response payload (CTAP 2.2 §11.2.9.1.3).
const INIT_RESPONSE_LEN: usize = 17;

/// A CTAPHID channel identifier (CTAP 2.2 §11.2.3), big-endian on the wire.
///
/// `0` is reserved and [`Cid::BROADCAST`] is only for CTAPHID_INIT; neither is ever a channel
/// allocated by a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(u32);

impl Cid {
    /// The broadcast channel `0xFFFFFFFF`, used only to allocate a channel with INIT.
    pub const BROADCAST: Self = Self(0xFFFF_FFFF);

    /// Wraps a channel identifier.
    pub const fn new(value: u32) -> Self {
        Self(value)
    }

    /// The numeric value.
    pub const fn value(self) -> u32 {
        self.0
    }

    /// Reads a CID from its 4 big-endian wire bytes.
    pub const fn from_bytes(bytes: [u8; 4]) -> Self {
        Self(u32::from_be_bytes(bytes))
    }

    /// The 4 big-endian wire bytes.
    pub const fn to_bytes(self) -> [u8; 4] {
        self.0.to_be_bytes()
    }

    /// Whether this is [`Cid::BROADCAST`].
    pub const fn is_broadcast(self) -> bool {
        self.0 == Self::BROADCAST.0
    }

    /// Whether this CID can never be an allocated channel (`0` or broadcast).
    pub const fn is_reserved(self) -> bool {
        self.0 == 0 || self.is_broadcast()
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A CTAPHID command (CTAP 2.2 §11.2.9), without the initialization-packet bit.
///
/// [`Command::from`] is total: codes without a name are kept in [`Command::Vendor`]
/// (`0x40..=0x7F`, §11.2.9.3) or [`Command::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// CTAPHID_PING `0x01`: echo (§11.2.9.1.4).
    Ping,
    /// CTAPHID_MSG `0x03`: a CTAP1/U2F APDU (§11.2.9.1.1).
    Msg,
    /// CTAPHID_LOCK `0x04`: exclusive channel lock (§11.2.9.2.2).
    Lock,
    /// CTAPHID_INIT `0x06`: channel allocation (§11.2.9.1.3).
    Init,
    /// CTAPHID_WINK `0x08`: identify the device (§11.2.9.2.1).
    Wink,
    /// CTAPHID_CBOR `0x10`: a CTAP2 command byte + CBOR (§11.2.9.1.2).
    Cbor,
    /// CTAPHID_CANCEL `0x11`: cancel the pending request, no reply (§11.2.9.1.5).
    Cancel,
    /// CTAPHID_KEEPALIVE `0x3B`: the device is still busy (§11.2.9.1.7).
    Keepalive,
    /// CTAPHID_ERROR `0x3F`: a transport-level error (§11.2.9.1.6).
    Error,
    /// A vendor command, `0x40..=0x7F` (§11.2.9.3).
    Vendor(u8),
    /// Any other code below `0x40`, kept as received.
    Unknown(u8),
}

impl Command {
    /// The 7-bit command code (bit 7, the initialization marker, is never set).
    pub const fn code(self) -> u8 {
        match self {
            Self::Ping => 0x01,
            Self::Msg => 0x03,
            Self::Lock => 0x04,
            Self::Init => 0x06,
            Self::Wink => 0x08,
            Self::Cbor => 0x10,
            Self::Cancel => 0x11,
            Self::Keepalive => 0x3B,
            Self::Error => 0x3F,
            Self::Vendor(code) | Self::Unknown(code) => code & !INIT_BIT,
        }
    }
}

impl From<u8> for Command {
    /// Total conversion. Bit 7 (the initialization-packet marker) is ignored, so both `0x10`
    /// and `0x90` are [`Command::Cbor`].
    fn from(byte: u8) -> Self {
        match byte & !INIT_BIT {
            0x01 => Self::Ping,
            0x03 => Self::Msg,
            0x04 => Self::Lock,
            0x06 => Self::Init,
            0x08 => Self::Wink,
            0x10 => Self::Cbor,
            0x11 => Self::Cancel,
            0x3B => Self::Keepalive,
            0x3F => Self::Error,
            code @ 0x40..=0x7F => Self::Vendor(code),
            code => Self::Unknown(code),
        }
    }
}

/// The status byte of a CTAPHID_KEEPALIVE (CTAP 2.2 §11.2.9.1.7), also used by the NFC
/// status update (§11.3.7.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeepaliveStatus {
    /// `1` STATUS_PROCESSING: still working.
    Processing,
    /// `2` STATUS_UPNEEDED: waiting for user presence ("touch your key").
    UpNeeded,
    /// Any other value, kept as received.
    Unknown(u8),
}

impl KeepaliveStatus {
    /// The status byte.
    pub const fn code(self) -> u8 {
        match self {
            Self::Processing => 0x01,
            Self::UpNeeded => 0x02,
            Self::Unknown(code) => code,
        }
    }
}

impl From<u8> for KeepaliveStatus {
    fn from(byte: u8) -> Self {
        match byte {
            0x01 => Self::Processing,
            0x02 => Self::UpNeeded,
            code => Self::Unknown(code),
        }
    }
}

/// The error code carried by a CTAPHID_ERROR response (CTAP 2.2 §11.2.9.1.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HidErrorCode {
    /// `0x01` ERR_INVALID_CMD: the command is not supported.
    InvalidCmd,
    /// `0x02` ERR_INVALID_PAR: invalid parameter.
    InvalidPar,
    /// `0x03` ERR_INVALID_LEN: invalid message length.
    InvalidLen,
    /// `0x04` ERR_INVALID_SEQ: continuation packet out of sequence.
    InvalidSeq,
    /// `0x05` ERR_MSG_TIMEOUT: the message timed out on the device.
    MsgTimeout,
    /// `0x06` ERR_CHANNEL_BUSY: another channel holds the device; back off and retry.
    ChannelBusy,
    /// `0x0A` ERR_LOCK_REQUIRED: the command needs a channel lock.
    LockRequired,
    /// `0x0B` ERR_INVALID_CHANNEL: the CID is not valid; allocate a new one with INIT.
    InvalidChannel,
    /// `0x7F` ERR_OTHER: unspecified error.
    Other,
    /// Any other code, kept as received.
    Unknown(u8),
}

impl HidErrorCode {
    /// The error byte.
    pub const fn code(self) -> u8 {
        match self {
            Self::InvalidCmd => 0x01,
            Self::InvalidPar => 0x02,
            Self::InvalidLen => 0x03,
            Self::InvalidSeq => 0x04,
            Self::MsgTimeout => 0x05,
            Self::ChannelBusy => 0x06,
            Self::LockRequired => 0x0A,
            Self::InvalidChannel => 0x0B,
            Self::Other => 0x7F,
            Self::Unknown(code) => code,
        }
    }
}

impl From<u8> for HidErrorCode {
    fn from(byte: u8) -> Self {
        match byte {
            0x01 => Self::InvalidCmd,
            0x02 => Self::InvalidPar,
            0x03 => Self::InvalidLen,
            0x04 => Self::InvalidSeq,
            0x05 => Self::MsgTimeout,
            0x06 => Self::ChannelBusy,
            0x0A => Self::LockRequired,
            0x0B => Self::InvalidChannel,
            0x7F => Self::Other,
            code => Self::Unknown(code),
        }
    }
}

/// Errors building the reports of an outgoing message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The payload exceeds the limit (the caller's device limit, capped at
    /// [`MAX_MESSAGE_LEN`]).
    #[error("payload of {len} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// Effective limit.
        limit: usize,
    },
    /// A [`Transaction`] was requested for a command the device never answers
    /// (CANCEL, KEEPALIVE, ERROR).
    #[error("command {0:?} has no response and cannot be a transaction")]
    NoResponse(Command),
}

/// A malformed or out-of-order report on our channel (CTAP 2.2 §11.2.4, §11.2.5.4).
///
/// After any of these the [`Reassembler`] has dropped the partial message and is idle.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    /// The report is shorter than its header, or cuts off message bytes (see the module
    /// docs for the short-report policy).
    #[error("report of {len} bytes is too short, {needed} bytes needed")]
    ReportTooShort {
        /// Report length.
        len: usize,
        /// Bytes needed to hold the header and the message bytes this packet carries.
        needed: usize,
    },
    /// The report is longer than 64 bytes (a report-ID byte was left in, or the device is
    /// not CTAPHID).
    #[error("report of {len} bytes is longer than 64 bytes")]
    ReportTooLong {
        /// Report length.
        len: usize,
    },
    /// A continuation packet arrived with no message in progress.
    #[error("continuation packet (seq {seq}) without an initialization packet")]
    ContinuationWithoutInit {
        /// Its sequence number.
        seq: u8,
    },
    /// A continuation packet with the wrong sequence number (skipped, repeated, or a first
    /// continuation not numbered 0).
    #[error("continuation packet has seq {got}, expected {expected}")]
    UnexpectedSeq {
        /// The sequence number that should have come.
        expected: u8,
        /// The one that came.
        got: u8,
    },
    /// A new initialization packet arrived while a message was still being reassembled.
    #[error("initialization packet ({cmd:?}) in the middle of a message")]
    InitDuringMessage {
        /// Command of the interrupting packet.
        cmd: Command,
    },
    /// The declared message length (BCNT) is over the limit.
    #[error("message length {bcnt} exceeds the limit of {limit} bytes")]
    BcntOverLimit {
        /// Declared length.
        bcnt: usize,
        /// Effective limit.
        limit: usize,
    },
}

/// A reassembled CTAPHID message. Its `Debug` output shows the length of the payload, not
/// its bytes, which may be secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// The channel it arrived on.
    pub cid: Cid,
    /// Its command.
    pub cmd: Command,
    /// Exactly BCNT payload bytes (padding removed).
    pub payload: Vec<u8>,
}

/// What one report did to a [`Reassembler`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// A frame for another channel: ignored, state unchanged. Normal on hidraw.
    Foreign(Cid),
    /// Part of a message was taken; more continuation packets are needed.
    NeedMore,
    /// A message is complete; the reassembler is idle again.
    Complete(Message),
}

/// Reassembles CTAPHID messages for one channel from 64-byte input reports
/// (CTAP 2.2 §11.2.4).
///
/// Strict: continuation packets must come in order from SEQ 0, a new initialization packet
/// in the middle of a message is an error, and BCNT must not exceed the limit. The buffer
/// never grows beyond BCNT. After a complete message or an error it is ready for the next
/// message.
#[derive(Clone)]
pub struct Reassembler {
    cid: Cid,
    limit: usize,
    partial: Option<Partial>,
}

/// A message being received. Its payload may be secret (an encrypted pinUvAuthToken), so it
/// is wiped if the message is abandoned; a completed payload moves out to the caller.
#[derive(Clone)]
struct Partial {
    cmd: Command,
    bcnt: usize,
    next_seq: u8,
    payload: Zeroizing<Vec<u8>>,
}

impl Reassembler {
    /// A reassembler for `cid` accepting messages of up to `max_len` bytes, capped at
    /// [`MAX_MESSAGE_LEN`].
    pub fn new(cid: Cid, max_len: usize) -> Self {
        Self {
            cid,
            limit: max_len.min(MAX_MESSAGE_LEN),
            partial: None,
        }
    }

    /// The channel this reassembler listens on.
    pub fn cid(&self) -> Cid {
        self.cid
    }

    /// Whether a message is partly received.
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Drops any partial message.
    pub fn reset(&mut self) {
        self.partial = None;
    }

    /// Takes one input report (64 bytes, no report ID).
    pub fn push(&mut self, report: &[u8]) -> Result<PushOutcome, FramingError> {
        if report.len() > REPORT_LEN {
            return Err(FramingError::ReportTooLong { len: report.len() });
        }
        let Some((cid, rest)) = report.split_first_chunk::<4>() else {
            return Err(FramingError::ReportTooShort {
                len: report.len(),
                needed: 4,
            });
        };
        let cid = Cid::from_bytes(*cid);
        if cid != self.cid {
            return Ok(PushOutcome::Foreign(cid));
        }
        let result = match rest.first() {
            Some(&byte) if byte & INIT_BIT != 0 => self.push_init(report),
            Some(&seq) => self.push_cont(report, seq),
            None => Err(FramingError::ReportTooShort {
                len: report.len(),
                needed: CONT_HEADER_LEN,
            }),
        };
        if result.is_err() {
            self.partial = None;
        }
        result
    }

    fn push_init(&mut self, report: &[u8]) -> Result<PushOutcome, FramingError> {
        let Some([_, _, _, _, cmd, hi, lo]) = report.first_chunk::<INIT_HEADER_LEN>() else {
            return Err(FramingError::ReportTooShort {
                len: report.len(),
                needed: INIT_HEADER_LEN,
            });
        };
        let cmd = Command::from(*cmd);
        if self.partial.is_some() {
            return Err(FramingError::InitDuringMessage { cmd });
        }
        let bcnt = usize::from(u16::from_be_bytes([*hi, *lo]));
        if bcnt > self.limit {
            return Err(FramingError::BcntOverLimit {
                bcnt,
                limit: self.limit,
            });
        }
        let carried = bcnt.min(INIT_DATA_LEN);
        let data = take_data(report, INIT_HEADER_LEN, carried)?;
        // Exactly BCNT: the buffer never reallocates, so no unwiped copy is left behind.
        let mut payload = Zeroizing::new(Vec::with_capacity(bcnt));
        payload.extend_from_slice(data);
        let partial = Partial {
            cmd,
            bcnt,
            next_seq: 0,
            payload,
        };
        Ok(self.finish_or_wait(partial))
    }

    fn push_cont(&mut self, report: &[u8], seq: u8) -> Result<PushOutcome, FramingError> {
        let Some(mut partial) = self.partial.take() else {
            return Err(FramingError::ContinuationWithoutInit { seq });
        };
        if seq != partial.next_seq {
            return Err(FramingError::UnexpectedSeq {
                expected: partial.next_seq,
                got: seq,
            });
        }
        let remaining = partial.bcnt.saturating_sub(partial.payload.len());
        let data = take_data(report, CONT_HEADER_LEN, remaining.min(CONT_DATA_LEN))?;
        partial.payload.extend_from_slice(data);
        // A partial message is only kept while bytes remain, and BCNT <= 7609 needs at most
        // 128 continuations, so SEQ 0x7F is always the last one and this never wraps.
        partial.next_seq = partial.next_seq.saturating_add(1);
        Ok(self.finish_or_wait(partial))
    }

    fn finish_or_wait(&mut self, mut partial: Partial) -> PushOutcome {
        if partial.payload.len() >= partial.bcnt {
            PushOutcome::Complete(Message {
                cid: self.cid,
                cmd: partial.cmd,
                payload: core::mem::take(&mut *partial.payload),
            })
        } else {
            self.partial = Some(partial);
            PushOutcome::NeedMore
        }
    }
}

/// The `len` message bytes at `offset`, or the short-report error if the report cuts them
/// off (only trailing padding may be missing).
fn take_data(report: &[u8], offset: usize, len: usize) -> Result<&[u8], FramingError> {
    let needed = offset.saturating_add(len);
    report
        .get(offset..needed)
        .ok_or(FramingError::ReportTooShort {
            len: report.len(),
            needed,
        })
}

/// Splits a message into 64-byte reports (CTAP 2.2 §11.2.4): one initialization packet with
/// `cmd | 0x80` and the big-endian BCNT, then continuation packets with SEQ `0, 1, …`, the
/// last one zero padded.
///
/// `max_len` is the device's limit (e.g. getInfo `maxMsgSize`); it is capped at
/// [`MAX_MESSAGE_LEN`]. The reports carry no report ID; see [`with_report_id`].
pub fn fragment(
    cid: Cid,
    cmd: Command,
    payload: &[u8],
    max_len: usize,
) -> Result<Vec<[u8; REPORT_LEN]>, EncodeError> {
    let limit = max_len.min(MAX_MESSAGE_LEN);
    let too_large = EncodeError::PayloadTooLarge {
        len: payload.len(),
        limit,
    };
    if payload.len() > limit {
        return Err(too_large);
    }
    let bcnt = u16::try_from(payload.len()).map_err(|_| too_large)?;
    let (first, rest) = payload.split_at(payload.len().min(INIT_DATA_LEN));

    let mut reports = Vec::with_capacity(1 + rest.len().div_ceil(CONT_DATA_LEN));
    let mut init = [0u8; REPORT_LEN];
    init[..4].copy_from_slice(&cid.to_bytes());
    init[4] = cmd.code() | INIT_BIT;
    init[5..INIT_HEADER_LEN].copy_from_slice(&bcnt.to_be_bytes());
    init[INIT_HEADER_LEN..INIT_HEADER_LEN + first.len()].copy_from_slice(first);
    reports.push(init);

    // INVARIANT: payload.len() <= 7609, so `rest` needs at most 128 chunks and the zip with
    // SEQ 0..=0x7F never drops a chunk.
    for (seq, chunk) in (0..=MAX_SEQ).zip(rest.chunks(CONT_DATA_LEN)) {
        let mut cont = [0u8; REPORT_LEN];
        cont[..4].copy_from_slice(&cid.to_bytes());
        cont[4] = seq;
        cont[CONT_HEADER_LEN..CONT_HEADER_LEN + chunk.len()].copy_from_slice(chunk);
        reports.push(cont);
    }
    Ok(reports)
}

/// The 65-byte form of a report for a Linux hidraw `write`: report ID `0x00`, then the
/// report.
pub fn with_report_id(report: &[u8; REPORT_LEN]) -> [u8; HIDRAW_REPORT_LEN] {
    let mut out = [0u8; HIDRAW_REPORT_LEN];
    out[1..].copy_from_slice(report);
    out
}

/// The CTAPHID_CANCEL packet for `cid` (CTAP 2.2 §11.2.9.1.5): an initialization packet with
/// no payload. The device sends no reply to it; see [`Transaction`] for how a cancelled
/// request ends.
pub fn cancel_report(cid: Cid) -> [u8; REPORT_LEN] {
    let mut report = [0u8; REPORT_LEN];
    report[..4].copy_from_slice(&cid.to_bytes());
    report[4] = Command::Cancel.code() | INIT_BIT;
    report
}

/// The CTAPHID_INIT request on the broadcast channel (CTAP 2.2 §11.2.9.1.3). The nonce
/// must be fresh random bytes from the caller's RNG.
pub fn init_request(nonce: &[u8; INIT_NONCE_LEN]) -> [u8; REPORT_LEN] {
    let mut report = [0u8; REPORT_LEN];
    report[..4].copy_from_slice(&Cid::BROADCAST.to_bytes());
    report[4] = Command::Init.code() | INIT_BIT;
    // INVARIANT: the 8-byte nonce fits the 57-byte initialization packet.
    report[5..INIT_HEADER_LEN].copy_from_slice(&[0x00, 0x08]);
    report[INIT_HEADER_LEN..INIT_HEADER_LEN + INIT_NONCE_LEN].copy_from_slice(nonce);
    report
}

/// Capability flags from the INIT response (CTAP 2.2 §11.2.9.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    /// CAPABILITY_WINK `0x01`: implements CTAPHID_WINK.
    pub const WINK: u8 = 0x01;
    /// CAPABILITY_CBOR `0x04`: implements CTAPHID_CBOR (CTAP2).
    pub const CBOR: u8 = 0x04;
    /// CAPABILITY_NMSG `0x08`: does *not* implement CTAPHID_MSG (no CTAP1/U2F).
    pub const NMSG: u8 = 0x08;

    /// Wraps the raw flag byte.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The raw flag byte, unknown bits included.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Supports CTAPHID_WINK.
    pub const fn wink(self) -> bool {
        self.0 & Self::WINK != 0
    }

    /// Supports CTAPHID_CBOR.
    pub const fn cbor(self) -> bool {
        self.0 & Self::CBOR != 0
    }

    /// Supports CTAPHID_MSG (the NMSG bit is clear).
    pub const fn msg(self) -> bool {
        self.0 & Self::NMSG == 0
    }
}

/// The device version from the INIT response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Build version.
    pub build: u8,
}

/// A parsed CTAPHID_INIT response (CTAP 2.2 §11.2.9.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitResponse {
    /// The channel the device allocated.
    pub cid: Cid,
    /// CTAPHID protocol version (2 for every current device).
    pub protocol_version: u8,
    /// Device version.
    pub device_version: DeviceVersion,
    /// Capability flags.
    pub capabilities: Capabilities,
}

/// Why an INIT response payload was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InitResponseError {
    /// Fewer than the 17 bytes an INIT response holds.
    #[error("INIT response of {len} bytes, 17 expected")]
    TooShort {
        /// Payload length.
        len: usize,
    },
    /// The nonce is not ours: the answer to another client's INIT on the broadcast channel.
    /// The spec says to discard it; keep waiting for ours.
    #[error("INIT response nonce does not match the request")]
    NonceMismatch,
    /// The device offered a reserved CID (0 or broadcast).
    #[error("INIT response allocates the reserved channel {0}")]
    InvalidCid(Cid),
}

/// Parses the payload of a CTAPHID_INIT response, checking it answers `expected_nonce`.
///
/// Bytes after the 17 defined ones are ignored, for forward compatibility.
pub fn parse_init_response(
    payload: &[u8],
    expected_nonce: &[u8; INIT_NONCE_LEN],
) -> Result<InitResponse, InitResponseError> {
    let Some(fields) = payload.first_chunk::<INIT_RESPONSE_LEN>() else {
        return Err(InitResponseError::TooShort { len: payload.len() });
    };
    let [
        n0,
        n1,
        n2,
        n3,
        n4,
        n5,
        n6,
        n7,
        c0,
        c1,
        c2,
        c3,
        version,
        major,
        minor,
        build,
        caps,
    ] = *fields;
    if [n0, n1, n2, n3, n4, n5, n6, n7] != *expected_nonce {
        return Err(InitResponseError::NonceMismatch);
    }
    let cid = Cid::from_bytes([c0, c1, c2, c3]);
    if cid.is_reserved() {
        return Err(InitResponseError::InvalidCid(cid));
    }
    Ok(InitResponse {
        cid,
        protocol_version: version,
        device_version: DeviceVersion {
            major,
            minor,
            build,
        },
        capabilities: Capabilities::from_bits(caps),
    })
}

/// What a report meant to a [`Transaction`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransactionEvent {
    /// A frame for another channel; ignore it (count it if you like).
    ForeignFrame(Cid),
    /// Part of the response arrived; keep reading.
    InProgress,
    /// The device is still working. Reset the inactivity timer (not the overall deadline);
    /// surface [`KeepaliveStatus::UpNeeded`] to the user as "touch your key".
    Keepalive(KeepaliveStatus),
    /// The response payload (for CBOR: status byte then CBOR). The transaction is over.
    Response(Vec<u8>),
    /// The device answered with CTAPHID_ERROR. The transaction is over.
    Error(HidErrorCode),
}

/// Why a [`Transaction`] could not make sense of a report.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransactionError {
    /// A malformed or out-of-order report on our channel.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// A complete message on our channel with a command that answers nothing we asked.
    #[error("response command {got:?} does not match request {expected:?}")]
    UnexpectedCommand {
        /// The request's command.
        expected: Command,
        /// The command that came back.
        got: Command,
    },
    /// A KEEPALIVE with no status byte.
    #[error("KEEPALIVE without a status byte")]
    EmptyKeepalive,
    /// An ERROR with no error code.
    #[error("ERROR without an error code")]
    EmptyError,
    /// A report on our channel after the response or error already came.
    #[error("report on channel after the transaction finished")]
    Finished,
}

/// One request/response exchange on a CTAPHID channel (CTAP 2.2 §11.2.5.1), sans-IO.
///
/// The device actor writes [`Transaction::reports`] in order, then feeds every input report
/// from the device to [`Transaction::on_report`] until it yields
/// [`TransactionEvent::Response`] or [`TransactionEvent::Error`].
///
/// # Deadlines
///
/// The caller owns all timing. Each [`TransactionEvent::Keepalive`] restarts an inactivity
/// timer (keys send one about every 100 ms while busy), but never extends the overall
/// deadline of the request or ceremony. On expiry, cancel (below) and give up.
///
/// # Cancel
///
/// To abort, write [`Transaction::cancel_report`] (CTAPHID_CANCEL on the same CID) and keep
/// feeding reports: CANCEL has no reply of its own, and a pending CBOR request then completes
/// as a normal [`TransactionEvent::Response`] whose status byte is `0x2D`
/// (CTAP2_ERR_KEEPALIVE_CANCEL). A device may also already have finished; whatever response
/// comes is the result.
///
/// # Errors
///
/// [`TransactionEvent::Error`] with [`HidErrorCode::ChannelBusy`] means another client holds
/// the device: back off and retry. [`HidErrorCode::InvalidChannel`] means re-INIT.
/// A [`TransactionError`] leaves the transaction unusable for a trustworthy result; the caller
/// should abandon the channel (or re-INIT).
#[derive(Clone)]
pub struct Transaction {
    cmd: Command,
    /// The request; clientPIN requests carry encrypted PIN material, hence the wiping.
    reports: Zeroizing<Vec<[u8; REPORT_LEN]>>,
    rx: Reassembler,
    finished: bool,
}

impl Transaction {
    /// Prepares `cmd` with `payload` on `cid`. `max_len` bounds the request (the device's
    /// `maxMsgSize`, capped at [`MAX_MESSAGE_LEN`]); responses are bounded by
    /// [`MAX_MESSAGE_LEN`].
    pub fn new(
        cid: Cid,
        cmd: Command,
        payload: &[u8],
        max_len: usize,
    ) -> Result<Self, EncodeError> {
        if matches!(cmd, Command::Cancel | Command::Keepalive | Command::Error) {
            return Err(EncodeError::NoResponse(cmd));
        }
        Ok(Self {
            cmd,
            reports: Zeroizing::new(fragment(cid, cmd, payload, max_len)?),
            rx: Reassembler::new(cid, MAX_MESSAGE_LEN),
            finished: false,
        })
    }

    /// The channel.
    pub fn cid(&self) -> Cid {
        self.rx.cid()
    }

    /// The request command.
    pub fn command(&self) -> Command {
        self.cmd
    }

    /// The request reports to write, in order.
    pub fn reports(&self) -> &[[u8; REPORT_LEN]] {
        &self.reports
    }

    /// The CTAPHID_CANCEL report for this channel (see the type docs).
    pub fn cancel_report(&self) -> [u8; REPORT_LEN] {
        cancel_report(self.cid())
    }

    /// Whether the response or an error has arrived.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Takes one input report from the device.
    pub fn on_report(&mut self, report: &[u8]) -> Result<TransactionEvent, TransactionError> {
        if self.finished {
            // Still sort out foreign frames so the caller can keep draining its fd.
            return match report.first_chunk::<4>().map(|cid| Cid::from_bytes(*cid)) {
                Some(cid) if cid != self.cid() => Ok(TransactionEvent::ForeignFrame(cid)),
                _ => Err(TransactionError::Finished),
            };
        }
        let message = match self.rx.push(report)? {
            PushOutcome::Foreign(cid) => return Ok(TransactionEvent::ForeignFrame(cid)),
            PushOutcome::NeedMore => return Ok(TransactionEvent::InProgress),
            PushOutcome::Complete(message) => message,
        };
        match message.cmd {
            Command::Keepalive => match message.payload.first() {
                Some(&status) => Ok(TransactionEvent::Keepalive(status.into())),
                None => Err(TransactionError::EmptyKeepalive),
            },
            Command::Error => match message.payload.first() {
                Some(&code) => {
                    self.finished = true;
                    Ok(TransactionEvent::Error(code.into()))
                }
                None => Err(TransactionError::EmptyError),
            },
            cmd if cmd == self.cmd => {
                self.finished = true;
                Ok(TransactionEvent::Response(message.payload))
            }
            got => Err(TransactionError::UnexpectedCommand {
                expected: self.cmd,
                got,
            }),
        }
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("cid", &self.cid)
            .field("cmd", &self.cmd)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl fmt::Debug for Reassembler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reassembler")
            .field("cid", &self.cid)
            .field("limit", &self.limit)
            .field(
                "received",
                &self
                    .partial
                    .as_ref()
                    .map(|p| (p.cmd, p.payload.len(), p.bcnt)),
            )
            .finish()
    }
}

impl fmt::Debug for Transaction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transaction")
            .field("cmd", &self.cmd)
            .field("reports", &self.reports.len())
            .field("rx", &self.rx)
            .field("finished", &self.finished)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: Cid = Cid::new(0x0022_0002);
    const OTHER: Cid = Cid::new(0x0092_000e);

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn init_packet(cid: Cid, cmd: u8, bcnt: u16, data: &[u8]) -> [u8; REPORT_LEN] {
        let mut r = [0u8; REPORT_LEN];
        r[..4].copy_from_slice(&cid.to_bytes());
        r[4] = cmd;
        r[5..7].copy_from_slice(&bcnt.to_be_bytes());
        r[7..7 + data.len()].copy_from_slice(data);
        r
    }

    fn cont_packet(cid: Cid, seq: u8, data: &[u8]) -> [u8; REPORT_LEN] {
        let mut r = [0u8; REPORT_LEN];
        r[..4].copy_from_slice(&cid.to_bytes());
        r[4] = seq;
        r[5..5 + data.len()].copy_from_slice(data);
        r
    }

    fn reassemble(reports: &[[u8; REPORT_LEN]], cid: Cid) -> Message {
        let mut rx = Reassembler::new(cid, MAX_MESSAGE_LEN);
        let (last, head) = reports.split_last().unwrap();
        for r in head {
            assert_eq!(rx.push(r).unwrap(), PushOutcome::NeedMore);
        }
        match rx.push(last).unwrap() {
            PushOutcome::Complete(m) => m,
            other => panic!("expected a complete message, got {other:?}"),
        }
    }

    // ---- constants and small types ----

    #[test]
    fn constants_match_the_spec() {
        assert_eq!(REPORT_LEN, 64);
        assert_eq!(HIDRAW_REPORT_LEN, 65);
        assert_eq!(INIT_DATA_LEN, 57);
        assert_eq!(CONT_DATA_LEN, 59);
        assert_eq!(MAX_MESSAGE_LEN, 7609);
        assert_eq!(Cid::BROADCAST.value(), 0xFFFF_FFFF);
    }

    #[test]
    fn cid_is_big_endian_and_displays_as_hex() {
        assert_eq!(CID.to_bytes(), [0x00, 0x22, 0x00, 0x02]);
        assert_eq!(
            Cid::from_bytes([0x89, 0xc9, 0x8d, 0x28]).value(),
            0x89c9_8d28
        );
        assert_eq!(CID.to_string(), "00220002");
        assert!(Cid::BROADCAST.is_broadcast());
        assert!(Cid::BROADCAST.is_reserved());
        assert!(Cid::new(0).is_reserved());
        assert!(!CID.is_reserved());
    }

    #[test]
    fn command_conversion_is_total_and_round_trips() {
        let named = [
            (0x01, Command::Ping),
            (0x03, Command::Msg),
            (0x04, Command::Lock),
            (0x06, Command::Init),
            (0x08, Command::Wink),
            (0x10, Command::Cbor),
            (0x11, Command::Cancel),
            (0x3B, Command::Keepalive),
            (0x3F, Command::Error),
        ];
        for (code, cmd) in named {
            assert_eq!(Command::from(code), cmd);
            assert_eq!(Command::from(code | 0x80), cmd);
            assert_eq!(cmd.code(), code);
        }
        assert_eq!(Command::from(0x40), Command::Vendor(0x40));
        assert_eq!(Command::from(0xFF), Command::Vendor(0x7F));
        assert_eq!(Command::from(0x00), Command::Unknown(0x00));
        assert_eq!(Command::from(0x3C), Command::Unknown(0x3C));
        for byte in 0..=u8::MAX {
            let cmd = Command::from(byte);
            assert_eq!(cmd.code(), byte & 0x7F, "byte {byte:#04x}");
        }
        // A hand-built value with bit 7 set still encodes as a 7-bit code.
        assert_eq!(Command::Unknown(0xC1).code(), 0x41);
    }

    #[test]
    fn keepalive_status_conversion_is_total() {
        assert_eq!(KeepaliveStatus::from(1), KeepaliveStatus::Processing);
        assert_eq!(KeepaliveStatus::from(2), KeepaliveStatus::UpNeeded);
        assert_eq!(KeepaliveStatus::from(0), KeepaliveStatus::Unknown(0));
        assert_eq!(KeepaliveStatus::from(0xFF), KeepaliveStatus::Unknown(0xFF));
        for byte in 0..=u8::MAX {
            assert_eq!(KeepaliveStatus::from(byte).code(), byte);
        }
    }

    #[test]
    fn hid_error_code_conversion_is_total() {
        let named = [
            (0x01, HidErrorCode::InvalidCmd),
            (0x02, HidErrorCode::InvalidPar),
            (0x03, HidErrorCode::InvalidLen),
            (0x04, HidErrorCode::InvalidSeq),
            (0x05, HidErrorCode::MsgTimeout),
            (0x06, HidErrorCode::ChannelBusy),
            (0x0A, HidErrorCode::LockRequired),
            (0x0B, HidErrorCode::InvalidChannel),
            (0x7F, HidErrorCode::Other),
        ];
        for (code, err) in named {
            assert_eq!(HidErrorCode::from(code), err);
        }
        assert_eq!(HidErrorCode::from(0x07), HidErrorCode::Unknown(0x07));
        for byte in 0..=u8::MAX {
            assert_eq!(HidErrorCode::from(byte).code(), byte);
        }
    }

    #[test]
    fn capabilities_flags() {
        let caps = Capabilities::from_bits(0x0D);
        assert!(caps.wink() && caps.cbor() && !caps.msg());
        let caps = Capabilities::from_bits(0x00);
        assert!(!caps.wink() && !caps.cbor() && caps.msg());
        assert_eq!(Capabilities::from_bits(0xF5).bits(), 0xF5);
    }

    // ---- fragmentation golden bytes ----

    #[test]
    fn fragment_single_packet_golden() {
        let reports = fragment(CID, Command::Cbor, &[0x04], 1024).unwrap();
        let mut expected = [0u8; 64];
        expected[..8].copy_from_slice(&[0x00, 0x22, 0x00, 0x02, 0x90, 0x00, 0x01, 0x04]);
        assert_eq!(reports, vec![expected]);
    }

    #[test]
    fn fragment_empty_payload_is_one_init_packet() {
        let reports = fragment(CID, Command::Wink, &[], 1024).unwrap();
        let mut expected = [0u8; 64];
        expected[..7].copy_from_slice(&[0x00, 0x22, 0x00, 0x02, 0x88, 0x00, 0x00]);
        assert_eq!(reports, vec![expected]);
    }

    #[test]
    fn fragment_exactly_57_bytes_fills_one_packet() {
        let data = payload(57);
        let reports = fragment(CID, Command::Msg, &data, MAX_MESSAGE_LEN).unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0][..7], [0x00, 0x22, 0x00, 0x02, 0x83, 0x00, 0x39]);
        assert_eq!(reports[0][7..], data[..]);
    }

    #[test]
    fn fragment_58_bytes_spills_one_byte_into_seq_0() {
        let data = payload(58);
        let reports = fragment(CID, Command::Cbor, &data, MAX_MESSAGE_LEN).unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(reports[0][..7], [0x00, 0x22, 0x00, 0x02, 0x90, 0x00, 0x3A]);
        assert_eq!(reports[0][7..], data[..57]);
        let mut cont = [0u8; 64];
        cont[..6].copy_from_slice(&[0x00, 0x22, 0x00, 0x02, 0x00, data[57]]);
        assert_eq!(reports[1], cont);
    }

    #[test]
    fn fragment_max_size_uses_seq_0_to_127() {
        let data = payload(MAX_MESSAGE_LEN);
        let reports = fragment(CID, Command::Cbor, &data, MAX_MESSAGE_LEN).unwrap();
        assert_eq!(reports.len(), 129);
        assert_eq!(reports[0][4..7], [0x90, 0x1D, 0xB9]); // 7609 = 0x1DB9
        for (i, r) in reports[1..].iter().enumerate() {
            assert_eq!(r[..4], CID.to_bytes());
            assert_eq!(usize::from(r[4]), i);
        }
        assert_eq!(reports[128][4], 0x7F);
        // The last continuation is completely full: no padding at all.
        assert_eq!(reports[128][5..], data[MAX_MESSAGE_LEN - 59..]);
    }

    #[test]
    fn fragment_rejects_over_max() {
        assert_eq!(
            fragment(CID, Command::Cbor, &payload(7610), usize::MAX),
            Err(EncodeError::PayloadTooLarge {
                len: 7610,
                limit: 7609
            })
        );
        assert_eq!(
            fragment(CID, Command::Cbor, &payload(1025), 1024),
            Err(EncodeError::PayloadTooLarge {
                len: 1025,
                limit: 1024
            })
        );
        assert_eq!(
            fragment(CID, Command::Cbor, &payload(1024), 1024)
                .unwrap()
                .len(),
            18
        );
    }

    #[test]
    fn hidraw_form_has_leading_report_id() {
        let report = fragment(CID, Command::Ping, b"hi", 64).unwrap()[0];
        let out = with_report_id(&report);
        assert_eq!(out.len(), 65);
        assert_eq!(out[0], 0x00);
        assert_eq!(out[1..9], [0x00, 0x22, 0x00, 0x02, 0x81, 0x00, 0x02, b'h']);
        assert_eq!(out[1..], report[..]);
    }

    #[test]
    fn cancel_report_golden() {
        let mut expected = [0u8; 64];
        expected[..7].copy_from_slice(&[0x00, 0x22, 0x00, 0x02, 0x91, 0x00, 0x00]);
        assert_eq!(cancel_report(CID), expected);
    }

    #[test]
    fn init_request_golden() {
        let nonce = [0x80, 0x43, 0x56, 0x40, 0xb1, 0x4e, 0xd9, 0x2d];
        let mut expected = [0u8; 64];
        expected[..15].copy_from_slice(&[
            0xFF, 0xFF, 0xFF, 0xFF, 0x86, 0x00, 0x08, 0x80, 0x43, 0x56, 0x40, 0xb1, 0x4e, 0xd9,
            0x2d,
        ]);
        assert_eq!(init_request(&nonce), expected);
    }

    // ---- reassembly ----

    #[test]
    fn round_trip_many_sizes() {
        let sizes = (0..=200)
            .chain([
                INIT_DATA_LEN - 1,
                INIT_DATA_LEN,
                INIT_DATA_LEN + 1,
                INIT_DATA_LEN + CONT_DATA_LEN,
                INIT_DATA_LEN + CONT_DATA_LEN + 1,
                1024,
                4096,
                MAX_MESSAGE_LEN - CONT_DATA_LEN,
                MAX_MESSAGE_LEN - 1,
                MAX_MESSAGE_LEN,
            ])
            .chain((201..MAX_MESSAGE_LEN).step_by(97));
        for len in sizes {
            let data = payload(len);
            let reports = fragment(CID, Command::Cbor, &data, MAX_MESSAGE_LEN).unwrap();
            let expected_reports = 1 + len.saturating_sub(INIT_DATA_LEN).div_ceil(CONT_DATA_LEN);
            assert_eq!(reports.len(), expected_reports, "len {len}");
            let message = reassemble(&reports, CID);
            assert_eq!(message.cid, CID);
            assert_eq!(message.cmd, Command::Cbor);
            assert_eq!(message.payload, data, "len {len}");
        }
    }

    #[test]
    fn reassembler_is_reusable_after_a_message() {
        let mut rx = Reassembler::new(CID, 1024);
        for len in [3, 100, 0, 60] {
            let data = payload(len);
            let reports = fragment(CID, Command::Msg, &data, 1024).unwrap();
            let mut last = None;
            for r in &reports {
                last = Some(rx.push(r).unwrap());
            }
            assert_eq!(
                last,
                Some(PushOutcome::Complete(Message {
                    cid: CID,
                    cmd: Command::Msg,
                    payload: data
                }))
            );
            assert!(!rx.in_progress());
        }
    }

    #[test]
    fn foreign_frames_are_ignored_and_do_not_disturb_a_message() {
        let data = payload(200);
        let ours = fragment(CID, Command::Cbor, &data, 1024).unwrap();
        let theirs = fragment(OTHER, Command::Cbor, &payload(150), 1024).unwrap();
        let mut rx = Reassembler::new(CID, 1024);
        let mut foreign = 0;
        let mut result = None;
        // Interleave: theirs[i] before ours[i].
        for i in 0..ours.len().max(theirs.len()) {
            if let Some(r) = theirs.get(i) {
                assert_eq!(rx.push(r).unwrap(), PushOutcome::Foreign(OTHER));
                foreign += 1;
            }
            if let Some(r) = ours.get(i) {
                match rx.push(r).unwrap() {
                    PushOutcome::Complete(m) => result = Some(m),
                    PushOutcome::NeedMore => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(foreign, theirs.len());
        assert_eq!(result.unwrap().payload, data);
    }

    #[test]
    fn wrong_cid_on_continuation_is_foreign_and_message_stays_pending() {
        let data = payload(100);
        let reports = fragment(CID, Command::Cbor, &data, 1024).unwrap();
        let mut rx = Reassembler::new(CID, 1024);
        assert_eq!(rx.push(&reports[0]).unwrap(), PushOutcome::NeedMore);
        let mut stray = reports[1];
        stray[..4].copy_from_slice(&OTHER.to_bytes());
        assert_eq!(rx.push(&stray).unwrap(), PushOutcome::Foreign(OTHER));
        assert!(rx.in_progress());
        assert_eq!(
            rx.push(&reports[1]).unwrap(),
            PushOutcome::Complete(Message {
                cid: CID,
                cmd: Command::Cbor,
                payload: data
            })
        );
    }

    #[test]
    fn continuation_without_init_is_an_error() {
        let mut rx = Reassembler::new(CID, 1024);
        assert_eq!(
            rx.push(&cont_packet(CID, 0, &[1, 2, 3])),
            Err(FramingError::ContinuationWithoutInit { seq: 0 })
        );
        assert_eq!(
            rx.push(&cont_packet(CID, 5, &[])),
            Err(FramingError::ContinuationWithoutInit { seq: 5 })
        );
    }

    #[test]
    fn first_continuation_must_be_seq_0() {
        let mut rx = Reassembler::new(CID, 1024);
        assert_eq!(
            rx.push(&init_packet(CID, 0x90, 100, &payload(57))),
            Ok(PushOutcome::NeedMore)
        );
        assert_eq!(
            rx.push(&cont_packet(CID, 1, &payload(43))),
            Err(FramingError::UnexpectedSeq {
                expected: 0,
                got: 1
            })
        );
        assert!(!rx.in_progress(), "an error drops the partial message");
    }

    #[test]
    fn skipped_seq_is_an_error() {
        let reports = fragment(CID, Command::Cbor, &payload(300), 1024).unwrap();
        let mut rx = Reassembler::new(CID, 1024);
        rx.push(&reports[0]).unwrap();
        rx.push(&reports[1]).unwrap();
        assert_eq!(
            rx.push(&reports[3]),
            Err(FramingError::UnexpectedSeq {
                expected: 1,
                got: 2
            })
        );
        // After the error the rest of the old message is an orphan continuation.
        assert_eq!(
            rx.push(&reports[4]),
            Err(FramingError::ContinuationWithoutInit { seq: 3 })
        );
    }

    #[test]
    fn repeated_seq_is_an_error() {
        let reports = fragment(CID, Command::Cbor, &payload(300), 1024).unwrap();
        let mut rx = Reassembler::new(CID, 1024);
        rx.push(&reports[0]).unwrap();
        rx.push(&reports[1]).unwrap();
        assert_eq!(
            rx.push(&reports[1]),
            Err(FramingError::UnexpectedSeq {
                expected: 1,
                got: 0
            })
        );
    }

    #[test]
    fn init_after_init_is_an_error_and_resets() {
        let mut rx = Reassembler::new(CID, 1024);
        rx.push(&init_packet(CID, 0x90, 100, &payload(57))).unwrap();
        assert_eq!(
            rx.push(&init_packet(CID, 0xBB, 1, &[0x02])),
            Err(FramingError::InitDuringMessage {
                cmd: Command::Keepalive
            })
        );
        assert!(!rx.in_progress());
        // The next message starts cleanly.
        assert_eq!(
            rx.push(&init_packet(CID, 0x90, 1, &[0x00])),
            Ok(PushOutcome::Complete(Message {
                cid: CID,
                cmd: Command::Cbor,
                payload: vec![0]
            }))
        );
    }

    #[test]
    fn all_zero_packet() {
        let zero = [0u8; 64];
        // CID 0 is never ours: foreign, and harmless mid-message.
        let mut rx = Reassembler::new(CID, 1024);
        rx.push(&init_packet(CID, 0x90, 100, &payload(57))).unwrap();
        assert_eq!(rx.push(&zero), Ok(PushOutcome::Foreign(Cid::new(0))));
        assert!(rx.in_progress());
        // Our CID followed by zeros is a continuation with SEQ 0 and no message.
        let mut rx = Reassembler::new(CID, 1024);
        let mut ours_then_zero = zero;
        ours_then_zero[..4].copy_from_slice(&CID.to_bytes());
        assert_eq!(
            rx.push(&ours_then_zero),
            Err(FramingError::ContinuationWithoutInit { seq: 0 })
        );
    }

    #[test]
    fn bcnt_over_limit_is_rejected_before_buffering() {
        let mut rx = Reassembler::new(CID, 1024);
        assert_eq!(
            rx.push(&init_packet(CID, 0x90, 1025, &payload(57))),
            Err(FramingError::BcntOverLimit {
                bcnt: 1025,
                limit: 1024
            })
        );
        let mut rx = Reassembler::new(CID, usize::MAX);
        assert_eq!(
            rx.push(&init_packet(CID, 0x90, 0xFFFF, &payload(57))),
            Err(FramingError::BcntOverLimit {
                bcnt: 0xFFFF,
                limit: MAX_MESSAGE_LEN
            })
        );
        assert_eq!(
            rx.push(&init_packet(CID, 0x90, 7610, &payload(57))),
            Err(FramingError::BcntOverLimit {
                bcnt: 7610,
                limit: MAX_MESSAGE_LEN
            })
        );
        assert!(!rx.in_progress());
    }

    #[test]
    fn short_reports_follow_the_padding_policy() {
        let mut rx = Reassembler::new(CID, 1024);
        assert_eq!(
            rx.push(&[]),
            Err(FramingError::ReportTooShort { len: 0, needed: 4 })
        );
        assert_eq!(
            rx.push(&CID.to_bytes()),
            Err(FramingError::ReportTooShort { len: 4, needed: 5 })
        );
        // A foreign CID is recognised from 4 bytes.
        assert_eq!(rx.push(&OTHER.to_bytes()), Ok(PushOutcome::Foreign(OTHER)));
        // Init header cut off.
        let full = init_packet(CID, 0x90, 3, &[0xA1, 0x01, 0x02]);
        assert_eq!(
            rx.push(&full[..6]),
            Err(FramingError::ReportTooShort { len: 6, needed: 7 })
        );
        // Payload cut off: 3 bytes declared, 2 present.
        assert_eq!(
            rx.push(&full[..9]),
            Err(FramingError::ReportTooShort { len: 9, needed: 10 })
        );
        // Only padding missing: accepted.
        assert_eq!(
            rx.push(&full[..10]),
            Ok(PushOutcome::Complete(Message {
                cid: CID,
                cmd: Command::Cbor,
                payload: vec![0xA1, 0x01, 0x02]
            }))
        );
        // Same for continuations: a full init, then a trimmed last continuation.
        let data = payload(60);
        let reports = fragment(CID, Command::Cbor, &data, 1024).unwrap();
        assert_eq!(rx.push(&reports[0]), Ok(PushOutcome::NeedMore));
        assert_eq!(
            rx.push(&reports[1][..7]),
            Err(FramingError::ReportTooShort { len: 7, needed: 8 })
        );
        assert_eq!(rx.push(&reports[0]), Ok(PushOutcome::NeedMore));
        assert_eq!(
            rx.push(&reports[1][..8]),
            Ok(PushOutcome::Complete(Message {
                cid: CID,
                cmd: Command::Cbor,
                payload: data
            }))
        );
        // A full-length packet in the middle must carry 59 bytes.
        let reports = fragment(CID, Command::Cbor, &payload(200), 1024).unwrap();
        rx.push(&reports[0]).unwrap();
        assert_eq!(
            rx.push(&reports[1][..63]),
            Err(FramingError::ReportTooShort {
                len: 63,
                needed: 64
            })
        );
    }

    #[test]
    fn report_with_report_id_prefix_is_too_long() {
        let report = fragment(CID, Command::Cbor, &[0x04], 64).unwrap()[0];
        let mut rx = Reassembler::new(CID, 1024);
        assert_eq!(
            rx.push(&with_report_id(&report)),
            Err(FramingError::ReportTooLong { len: 65 })
        );
    }

    #[test]
    fn max_size_message_reassembles_exactly() {
        let data = payload(MAX_MESSAGE_LEN);
        let reports = fragment(CID, Command::Msg, &data, MAX_MESSAGE_LEN).unwrap();
        let message = reassemble(&reports, CID);
        assert_eq!(message.payload.len(), MAX_MESSAGE_LEN);
        assert_eq!(message.payload, data);
    }

    #[test]
    fn garbage_never_panics() {
        // A cheap deterministic fuzz: random-ish reports of every length up to 64.
        let mut state = 0x1234_5678_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut rx = Reassembler::new(CID, MAX_MESSAGE_LEN);
        for i in 0..20_000 {
            let len = (next() % 66) as usize;
            let mut report: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 && len >= 4 {
                report[..4].copy_from_slice(&CID.to_bytes());
            }
            let _ = rx.push(&report);
        }
    }

    // ---- INIT ----

    fn init_payload(nonce: [u8; 8], cid: [u8; 4]) -> Vec<u8> {
        let mut p = nonce.to_vec();
        p.extend_from_slice(&cid);
        p.extend_from_slice(&[0x02, 0x05, 0x04, 0x03, 0x0D]);
        p
    }

    #[test]
    fn init_response_parses() {
        let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
        let parsed = parse_init_response(&init_payload(nonce, [0x0a, 0xa4, 0xcb, 0x08]), &nonce);
        assert_eq!(
            parsed,
            Ok(InitResponse {
                cid: Cid::new(0x0aa4_cb08),
                protocol_version: 2,
                device_version: DeviceVersion {
                    major: 5,
                    minor: 4,
                    build: 3
                },
                capabilities: Capabilities::from_bits(0x0D),
            })
        );
        // Trailing bytes are ignored.
        let mut longer = init_payload(nonce, [0, 0, 0, 1]);
        longer.extend_from_slice(&[0xEE; 4]);
        assert_eq!(
            parse_init_response(&longer, &nonce).unwrap().cid,
            Cid::new(1)
        );
    }

    #[test]
    fn init_response_with_wrong_nonce_is_distinct() {
        let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
        let theirs = init_payload([8, 7, 6, 5, 4, 3, 2, 1], [0, 0x22, 0, 2]);
        assert_eq!(
            parse_init_response(&theirs, &nonce),
            Err(InitResponseError::NonceMismatch)
        );
    }

    #[test]
    fn init_response_with_reserved_cid_is_rejected() {
        let nonce = [9; 8];
        assert_eq!(
            parse_init_response(&init_payload(nonce, [0, 0, 0, 0]), &nonce),
            Err(InitResponseError::InvalidCid(Cid::new(0)))
        );
        assert_eq!(
            parse_init_response(&init_payload(nonce, [0xFF; 4]), &nonce),
            Err(InitResponseError::InvalidCid(Cid::BROADCAST))
        );
    }

    #[test]
    fn init_response_too_short() {
        let nonce = [9; 8];
        let p = init_payload(nonce, [0, 0, 0, 1]);
        assert_eq!(
            parse_init_response(&p[..16], &nonce),
            Err(InitResponseError::TooShort { len: 16 })
        );
        assert_eq!(
            parse_init_response(&[], &nonce),
            Err(InitResponseError::TooShort { len: 0 })
        );
    }

    #[test]
    fn init_flow_skips_other_clients_answers() {
        let nonce = [0xAA; 8];
        let mut rx = Reassembler::new(Cid::BROADCAST, MAX_MESSAGE_LEN);
        let theirs = init_packet(
            Cid::BROADCAST,
            0x86,
            17,
            &init_payload([0xBB; 8], [0, 0, 0, 7]),
        );
        let ours = init_packet(Cid::BROADCAST, 0x86, 17, &init_payload(nonce, [0, 0, 0, 9]));
        let mut found = None;
        for r in [theirs, ours] {
            if let PushOutcome::Complete(m) = rx.push(&r).unwrap() {
                assert_eq!(m.cmd, Command::Init);
                match parse_init_response(&m.payload, &nonce) {
                    Ok(init) => found = Some(init.cid),
                    Err(InitResponseError::NonceMismatch) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        assert_eq!(found, Some(Cid::new(9)));
    }

    // ---- Transaction ----

    #[test]
    fn transaction_rejects_commands_without_response() {
        for cmd in [Command::Cancel, Command::Keepalive, Command::Error] {
            assert_eq!(
                Transaction::new(CID, cmd, &[], 1024).unwrap_err(),
                EncodeError::NoResponse(cmd)
            );
        }
        assert_eq!(
            Transaction::new(CID, Command::Cbor, &payload(2000), 1024).unwrap_err(),
            EncodeError::PayloadTooLarge {
                len: 2000,
                limit: 1024
            }
        );
    }

    #[test]
    fn transaction_with_keepalives_interleaved() {
        let request = payload(70);
        let mut tx = Transaction::new(CID, Command::Cbor, &request, 1024).unwrap();
        assert_eq!(tx.cid(), CID);
        assert_eq!(tx.command(), Command::Cbor);
        assert_eq!(
            tx.reports(),
            fragment(CID, Command::Cbor, &request, 1024).unwrap()
        );

        let keepalive_processing = init_packet(CID, 0xBB, 1, &[0x01]);
        let keepalive_upneeded = init_packet(CID, 0xBB, 1, &[0x02]);
        let foreign_keepalive = init_packet(OTHER, 0xBB, 1, &[0x02]);
        let response = payload(100);
        let reply = fragment(CID, Command::Cbor, &response, MAX_MESSAGE_LEN).unwrap();

        assert_eq!(
            tx.on_report(&keepalive_processing),
            Ok(TransactionEvent::Keepalive(KeepaliveStatus::Processing))
        );
        assert_eq!(
            tx.on_report(&foreign_keepalive),
            Ok(TransactionEvent::ForeignFrame(OTHER))
        );
        assert_eq!(
            tx.on_report(&keepalive_upneeded),
            Ok(TransactionEvent::Keepalive(KeepaliveStatus::UpNeeded))
        );
        assert_eq!(
            tx.on_report(&init_packet(CID, 0xBB, 1, &[0x07])),
            Ok(TransactionEvent::Keepalive(KeepaliveStatus::Unknown(0x07)))
        );
        assert_eq!(tx.on_report(&reply[0]), Ok(TransactionEvent::InProgress));
        assert!(!tx.is_finished());
        assert_eq!(
            tx.on_report(&reply[1]),
            Ok(TransactionEvent::Response(response))
        );
        assert!(tx.is_finished());
        // Afterwards: foreign frames are still sorted out, ours are an error.
        assert_eq!(
            tx.on_report(&foreign_keepalive),
            Ok(TransactionEvent::ForeignFrame(OTHER))
        );
        assert_eq!(
            tx.on_report(&keepalive_upneeded),
            Err(TransactionError::Finished)
        );
    }

    #[test]
    fn transaction_keepalive_inside_a_response_is_a_framing_error() {
        let mut tx = Transaction::new(CID, Command::Cbor, &[0x04], 1024).unwrap();
        let reply = fragment(CID, Command::Cbor, &payload(100), MAX_MESSAGE_LEN).unwrap();
        assert_eq!(tx.on_report(&reply[0]), Ok(TransactionEvent::InProgress));
        assert_eq!(
            tx.on_report(&init_packet(CID, 0xBB, 1, &[0x02])),
            Err(TransactionError::Framing(FramingError::InitDuringMessage {
                cmd: Command::Keepalive
            }))
        );
    }

    #[test]
    fn transaction_error_frame() {
        let mut tx = Transaction::new(CID, Command::Cbor, &[0x04], 1024).unwrap();
        assert_eq!(
            tx.on_report(&init_packet(CID, 0xBF, 1, &[0x06])),
            Ok(TransactionEvent::Error(HidErrorCode::ChannelBusy))
        );
        assert!(tx.is_finished());

        let mut tx = Transaction::new(CID, Command::Msg, &[0; 10], 1024).unwrap();
        assert_eq!(
            tx.on_report(&init_packet(CID, 0xBF, 1, &[0x42])),
            Ok(TransactionEvent::Error(HidErrorCode::Unknown(0x42)))
        );
    }

    #[test]
    fn transaction_empty_keepalive_and_error_are_malformed() {
        let mut tx = Transaction::new(CID, Command::Cbor, &[0x04], 1024).unwrap();
        assert_eq!(
            tx.on_report(&init_packet(CID, 0xBB, 0, &[])),
            Err(TransactionError::EmptyKeepalive)
        );
        assert_eq!(
            tx.on_report(&init_packet(CID, 0xBF, 0, &[])),
            Err(TransactionError::EmptyError)
        );
        assert!(!tx.is_finished());
    }

    #[test]
    fn transaction_unexpected_command() {
        let mut tx = Transaction::new(CID, Command::Cbor, &[0x04], 1024).unwrap();
        assert_eq!(
            tx.on_report(&init_packet(CID, 0x83, 2, &[0x90, 0x00])),
            Err(TransactionError::UnexpectedCommand {
                expected: Command::Cbor,
                got: Command::Msg
            })
        );
        assert_eq!(
            tx.on_report(&init_packet(CID, 0xC1, 0, &[])),
            Err(TransactionError::UnexpectedCommand {
                expected: Command::Cbor,
                got: Command::Vendor(0x41)
            })
        );
    }

    #[test]
    fn transaction_cancel_then_keepalive_cancel_status() {
        let mut tx = Transaction::new(CID, Command::Cbor, &[0x01, 0xA0], 1024).unwrap();
        assert_eq!(
            tx.on_report(&init_packet(CID, 0xBB, 1, &[0x02])),
            Ok(TransactionEvent::Keepalive(KeepaliveStatus::UpNeeded))
        );
        assert_eq!(tx.cancel_report(), cancel_report(CID));
        // The device answers the pending request with CTAP2_ERR_KEEPALIVE_CANCEL.
        assert_eq!(
            tx.on_report(&init_packet(CID, 0x90, 1, &[0x2D])),
            Ok(TransactionEvent::Response(vec![0x2D]))
        );
    }

    #[test]
    fn transaction_ping_echo() {
        let data = payload(300);
        let mut tx = Transaction::new(CID, Command::Ping, &data, MAX_MESSAGE_LEN).unwrap();
        // A loopback device echoes the very same reports.
        let reports = tx.reports().to_vec();
        let (last, head) = reports.split_last().unwrap();
        for r in head {
            assert_eq!(tx.on_report(r), Ok(TransactionEvent::InProgress));
        }
        assert_eq!(tx.on_report(last), Ok(TransactionEvent::Response(data)));
    }

    // ---- Recorded device data (optional, needs PASSKEYD_VECTORS) ----

    mod vectors {
        use super::*;
        use serde_json::Value;

        /// Loads `file` from `$PASSKEYD_VECTORS`, or says why the test is skipped.
        fn load(file: &str) -> Option<Value> {
            let Some(dir) = std::env::var_os("PASSKEYD_VECTORS") else {
                eprintln!("skipping recorded-vector test: PASSKEYD_VECTORS is not set");
                return None;
            };
            let path = std::path::Path::new(&dir).join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            Some(serde_json::from_str(&text).unwrap())
        }

        fn vector<'a>(doc: &'a Value, name: &str) -> &'a Value {
            doc["vectors"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["name"] == name)
                .unwrap_or_else(|| panic!("vector {name} not found"))
        }

        fn reports(v: &Value) -> Vec<Vec<u8>> {
            v["reports"].as_array().unwrap().iter().map(hex).collect()
        }

        fn hex(v: &Value) -> Vec<u8> {
            ::hex::decode(v.as_str().unwrap()).unwrap()
        }

        fn cid_of(v: &Value) -> Cid {
            Cid::from_bytes(hex(v).try_into().unwrap())
        }

        #[test]
        fn ctaphid_init_response() {
            let Some(doc) = load("libfido2-wiredata.json") else {
                return;
            };
            let v = vector(&doc, "libfido2-ctaphid-init");
            let decoded = &v["decoded"]["messages"][0]["init"];
            let nonce: [u8; 8] = hex(&decoded["nonce"]).try_into().unwrap();
            let mut rx = Reassembler::new(Cid::BROADCAST, MAX_MESSAGE_LEN);
            let PushOutcome::Complete(m) = rx.push(&reports(v)[0]).unwrap() else {
                panic!("INIT response is one packet")
            };
            assert_eq!(m.cmd, Command::Init);
            assert_eq!(m.payload.len(), 17);
            let init = parse_init_response(&m.payload, &nonce).unwrap();
            assert_eq!(init.cid, Cid::new(0x0022_0002));
            assert_eq!(init.cid, cid_of(&decoded["new_cid"]));
            assert_eq!(init.protocol_version, 2);
            assert_eq!(
                init.device_version,
                DeviceVersion {
                    major: 5,
                    minor: 2,
                    build: 1
                }
            );
            assert_eq!(init.capabilities.bits(), 0x05);
            assert!(init.capabilities.wink() && init.capabilities.cbor());
            assert!(init.capabilities.msg());
            assert_eq!(
                parse_init_response(&m.payload, &[0; 8]),
                Err(InitResponseError::NonceMismatch)
            );
        }

        #[test]
        fn ctaphid_keepalive_upneeded() {
            let Some(doc) = load("libfido2-wiredata.json") else {
                return;
            };
            let v = vector(&doc, "libfido2-ctaphid-keepalive-upneeded");
            let mut tx = Transaction::new(CID, Command::Cbor, &[0x04], 1024).unwrap();
            assert_eq!(
                tx.on_report(&reports(v)[0]),
                Ok(TransactionEvent::Keepalive(KeepaliveStatus::UpNeeded))
            );
        }

        #[test]
        fn multi_report_cbor_responses_reassemble() {
            let Some(doc) = load("libfido2-wiredata.json") else {
                return;
            };
            for name in [
                "libfido2-getinfo-pre-ctap23",
                "libfido2-makecredential-packed-securitykey",
                "libfido2-largeblob-get",
                "libfido2-regress-makecredential-securitykey-5.1",
            ] {
                let v = vector(&doc, name);
                let decoded = &v["decoded"]["messages"][0];
                let cid = cid_of(&decoded["cid"]);
                let expected = hex(&decoded["payload_hex"]);
                assert_eq!(expected.len() as u64, decoded["bcnt"].as_u64().unwrap());
                let mut tx = Transaction::new(cid, Command::Cbor, &[0x04], 1024).unwrap();
                let mut response = None;
                for r in reports(v) {
                    match tx.on_report(&r).unwrap() {
                        TransactionEvent::InProgress => {}
                        TransactionEvent::Response(p) => response = Some(p),
                        other => panic!("{name}: unexpected {other:?}"),
                    }
                }
                let response = response.unwrap_or_else(|| panic!("{name}: no response"));
                assert_eq!(response.len(), expected.len(), "{name}");
                assert_eq!(response, expected, "{name}");
                assert_eq!(response[0], 0x00, "{name}: CTAP2_OK");
            }
        }

        #[test]
        fn getassertion_with_foreign_continuations_never_completes() {
            let Some(doc) = load("libfido2-wiredata.json") else {
                return;
            };
            let v = vector(&doc, "libfido2-getassertion");
            let decoded = &v["decoded"]["messages"][0];
            assert_eq!(decoded["cid_anomalies"].as_array().unwrap().len(), 3);
            let cid = cid_of(&decoded["cid"]);
            let mut rx = Reassembler::new(cid, MAX_MESSAGE_LEN);
            let reports = reports(v);
            assert_eq!(rx.push(&reports[0]), Ok(PushOutcome::NeedMore));
            let mut foreign = 0;
            for r in &reports[1..] {
                assert_eq!(rx.push(r), Ok(PushOutcome::Foreign(Cid::new(0x0092_000e))));
                foreign += 1;
            }
            assert_eq!(foreign, 3);
            assert!(rx.in_progress(), "the message must stay incomplete");
        }

        /// Every HID recording in every file: reassembling the reports for each channel
        /// reproduces the decoded messages, including the trimmed last report of the
        /// bio-enroll capture (accepted by the padding policy).
        #[test]
        fn all_recordings_reassemble_as_decoded() {
            let mut messages_checked = 0;
            for file in ["libfido2-wiredata.json", "webauthn-rs.json"] {
                let Some(doc) = load(file) else { return };
                for v in doc["vectors"].as_array().unwrap() {
                    if v.get("reports").is_none() {
                        continue;
                    }
                    let name = v["name"].as_str().unwrap();
                    let expected = v["decoded"]["messages"].as_array().unwrap();
                    if expected.iter().any(|m| m.get("cid_anomalies").is_some()) {
                        continue; // covered by the strict test above
                    }
                    let cid = cid_of(&expected[0]["cid"]);
                    let mut rx = Reassembler::new(cid, MAX_MESSAGE_LEN);
                    let mut got = Vec::new();
                    for r in reports(v) {
                        match rx.push(&r) {
                            Ok(PushOutcome::Complete(m)) => got.push(m),
                            Ok(PushOutcome::NeedMore) => {}
                            other => panic!("{name}: unexpected {other:?}"),
                        }
                    }
                    assert_eq!(got.len(), expected.len(), "{name}");
                    for (m, e) in got.iter().zip(expected) {
                        let cmd = u8::from_str_radix(&e["cmd"].as_str().unwrap()[2..], 16);
                        assert_eq!(m.cmd, Command::from(cmd.unwrap()), "{name}");
                        assert_eq!(m.cid, cid_of(&e["cid"]), "{name}");
                        assert_eq!(m.payload, hex(&e["payload_hex"]), "{name}");
                        if let Some(init) = e.get("init") {
                            let nonce: [u8; 8] = hex(&init["nonce"]).try_into().unwrap();
                            let parsed = parse_init_response(&m.payload, &nonce).unwrap();
                            assert_eq!(parsed.cid, cid_of(&init["new_cid"]), "{name}");
                            let caps = u8::from_str_radix(
                                &init["capabilities"].as_str().unwrap()[2..],
                                16,
                            );
                            assert_eq!(parsed.capabilities.bits(), caps.unwrap(), "{name}");
                            let DeviceVersion {
                                major,
                                minor,
                                build,
                            } = parsed.device_version;
                            assert_eq!(
                                format!("{major}.{minor}.{build}"),
                                init["device_version"].as_str().unwrap()
                            );
                        }
                        if e.get("keepalive_status").is_some() {
                            assert_eq!(m.cmd, Command::Keepalive);
                            assert_eq!(e["keepalive_status"], "UPNEEDED");
                            assert_eq!(
                                KeepaliveStatus::from(m.payload[0]),
                                KeepaliveStatus::UpNeeded
                            );
                        }
                        if let Some(code) = e.get("error_code") {
                            assert_eq!(m.cmd, Command::Error);
                            assert!(code.as_str().unwrap().starts_with("0x01"));
                            assert_eq!(HidErrorCode::from(m.payload[0]), HidErrorCode::InvalidCmd);
                        }
                        messages_checked += 1;
                    }
                }
            }
            assert!(
                messages_checked >= 35,
                "only {messages_checked} messages checked"
            );
        }

        #[test]
        fn bio_enroll_sequence_as_a_transaction() {
            let Some(doc) = load("libfido2-wiredata.json") else {
                return;
            };
            let v = vector(&doc, "libfido2-bio-enroll-sequence");
            let reports = reports(v);
            assert_eq!(reports[8].len(), 56, "the capture's trimmed last report");
            let mut tx =
                Transaction::new(Cid::new(0x000a_0005), Command::Cbor, &[0x09], 1024).unwrap();
            let upneeded = TransactionEvent::Keepalive(KeepaliveStatus::UpNeeded);
            for r in &reports[..3] {
                assert_eq!(tx.on_report(r), Ok(upneeded.clone()));
            }
            let TransactionEvent::Response(p) = tx.on_report(&reports[3]).unwrap() else {
                panic!("expected the enroll-begin response")
            };
            assert_eq!(p, hex(&v["decoded"]["messages"][3]["payload_hex"]));
            assert_eq!(p.len(), 10);
        }
    }
}
