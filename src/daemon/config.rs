//! The daemon's settings and its configuration file.
//!
//! The file is TOML, every key optional; a missing key keeps its default. Unknown sections
//! and keys are errors, so that a typo does not silently leave a transport enabled.
//!
//! ```toml
//! [usb]
//! enabled = true          # hidraw keys
//! open_window_ms = 2000   # after a hotplug add, how long opening the node is retried
//!
//! [nfc]
//! enabled = true          # PC/SC readers through pcscd
//! first_retry_ms = 1000   # pcscd's socket exists but pcscd does not answer: first pause
//! max_retry_ms = 60000    # ... doubling up to this
//!
//! [virtual]
//! dir = "/run/passkeyd/virtual"   # virtual keys' sockets; no virtual keys without it
//! ```
//!
//! Command-line flags (`--no-usb`, `--no-nfc`, `--virtual-dir`) apply on top of the file.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::device::DeviceConfig;
use crate::transport::{nfc::NfcConfig, usb::UsbConfig, virt::VirtualConfig};

/// Where `passkeyd` looks for its configuration file when none is named. A missing file there
/// means the defaults.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/passkeyd/passkeyd.toml";

/// What the daemon runs: which transports, with which settings, and the device layer's
/// timing. A transport set to `None` is not started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// USB HID keys (hidraw); `None` disables the transport.
    pub usb: Option<UsbConfig>,
    /// NFC keys through pcscd; `None` disables the transport.
    pub nfc: Option<NfcConfig>,
    /// Virtual keys (a socket directory); `None` (the default) disables the transport.
    pub virtual_keys: Option<VirtualConfig>,
    /// Deadlines and retries of the device layer.
    pub device: DeviceConfig,
}

impl Default for Config {
    /// USB and NFC with their defaults, no virtual keys.
    fn default() -> Self {
        Self {
            usb: Some(UsbConfig::default()),
            nfc: Some(NfcConfig::default()),
            virtual_keys: None,
            device: DeviceConfig::default(),
        }
    }
}

/// Why a configuration file was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("invalid configuration at line {line}, column {column}: {message}")]
    Parse {
        /// Where (1-based; 0 when the parser gave no position).
        line: usize,
        /// Where in the line, in characters (1-based; 0 without a position).
        column: usize,
        /// What is wrong, on one line.
        message: String,
    },
    /// `nfc.first_retry_ms` is 0: retrying pcscd without a pause would spin.
    #[error("nfc.first_retry_ms must be at least 1")]
    ZeroNfcRetry,
    /// `nfc.max_retry_ms` is below `nfc.first_retry_ms`.
    #[error("nfc.max_retry_ms ({max_ms}) is below nfc.first_retry_ms ({first_ms})")]
    NfcRetryOrder {
        /// `nfc.first_retry_ms`, in milliseconds.
        first_ms: u128,
        /// `nfc.max_retry_ms`, in milliseconds.
        max_ms: u128,
    },
}

