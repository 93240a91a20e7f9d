//! Secret hygiene checks shared by the tests: every log line of the process captured in
//! memory (`tracing` at TRACE for every target, and the `log` crate's records through
//! `tracing-log`), and the forms a secret could take in text: as it is, in hex, and in
//! base64 or base64url at any alignment inside a longer encoded string.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Every log line written since the process started (all tests of the binary share it).
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Capture {
    /// The process's capture, installed on first use as the global subscriber: every event
    /// and span (with their fields) of every target at TRACE, and every `log` record.
    pub fn global() -> Self {
        static CAPTURE: OnceLock<Capture> = OnceLock::new();
        CAPTURE
            .get_or_init(|| {
                let capture = Self::default();
                let subscriber = tracing_subscriber::fmt()
                    .with_writer(capture.clone())
                    .with_ansi(false)
                    .with_max_level(tracing::Level::TRACE)
                    .with_span_events(FmtSpan::NEW | FmtSpan::CLOSE)
                    .with_target(true)
                    .finish();
                tracing::subscriber::set_global_default(subscriber)
                    .expect("no other subscriber in this test binary");
                tracing_log::LogTracer::init().expect("no other logger in this test binary");
                capture
            })
            .clone()
    }

    /// The text captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// How many lines were captured so far.
    pub fn lines(&self) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|b| **b == b'\n')
            .count()
    }
}

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A secret under watch: its name (for failure messages) and every form to look for.
#[derive(Clone, Debug)]
pub struct Secret {
    pub name: String,
    pub needles: Vec<String>,
}

/// Shortest needle looked for: shorter substrings of encodings could match by chance.
const MIN_NEEDLE: usize = 6;

impl Secret {
    /// A secret string (a PIN): itself, hex of its UTF-8 bytes, their base64/base64url, and
    /// hex/base64 of LEFT(SHA-256(PIN), 16), the pinHash that CTAP's clientPIN encrypts.
    pub fn pin(name: &str, pin: &str) -> Self {
        let mut secret = Self::bytes(name, pin.as_bytes());
        secret.needles.insert(0, pin.to_owned());
        let hash = Sha256::digest(pin.as_bytes());
        secret.needles.extend(forms(&hash[..16]));
        secret.finish()
    }

    /// A bearer token (a compact JWT, or any opaque string): itself, its encoded forms, and
    /// the same for each of its segments but the header (shared by every token of an
    /// issuer, so not secret), raw and decoded.
    pub fn token(name: &str, token: &str) -> Self {
        let mut secret = Self::bytes(name, token.as_bytes());
        secret.needles.insert(0, token.to_owned());
        for segment in token.split('.').skip(1) {
            if segment.len() >= MIN_NEEDLE {
                secret.needles.push(segment.to_owned());
                secret.needles.extend(forms(segment.as_bytes()));
            }
            if let Ok(raw) = URL_SAFE_NO_PAD.decode(segment) {
                secret.needles.extend(forms(&raw));
            }
        }
        secret.finish()
    }

    fn bytes(name: &str, bytes: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            needles: forms(bytes),
        }
    }

    fn finish(mut self) -> Self {
        self.needles.retain(|n| n.len() >= MIN_NEEDLE);
        self.needles.sort();
        self.needles.dedup();
        self
    }

    /// The first form of this secret found in `text`, if any.
    pub fn find_in(&self, text: &str) -> Option<&str> {
        self.needles
            .iter()
            .find(|needle| text.contains(needle.as_str()))
            .map(String::as_str)
    }
}

/// Hex (lower and upper case) and base64 (standard and URL alphabet) of `bytes`; the base64
/// forms at each of the three alignments the bytes can have inside a longer encoded string,
/// as the characters that depend on these bytes only.
pub fn forms(bytes: &[u8]) -> Vec<String> {
    let mut out = vec![hex::encode(bytes), hex::encode_upper(bytes)];
    for offset in 0..3usize {
        let mut padded = vec![0u8; offset];
        padded.extend_from_slice(bytes);
        // Character i of the encoding covers bits [6i, 6i + 6); the secret's bits are
        // [8 offset, 8 (offset + len)).
        let start = (8 * offset).div_ceil(6);
        let end = 8 * (offset + bytes.len()) / 6;
        for encoded in [STANDARD.encode(&padded), URL_SAFE_NO_PAD.encode(&padded)] {
            if let Some(inner) = encoded.get(start..end) {
                out.push(inner.to_owned());
            }
        }
    }
    out
}

/// Fails naming the first secret found in `text`, with the surrounding text.
#[track_caller]
pub fn assert_clean(what: &str, text: &str, secrets: &[Secret]) {
    for secret in secrets {
        if let Some(needle) = secret.find_in(text) {
            let at = text.find(needle).unwrap_or(0);
            let context: String = text[at..].chars().take(needle.len() + 200).collect();
            let before: String = text[..at].chars().rev().take(200).collect();
            let before: String = before.chars().rev().collect();
            panic!(
                "{what} holds the {} (as {needle:?}): ...{before}{context}...",
                secret.name
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms_are_found_at_every_alignment() {
        let secret = Secret::pin("PIN", "Pin-7391-Qx");
        for prefix in ["", "a", "ab", "abc"] {
            let text = format!("{prefix}Pin-7391-Qx and more");
            let encoded = STANDARD.encode(text.as_bytes());
            assert!(secret.find_in(&encoded).is_some(), "{prefix:?} {encoded}");
            let encoded = URL_SAFE_NO_PAD.encode(text.as_bytes());
            assert!(secret.find_in(&encoded).is_some(), "{prefix:?} {encoded}");
            let hex = hex::encode(text.as_bytes());
            assert!(secret.find_in(&hex).is_some(), "{prefix:?} {hex}");
        }
        assert!(secret.find_in("Pin-7391-Qy").is_none());
    }
}
