//! Device side of CTAPHID (CTAP 2.2 §11.2): reassembles 64-byte host reports into messages,
//! allocates channels, hands CBOR and MSG requests to the firmware, frames the replies, and
//! sends KEEPALIVE while the firmware works.
//!
//! [`Pipe`] does no IO and keeps no clock: the caller feeds it reports, firmware replies and
//! the current time, and carries out the [`Action`]s it returns.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::hostile::{Hostile, MAKE_CREDENTIAL, RequestFate};
use crate::presence::{JobId, next_job_id};

/// Length of a HID report, CTAP 2.2 §11.2.4.
pub(crate) const REPORT_LEN: usize = 64;
/// Data bytes in an initialization packet: 64 − CID(4) − CMD(1) − BCNT(2).
const INIT_DATA_LEN: usize = 57;
/// Data bytes in a continuation packet: 64 − CID(4) − SEQ(1).
const CONT_DATA_LEN: usize = 59;
/// Largest message the framing can carry: 57 + 128 × 59.
pub(crate) const MAX_FRAMED_LEN: usize = INIT_DATA_LEN + 128 * CONT_DATA_LEN;

/// The broadcast channel, CTAP 2.2 §11.2.3.
pub(crate) const BROADCAST_CID: u32 = 0xffff_ffff;

/// CTAPHID command codes, CTAP 2.2 §11.2.9 (without the initialization-packet bit 0x80).
pub(crate) mod cmd {
    pub(crate) const PING: u8 = 0x01;
    pub(crate) const MSG: u8 = 0x03;
    pub(crate) const LOCK: u8 = 0x04;
    pub(crate) const INIT: u8 = 0x06;
    pub(crate) const WINK: u8 = 0x08;
    pub(crate) const CBOR: u8 = 0x10;
    pub(crate) const CANCEL: u8 = 0x11;
    pub(crate) const KEEPALIVE: u8 = 0x3b;
    pub(crate) const ERROR: u8 = 0x3f;
}

/// CTAPHID_ERROR codes, CTAP 2.2 §11.2.9.1.6.
pub(crate) mod err {
    pub(crate) const INVALID_CMD: u8 = 0x01;
    pub(crate) const INVALID_LEN: u8 = 0x03;
    pub(crate) const INVALID_SEQ: u8 = 0x04;
    pub(crate) const MSG_TIMEOUT: u8 = 0x05;
    pub(crate) const CHANNEL_BUSY: u8 = 0x06;
    pub(crate) const INVALID_CHANNEL: u8 = 0x0b;
    pub(crate) const OTHER: u8 = 0x7f;
}

/// CTAPHID_INIT capability flags, CTAP 2.2 §11.2.9.1.3. NMSG (0x08) is never set: MSG works.
const CAPABILITY_WINK: u8 = 0x01;
const CAPABILITY_CBOR: u8 = 0x04;
/// CTAPHID protocol version in the INIT response.
const PROTOCOL_VERSION: u8 = 2;
/// Device version in the INIT response: the fido-authenticator release running inside, 0.3.0.
const DEVICE_VERSION: [u8; 3] = [0x00, 0x03, 0x00];

/// KEEPALIVE status bytes, CTAP 2.2 §11.2.9.2.1.
const STATUS_PROCESSING: u8 = 0x01;
const STATUS_UPNEEDED: u8 = 0x02;

/// CTAP2_ERR_KEEPALIVE_CANCEL, the whole CBOR reply to a cancelled request (CTAP 2.2 §8.2).
const CTAP2_ERR_KEEPALIVE_CANCEL: u8 = 0x2d;

/// At most this many allocated channels are remembered; the oldest is forgotten first (a real
/// key has a small table too, and a forgotten channel just gets INVALID_CHANNEL and re-INITs).
const MAX_CHANNELS: usize = 256;

/// Keepalives are never sent more often than this, whatever the configuration says.
const MIN_KEEPALIVE_INTERVAL: Duration = Duration::from_millis(1);
/// Stand-in for "never" when a configured duration does not fit an `Instant`.
const FAR_FUTURE: Duration = Duration::from_secs(365 * 24 * 3600);

/// Which firmware entry a HID message goes to.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum HidCommand {
    /// CTAPHID_CBOR: CTAP2 command byte and CBOR.
    Cbor,
    /// CTAPHID_MSG: a U2F (CTAP1) APDU.
    Msg,
}

impl HidCommand {
    fn code(self) -> u8 {
        match self {
            Self::Cbor => cmd::CBOR,
            Self::Msg => cmd::MSG,
        }
    }
}

/// The firmware's answer to a HID message.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum HidReply {
    /// The response message (for CBOR: status byte then CBOR; for MSG: data then SW1 SW2).
    Data(Vec<u8>),
    /// A CTAPHID_ERROR code.
    Error(u8),
}

/// What the owner of a [`Pipe`] has to do.
#[derive(Clone, Debug, Eq, PartialEq)]
pub(crate) enum Action {
    /// Send this message to the host: its reports in order, an initialization packet and its
    /// continuation packets (CTAP 2.2 §11.2.4). A message goes out whole or not at all.
    Message(Vec<[u8; REPORT_LEN]>),
    /// Run this request in the firmware; answer with [`Pipe::on_reply`].
    Submit {
        job: JobId,
        command: HidCommand,
        payload: Vec<u8>,
    },
    /// The host gave up on this job (CANCEL, or INIT on its channel): stop its presence wait.
    /// Its late reply will be ignored.
    Abandon(JobId),
    /// The host asked for a WINK.
    Wink,
}

