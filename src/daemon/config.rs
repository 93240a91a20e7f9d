//! The daemon's settings and its configuration file.
//!
//! The file is TOML. `[loginid]` names the LoginID application and is required; every other
//! key is optional and keeps its default when missing. Unknown sections and keys are errors,
//! so that a typo does not silently leave a transport enabled or a caller allowed.
//!
//! ```toml
//! [loginid]
//! base_url = "https://<app>.api.loginid.io"   # required
//! app_id = "<app id>"                         # required
//! origin = "https://kiosk.example.com"        # required: one of the app's allowed origins
//! allow_insecure_loopback = false   # http:// only to 127.0.0.0/8, ::1 and localhost
//! verify_token = true               # check LoginID's token against the app's JWKS
//!
//! [transports]
//! usb = true                        # hidraw keys
//! nfc = true                        # PC/SC readers through pcscd
//! virtual_dir = "/run/passkeyd/virtual"   # virtual keys' sockets; absent: none
//! usb_open_window_ms = 2000         # after a hotplug add, how long opening is retried
//! nfc_first_retry_ms = 1000         # pcscd does not answer: first pause ...
//! nfc_max_retry_ms = 60000          # ... doubling up to this
//!
//! [access]
//! allowed_users = ["kiosk"]         # user names or numeric uids (root always may)
//! allowed_groups = ["passkeyd"]     # group names or numeric gids
//! polkit = false                    # also check org.passkeyd.create-passkey with polkit
//! max_ceremonies_per_caller = 2
//! max_ceremonies = 16
//!
//! [timeouts]
//! ceremony_default_s = 300          # when neither the caller nor LoginID gives one
//! ceremony_min_s = 10               # callers' and LoginID's timeouts are clamped to
//! ceremony_max_s = 600              # ... this range
//! complete_grace_s = 30             # reg/complete's least time once the passkey exists
//! ```
//!
//! Parsing ([`Config::from_toml`]) is pure; user and group names are looked up in the
//! system's databases by [`AccessConfig::resolve`] when the daemon starts.

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use url::Url;

use crate::ceremony::CeremonyConfig;
use crate::device::DeviceConfig;
use crate::loginid::LoginIdConfig;
use crate::transport::{nfc::NfcConfig, usb::UsbConfig, virt::VirtualConfig};

/// Where `passkeyd` looks for its configuration file when none is named.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/passkeyd/config.toml";

/// Everything the daemon runs with.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// USB HID keys (hidraw); `None` disables the transport.
    pub usb: Option<UsbConfig>,
    /// NFC keys through pcscd; `None` disables the transport.
    pub nfc: Option<NfcConfig>,
    /// Virtual keys (a socket directory); `None` (the default) disables the transport.
    pub virtual_keys: Option<VirtualConfig>,
    /// Deadlines and retries of the device layer.
    pub device: DeviceConfig,
    /// The LoginID application.
    pub loginid: LoginIdConfig,
    /// The ceremonies: origin, timeouts.
    pub ceremony: CeremonyConfig,
    /// Who may use the service, and how much.
    pub access: AccessConfig,
}

/// A user or group as the file names it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Principal {
    /// A numeric id.
    Id(u32),
    /// A name, looked up when the daemon starts.
    Name(String),
}

/// The `[access]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessConfig {
    /// Users allowed to call the service (root and the daemon's own user always are).
    pub allowed_users: Vec<Principal>,
    /// Groups whose members are allowed to call the service.
    pub allowed_groups: Vec<Principal>,
    /// Also ask polkit (`org.passkeyd.create-passkey`) before a ceremony starts.
    pub polkit: bool,
    /// Running ceremonies one caller may have.
    pub max_ceremonies_per_caller: usize,
    /// Running ceremonies in all.
    pub max_ceremonies: usize,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            polkit: false,
            max_ceremonies_per_caller: 2,
            max_ceremonies: 16,
        }
    }
}

/// `[access]` with names resolved to ids.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvedAccess {
    /// Allowed uids.
    pub uids: Vec<u32>,
    /// Allowed gids.
    pub gids: Vec<u32>,
}

