//! The virtual key as a contactless card in vsmartcard's virtual reader (vpcd), so that pcscd
//! and every PC/SC client see it like a security key tapped on an NFC reader.
//!
//! # The vpcd protocol
//!
//! vpcd is a pcscd reader driver (Debian `vsmartcard-vpcd`). It listens on TCP (port 35963 by
//! default, `CHANNELID 0x8C7B` in `/etc/reader.conf.d/vpcd`) and the card, the "vpicc", connects
//! to it; while the card is connected, the reader reports a card present. Every message, in both
//! directions, is a 2-byte big-endian length followed by that many bytes. What vpcd sends:
//!
//! | payload | meaning | card answers |
//! |---|---|---|
//! | `00` | power off | nothing |
//! | `01` | power on | nothing |
//! | `02` | reset | nothing |
//! | `04` | get ATR | the ATR ([`ATR`]) |
//! | 2 bytes or more | a command APDU | the response APDU (data, SW1 SW2) |
//!
//! pcscd asks for the ATR every few hundred milliseconds to see whether the card is still
//! there; closing the connection is how a card leaves the reader.
//!
//! # Binding
//!
//! The vpcd driver binds its listening socket to all addresses (`INADDR_ANY`), and its
//! configuration has no bind address: on a machine with outside interfaces, a firewall rule
//! should keep port 35963 local. The card side here connects wherever it is told to (the tests
//! use `127.0.0.1:35963`).

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{Error, FIDO2_UP_TIMEOUT, VirtKey};

/// vpcd's default port (`CHANNELID 0x8C7B` in Debian's `/etc/reader.conf.d/vpcd`).
pub const DEFAULT_PORT: u16 = 0x8c7b;

/// The ATR the card presents: the form PC/SC Part 3 (supplement for contactless ICCs) has a reader build
/// for an ISO 14443-4 type A card, `3B 8n 80 01`, the ATS historical bytes, TCK. T0 = `8A`
/// (TD1 follows, 10 historical bytes), TD1 = `80` (T=0, TD2 follows), TD2 = `01` (T=1).
/// Historical bytes: category `80` (compact-TLV), card capabilities `73 C0 21 C0` (the values
/// common on FIDO keys), card issuer's data `54` + "VKEY". TCK (ISO 7816-3 §8.2.5) makes the
/// XOR of T0 to TCK zero.
pub const ATR: [u8; 15] = [
    0x3b, 0x8a, 0x80, 0x01, 0x80, 0x73, 0xc0, 0x21, 0xc0, 0x54, 0x56, 0x4b, 0x45, 0x59, 0x8c,
];

/// Control message: power off.
const CTRL_POWER_OFF: u8 = 0x00;
/// Control message: power on.
const CTRL_POWER_ON: u8 = 0x01;
/// Control message: reset.
const CTRL_RESET: u8 = 0x02;
/// Control message: get ATR.
const CTRL_GET_ATR: u8 = 0x04;

/// ISO 7816-4 "wrong length": the command is longer than the firmware's APDU buffer.
const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];
/// ISO 7816-4 "no precise diagnosis": the firmware did not answer in time, or its answer does
/// not fit a vpcd frame.
const SW_NO_DIAGNOSIS: [u8; 2] = [0x6f, 0x00];

/// How often a blocked read or a back-off sleep looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// First pause between connection attempts; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long writing one response may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one APDU may take in the firmware: its own presence timeout plus a margin, so that
/// the firmware's answer (CTAP2_ERR_USER_ACTION_TIMEOUT) comes back rather than 6F00.
const APDU_TIMEOUT: Duration = FIDO2_UP_TIMEOUT.saturating_add(Duration::from_secs(5));

