//! Kernel uevents from the `NETLINK_KOBJECT_UEVENT` socket, as far as hidraw nodes go.
//!
//! The kernel (`lib/kobject_uevent.c`) sends one datagram per event: a header
//! `ACTION@DEVPATH`, then `KEY=VALUE` fields, each terminated by a NUL. udev re-broadcasts
//! events on another multicast group in its own format, which starts with `libudev\0`; that
//! format is refused here (this transport listens to the kernel only).
//!
//! The parser is strict and bounded: at most [`MAX_UEVENT_LEN`] bytes and
//! [`MAX_UEVENT_FIELDS`] fields, every field well formed, no duplicate keys, the header
//! agreeing with `ACTION` and `DEVPATH`. A well-formed event about anything but a hidraw node
//! being added or removed is `Ok(None)`.

use std::fmt;

use super::HidrawName;

/// Longest message accepted. The kernel's environment buffer is 2048 bytes
/// (`UEVENT_BUFFER_SIZE`) plus the header; this leaves room for both.
pub const MAX_UEVENT_LEN: usize = 8192;

/// Most `KEY=VALUE` fields accepted: the kernel's `UEVENT_NUM_ENVP`.
pub const MAX_UEVENT_FIELDS: usize = 64;

/// Longest devpath accepted (the kernel's `PATH_MAX`).
const MAX_DEVPATH_LEN: usize = 4096;

/// What happened to a hidraw node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HidrawAction {
    /// The node appeared.
    Add,
    /// The node disappeared.
    Remove,
}

/// A hidraw node was added or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HidrawUevent {
    /// Added or removed.
    pub action: HidrawAction,
    /// The node's name under `/dev` (`DEVNAME`).
    pub devname: HidrawName,
    /// Its sysfs path below `/sys` (`DEVPATH`), e.g.
    /// `/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.1/0003:1050:0407.0001/hidraw/hidraw0`.
    pub devpath: String,
    /// The kernel's event sequence number (`SEQNUM`).
    pub seqnum: u64,
}

/// Which field of a uevent an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UeventKey {
    /// `ACTION`.
    Action,
    /// `DEVPATH`.
    Devpath,
    /// `SUBSYSTEM`.
    Subsystem,
    /// `DEVNAME`.
    Devname,
    /// `SEQNUM`.
    Seqnum,
}

impl fmt::Display for UeventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Action => "ACTION",
            Self::Devpath => "DEVPATH",
            Self::Subsystem => "SUBSYSTEM",
            Self::Devname => "DEVNAME",
            Self::Seqnum => "SEQNUM",
        })
    }
}

/// Why a uevent message was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UeventError {
    /// The message is empty.
    #[error("empty uevent")]
    Empty,
    /// The message is longer than [`MAX_UEVENT_LEN`].
    #[error("uevent of {0} bytes is longer than {MAX_UEVENT_LEN}")]
    TooLong(usize),
    /// A udev monitor message (`libudev` header), not a kernel event.
    #[error("udev monitor message, not a kernel uevent")]
    Libudev,
    /// The message does not end with a NUL.
    #[error("uevent does not end with NUL")]
    Unterminated,
    /// The header is not `action@/devpath`.
    #[error("uevent header is not ACTION@DEVPATH")]
    BadHeader,
    /// A field is not `KEY=VALUE` with a key of `[A-Z0-9_]`.
    #[error("uevent field {index} is not KEY=VALUE")]
    BadField {
        /// Index of the field (the header is 0).
        index: usize,
    },
    /// More than [`MAX_UEVENT_FIELDS`] fields.
    #[error("uevent has more than {MAX_UEVENT_FIELDS} fields")]
    TooManyFields,
    /// A key occurs twice.
    #[error("uevent field {index} repeats its key")]
    DuplicateKey {
        /// Index of the second occurrence.
        index: usize,
    },
    /// A field every kernel uevent (or every hidraw uevent) has is missing.
    #[error("uevent has no {0}")]
    Missing(UeventKey),
    /// A field disagrees with the header or with another field.
    #[error("uevent {0} disagrees with the header or DEVPATH")]
    Mismatch(UeventKey),
    /// A field's value is malformed (not UTF-8, not a hidraw name, not a clean path...).
    #[error("uevent {0} is malformed")]
    BadValue(UeventKey),
}

