//! ISO 7816-4 APDUs and CTAP over NFC (CTAP 2.2 §11.3), platform side.
//!
//! NFC authenticators (and PC/SC readers in general) speak ISO 7816-4 command/response
//! APDUs. CTAP2 rides on them as NFCCTAP_MSG (§11.3.7.1), with status updates polled through
//! NFCCTAP_GETRESPONSE (§11.3.7.2); CTAP1/U2F uses plain APDUs with no extra framing.
//!
//! This module is sans-IO: [`CommandApdu::encode`] and [`ResponseApdu::parse`] deal with
//! single APDUs, and [`Exchange`] runs one complete command as a state machine: it hands out
//! the command APDUs to transmit (chained blocks, GET RESPONSE after `61xx`, status polls after
//! `9100`) and returns the reassembled response. The caller transmits, keeps the deadlines
//! and decides how long to wait between status polls.
//!
//! # Choices the spec leaves open
//!
//! - The SELECT of the FIDO applet carries `Le = 00`. The applet-selection command shown in
//!   §11.3.3 (as in the older U2F NFC specification) has no Le, but the command expects
//!   response data (the version string), which ISO 7816-4 expresses with Le (case 4);
//!   clients in the field send both forms.
//! - NFCCTAP_MSG and NFCCTAP_GETRESPONSE carry the largest Le of their form (`00` short,
//!   `0000` extended); intermediate blocks of a chained command carry none.
//! - NFCCTAP_GETRESPONSE polls with `P1 = 0x00`; its cancel form uses `P1 = 0x11`
//!   (§11.3.7.2). See [`Exchange::cancel_command`].
//! - GET RESPONSE is sent with CLA `0x00`, the inter-industry class of ISO 7816-4.
//! - A `9100` status update carrying more than one data byte is read by its first byte.

use std::fmt;

use zeroize::Zeroizing;

use crate::ctaphid::KeepaliveStatus;

/// The most response space an [`Exchange`] reserves before any data arrives.
const MAX_RESERVE: usize = 0x1_0000;

/// The FIDO applet AID: RID `A000000647`, AC `2F`, AX `0001` (CTAP 2.2 §11.3.3).
pub const FIDO_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01];

/// Largest Nc (data length) of a short APDU.
const SHORT_MAX_DATA: usize = 0xFF;
/// Largest Ne of a short APDU (encoded as `00`).
const SHORT_MAX_LE: u32 = 0x100;
/// Largest Nc of an extended APDU.
const EXTENDED_MAX_DATA: usize = 0xFFFF;
/// Largest Ne of an extended APDU (encoded as `0000`).
const EXTENDED_MAX_LE: u32 = 0x1_0000;

/// CLA bit for "command chaining, more blocks follow" (ISO 7816-4, class byte coding).
const CLA_CHAINING: u8 = 0x10;
/// CLA of the CTAP NFC commands (CTAP 2.2 §11.3.5.1).
const CLA_CTAP: u8 = 0x80;
/// NFCCTAP_MSG (CTAP 2.2 §11.3.7.1).
const INS_NFCCTAP_MSG: u8 = 0x10;
/// NFCCTAP_GETRESPONSE (CTAP 2.2 §11.3.7.2).
const INS_NFCCTAP_GETRESPONSE: u8 = 0x11;
/// NFCCTAP_MSG P1: the platform supports NFCCTAP_GETRESPONSE, so the authenticator may
/// answer `9100` status updates (CTAP 2.2 §11.3.7.1).
const P1_SUPPORTS_GETRESPONSE: u8 = 0x80;
/// NFCCTAP_GETRESPONSE P1 that cancels the pending request (CTAP 2.2 §11.3.7.2).
const P1_CANCEL: u8 = 0x11;
/// SELECT (ISO 7816-4), P1 "select by DF name".
const INS_SELECT: u8 = 0xA4;
const P1_SELECT_BY_NAME: u8 = 0x04;
/// GET RESPONSE (ISO 7816-4).
const INS_GET_RESPONSE: u8 = 0xC0;

/// Length encoding of a command APDU (ISO 7816-4 §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApduForm {
    /// One-byte Lc/Le: up to 255 data bytes, Ne up to 256.
    Short,
    /// Three-byte Lc / two- or three-byte Le: up to 65535 data bytes, Ne up to 65536.
    Extended,
}

/// Errors encoding or parsing a single APDU.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApduError {
    /// The data field does not fit the chosen form.
    #[error("{len} data bytes do not fit, at most {max}")]
    DataTooLong {
        /// Data length.
        len: usize,
        /// Largest data length of the form.
        max: usize,
    },
    /// Le (Ne) is 0 or larger than the form allows (256 short, 65536 extended).
    #[error("Le {le} is out of range 1..={max}")]
    LeOutOfRange {
        /// The requested Ne.
        le: u32,
        /// Largest Ne of the form.
        max: u32,
    },
    /// A command APDU whose length bytes do not match its size.
    #[error("malformed command APDU of {len} bytes")]
    MalformedCommand {
        /// Total length.
        len: usize,
    },
    /// A response shorter than the two status bytes.
    #[error("response APDU of {len} bytes has no status word")]
    ResponseTooShort {
        /// Total length.
        len: usize,
    },
}

/// A command APDU (ISO 7816-4 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandApdu {
    /// Class byte.
    pub cla: u8,
    /// Instruction byte.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (Nc = its length; empty means no Lc field).
    pub data: Vec<u8>,
    /// Ne, the largest number of response bytes expected: `None` for no Le field, otherwise
    /// `1..=256` (short) or `1..=65536` (extended).
    pub le: Option<u32>,
}

impl CommandApdu {
    /// Encodes the APDU in `form` following the ISO 7816-4 cases: case 1 header only, case 2
    /// Le only, case 3 Lc + data, case 4 Lc + data + Le. Short form encodes Ne 256 as `00`;
    /// extended form starts the body with `00`, uses two-byte Lc/Le and encodes Ne 65536 as
    /// `0000`.
    pub fn encode(&self, form: ApduForm) -> Result<Vec<u8>, ApduError> {
        let (max_data, max_le) = match form {
            ApduForm::Short => (SHORT_MAX_DATA, SHORT_MAX_LE),
            ApduForm::Extended => (EXTENDED_MAX_DATA, EXTENDED_MAX_LE),
        };
        let len = self.data.len();
        if len > max_data {
            return Err(ApduError::DataTooLong { len, max: max_data });
        }
        let le = match self.le {
            Some(le) if le == 0 || le > max_le => {
                return Err(ApduError::LeOutOfRange { le, max: max_le });
            }
            le => le.map(u32::to_be_bytes),
        };
        // Checked above: len <= 0xFFFF.
        let lc = u16::try_from(len)
            .map_err(|_| ApduError::DataTooLong { len, max: max_data })?
            .to_be_bytes();

        let mut out = Vec::with_capacity(4 + 3 + len + 2);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        match form {
            ApduForm::Short => {
                if len > 0 {
                    out.push(lc[1]);
                    out.extend_from_slice(&self.data);
                }
                if let Some([_, _, _, le]) = le {
                    out.push(le); // 256 -> 0x00
                }
            }
            ApduForm::Extended => {
                if len > 0 {
                    out.push(0x00);
                    out.extend_from_slice(&lc);
                    out.extend_from_slice(&self.data);
                }
                if let Some([_, _, hi, lo]) = le {
                    if len == 0 {
                        out.push(0x00);
                    }
                    out.extend_from_slice(&[hi, lo]); // 65536 -> 0x0000
                }
            }
        }
        Ok(out)
    }

