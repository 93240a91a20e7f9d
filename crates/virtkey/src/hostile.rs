//! Hostile keys: test-rig modes in which the key breaks CTAPHID framing or answers
//! authenticatorMakeCredential with something a host must refuse.
//!
//! Every mode applies to the answer to authenticatorMakeCredential (CTAP 2.2 §6.1, command
//! byte 0x01) over CTAPHID only: INIT, getInfo, clientPIN and the rest behave, so the host
//! probes the key, announces it and gets as far as creating a credential. The tampering modes
//! take the firmware's real response apart and put it back together changed; nothing is
//! re-signed, so the attestation signature no longer covers the changed bytes (a host that
//! forwards them leaves the relying party to notice).

use ciborium::Value;

use crate::ctaphid::{MAX_FRAMED_LEN, REPORT_LEN};

/// authenticatorMakeCredential's command byte (CTAP 2.2 §6.1).
pub(crate) const MAKE_CREDENTIAL: u8 = 0x01;

/// makeCredential response member `authData` (CTAP 2.2 §6.1.2).
const AUTH_DATA: i128 = 0x02;
/// Offset of the flags byte in authenticator data (WebAuthn L3 §6.1): after rpIdHash.
const FLAGS_OFFSET: usize = 32;
/// Flag UP (WebAuthn L3 §6.1).
const FLAG_UP: u8 = 0x01;
/// Offset of credentialIdLength: rpIdHash(32) flags(1) signCount(4) aaguid(16).
const CREDENTIAL_ID_LENGTH_OFFSET: usize = 53;
/// Offset of the credential ID.
const CREDENTIAL_ID_OFFSET: usize = 55;
/// A credential ID one byte longer than WebAuthn L3 §6.5.1 allows.
const TOO_LONG_CREDENTIAL_ID: usize = 1024;
/// COSE_Key labels of an EC2 key (RFC 9053 §7.1.1): y coordinate.
const COSE_EC2_Y: i128 = -3;
/// COSE_Key label of the x coordinate.
const COSE_EC2_X: i128 = -2;

/// How a hostile key misbehaves (see the module documentation: always on the answer to
/// authenticatorMakeCredential over CTAPHID).
#[derive(Clone, Copy, Debug, Eq, PartialEq, Hash)]
#[non_exhaustive]
pub enum Hostile {
    /// The answer's reports carry another channel id (the request's with every bit inverted):
    /// the host's channel filter drops them and its request never gets an answer.
    OtherChannel,
    /// The answer's continuation packets are numbered from 1 instead of 0 (CTAP 2.2 §11.2.4).
    WrongSequence,
    /// A second initialization packet of the same message comes in the middle of the answer,
    /// after its first continuation packet.
    InitMidMessage,
    /// The answer's initialization packet announces 0xFFFF bytes, more than CTAPHID can
    /// carry (7609) and more than follow.
    OversizedBcnt,
    /// The firmware is never asked: KEEPALIVE PROCESSING goes out forever, until CANCEL (which
    /// is honoured) or INIT on the channel.
    EndlessKeepalive,
    /// The firmware is never asked and nothing is sent: no KEEPALIVE, no answer. CANCEL gets
    /// no answer either.
    Silence,
    /// Status 0x00 followed by bytes that are not CBOR (a reserved additional-information
    /// value).
    GarbageCbor,
    /// Status 0x00 followed by CBOR as large as CTAPHID can carry (7609 bytes in all): one-
    /// element arrays nested as deep as the message allows.
    HugeCbor,
    /// The firmware's answer with the first byte of authData's rpIdHash inverted.
    WrongRpIdHash,
    /// The firmware's answer with authData's UP flag cleared.
    UserNotPresent,
    /// The firmware's answer with authData's credentialIdLength one larger than the credential
    /// id the key created: the credential id it declares differs from the real one and
    /// swallows the first byte of the credential public key.
    CredentialIdMismatch,
    /// The firmware's answer with its credential id replaced by a consistent 1024-byte one,
    /// one byte more than WebAuthn allows.
    CredentialIdTooLong,
    /// The firmware's answer with the credential public key's y coordinate changed so that
    /// the point is not on the curve (P-256).
    CoseKeyOffCurve,
    /// Not an error: the firmware's answer with an unknown member (0x20, a byte string) that
    /// makes it exactly as large as CTAPHID can carry (7609 bytes). A host must accept it
    /// (CTAP 2.2 §8: unknown members are ignored).
    MaximumSize,
}