/// Settings of the device-side CTAPHID layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PipeConfig {
    /// Answer INIT without the CBOR capability and refuse CTAPHID_CBOR.
    pub(crate) u2f_only: bool,
    pub(crate) keepalive_interval: Duration,
    /// How long the host may take between the packets of one message (else MSG_TIMEOUT).
    pub(crate) continuation_timeout: Duration,
    /// Largest request message accepted (INVALID_LEN above).
    pub(crate) max_msg_size: usize,
    /// Test-rig knob: answer every CTAPHID_CBOR request at once with this CTAP status byte
    /// alone, without asking the firmware.
    pub(crate) force_status: Option<u8>,
    /// Test-rig knob: misbehave on makeCredential ([`Hostile`]).
    pub(crate) hostile: Option<Hostile>,
}

#[derive(Debug)]
enum State {
    Idle,
    /// Reassembling a request.
    Receiving {
        cid: u32,
        command: u8,
        total: usize,
        buffer: Vec<u8>,
        next_seq: u8,
        deadline: Instant,
    },
    /// The firmware is working on a request.
    Busy {
        cid: u32,
        command: HidCommand,
        job: JobId,
        next_keepalive: Instant,
        last_status: Option<u8>,
        /// The answer goes out changed by this hostile mode.
        hostile: Option<Hostile>,
    },
}

/// The device-side CTAPHID state machine of one virtual key.
#[derive(Debug)]
pub(crate) struct Pipe {
    config: PipeConfig,
    state: State,
    channels: VecDeque<u32>,
}

impl Pipe {
    pub(crate) fn new(mut config: PipeConfig) -> Self {
        config.keepalive_interval = config.keepalive_interval.max(MIN_KEEPALIVE_INTERVAL);
        Self {
            config,
            state: State::Idle,
            channels: VecDeque::new(),
        }
    }

    /// The job the pipe waits for, if any.
    pub(crate) fn busy_job(&self) -> Option<JobId> {
        match self.state {
            State::Busy { job, .. } => Some(job),
            _ => None,
        }
    }

