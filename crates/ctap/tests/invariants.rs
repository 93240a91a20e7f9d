//! Architecture invariant (ARCHITECTURE.md): the protocol core depends on no runtime, bus,
//! HTTP or device-IO crate. Checked on the manifest, so a new dependency fails here, in
//! review's place.

#![allow(clippy::unwrap_used, clippy::expect_used)]

const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "mio",
    "zbus",
    "zvariant",
    "reqwest",
    "hyper",
    "hidapi",
    "pcsc",
    "nix",
    "libc",
    "udev",
    "tracing-subscriber",
    "anyhow",
    "rand",
];

#[test]
fn core_has_no_io_dependencies() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let mut section = "";
    let mut checked = 0;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section != "[dependencies]" || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line.split(['=', '.', ' ']).next().unwrap();
        assert!(
            !FORBIDDEN.contains(&name),
            "crates/ctap must not depend on {name}"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "parsed only {checked} dependencies: did the manifest change shape?"
    );
}
