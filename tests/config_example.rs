//! The configuration example the Debian package ships
//! (`/usr/share/doc/passkeyd/examples/config.toml`, from `debian/config.example.toml`) is
//! one the daemon accepts once its placeholders are filled in, and says what
//! docs/packaging.md says it does.

// Helpers outside #[test] functions panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use passkeyd::daemon::{Config, Principal};

const EXAMPLE: &str = include_str!("../debian/config.example.toml");

fn filled_in() -> String {
    EXAMPLE
        .replace(
            "https://<app>.api.loginid.io",
            "https://kiosk-app.api.loginid.io",
        )
        .replace("<app id>", "kiosk-app")
}

#[test]
fn the_shipped_example_is_accepted_once_filled_in() {
    let config = Config::from_toml(&filled_in()).unwrap();
    assert_eq!(
        config.loginid.base_url.as_str(),
        "https://kiosk-app.api.loginid.io/"
    );
    assert_eq!(config.loginid.app_id, "kiosk-app");
    assert!(!config.loginid.allow_http_loopback);
    assert_eq!(
        config.ceremony.origin.as_str(),
        "https://kiosk.example.com/"
    );
    assert!(config.usb.is_some());
    assert!(config.nfc.is_some());
    assert!(config.virtual_keys.is_none());
    // The callers' group of the bus policy and sysusers.d.
    assert_eq!(
        config.access.allowed_groups,
        [Principal::Name("passkeyd-users".to_owned())]
    );
    assert!(config.access.allowed_users.is_empty());
    assert!(!config.access.polkit);
    assert_eq!(config.access.max_ceremonies_per_caller, 2);
    assert_eq!(config.access.max_ceremonies, 16);
    assert_eq!(config.ceremony.default_timeout, Duration::from_secs(300));
}

#[test]
fn the_placeholders_are_refused_as_they_stand() {
    // An administrator who copies the file without editing it gets an error, not a daemon
    // talking to a made-up host.
    assert!(Config::from_toml(EXAMPLE).is_err());
}

#[test]
fn the_virtual_key_directory_line_matches_tmpfiles() {
    let text = filled_in().replace(
        "# virtual_dir = \"/run/passkeyd/virtual\"",
        "virtual_dir = \"/run/passkeyd/virtual\"",
    );
    let config = Config::from_toml(&text).unwrap();
    assert_eq!(
        config.virtual_keys.unwrap().dir,
        std::path::Path::new("/run/passkeyd/virtual")
    );
    let tmpfiles = include_str!("../systemd/passkeyd.tmpfile");
    assert!(
        tmpfiles
            .lines()
            .any(|line| line.starts_with("d /run/passkeyd/virtual ")),
        "{tmpfiles}"
    );
}