    /// Parses an encoded command APDU, telling which form it used (a header-only APDU is
    /// reported as short).
    pub fn parse(bytes: &[u8]) -> Result<(Self, ApduForm), ApduError> {
        let malformed = ApduError::MalformedCommand { len: bytes.len() };
        let [cla, ins, p1, p2, body @ ..] = bytes else {
            return Err(malformed);
        };
        let short_le = |b: u8| if b == 0 { SHORT_MAX_LE } else { u32::from(b) };
        let extended_le = |hi: u8, lo: u8| match u16::from_be_bytes([hi, lo]) {
            0 => EXTENDED_MAX_LE,
            n => u32::from(n),
        };
        let (data, le, form): (&[u8], _, _) = match *body {
            [] => (&[], None, ApduForm::Short),
            [le] => (&[], Some(short_le(le)), ApduForm::Short),
            [0x00, hi, lo] => (&[], Some(extended_le(hi, lo)), ApduForm::Extended),
            [0x00, hi, lo, ref rest @ ..] => {
                let lc = usize::from(u16::from_be_bytes([hi, lo]));
                match rest.len().checked_sub(lc) {
                    _ if lc == 0 => return Err(malformed),
                    Some(0) => (rest, None, ApduForm::Extended),
                    Some(2) => {
                        let (data, le) = rest.split_at(lc);
                        let [hi, lo] = *le else { return Err(malformed) };
                        (data, Some(extended_le(hi, lo)), ApduForm::Extended)
                    }
                    _ => return Err(malformed),
                }
            }
            [lc, ref rest @ ..] => {
                let lc = usize::from(lc);
                match rest.len().checked_sub(lc) {
                    _ if lc == 0 => return Err(malformed),
                    Some(0) => (rest, None, ApduForm::Short),
                    Some(1) => {
                        let (data, le) = rest.split_at(lc);
                        let [le] = *le else { return Err(malformed) };
                        (data, Some(short_le(le)), ApduForm::Short)
                    }
                    _ => return Err(malformed),
                }
            }
        };
        let apdu = Self {
            cla: *cla,
            ins: *ins,
            p1: *p1,
            p2: *p2,
            data: data.to_vec(),
            le,
        };
        Ok((apdu, form))
    }
}

/// A status word SW1-SW2 (ISO 7816-4 §5.1.3), with the values that matter to FIDO named.
///
/// Build it with [`StatusWord::from`] so every value gets its named variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatusWord {
    /// `9000`: success.
    Success,
    /// `61xx`: more response data, `xx` bytes available; `6100` means 256. Fetch it with
    /// GET RESPONSE.
    MoreData(u16),
    /// `9100`: CTAP status update; the data byte is a [`KeepaliveStatus`], poll with
    /// NFCCTAP_GETRESPONSE (CTAP 2.2 §11.3.7.2).
    CtapStatusUpdate,
    /// `6985`: conditions of use not satisfied (U2F: test of user presence required).
    ConditionsNotSatisfied,
    /// `6A80`: wrong data (U2F: bad key handle).
    WrongData,
    /// `6700`: wrong length.
    WrongLength,
    /// `6D00`: instruction not supported (e.g. no CTAP2 on a U2F-only applet).
    InsNotSupported,
    /// `6E00`: class not supported.
    ClaNotSupported,
    /// `6A82`: file or application not found (no FIDO applet).
    FileNotFound,
    /// Any other status word, kept as received.
    Other(u16),
}

impl StatusWord {
    /// Builds the status word from its two bytes.
    pub fn from_bytes(sw1: u8, sw2: u8) -> Self {
        Self::from(u16::from_be_bytes([sw1, sw2]))
    }

    /// The 16-bit value.
    pub const fn to_u16(self) -> u16 {
        match self {
            Self::Success => 0x9000,
            Self::MoreData(n) => 0x6100 | (n & 0x00FF),
            Self::CtapStatusUpdate => 0x9100,
            Self::ConditionsNotSatisfied => 0x6985,
            Self::WrongData => 0x6A80,
            Self::WrongLength => 0x6700,
            Self::InsNotSupported => 0x6D00,
            Self::ClaNotSupported => 0x6E00,
            Self::FileNotFound => 0x6A82,
            Self::Other(sw) => sw,
        }
    }
}

impl From<u16> for StatusWord {
    fn from(sw: u16) -> Self {
        match sw {
            0x9000 => Self::Success,
            0x9100 => Self::CtapStatusUpdate,
            0x6985 => Self::ConditionsNotSatisfied,
            0x6A80 => Self::WrongData,
            0x6700 => Self::WrongLength,
            0x6D00 => Self::InsNotSupported,
            0x6E00 => Self::ClaNotSupported,
            0x6A82 => Self::FileNotFound,
            0x6100 => Self::MoreData(0x100),
            0x6101..=0x61FF => Self::MoreData(sw & 0x00FF),
            other => Self::Other(other),
        }
    }
}

/// A response APDU: data then SW1-SW2 (ISO 7816-4 §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseApdu {
    /// Response data (may be empty).
    pub data: Vec<u8>,
    /// Status word.
    pub sw: StatusWord,
}

impl ResponseApdu {
    /// Splits a response into data and status word.
    pub fn parse(bytes: &[u8]) -> Result<Self, ApduError> {
        let Some((data, [sw1, sw2])) = bytes.split_last_chunk::<2>() else {
            return Err(ApduError::ResponseTooShort { len: bytes.len() });
        };
        Ok(Self {
            data: data.to_vec(),
            sw: StatusWord::from_bytes(*sw1, *sw2),
        })
    }
}

/// The SELECT of the FIDO applet (CTAP 2.2 §11.3.3): `00 A4 04 00 08 <AID> 00`.
///
/// Run it with [`Exchange::raw`] and read the result with
/// [`AppletVersion::from_select_response`]. Every new card session (each tap) needs it
/// before any other command.
pub fn select_fido_applet() -> CommandApdu {
    CommandApdu {
        cla: 0x00,
        ins: INS_SELECT,
        p1: P1_SELECT_BY_NAME,
        p2: 0x00,
        data: FIDO_AID.to_vec(),
        le: Some(SHORT_MAX_LE),
    }
}

/// The version string the FIDO applet answers SELECT with (CTAP 2.2 §11.3.3).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AppletVersion {
    /// `U2F_V2`: CTAP1/U2F, possibly CTAP2 as well (probe with authenticatorGetInfo).
    U2fV2,
    /// `FIDO_2_0`: CTAP2 only.
    Fido20,
    /// Anything else, kept as received (some keys answer e.g. `FIDO_2_1`).
    Other(Vec<u8>),
}

impl AppletVersion {
    /// Reads the version from the SELECT response. A status other than `9000` (typically
    /// [`StatusWord::FileNotFound`]) means there is no FIDO applet.
    pub fn from_select_response(response: &ResponseApdu) -> Result<Self, ExchangeError> {
        if response.sw != StatusWord::Success {
            return Err(ExchangeError::UnexpectedStatus(response.sw));
        }
        Ok(match response.data.as_slice() {
            b"U2F_V2" => Self::U2fV2,
            b"FIDO_2_0" => Self::Fido20,
            other => Self::Other(other.to_vec()),
        })
    }
}

