//! CTAP status codes (CTAP 2.2 §8.2 "Status codes").
//!
//! Every CTAP2 response starts with one status byte; CTAPHID_ERROR frames and U2F reuse the
//! CTAP1 part of the same table. [`StatusCode`] is a total conversion from `u8`: every byte maps
//! to exactly one variant and back, so a key that answers with a code this crate has never
//! heard of is still reported faithfully instead of being folded into a generic error.

use core::fmt;

macro_rules! status_codes {
    ($($(#[$doc:meta])* $variant:ident = $value:literal => $spec:literal,)*) => {
        /// A CTAP status byte (CTAP 2.2 §8.2).
        ///
        /// Known codes are named after the spec; `0xE0..=0xEF` are extension-specific,
        /// `0xF0..=0xFF` vendor-specific, and any other unassigned byte is kept in
        /// [`StatusCode::Unassigned`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum StatusCode {
            $($(#[$doc])* $variant,)*
            /// `CTAP2_ERR_EXTENSION_FIRST..=CTAP2_ERR_EXTENSION_LAST` (0xE0–0xEF).
            Extension(u8),
            /// `CTAP2_ERR_VENDOR_FIRST..=CTAP2_ERR_VENDOR_LAST` (0xF0–0xFF).
            Vendor(u8),
            /// A byte the spec does not assign.
            Unassigned(u8),
        }

        impl From<u8> for StatusCode {
            fn from(byte: u8) -> Self {
                match byte {
                    $($value => Self::$variant,)*
                    0xE0..=0xEF => Self::Extension(byte),
                    0xF0..=0xFF => Self::Vendor(byte),
                    _ => Self::Unassigned(byte),
                }
            }
        }

        impl From<StatusCode> for u8 {
            fn from(code: StatusCode) -> Self {
                match code {
                    $(StatusCode::$variant => $value,)*
                    StatusCode::Extension(b) | StatusCode::Vendor(b) | StatusCode::Unassigned(b) => b,
                }
            }
        }

        impl StatusCode {
            /// The spec's name for this code, e.g. `CTAP2_ERR_PIN_INVALID`.
            pub fn spec_name(self) -> &'static str {
                match self {
                    $(Self::$variant => $spec,)*
                    Self::Extension(_) => "CTAP2_ERR_EXTENSION",
                    Self::Vendor(_) => "CTAP2_ERR_VENDOR",
                    Self::Unassigned(_) => "CTAP_ERR_UNASSIGNED",
                }
            }
        }
    };
}

status_codes! {
    /// Success (`CTAP1_ERR_SUCCESS` / `CTAP2_OK`).
    Ok = 0x00 => "CTAP2_OK",
    /// The command is not a valid CTAP command.
    InvalidCommand = 0x01 => "CTAP1_ERR_INVALID_COMMAND",
    /// The command included an invalid parameter.
    InvalidParameter = 0x02 => "CTAP1_ERR_INVALID_PARAMETER",
    /// Invalid message or item length.
    InvalidLength = 0x03 => "CTAP1_ERR_INVALID_LENGTH",
    /// Invalid message sequencing.
    InvalidSeq = 0x04 => "CTAP1_ERR_INVALID_SEQ",
    /// Message timed out.
    Timeout = 0x05 => "CTAP1_ERR_TIMEOUT",
    /// Channel busy: another client is in a transaction.
    ChannelBusy = 0x06 => "CTAP1_ERR_CHANNEL_BUSY",
    /// Command requires a channel lock.
    LockRequired = 0x0A => "CTAP1_ERR_LOCK_REQUIRED",
    /// Command not allowed on this CID.
    InvalidChannel = 0x0B => "CTAP1_ERR_INVALID_CHANNEL",
    /// Invalid or unexpected CBOR type.
    CborUnexpectedType = 0x11 => "CTAP2_ERR_CBOR_UNEXPECTED_TYPE",
    /// Error when parsing CBOR.
    InvalidCbor = 0x12 => "CTAP2_ERR_INVALID_CBOR",
    /// A required parameter is missing.
    MissingParameter = 0x14 => "CTAP2_ERR_MISSING_PARAMETER",
    /// A limit for the number of items was exceeded.
    LimitExceeded = 0x15 => "CTAP2_ERR_LIMIT_EXCEEDED",
    /// Unsupported extension (CTAP 2.0; reserved since 2.1 but still sent by 2.0 keys).
    UnsupportedExtension = 0x16 => "CTAP2_ERR_UNSUPPORTED_EXTENSION",
    /// Fingerprint database is full.
    FpDatabaseFull = 0x17 => "CTAP2_ERR_FP_DATABASE_FULL",
    /// Large blob storage is full.
    LargeBlobStorageFull = 0x18 => "CTAP2_ERR_LARGE_BLOB_STORAGE_FULL",
    /// A credential on the exclude list lives on this authenticator.
    CredentialExcluded = 0x19 => "CTAP2_ERR_CREDENTIAL_EXCLUDED",
    /// Processing (lengthy operation is in progress).
    Processing = 0x21 => "CTAP2_ERR_PROCESSING",
    /// Credential not valid for the authenticator.
    InvalidCredential = 0x22 => "CTAP2_ERR_INVALID_CREDENTIAL",
    /// Authentication is waiting for user interaction.
    UserActionPending = 0x23 => "CTAP2_ERR_USER_ACTION_PENDING",
    /// Processing, lengthy operation is in progress.
    OperationPending = 0x24 => "CTAP2_ERR_OPERATION_PENDING",
    /// No request is pending.
    NoOperations = 0x25 => "CTAP2_ERR_NO_OPERATIONS",
    /// Authenticator does not support the requested algorithm.
    UnsupportedAlgorithm = 0x26 => "CTAP2_ERR_UNSUPPORTED_ALGORITHM",
    /// Not authorized for the requested operation (e.g. the user declined).
    OperationDenied = 0x27 => "CTAP2_ERR_OPERATION_DENIED",
    /// Internal key storage is full.
    KeyStoreFull = 0x28 => "CTAP2_ERR_KEY_STORE_FULL",
    /// No outstanding operations (CTAP 2.0).
    NotBusy = 0x29 => "CTAP2_ERR_NOT_BUSY",
    /// No outstanding operation to cancel (CTAP 2.0).
    NoOperationPending = 0x2A => "CTAP2_ERR_NO_OPERATION_PENDING",
    /// Unsupported option.
    UnsupportedOption = 0x2B => "CTAP2_ERR_UNSUPPORTED_OPTION",
    /// Not a valid option for the current operation.
    InvalidOption = 0x2C => "CTAP2_ERR_INVALID_OPTION",
    /// Pending keep-alive was cancelled.
    KeepaliveCancel = 0x2D => "CTAP2_ERR_KEEPALIVE_CANCEL",
    /// No valid credentials provided.
    NoCredentials = 0x2E => "CTAP2_ERR_NO_CREDENTIALS",
    /// A user action timeout occurred.
    UserActionTimeout = 0x2F => "CTAP2_ERR_USER_ACTION_TIMEOUT",
    /// Continuation command, such as authenticatorGetNextAssertion, not allowed.
    NotAllowed = 0x30 => "CTAP2_ERR_NOT_ALLOWED",
    /// PIN invalid.
    PinInvalid = 0x31 => "CTAP2_ERR_PIN_INVALID",
    /// PIN blocked: retries exhausted, only a reset recovers.
    PinBlocked = 0x32 => "CTAP2_ERR_PIN_BLOCKED",
    /// PIN authentication (pinUvAuthParam) verification failed.
    PinAuthInvalid = 0x33 => "CTAP2_ERR_PIN_AUTH_INVALID",
    /// PIN authentication blocked until the authenticator is power-cycled.
    PinAuthBlocked = 0x34 => "CTAP2_ERR_PIN_AUTH_BLOCKED",
    /// No PIN has been set.
    PinNotSet = 0x35 => "CTAP2_ERR_PIN_NOT_SET",
    /// A pinUvAuthToken is required for the selected operation (formerly PIN_REQUIRED).
    PuatRequired = 0x36 => "CTAP2_ERR_PUAT_REQUIRED",
    /// PIN policy violation (e.g. too short).
    PinPolicyViolation = 0x37 => "CTAP2_ERR_PIN_POLICY_VIOLATION",
    /// PIN token expired (CTAP 2.0; reserved since 2.1).
    PinTokenExpired = 0x38 => "CTAP2_ERR_PIN_TOKEN_EXPIRED",
    /// Authenticator cannot handle this request due to memory constraints.
    RequestTooLarge = 0x39 => "CTAP2_ERR_REQUEST_TOO_LARGE",
    /// The current operation has timed out.
    ActionTimeout = 0x3A => "CTAP2_ERR_ACTION_TIMEOUT",
    /// User presence is required for the requested operation.
    UpRequired = 0x3B => "CTAP2_ERR_UP_REQUIRED",
    /// Built-in user verification is disabled.
    UvBlocked = 0x3C => "CTAP2_ERR_UV_BLOCKED",
    /// A checksum did not match.
    IntegrityFailure = 0x3D => "CTAP2_ERR_INTEGRITY_FAILURE",
    /// The requested subcommand is invalid or not implemented.
    InvalidSubcommand = 0x3E => "CTAP2_ERR_INVALID_SUBCOMMAND",
    /// Built-in user verification was unsuccessful; the platform should retry.
    UvInvalid = 0x3F => "CTAP2_ERR_UV_INVALID",
    /// The permissions parameter contains an unauthorized permission.
    UnauthorizedPermission = 0x40 => "CTAP2_ERR_UNAUTHORIZED_PERMISSION",
    /// Other unspecified error.
    Other = 0x7F => "CTAP1_ERR_OTHER",
    /// CTAP 2 spec last error.
    SpecLast = 0xDF => "CTAP2_ERR_SPEC_LAST",
}

impl StatusCode {
    /// Whether this is `CTAP2_OK`.
    pub fn is_ok(self) -> bool {
        self == Self::Ok
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:02X})", self.spec_name(), u8::from(*self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_is_total_and_round_trips() {
        for byte in 0..=u8::MAX {
            let code = StatusCode::from(byte);
            assert_eq!(u8::from(code), byte, "{code}");
        }
    }

    #[test]
    fn ranges_are_classified() {
        assert_eq!(StatusCode::from(0xE3), StatusCode::Extension(0xE3));
        assert_eq!(StatusCode::from(0xF0), StatusCode::Vendor(0xF0));
        assert_eq!(StatusCode::from(0xFF), StatusCode::Vendor(0xFF));
        assert_eq!(StatusCode::from(0x13), StatusCode::Unassigned(0x13));
        assert_eq!(StatusCode::from(0x41), StatusCode::Unassigned(0x41));
    }

    #[test]
    fn names_follow_the_spec() {
        assert_eq!(StatusCode::from(0x31), StatusCode::PinInvalid);
        assert_eq!(StatusCode::from(0x36), StatusCode::PuatRequired);
        assert_eq!(StatusCode::from(0x19), StatusCode::CredentialExcluded);
        assert_eq!(
            StatusCode::from(0x2D).to_string(),
            "CTAP2_ERR_KEEPALIVE_CANCEL (0x2D)"
        );
        assert!(StatusCode::from(0).is_ok());
    }
}