    /// When [`Pipe::on_timer`] has work next (keepalive or continuation timeout).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Idle => None,
            State::Receiving { deadline, .. } => Some(deadline),
            State::Busy { next_keepalive, .. } => Some(next_keepalive),
        }
    }

    /// Handles one report written by the host.
    pub(crate) fn on_report(
        &mut self,
        report: &[u8; REPORT_LEN],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let [c0, c1, c2, c3, kind, b5, b6, ..] = *report;
        let cid = u32::from_be_bytes([c0, c1, c2, c3]);
        if kind & 0x80 == 0 {
            self.on_continuation(cid, kind, report.get(5..).unwrap_or_default(), now, out);
            return;
        }
        let command = kind & 0x7f;
        let total = usize::from(u16::from_be_bytes([b5, b6]));
        let data = report.get(7..).unwrap_or_default();
        if cid == 0 {
            out.push(error_report(cid, err::INVALID_CHANNEL));
            return;
        }
        match command {
            cmd::INIT => self.on_init(cid, total, data, out),
            cmd::CANCEL => self.on_cancel(cid, out),
            _ => self.on_request_start(cid, command, total, data, now, out),
        }
    }

    /// CTAPHID_INIT, CTAP 2.2 §11.2.9.1.3.
    fn on_init(&mut self, cid: u32, total: usize, data: &[u8], out: &mut Vec<Action>) {
        if cid != BROADCAST_CID && !self.channels.contains(&cid) {
            out.push(error_report(cid, err::INVALID_CHANNEL));
            return;
        }
        let Some(nonce) = data.get(..8).filter(|_| total == 8) else {
            out.push(error_report(cid, err::INVALID_LEN));
            return;
        };
        // INIT on a channel synchronizes it: whatever it had going is dropped.
        match self.state {
            State::Receiving { cid: busy, .. } if busy == cid => self.state = State::Idle,
            State::Busy { cid: busy, job, .. } if busy == cid => {
                out.push(Action::Abandon(job));
                self.state = State::Idle;
            }
            _ => {}
        }
        let channel = if cid == BROADCAST_CID {
            self.allocate_channel()
        } else {
            cid
        };
        let mut payload = Vec::with_capacity(17);
        payload.extend_from_slice(nonce);
        payload.extend_from_slice(&channel.to_be_bytes());
        payload.push(PROTOCOL_VERSION);
        payload.extend_from_slice(&DEVICE_VERSION);
        payload.push(if self.config.u2f_only {
            CAPABILITY_WINK
        } else {
            CAPABILITY_WINK | CAPABILITY_CBOR
        });
        push_message(cid, cmd::INIT, &payload, out);
    }

    fn allocate_channel(&mut self) -> u32 {
        let channel = loop {
            let candidate: u32 = rand::random();
            if candidate != 0 && candidate != BROADCAST_CID && !self.channels.contains(&candidate) {
                break candidate;
            }
        };
        if self.channels.len() >= MAX_CHANNELS {
            self.channels.pop_front();
        }
        self.channels.push_back(channel);
        channel
    }

    /// CTAPHID_CANCEL, CTAP 2.2 §11.2.9.2.2: ends the pending CBOR request on that channel with
    /// CTAP2_ERR_KEEPALIVE_CANCEL; ignored otherwise (no pending request, another channel, or
    /// a U2F MSG, which has no cancel).
    fn on_cancel(&mut self, cid: u32, out: &mut Vec<Action>) {
        if let State::Busy {
            cid: busy,
            command: HidCommand::Cbor,
            job,
            ..
        } = self.state
            && busy == cid
        {
            out.push(Action::Abandon(job));
            push_message(cid, cmd::CBOR, &[CTAP2_ERR_KEEPALIVE_CANCEL], out);
            self.state = State::Idle;
        }
    }

    fn on_request_start(
        &mut self,
        cid: u32,
        command: u8,
        total: usize,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if cid == BROADCAST_CID || !self.channels.contains(&cid) {
            out.push(error_report(cid, err::INVALID_CHANNEL));
            return;
        }
        match self.state {
            State::Idle => {}
            State::Receiving { cid: busy, .. } if busy == cid => {
                // A new initialization packet in the middle of a message on the same channel.
                out.push(error_report(cid, err::INVALID_SEQ));
                self.state = State::Idle;
                return;
            }
            State::Receiving { .. } | State::Busy { .. } => {
                out.push(error_report(cid, err::CHANNEL_BUSY));
                return;
            }
        }
        if total > self.config.max_msg_size {
            out.push(error_report(cid, err::INVALID_LEN));
            return;
        }
        if total <= INIT_DATA_LEN {
            let payload = data.get(..total).unwrap_or_default().to_vec();
            self.on_message(cid, command, payload, now, out);
        } else {
            let mut buffer = Vec::with_capacity(total);
            buffer.extend_from_slice(data);
            self.state = State::Receiving {
                cid,
                command,
                total,
                buffer,
                next_seq: 0,
                deadline: later(now, self.config.continuation_timeout),
            };
        }
    }

    fn on_continuation(
        &mut self,
        cid: u32,
        seq: u8,
        data: &[u8],
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let State::Receiving {
            cid: receiving,
            command,
            total,
            buffer,
            next_seq,
            deadline,
        } = &mut self.state
        else {
            // Stray continuation packets are ignored (CTAP 2.2 §11.2.4).
            return;
        };
        if *receiving != cid {
            return;
        }
        if seq != *next_seq {
            out.push(error_report(cid, err::INVALID_SEQ));
            self.state = State::Idle;
            return;
        }
        let want = total.saturating_sub(buffer.len()).min(CONT_DATA_LEN);
        buffer.extend_from_slice(data.get(..want).unwrap_or_default());
        *next_seq = next_seq.saturating_add(1);
        *deadline = later(now, self.config.continuation_timeout);
        if buffer.len() >= *total {
            let command = *command;
            let payload = std::mem::take(buffer);
            self.state = State::Idle;
            self.on_message(cid, command, payload, now, out);
        }
    }

    /// A complete request message.
    fn on_message(
        &mut self,
        cid: u32,
        command: u8,
        payload: Vec<u8>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let firmware_command = match command {
            cmd::PING => {
                push_message(cid, cmd::PING, &payload, out);
                return;
            }
            cmd::WINK => {
                if payload.is_empty() {
                    out.push(Action::Wink);
                    push_message(cid, cmd::WINK, &[], out);
                } else {
                    out.push(error_report(cid, err::INVALID_LEN));
                }
                return;
            }
            cmd::MSG => HidCommand::Msg,
            cmd::CBOR if !self.config.u2f_only => {
                if let Some(status) = self.config.force_status {
                    push_message(cid, cmd::CBOR, &[status], out);
                    return;
                }
                HidCommand::Cbor
            }
            // CTAPHID_LOCK is optional; like the Nitrokey 3, this key does not implement it.
            cmd::LOCK => {
                out.push(error_report(cid, err::INVALID_CMD));
                return;
            }
            // Vendor commands, CBOR on a U2F-only key, anything else.
            _ => {
                out.push(error_report(cid, err::INVALID_CMD));
                return;
            }
        };
        if payload.is_empty() {
            out.push(error_report(cid, err::INVALID_LEN));
            return;
        }
        let hostile = self.config.hostile.filter(|_| {
            firmware_command == HidCommand::Cbor && payload.first() == Some(&MAKE_CREDENTIAL)
        });
        let job = next_job_id();
        match hostile.map_or(RequestFate::Submit, Hostile::on_request) {
            RequestFate::Submit => out.push(Action::Submit {
                job,
                command: firmware_command,
                payload,
            }),
            // Busy with a job the firmware never sees: only keepalives until CANCEL or INIT.
            RequestFate::KeepBusy => {}
            RequestFate::Ignore => return,
        }
        self.state = State::Busy {
            cid,
            command: firmware_command,
            job,
            next_keepalive: later(now, self.config.keepalive_interval),
            last_status: None,
            hostile,
        };
    }

    /// The firmware finished `job`. A reply for a job the host gave up on is dropped.
    pub(crate) fn on_reply(&mut self, job: JobId, reply: HidReply, out: &mut Vec<Action>) {
        let State::Busy {
            cid,
            command,
            job: busy,
            hostile,
            ..
        } = self.state
        else {
            return;
        };
        if busy != job {
            return;
        }
        self.state = State::Idle;
        let reply = match (hostile, reply) {
            (Some(mode), HidReply::Data(data)) => HidReply::Data(mode.tamper_data(data)),
            (_, reply) => reply,
        };
        match reply {
            HidReply::Data(data) if data.len() <= MAX_FRAMED_LEN => match hostile {
                Some(mode) => {
                    let mut framed = Vec::new();
                    push_message(cid, command.code(), &data, &mut framed);
                    for action in framed {
                        if let Action::Message(mut reports) = action {
                            mode.tamper_reports(&mut reports);
                            out.push(Action::Message(reports));
                        }
                    }
                }
                None => push_message(cid, command.code(), &data, out),
            },
            HidReply::Data(_) => out.push(error_report(cid, err::OTHER)),
            HidReply::Error(code) => out.push(error_report(cid, code)),
        }
    }

    /// The host went away (its connection closed), like a USB re-plug: a pending request is
    /// abandoned, a half-received message dropped and every allocated channel forgotten, so the
    /// next host starts from INIT on an idle key. The firmware's state (credentials, PIN)
    /// stays.
    pub(crate) fn on_host_reset(&mut self, out: &mut Vec<Action>) {
        if let State::Busy { job, .. } = self.state {
            out.push(Action::Abandon(job));
        }
        self.state = State::Idle;
        self.channels.clear();
    }

    /// The firmware thread is gone: a request waiting for it gets CTAPHID_ERROR OTHER (later
    /// ones get the same when their submission fails).
    pub(crate) fn on_firmware_stopped(&mut self, out: &mut Vec<Action>) {
        if let State::Busy { cid, .. } = self.state {
            out.push(error_report(cid, err::OTHER));
            self.state = State::Idle;
        }
    }

    /// Time passed: sends a due KEEPALIVE (`upneeded`: the busy job waits for a touch) or ends
    /// a message whose continuation packets stopped coming.
    pub(crate) fn on_timer(&mut self, now: Instant, upneeded: bool, out: &mut Vec<Action>) {
        match &mut self.state {
            State::Idle => {}
            State::Receiving { cid, deadline, .. } => {
                if now >= *deadline {
                    out.push(error_report(*cid, err::MSG_TIMEOUT));
                    self.state = State::Idle;
                }
            }
            State::Busy {
                cid,
                next_keepalive,
                last_status,
                ..
            } => {
                if now >= *next_keepalive {
                    let status = keepalive_status(upneeded);
                    push_message(*cid, cmd::KEEPALIVE, &[status], out);
                    *last_status = Some(status);
                    *next_keepalive = later(now, self.config.keepalive_interval);
                }
            }
        }
    }

    /// The busy job started or stopped waiting for a touch: tell the host at once
    /// (CTAP 2.2 §11.2.9.2.1, "whenever the status changes").
    pub(crate) fn on_presence_changed(
        &mut self,
        job: JobId,
        upneeded: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if let State::Busy {
            cid,
            job: busy,
            next_keepalive,
            last_status,
            ..
        } = &mut self.state
        {
            let status = keepalive_status(upneeded);
            if *busy == job && *last_status != Some(status) {
                push_message(*cid, cmd::KEEPALIVE, &[status], out);
                *last_status = Some(status);
                *next_keepalive = later(now, self.config.keepalive_interval);
            }
        }
    }
}