/// Errors of the vpcd card side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VpcdError {
    /// The address given to [`serve`] does not resolve to a socket address.
    #[error("cannot resolve the vpcd address {addr:?}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it does not resolve.
        #[source]
        source: io::Error,
    },
    /// Socket IO failed. [`serve`] recovers from this by connecting again; it does not return
    /// it.
    #[error("vpcd connection IO failed")]
    Io(#[from] io::Error),
    /// The virtual key stopped: there is no card left to serve.
    #[error("the virtual key has stopped")]
    KeyStopped,
    /// vpcd sent a message of length zero. Like the protocol errors below, [`serve`] answers
    /// it by dropping the connection and connecting again (the card leaves and comes back).
    #[error("vpcd sent an empty message")]
    EmptyMessage,
    /// vpcd sent a one-byte control message this side does not know (a newer protocol?).
    #[error("vpcd sent the unknown control message {0:#04x}")]
    UnknownControl(u8),
    /// vpcd closed the connection in the middle of a message.
    #[error("vpcd closed the connection in the middle of a message")]
    Truncated,
    /// A response longer than a vpcd frame can carry (64 KiB - 1).
    #[error("a {len}-byte response does not fit a vpcd frame")]
    ResponseTooLong {
        /// Length of the response.
        len: usize,
    },
}

/// One message from vpcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Message<'a> {
    PowerOff,
    PowerOn,
    Reset,
    GetAtr,
    Apdu(&'a [u8]),
}

impl<'a> Message<'a> {
    /// Classifies a payload: one byte is a control message, anything longer an APDU.
    fn parse(payload: &'a [u8]) -> Result<Self, VpcdError> {
        match payload {
            [] => Err(VpcdError::EmptyMessage),
            [CTRL_POWER_OFF] => Ok(Self::PowerOff),
            [CTRL_POWER_ON] => Ok(Self::PowerOn),
            [CTRL_RESET] => Ok(Self::Reset),
            [CTRL_GET_ATR] => Ok(Self::GetAtr),
            [other] => Err(VpcdError::UnknownControl(*other)),
            apdu => Ok(Self::Apdu(apdu)),
        }
    }
}

/// Frames a payload: 2-byte big-endian length, then the bytes. `None` if it is longer than a
/// frame can say.
fn frame(payload: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut framed = Vec::with_capacity(payload.len().saturating_add(2));
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(payload);
    Some(framed)
}

/// What the card answers to an APDU; `Err` only when the key itself is gone.
fn answer_apdu(key: &VirtKey, apdu: &[u8]) -> Result<Vec<u8>, VpcdError> {
    match key.transmit_apdu(apdu, APDU_TIMEOUT) {
        Ok(response) if response.len() <= usize::from(u16::MAX) => Ok(response),
        // An extended response of 64 KiB plus SW does not fit a vpcd frame.
        Ok(_) => Ok(SW_NO_DIAGNOSIS.to_vec()),
        Err(Error::ApduTooLong { .. }) => Ok(SW_WRONG_LENGTH.to_vec()),
        Err(Error::Stopped) => Err(VpcdError::KeyStopped),
        Err(_) => Ok(SW_NO_DIAGNOSIS.to_vec()),
    }
}

/// How a connection ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The stop flag was set.
    Stopped,
    /// vpcd closed the connection between messages (pcscd stopped).
    Closed,
}

/// Result of filling a buffer from the socket.
enum Fill {
    Full,
    Ended(End),
}

/// Reads exactly `buf.len()` bytes, looking at `stop` whenever the read timeout expires.
/// End of stream before the first byte is a clean close when `at_boundary`.
fn fill(
    stream: &mut TcpStream,
    buf: &mut [u8],
    stop: &AtomicBool,
    at_boundary: bool,
) -> Result<Fill, VpcdError> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(Fill::Ended(End::Stopped));
        }
        match stream.read(rest) {
            Ok(0) if filled == 0 && at_boundary => return Ok(Fill::Ended(End::Closed)),
            Ok(0) => return Err(VpcdError::Truncated),
            Ok(n) => filled = filled.saturating_add(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(VpcdError::Io(e)),
        }
    }
    Ok(Fill::Full)
}