impl AccessConfig {
    /// Looks the names up in the user and group databases (NSS). A name that does not exist
    /// is an error: a kiosk user that was renamed must not silently lose or gain access.
    pub fn resolve(&self) -> Result<ResolvedAccess, ConfigError> {
        let uids = self
            .allowed_users
            .iter()
            .map(|user| match user {
                Principal::Id(id) => Ok(*id),
                Principal::Name(name) => uzers::get_user_by_name(name)
                    .map(|user| user.uid())
                    .ok_or_else(|| ConfigError::UnknownUser(name.clone())),
            })
            .collect::<Result<_, _>>()?;
        let gids = self
            .allowed_groups
            .iter()
            .map(|group| match group {
                Principal::Id(id) => Ok(*id),
                Principal::Name(name) => uzers::get_group_by_name(name)
                    .map(|group| group.gid())
                    .ok_or_else(|| ConfigError::UnknownGroup(name.clone())),
            })
            .collect::<Result<_, _>>()?;
        Ok(ResolvedAccess { uids, gids })
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
    /// The file is not valid TOML, misses a required key, has an unknown key, or a value of
    /// the wrong type.
    #[error("invalid configuration at line {line}, column {column}: {message}")]
    Parse {
        /// Where (1-based; 0 when the parser gave no position).
        line: usize,
        /// Where in the line, in characters (1-based; 0 without a position).
        column: usize,
        /// What is wrong, on one line.
        message: String,
    },
    /// A value is out of its range.
    #[error("{key}: {problem}")]
    Invalid {
        /// The key, `section.name`.
        key: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// `nfc_max_retry_ms` is below `nfc_first_retry_ms`.
    #[error(
        "transports.nfc_max_retry_ms ({max_ms}) is below transports.nfc_first_retry_ms ({first_ms})"
    )]
    NfcRetryOrder {
        /// `nfc_first_retry_ms`.
        first_ms: u64,
        /// `nfc_max_retry_ms`.
        max_ms: u64,
    },
    /// The ceremony timeouts are not ordered `min ≤ default ≤ max`.
    #[error(
        "timeouts: ceremony_min_s ({min}) ≤ ceremony_default_s ({default}) ≤ ceremony_max_s ({max}) does not hold"
    )]
    TimeoutOrder {
        /// `ceremony_min_s`.
        min: u64,
        /// `ceremony_default_s`.
        default: u64,
        /// `ceremony_max_s`.
        max: u64,
    },
    /// An allowed user does not exist.
    #[error("access.allowed_users: no user named {0:?}")]
    UnknownUser(String),
    /// An allowed group does not exist.
    #[error("access.allowed_groups: no group named {0:?}")]
    UnknownGroup(String),
}