/// `now + after`, saturating far in the future instead of overflowing for absurd durations.
fn later(now: Instant, after: Duration) -> Instant {
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR_FUTURE))
        .unwrap_or(now)
}

fn keepalive_status(upneeded: bool) -> u8 {
    if upneeded {
        STATUS_UPNEEDED
    } else {
        STATUS_PROCESSING
    }
}

fn error_report(cid: u32, code: u8) -> Action {
    let mut report = [0u8; REPORT_LEN];
    report[..4].copy_from_slice(&cid.to_be_bytes());
    report[4] = 0x80 | cmd::ERROR;
    report[5..8].copy_from_slice(&[0x00, 0x01, code]);
    Action::Message(vec![report])
}

/// Frames a message into reports. `data` is at most [`MAX_FRAMED_LEN`] bytes (checked by
/// every caller), so BCNT fits in 16 bits and SEQ stays below 0x80.
fn push_message(cid: u32, command: u8, data: &[u8], out: &mut Vec<Action>) {
    let bcnt = u16::try_from(data.len()).unwrap_or(u16::MAX);
    let (first, rest) = data.split_at(data.len().min(INIT_DATA_LEN));
    let mut reports = Vec::with_capacity(1 + rest.len().div_ceil(CONT_DATA_LEN));
    let mut report = [0u8; REPORT_LEN];
    report[..4].copy_from_slice(&cid.to_be_bytes());
    report[4] = 0x80 | command;
    report[5..7].copy_from_slice(&bcnt.to_be_bytes());
    report[7..7 + first.len()].copy_from_slice(first);
    reports.push(report);
    for (seq, chunk) in (0u8..0x80).zip(rest.chunks(CONT_DATA_LEN)) {
        let mut report = [0u8; REPORT_LEN];
        report[..4].copy_from_slice(&cid.to_be_bytes());
        report[4] = seq;
        report[5..5 + chunk.len()].copy_from_slice(chunk);
        reports.push(report);
    }
    out.push(Action::Message(reports));
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: PipeConfig = PipeConfig {
        u2f_only: false,
        keepalive_interval: Duration::from_millis(100),
        continuation_timeout: Duration::from_millis(500),
        max_msg_size: 3072,
        force_status: None,
        hostile: None,
    };

    fn init_packet(cid: u32, command: u8, total: u16, data: &[u8]) -> [u8; 64] {
        let mut r = [0u8; 64];
        r[..4].copy_from_slice(&cid.to_be_bytes());
        r[4] = 0x80 | command;
        r[5..7].copy_from_slice(&total.to_be_bytes());
        r[7..7 + data.len()].copy_from_slice(data);
        r
    }

    fn cont_packet(cid: u32, seq: u8, data: &[u8]) -> [u8; 64] {
        let mut r = [0u8; 64];
        r[..4].copy_from_slice(&cid.to_be_bytes());
        r[4] = seq;
        r[5..5 + data.len()].copy_from_slice(data);
        r
    }

    fn reports(actions: &[Action]) -> Vec<[u8; 64]> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Message(reports) => Some(reports.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn open(pipe: &mut Pipe, now: Instant) -> u32 {
        let mut out = Vec::new();
        let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
        pipe.on_report(
            &init_packet(BROADCAST_CID, cmd::INIT, 8, &nonce),
            now,
            &mut out,
        );
        let r = reports(&out)[0];
        u32::from_be_bytes([r[15], r[16], r[17], r[18]])
    }

    fn assert_error(actions: &[Action], cid: u32, code: u8) {
        assert_eq!(
            reports(actions),
            vec![init_packet(cid, cmd::ERROR, 1, &[code])]
        );
    }

    #[test]
    fn init_allocates_a_channel_and_echoes_the_nonce() {
        let mut pipe = Pipe::new(CONFIG);
        let mut out = Vec::new();
        let nonce = [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8];
        pipe.on_report(
            &init_packet(BROADCAST_CID, cmd::INIT, 8, &nonce),
            Instant::now(),
            &mut out,
        );
        let r = reports(&out);
        assert_eq!(r.len(), 1);
        let r = r[0];
        assert_eq!(&r[..7], &[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x11]);
        assert_eq!(&r[7..15], &nonce);
        let cid = u32::from_be_bytes([r[15], r[16], r[17], r[18]]);
        assert_ne!(cid, 0);
        assert_ne!(cid, BROADCAST_CID);
        assert_eq!(&r[19..24], &[0x02, 0x00, 0x03, 0x00, 0x05]);
        assert!(r[24..].iter().all(|&b| b == 0));
    }

    #[test]
    fn u2f_only_init_lacks_cbor_and_refuses_cbor() {
        let mut pipe = Pipe::new(PipeConfig {
            u2f_only: true,
            ..CONFIG
        });
        let now = Instant::now();
        let mut out = Vec::new();
        pipe.on_report(
            &init_packet(BROADCAST_CID, cmd::INIT, 8, &[0; 8]),
            now,
            &mut out,
        );
        let r = reports(&out)[0];
        assert_eq!(r[23], CAPABILITY_WINK);
        let cid = u32::from_be_bytes([r[15], r[16], r[17], r[18]]);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::CBOR, 1, &[0x04]), now, &mut out);
        assert_error(&out, cid, err::INVALID_CMD);
    }

    #[test]
    fn init_with_wrong_length_is_invalid_len() {
        let mut pipe = Pipe::new(CONFIG);
        let mut out = Vec::new();
        pipe.on_report(
            &init_packet(BROADCAST_CID, cmd::INIT, 7, &[0; 7]),
            Instant::now(),
            &mut out,
        );
        assert_error(&out, BROADCAST_CID, err::INVALID_LEN);
    }

    #[test]
    fn unknown_and_reserved_channels_are_invalid() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let mut out = Vec::new();
        pipe.on_report(&init_packet(0x1234_5678, cmd::PING, 1, &[9]), now, &mut out);
        assert_error(&out, 0x1234_5678, err::INVALID_CHANNEL);
        let mut out = Vec::new();
        pipe.on_report(
            &init_packet(BROADCAST_CID, cmd::PING, 1, &[9]),
            now,
            &mut out,
        );
        assert_error(&out, BROADCAST_CID, err::INVALID_CHANNEL);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(0, cmd::INIT, 8, &[0; 8]), now, &mut out);
        assert_error(&out, 0, err::INVALID_CHANNEL);
        let mut out = Vec::new();
        pipe.on_report(
            &init_packet(0x1234_5678, cmd::INIT, 8, &[0; 8]),
            now,
            &mut out,
        );
        assert_error(&out, 0x1234_5678, err::INVALID_CHANNEL);
    }

    #[test]
    fn long_ping_is_reassembled_and_fragmented() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let data: Vec<u8> = (0..200u16).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        pipe.on_report(
            &init_packet(cid, cmd::PING, 200, &data[..57]),
            now,
            &mut out,
        );
        pipe.on_report(&cont_packet(cid, 0, &data[57..116]), now, &mut out);
        pipe.on_report(&cont_packet(cid, 1, &data[116..175]), now, &mut out);
        assert!(out.is_empty());
        pipe.on_report(&cont_packet(cid, 2, &data[175..]), now, &mut out);
        // One action carries the whole reply, so it is queued or dropped as a unit.
        assert!(matches!(out.as_slice(), [Action::Message(reports)] if reports.len() == 4));
        let r = reports(&out);
        assert_eq!(r.len(), 4);
        assert_eq!(r[0], init_packet(cid, cmd::PING, 200, &data[..57]));
        assert_eq!(r[1], cont_packet(cid, 0, &data[57..116]));
        assert_eq!(r[2], cont_packet(cid, 1, &data[116..175]));
        assert_eq!(r[3], cont_packet(cid, 2, &data[175..]));
    }

    #[test]
    fn wrong_sequence_is_invalid_seq() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::PING, 100, &[0; 57]), now, &mut out);
        pipe.on_report(&cont_packet(cid, 1, &[0; 43]), now, &mut out);
        assert_error(&out, cid, err::INVALID_SEQ);
        // The channel is usable again afterwards.
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::PING, 1, &[7]), now, &mut out);
        assert_eq!(reports(&out), vec![init_packet(cid, cmd::PING, 1, &[7])]);
    }

    #[test]
    fn new_init_packet_mid_message_is_invalid_seq() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::PING, 100, &[0; 57]), now, &mut out);
        pipe.on_report(&init_packet(cid, cmd::PING, 1, &[1]), now, &mut out);
        assert_error(&out, cid, err::INVALID_SEQ);
    }

    #[test]
    fn other_channel_mid_message_is_channel_busy_and_stray_continuations_are_ignored() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let a = open(&mut pipe, now);
        let b = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(a, cmd::PING, 100, &[0; 57]), now, &mut out);
        pipe.on_report(&init_packet(b, cmd::PING, 1, &[1]), now, &mut out);
        assert_error(&out, b, err::CHANNEL_BUSY);
        let mut out = Vec::new();
        pipe.on_report(&cont_packet(b, 0, &[0; 59]), now, &mut out);
        assert!(out.is_empty());
        pipe.on_report(&cont_packet(a, 0, &[0; 43]), now, &mut out);
        assert_eq!(reports(&out).len(), 2);
    }

    #[test]
    fn oversized_message_is_invalid_len() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::CBOR, 3073, &[0; 57]), now, &mut out);
        assert_error(&out, cid, err::INVALID_LEN);
    }

    #[test]
    fn stalled_message_times_out() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::PING, 100, &[0; 57]), now, &mut out);
        assert_eq!(pipe.next_deadline(), Some(now + Duration::from_millis(500)));
        pipe.on_timer(now + Duration::from_millis(499), false, &mut out);
        assert!(out.is_empty());
        pipe.on_timer(now + Duration::from_millis(500), false, &mut out);
        assert_error(&out, cid, err::MSG_TIMEOUT);
        assert_eq!(pipe.next_deadline(), None);
    }

    #[test]
    fn unknown_commands_lock_and_empty_cbor_are_refused() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        for command in [cmd::LOCK, 0x40, 0x7f, 0x22] {
            let mut out = Vec::new();
            pipe.on_report(&init_packet(cid, command, 1, &[0]), now, &mut out);
            assert_error(&out, cid, err::INVALID_CMD);
        }
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::CBOR, 0, &[]), now, &mut out);
        assert_error(&out, cid, err::INVALID_LEN);
    }

    #[test]
    fn wink_is_answered_and_reported() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::WINK, 0, &[]), now, &mut out);
        assert_eq!(
            out,
            vec![
                Action::Wink,
                Action::Message(vec![init_packet(cid, cmd::WINK, 0, &[])])
            ]
        );
    }

    fn submit(pipe: &mut Pipe, cid: u32, command: u8, now: Instant) -> JobId {
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, command, 1, &[0x04]), now, &mut out);
        match out.as_slice() {
            [Action::Submit { job, payload, .. }] => {
                assert_eq!(payload, &vec![0x04]);
                *job
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn busy_pipe_sends_keepalives_and_the_reply() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let job = submit(&mut pipe, cid, cmd::CBOR, now);
        assert_eq!(pipe.busy_job(), Some(job));
        let mut out = Vec::new();
        pipe.on_timer(now + Duration::from_millis(50), false, &mut out);
        assert!(out.is_empty());
        pipe.on_timer(now + Duration::from_millis(100), false, &mut out);
        pipe.on_presence_changed(job, true, now + Duration::from_millis(120), &mut out);
        pipe.on_presence_changed(job, true, now + Duration::from_millis(130), &mut out);
        pipe.on_timer(now + Duration::from_millis(220), true, &mut out);
        assert_eq!(
            reports(&out),
            vec![
                init_packet(cid, cmd::KEEPALIVE, 1, &[STATUS_PROCESSING]),
                init_packet(cid, cmd::KEEPALIVE, 1, &[STATUS_UPNEEDED]),
                init_packet(cid, cmd::KEEPALIVE, 1, &[STATUS_UPNEEDED]),
            ]
        );
        let mut out = Vec::new();
        pipe.on_reply(job, HidReply::Data(vec![0x00, 0xa0]), &mut out);
        assert_eq!(
            reports(&out),
            vec![init_packet(cid, cmd::CBOR, 2, &[0x00, 0xa0])]
        );
        assert_eq!(pipe.busy_job(), None);
    }

    #[test]
    fn busy_pipe_refuses_other_requests() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let a = open(&mut pipe, now);
        let b = open(&mut pipe, now);
        submit(&mut pipe, a, cmd::CBOR, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(b, cmd::PING, 1, &[1]), now, &mut out);
        assert_error(&out, b, err::CHANNEL_BUSY);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(a, cmd::PING, 1, &[1]), now, &mut out);
        assert_error(&out, a, err::CHANNEL_BUSY);
        // Allocation still works while busy.
        let mut out = Vec::new();
        pipe.on_report(
            &init_packet(BROADCAST_CID, cmd::INIT, 8, &[0; 8]),
            now,
            &mut out,
        );
        assert_eq!(reports(&out).len(), 1);
    }

    #[test]
    fn cancel_ends_a_cbor_request_with_keepalive_cancel_and_drops_the_late_reply() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let a = open(&mut pipe, now);
        let b = open(&mut pipe, now);
        let job = submit(&mut pipe, a, cmd::CBOR, now);
        let mut out = Vec::new();
        // CANCEL on another channel is ignored.
        pipe.on_report(&init_packet(b, cmd::CANCEL, 0, &[]), now, &mut out);
        assert!(out.is_empty());
        pipe.on_report(&init_packet(a, cmd::CANCEL, 0, &[]), now, &mut out);
        assert_eq!(
            out,
            vec![
                Action::Abandon(job),
                Action::Message(vec![init_packet(a, cmd::CBOR, 1, &[0x2d])])
            ]
        );
        let mut out = Vec::new();
        pipe.on_reply(job, HidReply::Data(vec![0x00]), &mut out);
        assert!(out.is_empty());
        // A CANCEL with nothing pending is ignored.
        pipe.on_report(&init_packet(a, cmd::CANCEL, 0, &[]), now, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn cancel_does_not_touch_a_u2f_message() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let a = open(&mut pipe, now);
        let job = submit(&mut pipe, a, cmd::MSG, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(a, cmd::CANCEL, 0, &[]), now, &mut out);
        assert!(out.is_empty());
        pipe.on_reply(job, HidReply::Data(vec![0x69, 0x85]), &mut out);
        assert_eq!(
            reports(&out),
            vec![init_packet(a, cmd::MSG, 2, &[0x69, 0x85])]
        );
    }

    #[test]
    fn init_on_the_busy_channel_abandons_its_request() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let a = open(&mut pipe, now);
        let job = submit(&mut pipe, a, cmd::CBOR, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(a, cmd::INIT, 8, &[5; 8]), now, &mut out);
        assert_eq!(out[0], Action::Abandon(job));
        let r = reports(&out);
        assert_eq!(r.len(), 1);
        assert_eq!(
            u32::from_be_bytes([r[0][15], r[0][16], r[0][17], r[0][18]]),
            a
        );
        assert_eq!(pipe.busy_job(), None);
    }

    #[test]
    fn firmware_errors_become_ctaphid_errors() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let a = open(&mut pipe, now);
        let job = submit(&mut pipe, a, cmd::CBOR, now);
        let mut out = Vec::new();
        pipe.on_reply(job, HidReply::Error(err::INVALID_LEN), &mut out);
        assert_error(&out, a, err::INVALID_LEN);
    }

    #[test]
    fn a_dead_firmware_ends_the_pending_request() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let a = open(&mut pipe, now);
        submit(&mut pipe, a, cmd::CBOR, now);
        let mut out = Vec::new();
        pipe.on_firmware_stopped(&mut out);
        assert_error(&out, a, err::OTHER);
        assert_eq!(pipe.busy_job(), None);
    }

    #[test]
    fn absurd_durations_neither_panic_nor_spin() {
        let mut pipe = Pipe::new(PipeConfig {
            keepalive_interval: Duration::ZERO,
            continuation_timeout: Duration::MAX,
            ..CONFIG
        });
        let now = Instant::now();
        let a = open(&mut pipe, now);
        submit(&mut pipe, a, cmd::CBOR, now);
        assert_eq!(pipe.next_deadline(), Some(now + Duration::from_millis(1)));
        let mut out = Vec::new();
        pipe.on_timer(now, false, &mut out);
        assert!(out.is_empty());
        let b = open(&mut pipe, now);
        pipe.on_report(&init_packet(b, cmd::PING, 100, &[0; 57]), now, &mut out);
        assert_error(&out, b, err::CHANNEL_BUSY);
        let mut pipe = Pipe::new(PipeConfig {
            continuation_timeout: Duration::MAX,
            ..CONFIG
        });
        let a = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(a, cmd::PING, 100, &[0; 57]), now, &mut out);
        assert!(pipe.next_deadline().unwrap() > now + Duration::from_secs(3600));
    }

    #[test]
    fn largest_message_frames_into_129_reports() {
        let mut out = Vec::new();
        push_message(1, cmd::CBOR, &vec![0x55; MAX_FRAMED_LEN], &mut out);
        assert_eq!(out.len(), 1);
        let r = reports(&out);
        assert_eq!(r.len(), 129);
        assert_eq!(r[128][4], 0x7f);
    }

    #[test]
    fn forced_status_answers_cbor_without_the_firmware() {
        let mut pipe = Pipe::new(PipeConfig {
            force_status: Some(0x2f),
            ..CONFIG
        });
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::CBOR, 1, &[0x04]), now, &mut out);
        assert_eq!(
            out,
            vec![Action::Message(vec![init_packet(
                cid,
                cmd::CBOR,
                1,
                &[0x2f]
            )])]
        );
        assert_eq!(pipe.busy_job(), None);
        // Other commands are untouched: PING echoes, MSG goes to the firmware.
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::PING, 2, &[7, 8]), now, &mut out);
        assert_eq!(reports(&out), vec![init_packet(cid, cmd::PING, 2, &[7, 8])]);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::MSG, 1, &[0x00]), now, &mut out);
        assert!(matches!(
            out.as_slice(),
            [Action::Submit {
                command: HidCommand::Msg,
                ..
            }]
        ));
    }

    #[test]
    fn host_reset_abandons_the_request_and_forgets_channels() {
        let mut pipe = Pipe::new(CONFIG);
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let job = submit(&mut pipe, cid, cmd::CBOR, now);
        let mut out = Vec::new();
        pipe.on_host_reset(&mut out);
        assert_eq!(out, vec![Action::Abandon(job)]);
        assert_eq!(pipe.busy_job(), None);
        assert_eq!(pipe.next_deadline(), None);
        // The late reply goes nowhere; the old channel is unknown now.
        let mut out = Vec::new();
        pipe.on_reply(job, HidReply::Data(vec![0x00]), &mut out);
        assert!(out.is_empty());
        pipe.on_report(&init_packet(cid, cmd::PING, 1, &[1]), now, &mut out);
        assert_error(&out, cid, err::INVALID_CHANNEL);
    }

    #[test]
    fn a_silent_key_drops_make_credential_and_answers_the_rest() {
        let mut pipe = Pipe::new(PipeConfig {
            hostile: Some(Hostile::Silence),
            ..CONFIG
        });
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::CBOR, 1, &[0x01]), now, &mut out);
        assert!(out.is_empty());
        assert_eq!(pipe.next_deadline(), None);
        // CANCEL gets nothing either; getInfo still reaches the firmware.
        pipe.on_report(&init_packet(cid, cmd::CANCEL, 0, &[]), now, &mut out);
        assert!(out.is_empty());
        submit(&mut pipe, cid, cmd::CBOR, now);
    }

    #[test]
    fn an_endless_keepalive_runs_until_cancel() {
        let mut pipe = Pipe::new(PipeConfig {
            hostile: Some(Hostile::EndlessKeepalive),
            ..CONFIG
        });
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::CBOR, 1, &[0x01]), now, &mut out);
        assert!(out.is_empty(), "the firmware is not asked: {out:?}");
        for step in 1..=50u64 {
            pipe.on_timer(now + Duration::from_millis(100 * step), false, &mut out);
        }
        assert_eq!(
            reports(&out),
            vec![init_packet(cid, cmd::KEEPALIVE, 1, &[STATUS_PROCESSING]); 50]
        );
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::CANCEL, 0, &[]), now, &mut out);
        assert_eq!(
            reports(&out),
            vec![init_packet(
                cid,
                cmd::CBOR,
                1,
                &[CTAP2_ERR_KEEPALIVE_CANCEL]
            )]
        );
        assert_eq!(pipe.busy_job(), None);
    }

    #[test]
    fn a_hostile_answer_is_tampered_only_for_make_credential() {
        let mut pipe = Pipe::new(PipeConfig {
            hostile: Some(Hostile::OtherChannel),
            ..CONFIG
        });
        let now = Instant::now();
        let cid = open(&mut pipe, now);
        // getInfo (0x04) is answered on the right channel.
        let job = submit(&mut pipe, cid, cmd::CBOR, now);
        let mut out = Vec::new();
        pipe.on_reply(job, HidReply::Data(vec![0x00, 0xa0]), &mut out);
        assert_eq!(
            reports(&out),
            vec![init_packet(cid, cmd::CBOR, 2, &[0x00, 0xa0])]
        );
        let mut out = Vec::new();
        pipe.on_report(&init_packet(cid, cmd::CBOR, 1, &[0x01]), now, &mut out);
        let [Action::Submit { job, .. }] = out.as_slice() else {
            panic!("unexpected {out:?}");
        };
        let job = *job;
        let mut out = Vec::new();
        pipe.on_reply(job, HidReply::Data(vec![0x00, 0xa0]), &mut out);
        assert_eq!(
            reports(&out),
            vec![init_packet(!cid, cmd::CBOR, 2, &[0x00, 0xa0])]
        );
    }
}
