#![no_main]
//! The daemon's configuration file (TOML).
//!
//! Properties: an accepted file gives settings that satisfy the documented constraints (NFC
//! retry pause at least 1 ms and no larger than its cap); a refused one gives a one-line
//! message with a position inside the text.

use libfuzzer_sys::fuzz_target;
use passkeyd::daemon::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(config) => {
            if let Some(nfc) = &config.nfc {
                assert!(!nfc.first_retry.is_zero());
                assert!(nfc.max_retry >= nfc.first_retry);
            }
            // Parsing is a function of the text.
            assert_eq!(Config::from_toml(text).ok(), Some(config));
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
        Err(error) => {
            assert!(!error.to_string().contains('\n'));
        }
    }
});