/// How an [`Exchange`] frames a long command (CTAP 2.2 §11.3.5, §11.3.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framing {
    /// One extended-length APDU (up to 65535 data bytes), Le `0000`.
    Extended,
    /// Short APDUs; data over 255 bytes goes out as a chain of blocks of at most 255 bytes,
    /// CLA bit `0x10` set on every block but the last, which alone carries Le.
    ShortChained,
}

/// What a response meant to an [`Exchange`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExchangeEvent {
    /// Transmit this command APDU now: the next chained block, or a GET RESPONSE after
    /// `61xx` (the data so far is kept).
    Transmit(Vec<u8>),
    /// `9100`: the authenticator is still working. Surface the status
    /// ([`KeepaliveStatus::UpNeeded`] = "touch your key"), wait a little (the caller's clock,
    /// typically ~100 ms), then transmit `poll`, or [`Exchange::cancel_command`] to abort.
    StatusUpdate {
        /// The status byte of the update.
        status: KeepaliveStatus,
        /// The NFCCTAP_GETRESPONSE APDU to poll with.
        poll: Vec<u8>,
    },
    /// The exchange is over. For [`Exchange::ctap`] the status word is always `9000` and the
    /// data is the CTAP status byte followed by CBOR; for [`Exchange::raw`] it is the final
    /// status word and all data, GET RESPONSE parts joined.
    Complete(ResponseApdu),
}

/// Why an [`Exchange`] stopped. After any of these the exchange is finished.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// A malformed response (fewer than two bytes).
    #[error(transparent)]
    Apdu(#[from] ApduError),
    /// A status word that does not fit the step (e.g. `6D00` to NFCCTAP_MSG, anything but
    /// `9000` to a chained block, an error in the middle of GET RESPONSE).
    #[error("unexpected status word {:04X}", .0.to_u16())]
    UnexpectedStatus(StatusWord),
    /// Data in the acknowledgement of an intermediate chained block.
    #[error("{len} data bytes in the acknowledgement of a chained block")]
    UnexpectedChainData {
        /// Data length.
        len: usize,
    },
    /// A `9100` status update without its status byte.
    #[error("status update without a status byte")]
    MissingStatusByte,
    /// A `9000` answer to a CTAP command with no data, not even the CTAP status byte.
    #[error("empty CTAP response")]
    EmptyCtapResponse,
    /// The joined response data would exceed the caller's bound.
    #[error("response exceeds the limit of {limit} bytes")]
    ResponseTooLarge {
        /// The bound given to the exchange.
        limit: usize,
    },
    /// A response after the exchange had finished.
    #[error("response after the exchange finished")]
    Finished,
    /// A GET RESPONSE round answered `61xx` again without any data.
    #[error("GET RESPONSE returned no data")]
    NoProgress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// NFCCTAP_MSG: only `9000` completes, `9100` is a status update.
    Ctap,
    /// A plain APDU (U2F, SELECT): any final status word completes.
    Raw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for the answer to command block `n`.
    Block(usize),
    /// Waiting for the answer to a GET RESPONSE.
    GetResponse,
    /// A status update was reported; waiting for the answer to a poll or cancel.
    Poll,
    /// Complete or failed.
    Done,
}

/// One command/response exchange over ISO 7816 (CTAP 2.2 §11.3), sans-IO.
///
/// Transmit [`Exchange::first_command`], then pass each response to
/// [`Exchange::on_response`] and follow the [`ExchangeEvent`] until
/// [`ExchangeEvent::Complete`] or an error. Response data is joined across `61xx` / GET
/// RESPONSE rounds and bounded by the limit given at creation.
///
/// The caller owns all timing: an overall deadline, and the pause between status polls.
/// To cancel a CTAP request, transmit [`Exchange::cancel_command`] instead of the poll
/// while a status update is pending; its answer goes to [`Exchange::on_response`] as
/// usual, and the request then ends with CTAP status `0x2D` (CTAP2_ERR_KEEPALIVE_CANCEL).
///
/// Command blocks and response data may carry PIN material, so they are wiped on drop and
/// left out of the `Debug` output.
#[derive(Clone)]
pub struct Exchange {
    mode: Mode,
    framing: Framing,
    blocks: Zeroizing<Vec<Vec<u8>>>,
    state: State,
    data: Zeroizing<Vec<u8>>,
    limit: usize,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("mode", &self.mode)
            .field("framing", &self.framing)
            .field("blocks", &self.blocks.len())
            .field("state", &self.state)
            .field("received", &self.data.len())
            .field("limit", &self.limit)
            .finish()
    }
}

impl Exchange {
    /// An NFCCTAP_MSG exchange (CTAP 2.2 §11.3.7.1): CLA `80`, INS `10`, P1 `80` (we support
    /// NFCCTAP_GETRESPONSE), P2 `00`, data = CTAP command byte + CBOR. `max_response_len`
    /// bounds the joined response data.
    pub fn ctap(
        payload: &[u8],
        framing: Framing,
        max_response_len: usize,
    ) -> Result<Self, ApduError> {
        let command = CommandApdu {
            cla: CLA_CTAP,
            ins: INS_NFCCTAP_MSG,
            p1: P1_SUPPORTS_GETRESPONSE,
            p2: 0x00,
            data: payload.to_vec(),
            le: Some(max_le(framing)),
        };
        Self::build(Mode::Ctap, &command, framing, max_response_len)
    }

    /// An exchange for a plain APDU (CTAP1/U2F over NFC, SELECT): the command is sent as
    /// given (chained if [`Framing::ShortChained`] and its data exceeds 255 bytes), `61xx`
    /// data is fetched with GET RESPONSE, and any other final status word completes the
    /// exchange with it. `max_response_len` bounds the joined response data.
    pub fn raw(
        command: &CommandApdu,
        framing: Framing,
        max_response_len: usize,
    ) -> Result<Self, ApduError> {
        Self::build(Mode::Raw, command, framing, max_response_len)
    }

    fn build(
        mode: Mode,
        command: &CommandApdu,
        framing: Framing,
        limit: usize,
    ) -> Result<Self, ApduError> {
        let blocks = match framing {
            Framing::Extended => vec![command.encode(ApduForm::Extended)?],
            Framing::ShortChained => chain(command)?,
        };
        Ok(Self {
            mode,
            framing,
            blocks: Zeroizing::new(blocks),
            state: State::Block(0),
            // Reserved up front (bounded) so that joining GET RESPONSE rounds does not
            // reallocate and leave unwiped copies behind.
            data: Zeroizing::new(Vec::with_capacity(limit.min(MAX_RESERVE))),
            limit,
        })
    }

    /// The first command APDU to transmit.
    pub fn first_command(&self) -> &[u8] {
        self.blocks.first().map_or(&[], Vec::as_slice)
    }

    /// The NFCCTAP_GETRESPONSE cancel APDU (CTAP 2.2 §11.3.7.2: CLA `80`, INS `11`, P1 `11`),
    /// available only while a status update is pending, i.e. after
    /// [`ExchangeEvent::StatusUpdate`] and before the next response.
    pub fn cancel_command(&self) -> Option<Vec<u8>> {
        (self.mode == Mode::Ctap && self.state == State::Poll)
            .then(|| ctap_getresponse(P1_CANCEL, self.framing))
    }