impl Hostile {
    /// Every mode.
    pub const ALL: [Self; 14] = [
        Self::OtherChannel,
        Self::WrongSequence,
        Self::InitMidMessage,
        Self::OversizedBcnt,
        Self::EndlessKeepalive,
        Self::Silence,
        Self::GarbageCbor,
        Self::HugeCbor,
        Self::WrongRpIdHash,
        Self::UserNotPresent,
        Self::CredentialIdMismatch,
        Self::CredentialIdTooLong,
        Self::CoseKeyOffCurve,
        Self::MaximumSize,
    ];

    /// The mode's name on the `virtkey` command line (`--hostile NAME`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::OtherChannel => "other-cid",
            Self::WrongSequence => "wrong-seq",
            Self::InitMidMessage => "init-mid-message",
            Self::OversizedBcnt => "oversized-bcnt",
            Self::EndlessKeepalive => "endless-keepalive",
            Self::Silence => "silence",
            Self::GarbageCbor => "garbage-cbor",
            Self::HugeCbor => "huge-cbor",
            Self::WrongRpIdHash => "wrong-rp-id-hash",
            Self::UserNotPresent => "up-not-set",
            Self::CredentialIdMismatch => "credential-id-mismatch",
            Self::CredentialIdTooLong => "credential-id-too-long",
            Self::CoseKeyOffCurve => "cose-key-off-curve",
            Self::MaximumSize => "max-size",
        }
    }

    /// The mode named `name` ([`Hostile::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.name() == name)
    }

    /// What happens to a makeCredential request before the firmware sees it.
    pub(crate) fn on_request(self) -> RequestFate {
        match self {
            Self::EndlessKeepalive => RequestFate::KeepBusy,
            Self::Silence => RequestFate::Ignore,
            _ => RequestFate::Submit,
        }
    }

    /// The answer's bytes (status byte and CBOR) as this mode sends them.
    pub(crate) fn tamper_data(self, data: Vec<u8>) -> Vec<u8> {
        match self {
            Self::GarbageCbor => vec![0x00, 0xa3, 0x01, 0x1c, 0xde, 0xad, 0xbe, 0xef],
            Self::HugeCbor => {
                let mut out = Vec::with_capacity(MAX_FRAMED_LEN);
                out.push(0x00);
                out.resize(MAX_FRAMED_LEN - 1, 0x81);
                out.push(0x80);
                out
            }
            Self::WrongRpIdHash => edit_auth_data(data, |auth| {
                if let Some(byte) = auth.first_mut() {
                    *byte = !*byte;
                }
                Some(())
            }),
            Self::UserNotPresent => edit_auth_data(data, |auth| {
                let flags = auth.get_mut(FLAGS_OFFSET)?;
                *flags &= !FLAG_UP;
                Some(())
            }),
            Self::CredentialIdMismatch => edit_auth_data(data, |auth| {
                let length = credential_id_length(auth)?;
                let bigger = u16::try_from(length.checked_add(1)?).ok()?;
                auth.get_mut(CREDENTIAL_ID_LENGTH_OFFSET..CREDENTIAL_ID_OFFSET)?
                    .copy_from_slice(&bigger.to_be_bytes());
                Some(())
            }),
            Self::CredentialIdTooLong => edit_auth_data(data, |auth| {
                let length = credential_id_length(auth)?;
                let key_at = CREDENTIAL_ID_OFFSET.checked_add(length)?;
                let rest = auth.get(key_at..)?.to_vec();
                auth.truncate(CREDENTIAL_ID_LENGTH_OFFSET);
                let declared = u16::try_from(TOO_LONG_CREDENTIAL_ID).ok()?;
                auth.extend_from_slice(&declared.to_be_bytes());
                auth.resize(CREDENTIAL_ID_OFFSET + TOO_LONG_CREDENTIAL_ID, 0x5a);
                auth.extend_from_slice(&rest);
                Some(())
            }),
            Self::CoseKeyOffCurve => edit_auth_data(data, move_key_off_curve),
            Self::MaximumSize => pad_to_maximum(data),
            _ => data,
        }
    }

    /// The answer's reports as this mode sends them (the framing modes).
    pub(crate) fn tamper_reports(self, reports: &mut Vec<[u8; REPORT_LEN]>) {
        match self {
            Self::OtherChannel => {
                for report in reports.iter_mut() {
                    for byte in report.iter_mut().take(4) {
                        *byte = !*byte;
                    }
                }
            }
            Self::WrongSequence => {
                for report in reports.iter_mut().skip(1) {
                    report[4] = report[4].wrapping_add(1) & 0x7f;
                }
            }
            Self::InitMidMessage => {
                if let Some(&first) = reports.first() {
                    let at = reports.len().min(2);
                    reports.insert(at, first);
                }
            }
            Self::OversizedBcnt => {
                if let Some(first) = reports.first_mut() {
                    first[5] = 0xff;
                    first[6] = 0xff;
                }
            }
            _ => {}
        }
    }
}