/// Serves one vpcd connection until vpcd closes it, `stop` is set, or an error.
fn serve_connection(
    key: &VirtKey,
    mut stream: TcpStream,
    stop: &AtomicBool,
) -> Result<End, VpcdError> {
    stream.set_read_timeout(Some(STOP_CHECK))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut payload = Vec::new();
    loop {
        let mut header = [0u8; 2];
        if let Fill::Ended(end) = fill(&mut stream, &mut header, stop, true)? {
            return Ok(end);
        }
        // A u16 length: at most 64 KiB, so the buffer is bounded by the protocol itself.
        payload.resize(usize::from(u16::from_be_bytes(header)), 0);
        if let Fill::Ended(end) = fill(&mut stream, &mut payload, stop, false)? {
            return Ok(end);
        }
        let response = match Message::parse(&payload)? {
            // A power cycle does not reach the firmware: the virtual card keeps its applet
            // selection, which a client must not rely on anyway (it SELECTs after each tap).
            Message::PowerOff | Message::PowerOn | Message::Reset => None,
            Message::GetAtr => Some(ATR.to_vec()),
            Message::Apdu(apdu) => Some(answer_apdu(key, apdu)?),
        };
        if let Some(response) = response {
            let framed = frame(&response).ok_or(VpcdError::ResponseTooLong {
                len: response.len(),
            })?;
            stream.write_all(&framed)?;
        }
    }
}

/// Sleeps `duration` in slices, returning early (true) once `stop` is set.
fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now().checked_add(duration);
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        let left = deadline.map_or(STOP_CHECK, |deadline| {
            deadline.saturating_duration_since(now)
        });
        if left.is_zero() {
            return false;
        }
        thread::sleep(left.min(STOP_CHECK));
    }
}

/// Connects to the first address that accepts.
fn connect(addrs: &[SocketAddr]) -> Option<TcpStream> {
    addrs
        .iter()
        .find_map(|addr| TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).ok())
}