    /// Whether the exchange has completed or failed.
    pub fn is_finished(&self) -> bool {
        self.state == State::Done
    }

    /// Takes the response APDU (data + SW1 SW2) to the last transmitted command.
    pub fn on_response(&mut self, bytes: &[u8]) -> Result<ExchangeEvent, ExchangeError> {
        if self.state == State::Done {
            return Err(ExchangeError::Finished);
        }
        let result = ResponseApdu::parse(bytes)
            .map_err(ExchangeError::from)
            .and_then(|response| self.step(response));
        if result.is_err() {
            self.state = State::Done;
            zeroize::Zeroize::zeroize(&mut *self.data);
        }
        result
    }

    fn step(&mut self, response: ResponseApdu) -> Result<ExchangeEvent, ExchangeError> {
        if let State::Block(n) = self.state
            && let Some(next) = self.blocks.get(n.saturating_add(1))
        {
            // An intermediate chained block: only a bare 9000 continues the chain.
            if response.sw != StatusWord::Success {
                return Err(ExchangeError::UnexpectedStatus(response.sw));
            }
            if !response.data.is_empty() {
                return Err(ExchangeError::UnexpectedChainData {
                    len: response.data.len(),
                });
            }
            let next = next.clone();
            self.state = State::Block(n.saturating_add(1));
            return Ok(ExchangeEvent::Transmit(next));
        }
        let accumulating = self.state == State::GetResponse;
        match response.sw {
            StatusWord::MoreData(available) => {
                // A GET RESPONSE round that brings nothing would repeat forever: every round
                // after the first must make progress (the limit then bounds the rounds).
                if accumulating && response.data.is_empty() {
                    return Err(ExchangeError::NoProgress);
                }
                self.append(&response.data)?;
                self.state = State::GetResponse;
                Ok(ExchangeEvent::Transmit(get_response(available)?))
            }
            StatusWord::Success => {
                self.append(&response.data)?;
                if self.mode == Mode::Ctap && self.data.is_empty() {
                    return Err(ExchangeError::EmptyCtapResponse);
                }
                self.state = State::Done;
                let data = std::mem::take(&mut *self.data);
                Ok(ExchangeEvent::Complete(ResponseApdu {
                    data,
                    sw: StatusWord::Success,
                }))
            }
            StatusWord::CtapStatusUpdate if self.mode == Mode::Ctap && !accumulating => {
                let Some(&status) = response.data.first() else {
                    return Err(ExchangeError::MissingStatusByte);
                };
                self.state = State::Poll;
                Ok(ExchangeEvent::StatusUpdate {
                    status: status.into(),
                    poll: ctap_getresponse(0x00, self.framing),
                })
            }
            sw if self.mode == Mode::Raw && !accumulating => {
                self.append(&response.data)?;
                self.state = State::Done;
                let data = std::mem::take(&mut *self.data);
                Ok(ExchangeEvent::Complete(ResponseApdu { data, sw }))
            }
            sw => Err(ExchangeError::UnexpectedStatus(sw)),
        }
    }

    fn append(&mut self, chunk: &[u8]) -> Result<(), ExchangeError> {
        if self.data.len().saturating_add(chunk.len()) > self.limit {
            return Err(ExchangeError::ResponseTooLarge { limit: self.limit });
        }
        self.data.extend_from_slice(chunk);
        Ok(())
    }
}

/// The largest Ne of the framing's form.
fn max_le(framing: Framing) -> u32 {
    match framing {
        Framing::Extended => EXTENDED_MAX_LE,
        Framing::ShortChained => SHORT_MAX_LE,
    }
}

/// Splits `command` into short APDUs with ISO 7816-4 command chaining.
fn chain(command: &CommandApdu) -> Result<Vec<Vec<u8>>, ApduError> {
    if command.data.len() <= SHORT_MAX_DATA {
        return Ok(vec![command.encode(ApduForm::Short)?]);
    }
    let chunks: Vec<&[u8]> = command.data.chunks(SHORT_MAX_DATA).collect();
    let last = chunks.len().saturating_sub(1);
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let is_last = i == last;
            CommandApdu {
                cla: if is_last {
                    command.cla
                } else {
                    command.cla | CLA_CHAINING
                },
                ins: command.ins,
                p1: command.p1,
                p2: command.p2,
                data: chunk.to_vec(),
                le: if is_last { command.le } else { None },
            }
            .encode(ApduForm::Short)
        })
        .collect()
}

/// GET RESPONSE for `available` bytes (from `61xx`): `00 C0 00 00 xx`.
fn get_response(available: u16) -> Result<Vec<u8>, ApduError> {
    CommandApdu {
        cla: 0x00,
        ins: INS_GET_RESPONSE,
        p1: 0x00,
        p2: 0x00,
        data: Vec::new(),
        le: Some(u32::from(available)),
    }
    .encode(ApduForm::Short)
}