/// What the CTAPHID layer does with a makeCredential request of a hostile key.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum RequestFate {
    /// Hand it to the firmware as usual.
    Submit,
    /// Stay busy without asking the firmware (keepalives until CANCEL or INIT).
    KeepBusy,
    /// Drop it silently.
    Ignore,
}

/// makeCredential response member used for padding: unknown to CTAP 2.2.
const PADDING_MEMBER: i64 = 0x20;

/// Adds [`PADDING_MEMBER`] to a successful answer so that it is [`MAX_FRAMED_LEN`] bytes long;
/// any other answer, or one too long already, goes out unchanged.
fn pad_to_maximum(data: Vec<u8>) -> Vec<u8> {
    let padded = (|| {
        let (&status, body) = data.split_first()?;
        if status != 0x00 {
            return None;
        }
        let Value::Map(map) = ciborium::from_reader::<Value, _>(body).ok()? else {
            return None;
        };
        let encode = |padding: usize| {
            let mut map = map.clone();
            map.push((
                Value::from(PADDING_MEMBER),
                Value::Bytes(vec![0x5a; padding]),
            ));
            let mut out = vec![0x00];
            ciborium::into_writer(&Value::Map(map), &mut out).ok()?;
            Some(out)
        };
        // The padding's own header grows with its length: settle it in a few rounds.
        let mut padding = MAX_FRAMED_LEN.checked_sub(data.len())?;
        for _ in 0..4 {
            let out = encode(padding)?;
            match out.len().cmp(&MAX_FRAMED_LEN) {
                std::cmp::Ordering::Equal => return Some(out),
                std::cmp::Ordering::Greater => {
                    padding = padding.checked_sub(out.len() - MAX_FRAMED_LEN)?;
                }
                std::cmp::Ordering::Less => padding += MAX_FRAMED_LEN - out.len(),
            }
        }
        None
    })();
    padded.unwrap_or(data)
}

/// credentialIdLength of authenticator data with attested credential data.
fn credential_id_length(auth: &[u8]) -> Option<usize> {
    let bytes = auth.get(CREDENTIAL_ID_LENGTH_OFFSET..CREDENTIAL_ID_OFFSET)?;
    Some(usize::from(u16::from_be_bytes([
        *bytes.first()?,
        *bytes.get(1)?,
    ])))
}

/// Applies `edit` to the authData of a successful makeCredential answer (status 0x00 and a
/// CBOR map) and re-encodes it; any other answer, or one `edit` cannot handle, goes out
/// unchanged.
fn edit_auth_data(data: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>) -> Option<()>) -> Vec<u8> {
    let edited = (|| {
        let (&status, body) = data.split_first()?;
        if status != 0x00 {
            return None;
        }
        let Value::Map(mut map) = ciborium::from_reader::<Value, _>(body).ok()? else {
            return None;
        };
        let auth = map.iter_mut().find_map(|(key, value)| match (key, value) {
            (Value::Integer(key), Value::Bytes(bytes)) if i128::from(*key) == AUTH_DATA => {
                Some(bytes)
            }
            _ => None,
        })?;
        edit(auth)?;
        let mut out = vec![0x00];
        ciborium::into_writer(&Value::Map(map), &mut out).ok()?;
        Some(out)
    })();
    match edited {
        Some(out) => out,
        None => {
            tracing::warn!("hostile mode: the answer is not a makeCredential success; sent as is");
            data
        }
    }
}

