#![no_main]
//! Kernel uevents from the netlink socket (hotplug), hidraw node names, and a HID device's
//! sysfs `uevent` file (`HID_ID`, and `HID_NAME`, which the device itself supplies).
//!
//! The first byte picks the parser; the rest is its input.
//!
//! Properties: an accepted hidraw event is rebuilt into a kernel message that parses to the
//! same event, and its devpath names its node; a node name is accepted only in its canonical
//! spelling; `HID_ID`/`HID_NAME` rebuilt from what was read parse to the same values, and the
//! name kept for display is bounded and free of control characters.

use libfuzzer_sys::fuzz_target;
use passkeyd::fuzzing::{self, MAX_HID_NAME_CHARS};
use passkeyd::transport::usb::HidrawName;
use passkeyd::transport::usb::uevent::{HidrawAction, MAX_UEVENT_LEN, parse_uevent};

fn kernel_event(data: &[u8]) {
    let Ok(Some(event)) = parse_uevent(data) else {
        return;
    };
    assert!(data.len() <= MAX_UEVENT_LEN);
    assert!(event.devpath.starts_with("/devices/"));
    assert!(event.devpath.ends_with(&format!("/{}", event.devname)));
    let action = match event.action {
        HidrawAction::Add => "add",
        HidrawAction::Remove => "remove",
    };
    let rebuilt = format!(
        "{action}@{path}\0ACTION={action}\0DEVPATH={path}\0SUBSYSTEM=hidraw\0DEVNAME={name}\0SEQNUM={seq}\0",
        path = event.devpath,
        name = event.devname,
        seq = event.seqnum,
    );
    assert_eq!(parse_uevent(rebuilt.as_bytes()), Ok(Some(event)));
}

fn node_name(data: &[u8]) {
    if let Some(name) = HidrawName::parse(data) {
        assert_eq!(name.to_string().as_bytes(), data);
        assert_eq!(HidrawName::parse(name.to_string().as_bytes()), Some(name));
    }
}

fn hid_uevent(data: &[u8]) {
    let Some(parsed) = fuzzing::parse_hid_uevent(data) else {
        return;
    };
    let mut rebuilt = format!(
        "DRIVER=hid-generic\nHID_ID={:04X}:{:08X}:{:08X}\n",
        parsed.bus, parsed.vendor, parsed.product
    );
    if let Some(name) = &parsed.name {
        assert!(!name.is_empty());
        assert!(name.chars().count() <= MAX_HID_NAME_CHARS);
        assert!(!name.chars().any(char::is_control), "{name:?}");
        assert_eq!(name.trim(), name, "untrimmed");
        rebuilt.push_str(&format!("HID_NAME={name}\n"));
    }
    let again = fuzzing::parse_hid_uevent(rebuilt.as_bytes()).expect("rebuilt file parses");
    assert_eq!(
        (again.bus, again.vendor, again.product),
        (parsed.bus, parsed.vendor, parsed.product)
    );
    // What was kept for display is already clean: cleaning it again changes nothing.
    assert_eq!(again.name, parsed.name);
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => kernel_event(rest),
        1 => node_name(rest),
        _ => hid_uevent(rest),
    }
});