/// Serves `key` as a card to the vpcd reader listening at `addr` (`HOST:PORT`, usually
/// `127.0.0.1:35963`) until `stop` is set.
///
/// Connects as a client, retrying with a back-off (50 ms doubling to 1 s) while nothing
/// listens, so it can start before pcscd. Each connection is a card insertion: the card answers
/// ATR requests with [`ATR`] and hands APDUs to [`VirtKey::transmit_apdu`]. When vpcd closes
/// the connection (pcscd stopped) or breaks the protocol, the card connects again. `stop` is
/// looked at every 100 ms while idle and between APDUs; an APDU waiting for a touch finishes
/// first (at most the firmware's 30 s presence timeout). Setting `stop` removes the card from
/// the reader.
///
/// Returns `Ok(())` once stopped; an error only when `addr` does not resolve or the key has
/// stopped.
pub fn serve(key: Arc<VirtKey>, addr: &str, stop: &AtomicBool) -> Result<(), VpcdError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|source| VpcdError::Address {
            addr: addr.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(VpcdError::Address {
            addr: addr.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no socket address"),
        });
    }
    let mut backoff = FIRST_BACKOFF;
    while !stop.load(Ordering::Relaxed) {
        if let Some(stream) = connect(&addrs) {
            match serve_connection(&key, stream, stop) {
                Ok(End::Stopped) => break,
                // vpcd went away at a message boundary: come back as soon as it listens again.
                Ok(End::Closed) => backoff = FIRST_BACKOFF,
                Err(VpcdError::KeyStopped) => return Err(VpcdError::KeyStopped),
                // A broken connection or protocol: pull the card and insert it again.
                Err(_) => {}
            }
        }
        if sleep_unless_stopped(backoff, stop) {
            break;
        }
        backoff = backoff.saturating_mul(2).min(MAX_BACKOFF);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::{Config, FIDO_AID};

    #[test]
    fn atr_is_the_pc_sc_contactless_form_with_a_valid_check_byte() {
        // TS, T0, TD1, TD2, 10 historical bytes, TCK.
        assert_eq!(&ATR[..4], &[0x3b, 0x8a, 0x80, 0x01]);
        assert_eq!(usize::from(ATR[1] & 0x0f), ATR.len() - 5);
        let xor = ATR[1..].iter().fold(0u8, |acc, b| acc ^ b);
        assert_eq!(xor, 0);
    }

    #[test]
    fn messages_parse_by_length() {
        assert_eq!(Message::parse(&[0x00]).unwrap(), Message::PowerOff);
        assert_eq!(Message::parse(&[0x01]).unwrap(), Message::PowerOn);
        assert_eq!(Message::parse(&[0x02]).unwrap(), Message::Reset);
        assert_eq!(Message::parse(&[0x04]).unwrap(), Message::GetAtr);
        assert!(matches!(
            Message::parse(&[0x03]),
            Err(VpcdError::UnknownControl(0x03))
        ));
        assert!(matches!(Message::parse(&[]), Err(VpcdError::EmptyMessage)));
        // Two bytes or more is an APDU, even a nonsensical one: the card answers it.
        assert_eq!(
            Message::parse(&[0x00, 0x04]).unwrap(),
            Message::Apdu(&[0x00, 0x04])
        );
    }

    #[test]
    fn frames_carry_a_big_endian_length() {
        assert_eq!(frame(&[0x90, 0x00]).unwrap(), vec![0x00, 0x02, 0x90, 0x00]);
        assert_eq!(frame(&[]).unwrap(), vec![0x00, 0x00]);
        let big = vec![0xaa; 0x1234];
        let framed = frame(&big).unwrap();
        assert_eq!(&framed[..2], &[0x12, 0x34]);
        assert_eq!(framed.len(), 0x1236);
        assert_eq!(frame(&vec![0; 0xffff]).unwrap().len(), 0x10001);
        assert!(frame(&vec![0; 0x10000]).is_none());
    }

    const TIMEOUT: Duration = Duration::from_secs(10);
    /// How long a stop may take in these tests: the card looks at the flag every 100 ms, and
    /// without it would wait for vpcd or the firmware without end; the slack is for a loaded
    /// machine.
    const STOP_BOUND: Duration = Duration::from_secs(5);

    /// The fake vpcd: a listener on a free loopback port.
    fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        (listener, addr)
    }

    fn accept(listener: &TcpListener) -> TcpStream {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream
    }

    fn send(stream: &mut TcpStream, payload: &[u8]) {
        stream.write_all(&frame(payload).unwrap()).unwrap();
    }

    fn receive(stream: &mut TcpStream) -> Vec<u8> {
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).unwrap();
        let mut payload = vec![0u8; usize::from(u16::from_be_bytes(header))];
        stream.read_exact(&mut payload).unwrap();
        payload
    }

    /// Whether the card side closed the connection (EOF within the timeout).
    fn closed_by_card(stream: &mut TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(stream.read(&mut byte), Ok(0))
    }

    fn select_apdu() -> Vec<u8> {
        let mut apdu = vec![0x00, 0xa4, 0x04, 0x00, 0x08];
        apdu.extend_from_slice(&FIDO_AID);
        apdu.push(0x00);
        apdu
    }

    struct Card {
        stop: Arc<AtomicBool>,
        thread: thread::JoinHandle<Result<(), VpcdError>>,
    }

    impl Card {
        fn start(key: &Arc<VirtKey>, addr: &str) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let (key, stop, addr) = (Arc::clone(key), Arc::clone(&stop), addr.to_owned());
                thread::spawn(move || serve(key, &addr, &stop))
            };
            Self { stop, thread }
        }

        /// Sets the stop flag and returns what `serve` returned and how long it took.
        fn stop(self) -> (Result<(), VpcdError>, Duration) {
            let start = Instant::now();
            self.stop.store(true, Ordering::Relaxed);
            let result = self.thread.join().unwrap();
            (result, start.elapsed())
        }
    }

    #[test]
    fn answers_atr_and_apdus_like_a_tapped_card() {
        let key = Arc::new(VirtKey::start(Config::default()).unwrap());
        let (listener, addr) = listener();
        let card = Card::start(&key, &addr);
        let mut vpcd = accept(&listener);

        // What pcscd does on insertion: power on, ATR; power cycles get no answer.
        send(&mut vpcd, &[CTRL_POWER_ON]);
        send(&mut vpcd, &[CTRL_GET_ATR]);
        assert_eq!(
            receive(&mut vpcd),
            vec![
                0x3b, 0x8a, 0x80, 0x01, 0x80, 0x73, 0xc0, 0x21, 0xc0, 0x54, 0x56, 0x4b, 0x45, 0x59,
                0x8c
            ]
        );
        send(&mut vpcd, &[CTRL_RESET]);
        send(&mut vpcd, &[CTRL_POWER_OFF]);
        send(&mut vpcd, &select_apdu());
        assert_eq!(receive(&mut vpcd), b"U2F_V2\x90\x00".to_vec());
        // getInfo through NFCCTAP_MSG: status 00, then the CBOR map, then 9000.
        send(&mut vpcd, &[0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00]);
        let response = receive(&mut vpcd);
        assert_eq!(response.first(), Some(&0x00));
        assert_eq!(&response[response.len() - 2..], &[0x90, 0x00]);
        assert_eq!(response.get(1).map(|b| b & 0xe0), Some(0xa0), "a CBOR map");
        // Longer than the firmware's APDU buffer: wrong length, and the card stays.
        let mut long = vec![0x80, 0x10, 0x00, 0x00, 0x00];
        let body = crate::MAX_APDU_LEN;
        long.extend_from_slice(&u16::try_from(body).unwrap().to_be_bytes());
        long.resize(long.len() + body, 0x04);
        send(&mut vpcd, &long);
        assert_eq!(receive(&mut vpcd), vec![0x67, 0x00]);
        send(&mut vpcd, &[CTRL_GET_ATR]);
        assert_eq!(receive(&mut vpcd), ATR.to_vec());

        let (result, took) = card.stop();
        assert!(result.is_ok());
        assert!(took < STOP_BOUND, "{took:?}");
        assert!(closed_by_card(&mut vpcd));
    }

    #[test]
    fn reconnects_after_vpcd_closes_or_breaks_the_protocol() {
        let key = Arc::new(VirtKey::start(Config::default()).unwrap());
        let (listener, addr) = listener();
        let card = Card::start(&key, &addr);

        // pcscd stops between messages: the card comes back when vpcd listens again.
        drop(accept(&listener));
        // An empty message.
        let mut vpcd = accept(&listener);
        send(&mut vpcd, &[]);
        assert!(closed_by_card(&mut vpcd));
        // An unknown control byte.
        let mut vpcd = accept(&listener);
        send(&mut vpcd, &[0x03]);
        assert!(closed_by_card(&mut vpcd));
        // A message cut short: length 10, 3 bytes, then the connection closes.
        let mut vpcd = accept(&listener);
        vpcd.write_all(&[0x00, 0x0a, 0x00, 0xa4, 0x04]).unwrap();
        drop(vpcd);
        // Still a working card after all that.
        let mut vpcd = accept(&listener);
        send(&mut vpcd, &[CTRL_GET_ATR]);
        assert_eq!(receive(&mut vpcd), ATR.to_vec());

        let (result, took) = card.stop();
        assert!(result.is_ok());
        assert!(took < STOP_BOUND, "{took:?}");
    }

    #[test]
    fn stops_mid_message_and_while_nothing_listens() {
        let key = Arc::new(VirtKey::start(Config::default()).unwrap());
        let (listener, addr) = listener();
        let card = Card::start(&key, &addr);
        let mut vpcd = accept(&listener);
        // Half a header: the card waits for the rest, but still sees the stop flag.
        vpcd.write_all(&[0x00]).unwrap();
        let (result, took) = card.stop();
        assert!(result.is_ok());
        assert!(took < STOP_BOUND, "{took:?}");

        // Nothing listens: the card keeps trying until stopped.
        drop(listener);
        let card = Card::start(&key, &addr);
        thread::sleep(Duration::from_millis(300));
        assert!(!card.thread.is_finished());
        let (result, took) = card.stop();
        assert!(result.is_ok());
        assert!(took < STOP_BOUND, "{took:?}");
    }

    #[test]
    fn unresolvable_address_is_an_error() {
        let key = Arc::new(VirtKey::start(Config::default()).unwrap());
        let stop = AtomicBool::new(false);
        let result = serve(Arc::clone(&key), "not an address", &stop);
        assert!(
            matches!(&result, Err(VpcdError::Address { addr, .. }) if addr == "not an address"),
            "{result:?}"
        );
    }
}
