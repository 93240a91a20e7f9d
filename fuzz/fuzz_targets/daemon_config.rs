#![no_main]
//! The daemon's configuration file (TOML), parsed as `passkeyd` does at start.
//!
//! Properties: an accepted file gives settings inside every documented range (transport
//! timings from 1 ms to a day, NFC retry cap not below its first pause, ceremony timeouts
//! ordered min ≤ default ≤ max within a day, caller limits at least 1 and per-caller not above
//! the total, a non-blank app id); parsing is a function of the text; a refused file gives a
//! one-line message whose position lies inside the text.

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use passkeyd::daemon::{Config, ConfigError};

const DAY: Duration = Duration::from_secs(86_400);

fn within(duration: Duration, min: Duration) -> bool {
    duration >= min && duration <= DAY
}

fn check(config: &Config) {
    if let Some(usb) = &config.usb {
        assert!(within(usb.open_window, Duration::from_millis(1)));
    }
    if let Some(nfc) = &config.nfc {
        assert!(within(nfc.first_retry, Duration::from_millis(1)));
        assert!(within(nfc.max_retry, nfc.first_retry));
    }
    let ceremony = &config.ceremony;
    assert!(within(ceremony.min_timeout, Duration::from_secs(1)));
    assert!(within(ceremony.default_timeout, ceremony.min_timeout));
    assert!(within(ceremony.max_timeout, ceremony.default_timeout));
    assert!(within(ceremony.complete_grace, Duration::from_secs(1)));
    let access = &config.access;
    assert!(access.max_ceremonies_per_caller >= 1);
    assert!(access.max_ceremonies_per_caller <= access.max_ceremonies);
    assert!(!config.loginid.app_id.trim().is_empty());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(config) => {
            check(&config);
            let again = Config::from_toml(text).expect("the same text parses again");
            assert_eq!(format!("{again:?}"), format!("{config:?}"));
        }
        Err(ConfigError::Parse {
            line,
            column,
            message,
        }) => {
            assert!(!message.contains('\n'), "{message:?}");
            let lines = text.split('\n').count();
            assert!(line <= lines, "line {line} of {lines}");
            if line > 0 {
                let width = text
                    .split('\n')
                    .nth(line - 1)
                    .map_or(0, |l| l.chars().count());
                assert!(column <= width + 1, "column {column} of {width}");
            }
        }
        Err(error) => assert!(!error.to_string().contains('\n'), "{error}"),
    }
});