/// Parses one kernel uevent. `Ok(None)`: well formed, but not a hidraw add or remove.
pub fn parse_uevent(msg: &[u8]) -> Result<Option<HidrawUevent>, UeventError> {
    if msg.is_empty() {
        return Err(UeventError::Empty);
    }
    if msg.len() > MAX_UEVENT_LEN {
        return Err(UeventError::TooLong(msg.len()));
    }
    if msg.starts_with(b"libudev\0") {
        return Err(UeventError::Libudev);
    }
    let body = msg.strip_suffix(b"\0").ok_or(UeventError::Unterminated)?;
    let mut parts = body.split(|&b| b == 0);
    // INVARIANT: split always yields at least one (possibly empty) part.
    let header = parts.next().unwrap_or_default();
    let (header_action, header_devpath) = split_once(header, b'@').ok_or(UeventError::BadHeader)?;
    if header_action.is_empty()
        || !header_action.iter().all(u8::is_ascii_lowercase)
        || !header_devpath.starts_with(b"/")
    {
        return Err(UeventError::BadHeader);
    }

    let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
    for (i, field) in parts.enumerate() {
        let index = i + 1;
        if fields.len() == MAX_UEVENT_FIELDS {
            return Err(UeventError::TooManyFields);
        }
        let (key, value) = split_once(field, b'=').ok_or(UeventError::BadField { index })?;
        if key.is_empty()
            || !key
                .iter()
                .all(|&b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(UeventError::BadField { index });
        }
        if fields.iter().any(|(k, _)| *k == key) {
            return Err(UeventError::DuplicateKey { index });
        }
        fields.push((key, value));
    }
    let get = |key: &[u8]| fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);

    let action = get(b"ACTION").ok_or(UeventError::Missing(UeventKey::Action))?;
    let devpath = get(b"DEVPATH").ok_or(UeventError::Missing(UeventKey::Devpath))?;
    let subsystem = get(b"SUBSYSTEM").ok_or(UeventError::Missing(UeventKey::Subsystem))?;
    if action != header_action {
        return Err(UeventError::Mismatch(UeventKey::Action));
    }
    if devpath != header_devpath {
        return Err(UeventError::Mismatch(UeventKey::Devpath));
    }
    if subsystem != b"hidraw" {
        return Ok(None);
    }
    let action = match action {
        b"add" => HidrawAction::Add,
        b"remove" => HidrawAction::Remove,
        _ => return Ok(None),
    };

    let devname = get(b"DEVNAME").ok_or(UeventError::Missing(UeventKey::Devname))?;
    let devname = HidrawName::parse(devname).ok_or(UeventError::BadValue(UeventKey::Devname))?;
    let devpath = clean_devpath(devpath).ok_or(UeventError::BadValue(UeventKey::Devpath))?;
    // The node's kobject is named like the node: `.../hidraw/hidrawN`.
    if devpath.rsplit('/').next() != Some(devname.to_string().as_str()) {
        return Err(UeventError::Mismatch(UeventKey::Devname));
    }
    let seqnum = get(b"SEQNUM").ok_or(UeventError::Missing(UeventKey::Seqnum))?;
    let seqnum = parse_decimal(seqnum).ok_or(UeventError::BadValue(UeventKey::Seqnum))?;
    Ok(Some(HidrawUevent {
        action,
        devname,
        devpath: devpath.to_owned(),
        seqnum,
    }))
}

/// The parts before and after the first `sep`.
fn split_once(bytes: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == sep)?;
    let (head, tail) = bytes.split_at(at);
    Some((head, tail.get(1..)?))
}

/// A devpath below `/devices`: UTF-8, absolute, no empty, `.` or `..` components, bounded.
fn clean_devpath(raw: &[u8]) -> Option<&str> {
    let path = std::str::from_utf8(raw).ok()?;
    if path.len() > MAX_DEVPATH_LEN || !path.starts_with("/devices/") {
        return None;
    }
    let clean = path
        .split('/')
        .skip(1)
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.chars().any(char::is_control));
    clean.then_some(path)
}

