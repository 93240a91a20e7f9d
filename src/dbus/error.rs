//! `org.passkeyd.Error.*` on the wire: one D-Bus error name per [`ErrorKind`], with a message
//! that never carries a secret.

use std::fmt;

use zbus::message::{Header, Message};
use zbus::names::ErrorName;

use super::args::InvalidArgument;
use crate::ceremony::{CeremonyError, ErrorKind};
use crate::device::DeviceError;
use crate::device::Unsupported;

/// A method's error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn not_authorized(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotAuthorized, message)
    }

    pub(crate) fn busy(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Busy, message)
    }

    /// The service is shutting down, or a part of it has ended.
    pub(crate) fn gone() -> Self {
        Self::new(ErrorKind::Cancelled, "the service is shutting down")
    }

    pub(crate) fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// A device-layer error of a direct call on a key (`Wink`, `PinRetries`).
    pub(crate) fn from_device(error: &DeviceError) -> Self {
        let kind = match error {
            DeviceError::DeviceRemoved => ErrorKind::DeviceRemoved,
            DeviceError::Timeout => ErrorKind::Timeout,
            DeviceError::Cancelled => ErrorKind::Cancelled,
            DeviceError::Busy => ErrorKind::Busy,
            DeviceError::Unsupported(Unsupported::Wink | Unsupported::Ctap2) => {
                ErrorKind::NotSupported
            }
            _ => ErrorKind::DeviceError,
        };
        Self::new(kind, describe(error))
    }
}

impl From<InvalidArgument> for Error {
    fn from(error: InvalidArgument) -> Self {
        Self::invalid(error.to_string())
    }
}

impl From<&CeremonyError> for Error {
    fn from(error: &CeremonyError) -> Self {
        Self::new(error.kind(), describe(error))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.dbus_name(), self.message)
    }
}

impl std::error::Error for Error {}

impl zbus::DBusError for Error {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name())?.build(&(self.message.as_str(),))
    }

    fn name(&self) -> ErrorName<'_> {
        ErrorName::from_static_str_unchecked(self.kind.dbus_name())
    }

    fn description(&self) -> Option<&str> {
        Some(&self.message)
    }
}

/// The error's text with its first cause (errors of this crate carry no secret).
pub(crate) fn describe(error: &dyn std::error::Error) -> String {
    match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::DBusError as _;

    #[test]
    fn every_kind_has_its_name() {
        for kind in ErrorKind::ALL {
            let error = Error::new(kind, "m");
            assert_eq!(error.name().as_str(), kind.dbus_name());
            assert!(error.name().as_str().starts_with("org.passkeyd.Error."));
            assert_eq!(error.description(), Some("m"));
        }
    }

    #[test]
    fn device_errors_map_to_kinds() {
        assert_eq!(
            Error::from_device(&DeviceError::Unsupported(Unsupported::Wink)).kind(),
            ErrorKind::NotSupported
        );
        assert_eq!(
            Error::from_device(&DeviceError::DeviceRemoved).kind(),
            ErrorKind::DeviceRemoved
        );
        assert_eq!(
            Error::from_device(&DeviceError::Busy).kind(),
            ErrorKind::Busy
        );
        assert_eq!(
            Error::from_device(&DeviceError::Timeout).kind(),
            ErrorKind::Timeout
        );
    }
}