/// The file's layout.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    loginid: LoginIdSection,
    #[serde(default)]
    transports: TransportsSection,
    #[serde(default)]
    access: AccessSection,
    #[serde(default)]
    timeouts: TimeoutsSection,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginIdSection {
    base_url: Url,
    app_id: String,
    origin: Url,
    #[serde(default)]
    allow_insecure_loopback: bool,
    #[serde(default = "yes")]
    verify_token: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct TransportsSection {
    usb: bool,
    nfc: bool,
    virtual_dir: Option<PathBuf>,
    usb_open_window_ms: u64,
    nfc_first_retry_ms: u64,
    nfc_max_retry_ms: u64,
}

impl Default for TransportsSection {
    fn default() -> Self {
        let usb = UsbConfig::default();
        let nfc = NfcConfig::default();
        Self {
            usb: true,
            nfc: true,
            virtual_dir: None,
            usb_open_window_ms: millis(usb.open_window),
            nfc_first_retry_ms: millis(nfc.first_retry),
            nfc_max_retry_ms: millis(nfc.max_retry),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AccessSection {
    allowed_users: Vec<Principal>,
    allowed_groups: Vec<Principal>,
    polkit: bool,
    max_ceremonies_per_caller: usize,
    max_ceremonies: usize,
}

impl Default for AccessSection {
    fn default() -> Self {
        let access = AccessConfig::default();
        Self {
            allowed_users: access.allowed_users,
            allowed_groups: access.allowed_groups,
            polkit: access.polkit,
            max_ceremonies_per_caller: access.max_ceremonies_per_caller,
            max_ceremonies: access.max_ceremonies,
        }
    }
}

/// Missing values keep [`CeremonyConfig::new`]'s defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsSection {
    ceremony_default_s: Option<u64>,
    ceremony_min_s: Option<u64>,
    ceremony_max_s: Option<u64>,
    complete_grace_s: Option<u64>,
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The longest timeout accepted anywhere in the file: a day. Larger values are typos, and
/// would overflow deadline arithmetic.
const MAX_SECONDS: u64 = 86_400;

fn positive(key: &'static str, value: u64, max: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        Err(ConfigError::Invalid {
            key,
            problem: "must be at least 1",
        })
    } else if value > max {
        Err(ConfigError::Invalid {
            key,
            problem: "is larger than a day",
        })
    } else {
        Ok(value)
    }
}

impl TransportsSection {
    fn apply(self, config: &mut Config) -> Result<(), ConfigError> {
        const MAX_MS: u64 = MAX_SECONDS * 1000;
        let open_window = positive(
            "transports.usb_open_window_ms",
            self.usb_open_window_ms,
            MAX_MS,
        )?;
        let first = positive(
            "transports.nfc_first_retry_ms",
            self.nfc_first_retry_ms,
            MAX_MS,
        )?;
        let max = positive("transports.nfc_max_retry_ms", self.nfc_max_retry_ms, MAX_MS)?;
        if max < first {
            return Err(ConfigError::NfcRetryOrder {
                first_ms: first,
                max_ms: max,
            });
        }
        config.usb = self.usb.then(|| UsbConfig {
            open_window: Duration::from_millis(open_window),
            ..UsbConfig::default()
        });
        config.nfc = self.nfc.then(|| NfcConfig {
            first_retry: Duration::from_millis(first),
            max_retry: Duration::from_millis(max),
        });
        config.virtual_keys = self.virtual_dir.map(|dir| VirtualConfig { dir });
        Ok(())
    }
}

impl Config {
    /// The settings in a configuration file's text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: File = toml::from_str(text).map_err(|error| parse_error(text, &error))?;
        let File {
            loginid,
            transports,
            access,
            timeouts,
        } = file;

        if loginid.app_id.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "loginid.app_id",
                problem: "is empty",
            });
        }
        let mut loginid_config = LoginIdConfig::new(loginid.base_url, loginid.app_id);
        loginid_config.allow_http_loopback = loginid.allow_insecure_loopback;

        let mut ceremony = CeremonyConfig::new(loginid.origin);
        ceremony.allow_loopback_origin = loginid.allow_insecure_loopback;
        ceremony.verify_token = loginid.verify_token;
        let seconds = |key, value: Option<u64>, default: Duration| {
            positive(key, value.unwrap_or(default.as_secs()), MAX_SECONDS)
        };
        let min = seconds(
            "timeouts.ceremony_min_s",
            timeouts.ceremony_min_s,
            ceremony.min_timeout,
        )?;
        let default = seconds(
            "timeouts.ceremony_default_s",
            timeouts.ceremony_default_s,
            ceremony.default_timeout,
        )?;
        let max = seconds(
            "timeouts.ceremony_max_s",
            timeouts.ceremony_max_s,
            ceremony.max_timeout,
        )?;
        if !(min <= default && default <= max) {
            return Err(ConfigError::TimeoutOrder { min, default, max });
        }
        let grace = seconds(
            "timeouts.complete_grace_s",
            timeouts.complete_grace_s,
            ceremony.complete_grace,
        )?;
        ceremony.min_timeout = Duration::from_secs(min);
        ceremony.default_timeout = Duration::from_secs(default);
        ceremony.max_timeout = Duration::from_secs(max);
        ceremony.complete_grace = Duration::from_secs(grace);

        if access.max_ceremonies_per_caller == 0 || access.max_ceremonies == 0 {
            return Err(ConfigError::Invalid {
                key: "access.max_ceremonies",
                problem: "limits must be at least 1",
            });
        }
        if access.max_ceremonies_per_caller > access.max_ceremonies {
            return Err(ConfigError::Invalid {
                key: "access.max_ceremonies_per_caller",
                problem: "is above access.max_ceremonies",
            });
        }

        let mut config = Self {
            usb: None,
            nfc: None,
            virtual_keys: None,
            device: DeviceConfig::default(),
            loginid: loginid_config,
            ceremony,
            access: AccessConfig {
                allowed_users: access.allowed_users,
                allowed_groups: access.allowed_groups,
                polkit: access.polkit,
                max_ceremonies_per_caller: access.max_ceremonies_per_caller,
                max_ceremonies: access.max_ceremonies,
            },
        };
        transports.apply(&mut config)?;
        Ok(config)
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
mod tests;