/// The file's layout.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    usb: UsbSection,
    #[serde(default)]
    nfc: NfcSection,
    #[serde(default, rename = "virtual")]
    virtual_keys: VirtualSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsbSection {
    enabled: Option<bool>,
    open_window_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NfcSection {
    enabled: Option<bool>,
    first_retry_ms: Option<u64>,
    max_retry_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VirtualSection {
    dir: Option<PathBuf>,
}

impl UsbSection {
    fn into_config(self) -> Option<UsbConfig> {
        if self.enabled == Some(false) {
            return None;
        }
        let mut usb = UsbConfig::default();
        if let Some(ms) = self.open_window_ms {
            usb.open_window = Duration::from_millis(ms);
        }
        Some(usb)
    }
}

impl NfcSection {
    /// The settings of a disabled transport are not checked: they are not used.
    fn into_config(self) -> Result<Option<NfcConfig>, ConfigError> {
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let mut nfc = NfcConfig::default();
        if let Some(ms) = self.first_retry_ms {
            nfc.first_retry = Duration::from_millis(ms);
        }
        if let Some(ms) = self.max_retry_ms {
            nfc.max_retry = Duration::from_millis(ms);
        }
        if nfc.first_retry.is_zero() {
            return Err(ConfigError::ZeroNfcRetry);
        }
        if nfc.max_retry < nfc.first_retry {
            return Err(ConfigError::NfcRetryOrder {
                first_ms: nfc.first_retry.as_millis(),
                max_ms: nfc.max_retry.as_millis(),
            });
        }
        Ok(Some(nfc))
    }
}

impl Config {
    /// The settings in a configuration file's text, on top of the defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|error| parse_error(text, &error))?;
        Ok(Self {
            usb: file.usb.into_config(),
            nfc: file.nfc.into_config()?,
            virtual_keys: file.virtual_keys.dir.map(|dir| VirtualConfig { dir }),
            device: DeviceConfig::default(),
        })
    }

    /// Reads and parses the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }
}

/// The parser's error as one log-friendly line with its position (the parser's own display
/// spans several lines, with a drawing of the place).
fn parse_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().replace('\n', "; ");
    let (line, column) =
        error
            .span()
            .and_then(|span| text.get(..span.start))
            .map_or((0, 0), |before| {
                let line_start = before.rfind('\n').map_or(0, |at| at + 1);
                let column = before
                    .get(line_start..)
                    .map_or(0, |part| part.chars().count());
                (before.matches('\n').count() + 1, column + 1)
            });
    ConfigError::Parse {
        line,
        column,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = Config::from_toml("").unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.usb, Some(UsbConfig::default()));
        assert_eq!(config.nfc, Some(NfcConfig::default()));
        assert_eq!(config.virtual_keys, None);
    }

    #[test]
    fn every_key_is_read() {
        let config = Config::from_toml(
            r#"
            [usb]
            enabled = true
            open_window_ms = 500

            [nfc]
            first_retry_ms = 250
            max_retry_ms = 8000

            [virtual]
            dir = "/run/passkeyd/virtual"
            "#,
        )
        .unwrap();
        let usb = config.usb.unwrap();
        assert_eq!(usb.open_window, Duration::from_millis(500));
        assert_eq!(usb.sysfs_root, PathBuf::from("/sys"));
        let nfc = config.nfc.unwrap();
        assert_eq!(nfc.first_retry, Duration::from_millis(250));
        assert_eq!(nfc.max_retry, Duration::from_secs(8));
        assert_eq!(
            config.virtual_keys,
            Some(VirtualConfig {
                dir: PathBuf::from("/run/passkeyd/virtual")
            })
        );
    }

    #[test]
    fn transports_can_be_disabled() {
        let config = Config::from_toml(
            "[usb]\nenabled = false\n[nfc]\nenabled = false\nfirst_retry_ms = 0\n",
        )
        .unwrap();
        assert_eq!(config.usb, None);
        // A disabled transport's settings are not checked: they are not used.
        assert_eq!(config.nfc, None);
    }

    #[test]
    fn unknown_keys_and_sections_are_errors() {
        for text in [
            "[usb]\nenable = false\n",
            "[bluetooth]\nenabled = true\n",
            "log_level = \"debug\"\n",
            "[virtual]\ndirectory = \"/tmp\"\n",
        ] {
            let error = Config::from_toml(text).unwrap_err();
            assert!(
                matches!(error, ConfigError::Parse { .. }),
                "{text:?}: {error:?}"
            );
        }
    }

    #[test]
    fn parse_errors_are_one_line_with_the_position() {
        let error = Config::from_toml("# passkeyd\n[usb]\n  enable = false\n").unwrap_err();
        let ConfigError::Parse {
            line,
            column,
            message,
        } = &error
        else {
            panic!("expected Parse, got {error:?}");
        };
        assert_eq!((*line, *column), (3, 3));
        assert!(message.starts_with("unknown field `enable`"), "{message}");
        let shown = error.to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(
            shown.starts_with("invalid configuration at line 3, column 3: unknown field `enable`"),
            "{shown}"
        );
        // A position past non-ASCII text counts characters.
        let error = Config::from_toml("[virtual]\ndir = \"é\" x\n").unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::Parse {
                    line: 2,
                    column: 11,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn wrong_types_and_bad_syntax_are_errors() {
        for text in [
            "[usb]\nenabled = \"no\"\n",
            "[nfc]\nfirst_retry_ms = -1\n",
            "[nfc]\nmax_retry_ms = 1.5\n",
            "[virtual]\ndir = 3\n",
            "[usb\n",
            "usb = 1\n",
        ] {
            let error = Config::from_toml(text).unwrap_err();
            assert!(
                matches!(error, ConfigError::Parse { .. }),
                "{text:?}: {error:?}"
            );
        }
    }

    #[test]
    fn nfc_retry_bounds_are_checked() {
        assert!(matches!(
            Config::from_toml("[nfc]\nfirst_retry_ms = 0\n").unwrap_err(),
            ConfigError::ZeroNfcRetry
        ));
        assert!(matches!(
            Config::from_toml("[nfc]\nfirst_retry_ms = 2000\nmax_retry_ms = 1000\n").unwrap_err(),
            ConfigError::NfcRetryOrder {
                first_ms: 2000,
                max_ms: 1000
            }
        ));
        // Only the first pause given: it must not exceed the default maximum (60 s).
        assert!(matches!(
            Config::from_toml("[nfc]\nfirst_retry_ms = 61000\n").unwrap_err(),
            ConfigError::NfcRetryOrder {
                first_ms: 61000,
                max_ms: 60000
            }
        ));
    }

    #[test]
    fn load_reports_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let error = Config::load(&path).unwrap_err();
        let ConfigError::Read {
            path: named,
            source,
        } = error
        else {
            panic!("expected Read, got {error:?}");
        };
        assert_eq!(named, path);
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passkeyd.toml");
        std::fs::write(&path, "[usb]\nenabled = false\n").unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.usb, None);
        assert_eq!(config.nfc, Some(NfcConfig::default()));
    }
}