/// Rewrites the credential public key in `auth` with a y coordinate off the P-256 curve.
fn move_key_off_curve(auth: &mut Vec<u8>) -> Option<()> {
    let key_at = CREDENTIAL_ID_OFFSET.checked_add(credential_id_length(auth)?)?;
    let mut rest = auth.get(key_at..)?;
    // The reader advances `rest` past the key: what is left are the extensions, if any.
    let key: Value = ciborium::from_reader(&mut rest).ok()?;
    let tail = rest.to_vec();
    let Value::Map(mut key) = key else {
        return None;
    };
    let coordinate = |key: &[(Value, Value)], label: i128| {
        key.iter().find_map(|(name, value)| match (name, value) {
            (Value::Integer(name), Value::Bytes(bytes)) if i128::from(*name) == label => {
                Some(bytes.clone())
            }
            _ => None,
        })
    };
    let x = coordinate(&key, COSE_EC2_X)?;
    let mut y = coordinate(&key, COSE_EC2_Y)?;
    // Almost every change of y leaves the curve; step until the point is certainly off it.
    for _ in 0..=u8::MAX {
        let last = y.last_mut()?;
        *last = last.wrapping_add(1);
        if !on_p256(&x, &y) {
            break;
        }
    }
    for (name, value) in &mut key {
        if matches!(name, Value::Integer(label) if i128::from(*label) == COSE_EC2_Y) {
            *value = Value::Bytes(y.clone());
        }
    }
    let mut encoded = Vec::new();
    ciborium::into_writer(&Value::Map(key), &mut encoded).ok()?;
    auth.truncate(key_at);
    auth.extend_from_slice(&encoded);
    auth.extend_from_slice(&tail);
    Some(())
}