/// Decimal digits only, no sign, no overflow.
fn parse_decimal(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 20 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    raw.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng, rngs::StdRng};

    const DEVPATH: &str =
        "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.1/0003:1050:0407.0001/hidraw/hidraw0";

    /// A kernel hidraw uevent as `udevadm monitor --kernel --property` shows them.
    fn hidraw_msg(action: &str, devpath: &str, devname: &str) -> Vec<u8> {
        format!(
            "{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0SUBSYSTEM=hidraw\0\
             MAJOR=241\0MINOR=0\0DEVNAME={devname}\0SEQNUM=4127\0"
        )
        .into_bytes()
    }

    fn name(n: u32) -> HidrawName {
        HidrawName::parse(format!("hidraw{n}").as_bytes()).unwrap()
    }

    #[test]
    fn hidraw_add_and_remove() {
        assert_eq!(
            parse_uevent(&hidraw_msg("add", DEVPATH, "hidraw0")),
            Ok(Some(HidrawUevent {
                action: HidrawAction::Add,
                devname: name(0),
                devpath: DEVPATH.to_owned(),
                seqnum: 4127,
            }))
        );
        let remove = parse_uevent(&hidraw_msg("remove", DEVPATH, "hidraw0"))
            .unwrap()
            .unwrap();
        assert_eq!(remove.action, HidrawAction::Remove);
        assert_eq!(remove.devname.index(), 0);
    }

    #[test]
    fn other_events_are_none() {
        // The USB interface's own event that precedes the hidraw one.
        let usb = b"add@/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.1\0ACTION=add\0\
            DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.1\0SUBSYSTEM=usb\0\
            DEVTYPE=usb_interface\0PRODUCT=1050/407/543\0TYPE=0/0/0\0INTERFACE=3/0/0\0\
            MODALIAS=usb:v1050p0407d0543dc00dsc00dp00ic03isc00ip00in01\0SEQNUM=4123\0";
        assert_eq!(parse_uevent(usb), Ok(None));
        // A hidraw change or bind is not a plug event.
        assert_eq!(
            parse_uevent(&hidraw_msg("change", DEVPATH, "hidraw0")),
            Ok(None)
        );
        assert_eq!(
            parse_uevent(&hidraw_msg("bind", DEVPATH, "hidraw0")),
            Ok(None)
        );
    }

    #[test]
    fn udev_monitor_format_is_refused() {
        let mut udev = b"libudev\0\xfe\xed\xca\xfe".to_vec();
        udev.extend_from_slice(&[0; 32]);
        udev.extend_from_slice(&hidraw_msg("add", DEVPATH, "hidraw0"));
        assert_eq!(parse_uevent(&udev), Err(UeventError::Libudev));
    }

    #[test]
    fn malformed_messages_get_typed_errors() {
        assert_eq!(parse_uevent(b""), Err(UeventError::Empty));
        assert_eq!(
            parse_uevent(&vec![b'a'; MAX_UEVENT_LEN + 1]),
            Err(UeventError::TooLong(MAX_UEVENT_LEN + 1))
        );
        // No NUL at all, or not at the end.
        assert_eq!(
            parse_uevent(b"add@/devices/x ACTION=add"),
            Err(UeventError::Unterminated)
        );
        let mut cut = hidraw_msg("add", DEVPATH, "hidraw0");
        cut.pop();
        assert_eq!(parse_uevent(&cut), Err(UeventError::Unterminated));
        assert_eq!(parse_uevent(b"garbage\0"), Err(UeventError::BadHeader));
        assert_eq!(parse_uevent(b"@/devices/x\0"), Err(UeventError::BadHeader));
        assert_eq!(
            parse_uevent(b"ADD@/devices/x\0"),
            Err(UeventError::BadHeader)
        );
        assert_eq!(
            parse_uevent(b"add@devices/x\0"),
            Err(UeventError::BadHeader)
        );
        assert_eq!(
            parse_uevent(b"add@/devices/x\0ACTION=add\0\0"),
            Err(UeventError::BadField { index: 2 })
        );
        assert_eq!(
            parse_uevent(b"add@/devices/x\0ACTION\0"),
            Err(UeventError::BadField { index: 1 })
        );
        assert_eq!(
            parse_uevent(b"add@/devices/x\0action=add\0"),
            Err(UeventError::BadField { index: 1 })
        );
        assert_eq!(
            parse_uevent(b"add@/devices/x\0=add\0"),
            Err(UeventError::BadField { index: 1 })
        );
        assert_eq!(
            parse_uevent(b"add@/devices/x\0ACTION=add\0ACTION=remove\0"),
            Err(UeventError::DuplicateKey { index: 2 })
        );
        let mut many = b"add@/devices/x\0".to_vec();
        for i in 0..=MAX_UEVENT_FIELDS {
            many.extend_from_slice(format!("K{i}=v\0").as_bytes());
        }
        assert_eq!(parse_uevent(&many), Err(UeventError::TooManyFields));
        assert_eq!(
            parse_uevent(b"add@/devices/x\0DEVPATH=/devices/x\0SUBSYSTEM=hidraw\0"),
            Err(UeventError::Missing(UeventKey::Action))
        );
        assert_eq!(
            parse_uevent(b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0"),
            Err(UeventError::Missing(UeventKey::Subsystem))
        );
        assert_eq!(
            parse_uevent(b"add@/devices/x\0ACTION=remove\0DEVPATH=/devices/x\0SUBSYSTEM=usb\0"),
            Err(UeventError::Mismatch(UeventKey::Action))
        );
        assert_eq!(
            parse_uevent(b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/y\0SUBSYSTEM=usb\0"),
            Err(UeventError::Mismatch(UeventKey::Devpath))
        );
    }

    #[test]
    fn hidraw_fields_are_checked() {
        let no_devname =
            format!("add@{DEVPATH}\0ACTION=add\0DEVPATH={DEVPATH}\0SUBSYSTEM=hidraw\0SEQNUM=1\0");
        assert_eq!(
            parse_uevent(no_devname.as_bytes()),
            Err(UeventError::Missing(UeventKey::Devname))
        );
        for bad in [
            "sda",
            "hidraw",
            "hidraw-1",
            "hidraw01",
            "../hidraw0",
            "hidraw0/x",
        ] {
            assert_eq!(
                parse_uevent(&hidraw_msg("add", DEVPATH, bad)),
                Err(UeventError::BadValue(UeventKey::Devname)),
                "{bad}"
            );
        }
        assert_eq!(
            parse_uevent(&hidraw_msg("add", DEVPATH, "hidraw1")),
            Err(UeventError::Mismatch(UeventKey::Devname))
        );
        for bad in [
            "/sys/devices/hidraw/hidraw0",
            "/devices/../../etc/hidraw0",
            "/devices//hidraw/hidraw0",
            "/devices/./hidraw0",
        ] {
            assert_eq!(
                parse_uevent(&hidraw_msg("remove", bad, "hidraw0")),
                Err(UeventError::BadValue(UeventKey::Devpath)),
                "{bad}"
            );
        }
        let no_seqnum = format!(
            "add@{DEVPATH}\0ACTION=add\0DEVPATH={DEVPATH}\0SUBSYSTEM=hidraw\0DEVNAME=hidraw0\0"
        );
        assert_eq!(
            parse_uevent(no_seqnum.as_bytes()),
            Err(UeventError::Missing(UeventKey::Seqnum))
        );
        let bad_seqnum = no_seqnum + "SEQNUM=99999999999999999999\0";
        assert_eq!(
            parse_uevent(bad_seqnum.as_bytes()),
            Err(UeventError::BadValue(UeventKey::Seqnum))
        );
    }

    #[test]
    fn huge_but_bounded_message_parses() {
        // Long values are fine as long as the whole message is within the bound.
        let mut msg = hidraw_msg("add", DEVPATH, "hidraw0");
        msg.extend_from_slice(b"HID_JUNK=");
        msg.resize(MAX_UEVENT_LEN - 1, b'x');
        msg.push(0);
        assert_eq!(parse_uevent(&msg).unwrap().unwrap().devname.index(), 0);
        // One byte more is refused before any parsing.
        msg.insert(0, b'a');
        assert_eq!(
            parse_uevent(&msg),
            Err(UeventError::TooLong(MAX_UEVENT_LEN + 1))
        );
    }

    #[test]
    fn random_and_mutated_messages_never_panic() {
        let mut rng = StdRng::seed_from_u64(0x0EE7);
        let good = hidraw_msg("add", DEVPATH, "hidraw0");
        let (mut some, mut err) = (0u32, 0u32);
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = rng.gen_range(0..400);
                // Bias towards the bytes that structure a message.
                (0..len)
                    .map(|_| match rng.gen_range(0..8) {
                        0 => 0,
                        1 => b'=',
                        2 => b'@',
                        _ => rng.r#gen(),
                    })
                    .collect()
            } else {
                let mut b = good.clone();
                for _ in 0..rng.gen_range(1..3) {
                    let i = rng.gen_range(0..b.len());
                    b[i] = rng.r#gen();
                }
                b
            };
            match parse_uevent(&bytes) {
                Ok(Some(ev)) => {
                    some += 1;
                    assert!(ev.devpath.starts_with("/devices/"));
                    assert!(ev.devpath.ends_with(&ev.devname.to_string()));
                }
                Ok(None) => {}
                Err(_) => err += 1,
            }
        }
        assert!(some > 100 && err > 10_000, "{some} {err}");
    }
}