/// NFCCTAP_GETRESPONSE with `p1` (`00` poll, `11` cancel), Le the largest of the form.
fn ctap_getresponse(p1: u8, framing: Framing) -> Vec<u8> {
    let form = match framing {
        Framing::Extended => ApduForm::Extended,
        Framing::ShortChained => ApduForm::Short,
    };
    let mut out = vec![CLA_CTAP, INS_NFCCTAP_GETRESPONSE, p1, 0x00];
    // Case 2 with the largest Ne: short `00`, extended `00 0000`.
    match form {
        ApduForm::Short => out.push(0x00),
        ApduForm::Extended => out.extend_from_slice(&[0x00, 0x00, 0x00]),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    fn apdu(data: &[u8], le: Option<u32>) -> CommandApdu {
        CommandApdu {
            cla: 0x00,
            ins: 0x01,
            p1: 0x03,
            p2: 0x00,
            data: data.to_vec(),
            le,
        }
    }

    fn resp(data: &[u8], sw: u16) -> Vec<u8> {
        let mut r = data.to_vec();
        r.extend_from_slice(&sw.to_be_bytes());
        r
    }

    // ---- command APDU encoding ----

    #[test]
    fn short_form_cases() {
        let e = |data: &[u8], le| apdu(data, le).encode(ApduForm::Short).unwrap();
        assert_eq!(e(&[], None), [0x00, 0x01, 0x03, 0x00]);
        assert_eq!(e(&[], Some(1)), [0x00, 0x01, 0x03, 0x00, 0x01]);
        assert_eq!(e(&[], Some(255)), [0x00, 0x01, 0x03, 0x00, 0xFF]);
        assert_eq!(e(&[], Some(256)), [0x00, 0x01, 0x03, 0x00, 0x00]);
        assert_eq!(
            e(&[0xAB, 0xCD], None),
            [0x00, 0x01, 0x03, 0x00, 0x02, 0xAB, 0xCD]
        );
        assert_eq!(
            e(&[0xAB, 0xCD], Some(256)),
            [0x00, 0x01, 0x03, 0x00, 0x02, 0xAB, 0xCD, 0x00]
        );
        let full = e(&payload(255), Some(16));
        assert_eq!(full.len(), 4 + 1 + 255 + 1);
        assert_eq!(full[4], 0xFF);
        assert_eq!(full[260], 0x10);
    }

    #[test]
    fn extended_form_cases() {
        let e = |data: &[u8], le| apdu(data, le).encode(ApduForm::Extended).unwrap();
        assert_eq!(e(&[], None), [0x00, 0x01, 0x03, 0x00]);
        assert_eq!(e(&[], Some(1)), [0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(
            e(&[], Some(256)),
            [0x00, 0x01, 0x03, 0x00, 0x00, 0x01, 0x00]
        );
        assert_eq!(
            e(&[], Some(65535)),
            [0x00, 0x01, 0x03, 0x00, 0x00, 0xFF, 0xFF]
        );
        assert_eq!(
            e(&[], Some(65536)),
            [0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00]
        );
        assert_eq!(
            e(&[0xAB], None),
            [0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0xAB]
        );
        assert_eq!(
            e(&[0xAB], Some(65536)),
            [0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 0x01, 0xAB, 0x00, 0x00]
        );
        let big = e(&payload(65535), Some(2));
        assert_eq!(big.len(), 4 + 3 + 65535 + 2);
        assert_eq!(big[4..7], [0x00, 0xFF, 0xFF]);
        assert_eq!(big[big.len() - 2..], [0x00, 0x02]);
    }

    #[test]
    fn encoding_rejects_out_of_range_lengths() {
        assert_eq!(
            apdu(&payload(256), None).encode(ApduForm::Short),
            Err(ApduError::DataTooLong { len: 256, max: 255 })
        );
        assert_eq!(
            apdu(&payload(65536), None).encode(ApduForm::Extended),
            Err(ApduError::DataTooLong {
                len: 65536,
                max: 65535
            })
        );
        assert_eq!(
            apdu(&[], Some(257)).encode(ApduForm::Short),
            Err(ApduError::LeOutOfRange { le: 257, max: 256 })
        );
        assert_eq!(
            apdu(&[], Some(65537)).encode(ApduForm::Extended),
            Err(ApduError::LeOutOfRange {
                le: 65537,
                max: 65536
            })
        );
        assert_eq!(
            apdu(&[1], Some(0)).encode(ApduForm::Short),
            Err(ApduError::LeOutOfRange { le: 0, max: 256 })
        );
    }

    // ---- command APDU parsing ----

    #[test]
    fn parse_round_trips_every_case() {
        let cases = [
            (apdu(&[], None), ApduForm::Short),
            (apdu(&[], Some(1)), ApduForm::Short),
            (apdu(&[], Some(256)), ApduForm::Short),
            (apdu(&[7; 3], None), ApduForm::Short),
            (apdu(&payload(255), Some(256)), ApduForm::Short),
            (apdu(&[], Some(1)), ApduForm::Extended),
            (apdu(&[], Some(65536)), ApduForm::Extended),
            (apdu(&payload(256), None), ApduForm::Extended),
            (apdu(&payload(300), Some(65536)), ApduForm::Extended),
            (apdu(&[1], Some(300)), ApduForm::Extended),
        ];
        for (cmd, form) in cases {
            let bytes = cmd.encode(form).unwrap();
            assert_eq!(CommandApdu::parse(&bytes), Ok((cmd, form)), "{bytes:02x?}");
        }
    }

    #[test]
    fn parse_rejects_malformed_commands() {
        for bytes in [
            &[][..],
            &[0x00, 0xA4, 0x04],
            &[0x00, 0xA4, 0x04, 0x00, 0x00, 0x01], // short Lc = 0
            &[0x00, 0xA4, 0x04, 0x00, 0x02, 0x01], // Lc 2, 1 byte
            &[0x00, 0xA4, 0x04, 0x00, 0x01, 0x01, 0, 0], // Lc 1, 3 bytes follow
            &[0x00, 0xA4, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01], // extended Lc = 0
            &[0x00, 0xA4, 0x04, 0x00, 0x00, 0x00, 0x02, 0x01], // extended Lc 2, 1 byte
            &[0x00, 0xA4, 0x04, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00], // 1 stray Le byte
        ] {
            assert_eq!(
                CommandApdu::parse(bytes),
                Err(ApduError::MalformedCommand { len: bytes.len() }),
                "{bytes:02x?}"
            );
        }
    }

    // ---- responses and status words ----

    #[test]
    fn response_splits_data_and_status() {
        assert_eq!(
            ResponseApdu::parse(&[0x01, 0x02, 0x90, 0x00]),
            Ok(ResponseApdu {
                data: vec![1, 2],
                sw: StatusWord::Success
            })
        );
        assert_eq!(
            ResponseApdu::parse(&[0x69, 0x85]),
            Ok(ResponseApdu {
                data: vec![],
                sw: StatusWord::ConditionsNotSatisfied
            })
        );
        assert_eq!(
            ResponseApdu::parse(&[0x90]),
            Err(ApduError::ResponseTooShort { len: 1 })
        );
        assert_eq!(
            ResponseApdu::parse(&[]),
            Err(ApduError::ResponseTooShort { len: 0 })
        );
    }

    #[test]
    fn status_words_are_named_and_total() {
        let named = [
            (0x9000, StatusWord::Success),
            (0x9100, StatusWord::CtapStatusUpdate),
            (0x6985, StatusWord::ConditionsNotSatisfied),
            (0x6A80, StatusWord::WrongData),
            (0x6700, StatusWord::WrongLength),
            (0x6D00, StatusWord::InsNotSupported),
            (0x6E00, StatusWord::ClaNotSupported),
            (0x6A82, StatusWord::FileNotFound),
            (0x6100, StatusWord::MoreData(256)),
            (0x6101, StatusWord::MoreData(1)),
            (0x61FF, StatusWord::MoreData(255)),
            (0x6F00, StatusWord::Other(0x6F00)),
            (0x9101, StatusWord::Other(0x9101)),
        ];
        for (value, sw) in named {
            assert_eq!(StatusWord::from(value), sw);
            let [sw1, sw2] = value.to_be_bytes();
            assert_eq!(StatusWord::from_bytes(sw1, sw2), sw);
        }
        for value in 0..=u16::MAX {
            assert_eq!(StatusWord::from(value).to_u16(), value);
        }
    }

    // ---- SELECT ----

    #[test]
    fn select_golden_bytes() {
        assert_eq!(
            select_fido_applet().encode(ApduForm::Short).unwrap(),
            [
                0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01, 0x00
            ]
        );
        let ex = Exchange::raw(&select_fido_applet(), Framing::ShortChained, 256).unwrap();
        assert_eq!(
            ex.first_command(),
            select_fido_applet().encode(ApduForm::Short).unwrap()
        );
    }

    #[test]
    fn applet_versions() {
        let version = |bytes: &[u8]| {
            AppletVersion::from_select_response(&ResponseApdu::parse(bytes).unwrap())
        };
        assert_eq!(version(b"U2F_V2\x90\x00"), Ok(AppletVersion::U2fV2));
        assert_eq!(version(b"FIDO_2_0\x90\x00"), Ok(AppletVersion::Fido20));
        assert_eq!(
            version(b"FIDO_2_1\x90\x00"),
            Ok(AppletVersion::Other(b"FIDO_2_1".to_vec()))
        );
        assert_eq!(version(&[0x90, 0x00]), Ok(AppletVersion::Other(vec![])));
        assert_eq!(
            version(&[0x6A, 0x82]),
            Err(ExchangeError::UnexpectedStatus(StatusWord::FileNotFound))
        );
    }

    #[test]
    fn select_through_a_raw_exchange_with_61xx() {
        // A T=0 style card answers SELECT with 61 06 and hands the version over on GET RESPONSE.
        let mut ex = Exchange::raw(&select_fido_applet(), Framing::ShortChained, 256).unwrap();
        assert_eq!(
            ex.on_response(&[0x61, 0x06]),
            Ok(ExchangeEvent::Transmit(vec![0x00, 0xC0, 0x00, 0x00, 0x06]))
        );
        let ExchangeEvent::Complete(r) = ex.on_response(b"U2F_V2\x90\x00").unwrap() else {
            panic!("expected completion")
        };
        assert_eq!(
            AppletVersion::from_select_response(&r),
            Ok(AppletVersion::U2fV2)
        );
    }

    // ---- NFCCTAP_MSG framing ----

    #[test]
    fn nfcctap_msg_short_golden() {
        let ex = Exchange::ctap(&[0x04], Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.first_command(),
            [0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00]
        );
    }

    #[test]
    fn nfcctap_msg_extended_golden() {
        let ex = Exchange::ctap(&[0x04], Framing::Extended, 4096).unwrap();
        assert_eq!(
            ex.first_command(),
            [0x80, 0x10, 0x80, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00]
        );
        let big = Exchange::ctap(&payload(600), Framing::Extended, 4096).unwrap();
        let cmd = big.first_command();
        assert_eq!(cmd.len(), 4 + 3 + 600 + 2);
        assert_eq!(cmd[..7], [0x80, 0x10, 0x80, 0x00, 0x00, 0x02, 0x58]);
        assert_eq!(
            Exchange::ctap(&payload(65536), Framing::Extended, 4096).unwrap_err(),
            ApduError::DataTooLong {
                len: 65536,
                max: 65535
            }
        );
    }

    #[test]
    fn chaining_600_bytes_in_three_blocks() {
        let data = payload(600);
        let mut ex = Exchange::ctap(&data, Framing::ShortChained, 4096).unwrap();

        let first = ex.first_command().to_vec();
        assert_eq!(first[..5], [0x90, 0x10, 0x80, 0x00, 0xFF]);
        assert_eq!(first[5..], data[..255], "no Le on an intermediate block");

        let ExchangeEvent::Transmit(second) = ex.on_response(&[0x90, 0x00]).unwrap() else {
            panic!("expected the second block")
        };
        assert_eq!(second[..5], [0x90, 0x10, 0x80, 0x00, 0xFF]);
        assert_eq!(second[5..], data[255..510]);

        let ExchangeEvent::Transmit(third) = ex.on_response(&[0x90, 0x00]).unwrap() else {
            panic!("expected the last block")
        };
        assert_eq!(third[..5], [0x80, 0x10, 0x80, 0x00, 0x5A]);
        assert_eq!(third[5..95], data[510..]);
        assert_eq!(third[95..], [0x00], "Le only on the last block");

        assert_eq!(
            ex.on_response(&[0x00, 0xA1, 0x01, 0x02, 0x90, 0x00]),
            Ok(ExchangeEvent::Complete(ResponseApdu {
                data: vec![0x00, 0xA1, 0x01, 0x02],
                sw: StatusWord::Success
            }))
        );
        assert!(ex.is_finished());
        assert_eq!(ex.on_response(&[0x90, 0x00]), Err(ExchangeError::Finished));
    }

    #[test]
    fn chaining_boundaries() {
        // 255 bytes: one block; 256: two (255 + 1); 510: two full blocks.
        let blocks = |len| chain(&apdu(&payload(len), Some(256))).unwrap();
        assert_eq!(blocks(255).len(), 1);
        assert_eq!(blocks(255)[0][0], 0x00);
        let two = blocks(256);
        assert_eq!(two.len(), 2);
        assert_eq!((two[0][0], two[0][4], two[0].len()), (0x10, 0xFF, 260));
        assert_eq!(
            two[1],
            [0x00, 0x01, 0x03, 0x00, 0x01, payload(256)[255], 0x00]
        );
        let full = blocks(510);
        assert_eq!(full.len(), 2);
        assert_eq!((full[1][0], full[1][4], full[1].len()), (0x00, 0xFF, 261));
        // Empty data stays a single case-2 APDU.
        assert_eq!(blocks(0), vec![vec![0x00, 0x01, 0x03, 0x00, 0x00]]);
    }

    // ---- responses to NFCCTAP_MSG ----

    #[test]
    fn more_data_is_fetched_and_joined() {
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 4096).unwrap();
        let part1 = payload(16);
        let part2 = payload(256);
        let part3 = payload(5);
        assert_eq!(
            ex.on_response(&resp(&part1, 0x6100)),
            Ok(ExchangeEvent::Transmit(vec![0x00, 0xC0, 0x00, 0x00, 0x00]))
        );
        assert_eq!(
            ex.on_response(&resp(&part2, 0x6105)),
            Ok(ExchangeEvent::Transmit(vec![0x00, 0xC0, 0x00, 0x00, 0x05]))
        );
        let expected = [part1, part2, part3.clone()].concat();
        assert_eq!(
            ex.on_response(&resp(&part3, 0x9000)),
            Ok(ExchangeEvent::Complete(ResponseApdu {
                data: expected,
                sw: StatusWord::Success
            }))
        );
    }

    #[test]
    fn get_response_rounds_without_data_end_the_exchange() {
        // The first answer may be a bare 61xx (nothing sent yet); a GET RESPONSE that answers
        // 61xx with no data again would loop forever.
        let mut ex = Exchange::ctap(&[0x04], Framing::Extended, 4096).unwrap();
        assert!(matches!(
            ex.on_response(&resp(&[], 0x6110)),
            Ok(ExchangeEvent::Transmit(_))
        ));
        assert_eq!(
            ex.on_response(&resp(&[], 0x6110)),
            Err(ExchangeError::NoProgress)
        );
        assert_eq!(
            ex.on_response(&resp(&[0x00], 0x9000)),
            Err(ExchangeError::Finished)
        );
    }

    #[test]
    fn status_updates_are_polled() {
        let mut ex = Exchange::ctap(&[0x01, 0xA0], Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.cancel_command(),
            None,
            "nothing to cancel before a status update"
        );
        let poll = vec![0x80, 0x11, 0x00, 0x00, 0x00];
        assert_eq!(
            ex.on_response(&[0x01, 0x91, 0x00]),
            Ok(ExchangeEvent::StatusUpdate {
                status: KeepaliveStatus::Processing,
                poll: poll.clone()
            })
        );
        assert_eq!(
            ex.cancel_command(),
            Some(vec![0x80, 0x11, 0x11, 0x00, 0x00])
        );
        assert_eq!(
            ex.on_response(&[0x02, 0x91, 0x00]),
            Ok(ExchangeEvent::StatusUpdate {
                status: KeepaliveStatus::UpNeeded,
                poll
            })
        );
        // The final answer may itself be split with 61xx.
        assert_eq!(
            ex.on_response(&resp(&[0x00, 0xA1], 0x6102)),
            Ok(ExchangeEvent::Transmit(vec![0x00, 0xC0, 0x00, 0x00, 0x02]))
        );
        assert_eq!(ex.cancel_command(), None);
        assert_eq!(
            ex.on_response(&resp(&[0x01, 0x02], 0x9000)),
            Ok(ExchangeEvent::Complete(ResponseApdu {
                data: vec![0x00, 0xA1, 0x01, 0x02],
                sw: StatusWord::Success
            }))
        );
        assert_eq!(ex.cancel_command(), None);
    }

    #[test]
    fn extended_poll_and_cancel_golden() {
        let mut ex = Exchange::ctap(&[0x01, 0xA0], Framing::Extended, 4096).unwrap();
        assert_eq!(
            ex.on_response(&[0x02, 0x91, 0x00]),
            Ok(ExchangeEvent::StatusUpdate {
                status: KeepaliveStatus::UpNeeded,
                poll: vec![0x80, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00]
            })
        );
        assert_eq!(
            ex.cancel_command(),
            Some(vec![0x80, 0x11, 0x11, 0x00, 0x00, 0x00, 0x00])
        );
    }

    #[test]
    fn cancel_ends_with_keepalive_cancel_status() {
        let mut ex = Exchange::ctap(&[0x01, 0xA0], Framing::ShortChained, 4096).unwrap();
        ex.on_response(&[0x02, 0x91, 0x00]).unwrap();
        let _cancel = ex.cancel_command().unwrap(); // transmitted instead of the poll
        assert_eq!(
            ex.on_response(&[0x2D, 0x90, 0x00]),
            Ok(ExchangeEvent::Complete(ResponseApdu {
                data: vec![0x2D],
                sw: StatusWord::Success
            }))
        );
    }

    #[test]
    fn unexpected_status_words() {
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.on_response(&[0x6D, 0x00]),
            Err(ExchangeError::UnexpectedStatus(StatusWord::InsNotSupported))
        );
        assert!(ex.is_finished());
        assert_eq!(ex.on_response(&[0x90, 0x00]), Err(ExchangeError::Finished));

        // A chained block refused.
        let mut ex = Exchange::ctap(&payload(300), Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.on_response(&[0x67, 0x00]),
            Err(ExchangeError::UnexpectedStatus(StatusWord::WrongLength))
        );

        // An error in the middle of GET RESPONSE.
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 4096).unwrap();
        ex.on_response(&resp(&[0x00], 0x6110)).unwrap();
        assert_eq!(
            ex.on_response(&[0x6F, 0x00]),
            Err(ExchangeError::UnexpectedStatus(StatusWord::Other(0x6F00)))
        );

        // A status update in the middle of GET RESPONSE.
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 4096).unwrap();
        ex.on_response(&resp(&[0x00], 0x6110)).unwrap();
        assert_eq!(
            ex.on_response(&[0x01, 0x91, 0x00]),
            Err(ExchangeError::UnexpectedStatus(
                StatusWord::CtapStatusUpdate
            ))
        );
    }

    #[test]
    fn truncated_response() {
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.on_response(&[0x90]),
            Err(ExchangeError::Apdu(ApduError::ResponseTooShort { len: 1 }))
        );
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.on_response(&[]),
            Err(ExchangeError::Apdu(ApduError::ResponseTooShort { len: 0 }))
        );
    }

    #[test]
    fn malformed_protocol_answers() {
        let mut ex = Exchange::ctap(&payload(300), Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.on_response(&[0xAA, 0x90, 0x00]),
            Err(ExchangeError::UnexpectedChainData { len: 1 })
        );
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.on_response(&[0x91, 0x00]),
            Err(ExchangeError::MissingStatusByte)
        );
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.on_response(&[0x90, 0x00]),
            Err(ExchangeError::EmptyCtapResponse)
        );
    }

    #[test]
    fn response_bound_is_enforced() {
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 100).unwrap();
        assert!(matches!(
            ex.on_response(&resp(&payload(80), 0x6100)),
            Ok(ExchangeEvent::Transmit(_))
        ));
        assert_eq!(
            ex.on_response(&resp(&payload(21), 0x9000)),
            Err(ExchangeError::ResponseTooLarge { limit: 100 })
        );
        let mut ex = Exchange::ctap(&[0x04], Framing::ShortChained, 100).unwrap();
        ex.on_response(&resp(&payload(80), 0x6100)).unwrap();
        assert!(
            matches!(ex.on_response(&resp(&payload(20), 0x9000)), Ok(ExchangeEvent::Complete(r)) if r.data.len() == 100)
        );
    }

    // ---- plain APDUs (U2F) ----

    #[test]
    fn raw_u2f_register_extended() {
        let mut data = vec![0x11; 32];
        data.extend_from_slice(&[0x22; 32]);
        let register = CommandApdu {
            cla: 0x00,
            ins: 0x01,
            p1: 0x03,
            p2: 0x00,
            data,
            le: Some(65536),
        };
        let mut ex = Exchange::raw(&register, Framing::Extended, 4096).unwrap();
        let cmd = ex.first_command();
        assert_eq!(cmd[..7], [0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 0x40]);
        assert_eq!(cmd[cmd.len() - 2..], [0x00, 0x00]);
        assert_eq!(cmd.len(), 73);
        // Touch needed: the final status word is the result, not an error.
        assert_eq!(
            ex.on_response(&[0x69, 0x85]),
            Ok(ExchangeEvent::Complete(ResponseApdu {
                data: vec![],
                sw: StatusWord::ConditionsNotSatisfied
            }))
        );
    }

    #[test]
    fn raw_exchange_joins_61xx_and_passes_9100_through() {
        let cmd = apdu(&[0x01; 10], Some(256));
        let mut ex = Exchange::raw(&cmd, Framing::ShortChained, 4096).unwrap();
        assert_eq!(
            ex.on_response(&resp(&[1, 2], 0x6102)),
            Ok(ExchangeEvent::Transmit(vec![0x00, 0xC0, 0x00, 0x00, 0x02]))
        );
        assert_eq!(
            ex.on_response(&resp(&[3, 4], 0x9000)),
            Ok(ExchangeEvent::Complete(ResponseApdu {
                data: vec![1, 2, 3, 4],
                sw: StatusWord::Success
            }))
        );
        // 9100 means nothing special outside NFCCTAP_MSG.
        let mut ex = Exchange::raw(&cmd, Framing::ShortChained, 4096).unwrap();
        assert_eq!(ex.cancel_command(), None);
        assert_eq!(
            ex.on_response(&[0x01, 0x91, 0x00]),
            Ok(ExchangeEvent::Complete(ResponseApdu {
                data: vec![0x01],
                sw: StatusWord::CtapStatusUpdate
            }))
        );
        // An error status after 61xx is an error, not a partial result.
        let mut ex = Exchange::raw(&cmd, Framing::ShortChained, 4096).unwrap();
        ex.on_response(&resp(&[1], 0x6101)).unwrap();
        assert_eq!(
            ex.on_response(&[0x6A, 0x80]),
            Err(ExchangeError::UnexpectedStatus(StatusWord::WrongData))
        );
    }

    #[test]
    fn raw_short_chaining_sets_the_class_bit() {
        let cmd = apdu(&payload(300), Some(256));
        let mut ex = Exchange::raw(&cmd, Framing::ShortChained, 4096).unwrap();
        assert_eq!(ex.first_command()[..5], [0x10, 0x01, 0x03, 0x00, 0xFF]);
        let Ok(ExchangeEvent::Transmit(last)) = ex.on_response(&[0x90, 0x00]) else {
            panic!("expected the last block")
        };
        assert_eq!(last[..5], [0x00, 0x01, 0x03, 0x00, 0x2D]);
        assert_eq!(last.len(), 5 + 45 + 1);
        assert_eq!(
            Exchange::raw(&apdu(&[], Some(65536)), Framing::ShortChained, 16).unwrap_err(),
            ApduError::LeOutOfRange {
                le: 65536,
                max: 256
            }
        );
    }

    #[test]
    fn garbage_responses_never_panic() {
        let mut state = 0x9E37_79B9_u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        for round in 0..2_000 {
            let framing = if round % 2 == 0 {
                Framing::Extended
            } else {
                Framing::ShortChained
            };
            let mut ex = if round % 3 == 0 {
                Exchange::raw(&apdu(&payload(400), Some(256)), Framing::ShortChained, 1024).unwrap()
            } else {
                Exchange::ctap(&payload(300), framing, 1024).unwrap()
            };
            for _ in 0..20 {
                let len = (next() % 300) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Bias towards the interesting status words.
                if let Some(sw) = bytes.last_chunk_mut::<2>() {
                    *sw = match next() % 5 {
                        0 => [0x90, 0x00],
                        1 => [0x91, 0x00],
                        2 => [0x61, next() as u8],
                        _ => *sw,
                    };
                }
                if ex.on_response(&bytes).is_err() || ex.is_finished() {
                    break;
                }
            }
        }
    }

    // ---- Recorded data (optional, needs PASSKEYD_VECTORS) ----

    mod vectors {
        use super::*;
        use serde_json::Value;

        /// Every vector of every JSON file in `$PASSKEYD_VECTORS`, or `None` (skip).
        fn all_vectors() -> Option<Vec<Value>> {
            let Some(dir) = std::env::var_os("PASSKEYD_VECTORS") else {
                eprintln!("skipping recorded-vector test: PASSKEYD_VECTORS is not set");
                return None;
            };
            let mut out = Vec::new();
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") {
                    let doc: Value =
                        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                    out.extend(doc["vectors"].as_array().unwrap().iter().cloned());
                }
            }
            Some(out)
        }

        fn hex(v: &Value) -> Vec<u8> {
            ::hex::decode(v.as_str().unwrap()).unwrap()
        }

        fn byte(v: &Value) -> u8 {
            let s = v.as_str().unwrap();
            u8::from_str_radix(s.get(2..4).unwrap(), 16).unwrap()
        }

        #[test]
        fn nfc_vectors_decode() {
            let Some(vectors) = all_vectors() else { return };
            let (mut commands, mut responses, mut requests, mut skipped) = (0, 0, 0, 0);
            for v in &vectors {
                let transport = v["transport"].as_str().unwrap_or("").to_lowercase();
                if !(transport.contains("iso7816") || transport.contains("nfc")) {
                    continue;
                }
                let name = v["name"].as_str().unwrap();
                let bytes = hex(&v["hex"]);
                let decoded = &v["decoded"];
                if transport.contains("command apdu") {
                    let (cmd, form) = CommandApdu::parse(&bytes).unwrap();
                    assert_eq!(cmd.encode(form).unwrap(), bytes, "{name}: re-encoding");
                    if let Some(cla) = decoded.get("cla") {
                        assert_eq!(cmd.cla, byte(cla), "{name}");
                        assert_eq!(cmd.ins, byte(&decoded["ins"]), "{name}");
                        assert_eq!([cmd.p1, cmd.p2], [0x00, 0x00], "{name}: p1p2");
                        assert_eq!(cmd.data, [0x04], "{name}: authenticatorGetInfo");
                        let encoding = decoded["encoding"].as_str().unwrap();
                        let expected_form = if encoding.contains("extended") {
                            (ApduForm::Extended, Some(65536))
                        } else {
                            (ApduForm::Short, Some(256))
                        };
                        assert_eq!((form, cmd.le), expected_form, "{name}");
                    } else {
                        let header = hex(&decoded["header"]);
                        assert_eq!([cmd.cla, cmd.ins, cmd.p1, cmd.p2], header[..], "{name}");
                        let lc = decoded["lc"].as_u64().unwrap();
                        assert_eq!(cmd.data.len() as u64, lc, "{name}");
                        assert_eq!(form, ApduForm::Extended, "{name}");
                        assert_eq!(cmd.le, Some(65536), "{name}: Le 0000");
                    }
                    commands += 1;
                } else if transport.contains("response apdus (concatenated)") {
                    let apdus = decoded["apdus"].as_array().unwrap();
                    let chunks: Vec<&[u8]> = bytes.chunks(2).collect();
                    assert_eq!(chunks.len(), apdus.len(), "{name}");
                    for (chunk, sw) in chunks.iter().zip(apdus) {
                        let r = ResponseApdu::parse(chunk).unwrap();
                        assert_eq!(
                            r.sw.to_u16(),
                            u16::from_be_bytes(hex(sw).try_into().unwrap())
                        );
                        assert!(r.data.is_empty());
                    }
                    // Used as the acknowledgements of a chained NFCCTAP_MSG: three blocks
                    // go through, and a final bare 9000 is no CTAP response.
                    let mut ex =
                        Exchange::ctap(&payload(4 * 255), Framing::ShortChained, 4096).unwrap();
                    for (i, chunk) in chunks.iter().enumerate() {
                        let event = ex.on_response(chunk);
                        if i < 3 {
                            assert!(matches!(event, Ok(ExchangeEvent::Transmit(_))), "{name}");
                        } else {
                            assert_eq!(event, Err(ExchangeError::EmptyCtapResponse), "{name}");
                        }
                    }
                    responses += 1;
                } else if transport.contains("response apdu") {
                    // The FIDO SELECT answer, through the exchange that asked for it.
                    let mut ex =
                        Exchange::raw(&select_fido_applet(), Framing::ShortChained, 256).unwrap();
                    let ExchangeEvent::Complete(r) = ex.on_response(&bytes).unwrap() else {
                        panic!("{name}: expected completion")
                    };
                    assert_eq!(
                        r.sw.to_u16(),
                        u16::from_be_bytes(hex(&decoded["sw"]).try_into().unwrap())
                    );
                    assert_eq!(r.data, decoded["data_ascii"].as_str().unwrap().as_bytes());
                    assert_eq!(
                        AppletVersion::from_select_response(&r),
                        Ok(AppletVersion::U2fV2)
                    );
                    responses += 1;
                } else if transport.contains("ctap2 request") {
                    // The payload of an NFCCTAP_MSG: frame it both ways and read it back.
                    for framing in [Framing::Extended, Framing::ShortChained] {
                        let ex = Exchange::ctap(&bytes, framing, 4096).unwrap();
                        let (cmd, form) = CommandApdu::parse(ex.first_command()).unwrap();
                        assert_eq!((cmd.cla, cmd.ins, cmd.p1, cmd.p2), (0x80, 0x10, 0x80, 0x00));
                        assert_eq!(cmd.data, bytes, "{name}: fits one block");
                        assert_eq!(cmd.data[0], 0x06, "{name}: authenticatorClientPIN");
                        let expected = match framing {
                            Framing::Extended => (ApduForm::Extended, Some(65536)),
                            Framing::ShortChained => (ApduForm::Short, Some(256)),
                        };
                        assert_eq!((form, cmd.le), expected, "{name}");
                    }
                    requests += 1;
                } else {
                    assert!(transport.contains("atr"), "{name}: unhandled transport");
                    skipped += 1; // answers-to-reset are reader data, not APDUs
                }
            }
            assert_eq!((commands, responses, requests), (3, 2, 3));
            assert_eq!(skipped, 5);
        }
    }
}