/// Whether (x, y) is a point of P-256.
fn on_p256(x: &[u8], y: &[u8]) -> bool {
    let mut sec1 = Vec::with_capacity(1 + x.len() + y.len());
    sec1.push(0x04);
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    p256::PublicKey::from_sec1_bytes(&sec1).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A makeCredential success as the firmware frames it: status, then
    /// {1: "none", 2: authData, 3: {}} with a real P-256 key and a 16-byte credential id.
    fn answer() -> (Vec<u8>, Vec<u8>) {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let secret = p256::SecretKey::from_slice(&[7; 32]).unwrap();
        let point = secret.public_key().to_encoded_point(false);
        let key = Value::Map(vec![
            (Value::from(1), Value::from(2)),
            (Value::from(3), Value::from(-7)),
            (Value::from(-1), Value::from(1)),
            (Value::from(-2), Value::Bytes(point.x().unwrap().to_vec())),
            (Value::from(-3), Value::Bytes(point.y().unwrap().to_vec())),
        ]);
        let mut auth = vec![0x11; 32];
        auth.push(0x45); // UP, UV, AT
        auth.extend_from_slice(&[0, 0, 0, 1]);
        auth.extend_from_slice(&[0xaa; 16]);
        auth.extend_from_slice(&[0x00, 0x10]);
        auth.extend_from_slice(&[0xcc; 16]);
        ciborium::into_writer(&key, &mut auth).unwrap();
        let map = Value::Map(vec![
            (Value::from(1), Value::from("none")),
            (Value::from(2), Value::Bytes(auth.clone())),
            (Value::from(3), Value::Map(vec![])),
        ]);
        let mut data = vec![0x00];
        ciborium::into_writer(&map, &mut data).unwrap();
        (data, auth)
    }

    fn auth_data_of(data: &[u8]) -> Vec<u8> {
        assert_eq!(data[0], 0x00);
        let Value::Map(map) = ciborium::from_reader::<Value, _>(&data[1..]).unwrap() else {
            panic!("not a map");
        };
        map.into_iter()
            .find_map(|(k, v)| match (k, v) {
                (Value::Integer(k), Value::Bytes(b)) if i128::from(k) == 2 => Some(b),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn names_round_trip() {
        for mode in Hostile::ALL {
            assert_eq!(Hostile::from_name(mode.name()), Some(mode));
        }
        assert_eq!(Hostile::from_name("friendly"), None);
        assert_eq!(Hostile::from_name("other-cid"), Some(Hostile::OtherChannel));
    }

    #[test]
    fn rp_id_hash_and_up_flag_are_changed_and_nothing_else() {
        let (data, auth) = answer();
        let wrong = auth_data_of(&Hostile::WrongRpIdHash.tamper_data(data.clone()));
        assert_eq!(wrong[0], 0xee);
        assert_eq!(wrong[1..], auth[1..]);
        let no_up = auth_data_of(&Hostile::UserNotPresent.tamper_data(data));
        assert_eq!(no_up[32], 0x44);
        assert_eq!(no_up[..32], auth[..32]);
        assert_eq!(no_up[33..], auth[33..]);
    }

    #[test]
    fn credential_id_modes_rewrite_its_length() {
        let (data, auth) = answer();
        let mismatch = auth_data_of(&Hostile::CredentialIdMismatch.tamper_data(data.clone()));
        assert_eq!(&mismatch[53..55], &[0x00, 0x11]);
        assert_eq!(mismatch.len(), auth.len());
        let long = auth_data_of(&Hostile::CredentialIdTooLong.tamper_data(data));
        assert_eq!(&long[53..55], &[0x04, 0x00]);
        assert_eq!(long.len(), auth.len() - 16 + 1024);
        assert!(long[55..55 + 1024].iter().all(|&b| b == 0x5a));
        assert_eq!(long[55 + 1024..], auth[55 + 16..]);
    }

    #[test]
    fn the_cose_key_leaves_the_curve() {
        let (data, auth) = answer();
        let off = auth_data_of(&Hostile::CoseKeyOffCurve.tamper_data(data));
        assert_eq!(off.len(), auth.len());
        assert_eq!(off[..71], auth[..71]);
        let key: Value = ciborium::from_reader(&off[71..]).unwrap();
        let Value::Map(key) = key else { panic!() };
        let get = |label: i128| {
            key.iter()
                .find_map(|(k, v)| match (k, v) {
                    (Value::Integer(k), Value::Bytes(b)) if i128::from(*k) == label => {
                        Some(b.clone())
                    }
                    _ => None,
                })
                .unwrap()
        };
        assert!(!on_p256(&get(-2), &get(-3)));
    }

    #[test]
    fn garbage_and_huge_cbor() {
        let (data, _) = answer();
        let garbage = Hostile::GarbageCbor.tamper_data(data.clone());
        assert!(ciborium::from_reader::<Value, _>(&garbage[1..]).is_err());
        let huge = Hostile::HugeCbor.tamper_data(data);
        assert_eq!(huge.len(), MAX_FRAMED_LEN);
        assert_eq!(huge[0], 0x00);
        assert_eq!(huge[1], 0x81);
        assert_eq!(huge[MAX_FRAMED_LEN - 1], 0x80);
    }

    #[test]
    fn the_padded_answer_fills_ctaphid_and_keeps_the_firmware_members() {
        let (data, auth) = answer();
        let padded = Hostile::MaximumSize.tamper_data(data);
        assert_eq!(padded.len(), MAX_FRAMED_LEN);
        assert_eq!(auth_data_of(&padded), auth);
        let Value::Map(map) = ciborium::from_reader::<Value, _>(&padded[1..]).unwrap() else {
            panic!("not a map");
        };
        assert_eq!(map.len(), 4);
        assert_eq!(map[3].0, Value::from(0x20));
        assert_eq!(Hostile::MaximumSize.tamper_data(vec![0x2f]), vec![0x2f]);
    }

    #[test]
    fn an_error_answer_is_left_alone() {
        for mode in [
            Hostile::WrongRpIdHash,
            Hostile::UserNotPresent,
            Hostile::CoseKeyOffCurve,
            Hostile::CredentialIdTooLong,
        ] {
            assert_eq!(mode.tamper_data(vec![0x2f]), vec![0x2f]);
            assert_eq!(mode.tamper_data(vec![0x00, 0xff]), vec![0x00, 0xff]);
        }
    }

    #[test]
    fn framing_modes() {
        let mut reports = vec![[0u8; REPORT_LEN]; 3];
        for (i, r) in reports.iter_mut().enumerate() {
            r[..4].copy_from_slice(&[1, 2, 3, 4]);
            r[4] = if i == 0 { 0x90 } else { (i - 1) as u8 };
        }
        reports[0][5..7].copy_from_slice(&[0x00, 0x90]);
        let mut other = reports.clone();
        Hostile::OtherChannel.tamper_reports(&mut other);
        assert!(other.iter().all(|r| r[..4] == [0xfe, 0xfd, 0xfc, 0xfb]));
        let mut seq = reports.clone();
        Hostile::WrongSequence.tamper_reports(&mut seq);
        assert_eq!([seq[0][4], seq[1][4], seq[2][4]], [0x90, 1, 2]);
        let mut mid = reports.clone();
        Hostile::InitMidMessage.tamper_reports(&mut mid);
        assert_eq!(mid.len(), 4);
        assert_eq!(mid[2], reports[0]);
        assert_eq!(mid[3], reports[2]);
        let mut big = reports.clone();
        Hostile::OversizedBcnt.tamper_reports(&mut big);
        assert_eq!(&big[0][5..7], &[0xff, 0xff]);
        assert_eq!(big[1..], reports[1..]);
    }
}
