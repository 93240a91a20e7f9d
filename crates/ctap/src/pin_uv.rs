//! PIN/UV auth protocols one and two, platform side (CTAP 2.2 §6.5).
//!
//! A PIN/UV auth protocol protects the PIN on its way to the authenticator and authenticates
//! later commands with a pinUvAuthToken. The platform's part (CTAP 2.2 §6.5.4, "PIN/UV Auth
//! Protocol Abstract Definition") goes like this:
//!
//! 1. authenticatorClientPIN getKeyAgreement returns the authenticator's P-256 key as a COSE
//!    key.
//! 2. [`encapsulate`] makes an ephemeral platform key pair, runs ECDH against the
//!    authenticator's key and derives a [`SharedSecret`]. The platform's COSE key goes into the
//!    request's `keyAgreement` (0x03) member.
//! 3. With the shared secret the platform builds setPIN ([`SharedSecret::set_pin`]),
//!    changePIN ([`SharedSecret::change_pin`]) or getPinToken /
//!    getPinUvAuthTokenUsing*WithPermissions ([`SharedSecret::pin_hash_enc`]) parameters, and
//!    decrypts the returned token with [`SharedSecret::decrypt_pin_uv_auth_token`].
//! 4. [`PinUvAuthToken::authenticate`] then yields the `pinUvAuthParam` of later commands, e.g.
//!    over the clientDataHash of authenticatorMakeCredential.
//!
//! The two protocols differ only in their primitives (CTAP 2.2 §6.5.6, §6.5.7):
//!
//! | | protocol one | protocol two |
//! |---|---|---|
//! | kdf(Z) | SHA-256(Z), one 32-byte key for AES and HMAC | HKDF-SHA-256 with a zero salt: 32-byte HMAC key ‖ 32-byte AES key |
//! | encrypt | AES-256-CBC, IV of zeros, no padding | AES-256-CBC, random IV prepended to the ciphertext |
//! | authenticate | first 16 bytes of HMAC-SHA-256 | all 32 bytes of HMAC-SHA-256 |
//! | pinUvAuthToken | 16 or 32 bytes | 32 bytes |
//!
//! Secrets (the ephemeral private key, the shared secret, PINs, tokens, decrypted plaintexts
//! and the encrypted PIN material) live in zeroizing buffers, and their `Debug` output is
//! redacted. The internal state of the SHA-256, HMAC and HKDF computations is not wiped: the
//! RustCrypto 0.10/0.12 hashes used here do not zeroize on drop. This module
//! draws no randomness of its own: callers pass a `CryptoRngCore`.

use core::fmt;

use aes::Aes256;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::CryptoRngCore;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::cose::{self, CoseKey};

/// The AES block size; every plaintext and ciphertext is a whole number of blocks.
const BLOCK_LEN: usize = 16;
/// The length of each AES-256 and HMAC-SHA-256 key derived from the ECDH result.
const KEY_LEN: usize = 32;
/// newPinEnc encrypts the PIN zero-padded to this length (CTAP 2.2 §6.5.5.5).
const PADDED_PIN_LEN: usize = 64;
/// pinHashEnc encrypts this many leading bytes of SHA-256(PIN) (CTAP 2.2 §6.5.5.6).
const PIN_HASH_LEN: usize = 16;
/// Protocol two's HKDF salt: 32 zero bytes (CTAP 2.2 §6.5.7, `kdf`).
const HKDF_SALT: [u8; KEY_LEN] = [0x00; KEY_LEN];
/// Protocol two's HKDF info for the HMAC key (CTAP 2.2 §6.5.7, `kdf`).
const HKDF_INFO_HMAC: &[u8] = b"CTAP2 HMAC key";
/// Protocol two's HKDF info for the AES key (CTAP 2.2 §6.5.7, `kdf`).
const HKDF_INFO_AES: &[u8] = b"CTAP2 AES key";
/// Input longer than this cannot normalize to a valid PIN; refusing it up front bounds the
/// allocation for normalization.
const PIN_INPUT_LIMIT: usize = 1024;

type Aes256CbcEnc = cbc::Encryptor<Aes256>;
type Aes256CbcDec = cbc::Decryptor<Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// Why a PIN/UV auth protocol operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A protocol number other than 1 or 2 (CTAP 2.2 §6.5.4).
    #[error("unsupported PIN/UV auth protocol {0}")]
    UnsupportedProtocol(u64),
    /// The authenticator's key-agreement key is not an EC2 (kty 2) key.
    #[error("authenticator key-agreement key is not an EC2 key")]
    PeerKeyType,
    /// The authenticator's key-agreement key is on a curve other than P-256 (crv 1).
    #[error("authenticator key-agreement key is on curve {0}, not P-256")]
    PeerKeyCurve(i64),
    /// A coordinate of the authenticator's key-agreement key is not 32 bytes long.
    #[error("authenticator key-agreement coordinates are {x} and {y} bytes, not 32")]
    PeerKeyCoordinateLength {
        /// Length of `x` (-2).
        x: usize,
        /// Length of `y` (-3).
        y: usize,
    },
    /// The authenticator's key-agreement point does not lie on P-256.
    #[error("authenticator key-agreement point is not on P-256")]
    PeerKeyNotOnCurve,
    /// A plaintext to encrypt is not a whole number of AES blocks (no padding is applied).
    #[error("plaintext of {0} bytes is not a multiple of 16")]
    PlaintextLength(usize),
    /// A ciphertext is not a whole number of AES blocks (after the IV, for protocol two).
    #[error("ciphertext of {0} bytes is not a multiple of 16")]
    CiphertextLength(usize),
    /// A protocol two ciphertext is too short to hold its 16-byte IV.
    #[error("protocol two ciphertext of {0} bytes is shorter than its 16-byte IV")]
    MissingIv(usize),
    /// A decrypted pinUvAuthToken has a length its protocol does not allow.
    #[error("pinUvAuthToken of {len} bytes is invalid for PIN/UV auth protocol {protocol}")]
    TokenLength {
        /// The protocol in use.
        protocol: PinUvAuthProtocol,
        /// The token's length in bytes.
        len: usize,
    },
    /// The PIN has fewer Unicode code points than the minimum PIN length (CTAP 2.2 §6.5.1).
    #[error("PIN has {code_points} code points, fewer than the minimum of {minimum}")]
    PinTooShort {
        /// Code points in the normalized PIN.
        code_points: usize,
        /// The minimum in force.
        minimum: usize,
    },
    /// The PIN's UTF-8 form is longer than 63 bytes (CTAP 2.2 §6.5.1).
    #[error("PIN is {bytes} bytes in UTF-8, more than the maximum of 63")]
    PinTooLong {
        /// Bytes in the normalized PIN's UTF-8 form (or in the input, if that was already
        /// far too long to normalize).
        bytes: usize,
    },
    /// The PIN contains U+0000, which the authenticator cannot tell from newPinEnc's padding.
    #[error("PIN contains U+0000")]
    PinContainsNul,
}

/// A PIN/UV auth protocol (CTAP 2.2 §6.5.4), numbered as in `pinUvAuthProtocol` and in
/// getInfo's `pinUvAuthProtocols` (0x06).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinUvAuthProtocol {
    /// PIN/UV auth protocol one (CTAP 2.2 §6.5.6), the CTAP 2.0 PIN protocol.
    One,
    /// PIN/UV auth protocol two (CTAP 2.2 §6.5.7), with HKDF and random IVs.
    Two,
}

impl PinUvAuthProtocol {
    /// The protocol's number on the wire: 1 or 2.
    pub const fn number(self) -> u8 {
        match self {
            Self::One => 0x01,
            Self::Two => 0x02,
        }
    }

    /// The length of the protocol's `authenticate` output, i.e. of a pinUvAuthParam: 16 bytes
    /// for protocol one, 32 for protocol two (CTAP 2.2 §6.5.6, §6.5.7).
    pub const fn pin_uv_auth_param_len(self) -> usize {
        match self {
            Self::One => 16,
            Self::Two => 32,
        }
    }

    /// The protocol's `authenticate(key, message)` (CTAP 2.2 §6.5.6, §6.5.7).
    ///
    /// Protocol one returns the first 16 bytes of HMAC-SHA-256(key, message). Protocol two
    /// keys HMAC-SHA-256 with the first 32 bytes of `key` (the HMAC half of a 64-byte shared
    /// secret; a pinUvAuthToken is exactly 32 bytes) and returns all 32 bytes.
    pub fn authenticate(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        let mut tag = self.mac(key, message).finalize().into_bytes().to_vec();
        tag.truncate(self.pin_uv_auth_param_len());
        tag
    }

    /// The protocol's `verify(key, message, signature)` (CTAP 2.2 §6.5.6, §6.5.7): whether
    /// `signature` equals `authenticate(key, message)`, compared in constant time.
    ///
    /// Authenticators run this; platforms need it only to stand in for one in tests.
    pub fn verify(self, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        signature.len() == self.pin_uv_auth_param_len()
            && self
                .mac(key, message)
                .verify_truncated_left(signature)
                .is_ok()
    }

    /// HMAC-SHA-256 over `message`, keyed as this protocol's `authenticate` prescribes.
    fn mac(self, key: &[u8], message: &[u8]) -> HmacSha256 {
        let key = match self {
            Self::One => key,
            // Protocol two: "If key is longer than 32 bytes, discard the excess."
            Self::Two => key.get(..KEY_LEN).unwrap_or(key),
        };
        let mut mac = hmac_sha256(key);
        mac.update(message);
        mac
    }
}

impl TryFrom<u64> for PinUvAuthProtocol {
    type Error = Error;

    fn try_from(number: u64) -> Result<Self, Error> {
        match number {
            0x01 => Ok(Self::One),
            0x02 => Ok(Self::Two),
            other => Err(Error::UnsupportedProtocol(other)),
        }
    }
}

impl From<PinUvAuthProtocol> for u64 {
    fn from(protocol: PinUvAuthProtocol) -> Self {
        Self::from(protocol.number())
    }
}

impl fmt::Display for PinUvAuthProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number())
    }
}

/// An HMAC-SHA-256 instance keyed with `key`.
#[allow(clippy::expect_used)]
fn hmac_sha256(key: &[u8]) -> HmacSha256 {
    // INVARIANT: HMAC is defined for keys of every length (RFC 2104 §2: longer keys are
    // hashed, shorter ones zero-padded), so `new_from_slice` has no length to reject.
    HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length")
}

/// The protocol's `encapsulate(peerCoseKey)` (CTAP 2.2 §6.5.6, §6.5.7) with a fresh platform
/// key pair drawn from `rng`.
///
/// Returns the platform's key-agreement key, `{1: 2, 3: -25, -1: 1, -2: x, -3: y}`, to send as
/// `keyAgreement` (0x03), and the shared secret. The ephemeral private key is zeroized before
/// this returns, which is the platform's half of the spec's `initialize`: every encapsulation
/// uses a new key pair.
///
/// `authenticator_key` is the `keyAgreement` (0x01) of the authenticator's getKeyAgreement
/// response. It must be an EC2 P-256 key whose point lies on the curve; its `alg` is not
/// checked, since the point alone determines the ECDH result.
pub fn encapsulate(
    protocol: PinUvAuthProtocol,
    authenticator_key: &CoseKey,
    rng: &mut impl CryptoRngCore,
) -> Result<(CoseKey, SharedSecret), Error> {
    // Validate the peer key first so that a hostile key costs no key generation.
    let peer = authenticator_public_key(authenticator_key)?;
    let platform_key = p256::SecretKey::random(rng);
    Ok(encapsulate_with(protocol, &peer, &platform_key))
}

/// [`encapsulate`] with a given platform private key instead of a fresh random one.
///
/// This exists for known-answer tests, which need a fixed platform key. Using one key for
/// more than one encapsulation defeats the protocol's forward secrecy: outside tests, use
/// [`encapsulate`].
pub fn encapsulate_with_platform_key(
    protocol: PinUvAuthProtocol,
    authenticator_key: &CoseKey,
    platform_key: &p256::SecretKey,
) -> Result<(CoseKey, SharedSecret), Error> {
    let peer = authenticator_public_key(authenticator_key)?;
    Ok(encapsulate_with(protocol, &peer, platform_key))
}

fn encapsulate_with(
    protocol: PinUvAuthProtocol,
    peer: &p256::PublicKey,
    platform_key: &p256::SecretKey,
) -> (CoseKey, SharedSecret) {
    // ecdh: Z is the big-endian x-coordinate of the shared point (CTAP 2.2 §6.5.6).
    // `diffie_hellman` returns it in a buffer that zeroizes itself on drop.
    let shared_point =
        p256::ecdh::diffie_hellman(platform_key.to_nonzero_scalar(), peer.as_affine());
    let secret = SharedSecret::derive(protocol, shared_point.raw_secret_bytes());
    let cose_key = CoseKey::from_p256(&platform_key.public_key(), cose::alg::ECDH_ES_HKDF_256);
    (cose_key, secret)
}

/// Checks that `key` is a usable P-256 key-agreement key and returns its point.
fn authenticator_public_key(key: &CoseKey) -> Result<p256::PublicKey, Error> {
    let CoseKey::Ec2 { crv, x, y, .. } = key else {
        return Err(Error::PeerKeyType);
    };
    if *crv != cose::curve::P256 {
        return Err(Error::PeerKeyCurve(*crv));
    }
    if x.len() != KEY_LEN || y.len() != KEY_LEN {
        return Err(Error::PeerKeyCoordinateLength {
            x: x.len(),
            y: y.len(),
        });
    }
    // The SEC1 decoding checks y² = x³ + ax + b; the identity has no affine coordinates, so
    // it cannot be expressed here at all.
    key.to_p256().map_err(|_| Error::PeerKeyNotOnCurve)
}

/// The shared secret of one PIN/UV auth protocol session: the result of `kdf(Z)`
/// (CTAP 2.2 §6.5.6, §6.5.7).
///
/// Zeroized on drop; its `Debug` output names the protocol only.
pub struct SharedSecret {
    protocol: PinUvAuthProtocol,
    /// Keys `authenticate`. For protocol one this is the same key as `aes_key`.
    hmac_key: Zeroizing<[u8; KEY_LEN]>,
    /// Keys `encrypt` and `decrypt`.
    aes_key: Zeroizing<[u8; KEY_LEN]>,
}

impl SharedSecret {
    /// The protocol's `kdf(Z)` (CTAP 2.2 §6.5.6, §6.5.7).
    fn derive(protocol: PinUvAuthProtocol, z: &[u8]) -> Self {
        match protocol {
            PinUvAuthProtocol::One => {
                let key = sha256(z);
                Self {
                    protocol,
                    hmac_key: key.clone(),
                    aes_key: key,
                }
            }
            PinUvAuthProtocol::Two => {
                let hkdf = Hkdf::<Sha256>::new(Some(&HKDF_SALT), z);
                Self {
                    protocol,
                    hmac_key: hkdf_expand(&hkdf, HKDF_INFO_HMAC),
                    aes_key: hkdf_expand(&hkdf, HKDF_INFO_AES),
                }
            }
        }
    }

    /// The protocol this secret belongs to.
    pub fn protocol(&self) -> PinUvAuthProtocol {
        self.protocol
    }

    /// The secret's bytes as the spec lays them out: 32 bytes for protocol one, and for
    /// protocol two the HMAC key followed by the AES key, 64 bytes (CTAP 2.2 §6.5.7).
    ///
    /// Nothing in the protocol needs the raw bytes; this is for known-answer tests.
    pub fn expose_secret(&self) -> Zeroizing<Vec<u8>> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(2 * KEY_LEN));
        bytes.extend_from_slice(&*self.hmac_key);
        if self.protocol == PinUvAuthProtocol::Two {
            bytes.extend_from_slice(&*self.aes_key);
        }
        bytes
    }

    /// The protocol's `encrypt(key, demPlaintext)` (CTAP 2.2 §6.5.6, §6.5.7).
    ///
    /// AES-256-CBC without padding, so `plaintext` must be a whole number of 16-byte blocks.
    /// Protocol one uses an all-zero IV; protocol two draws a random IV from `rng` and returns
    /// it in front of the ciphertext. Protocol one draws nothing from `rng`.
    pub fn encrypt(
        &self,
        plaintext: &[u8],
        rng: &mut impl CryptoRngCore,
    ) -> Result<Vec<u8>, Error> {
        if !plaintext.len().is_multiple_of(BLOCK_LEN) {
            return Err(Error::PlaintextLength(plaintext.len()));
        }
        let mut iv = [0x00; BLOCK_LEN];
        let mut out = Vec::with_capacity(BLOCK_LEN + plaintext.len());
        if self.protocol == PinUvAuthProtocol::Two {
            rng.fill_bytes(&mut iv);
            out.extend_from_slice(&iv);
        }
        let start = out.len();
        // The capacity covers IV and plaintext, so this does not reallocate and the plaintext
        // copy is overwritten by the in-place encryption below.
        out.extend_from_slice(plaintext);
        let buffer = out.get_mut(start..).unwrap_or_default();
        Aes256CbcEnc::new((&*self.aes_key).into(), (&iv).into())
            .encrypt_padded_mut::<NoPadding>(buffer, plaintext.len())
            .map_err(|_| Error::PlaintextLength(plaintext.len()))?;
        Ok(out)
    }

    /// The protocol's `decrypt(key, demCiphertext)` (CTAP 2.2 §6.5.6, §6.5.7).
    ///
    /// Protocol one decrypts with an all-zero IV; protocol two takes the IV from the first
    /// 16 bytes. What remains must be a whole number of blocks. The plaintext is returned in a
    /// zeroizing buffer since it is usually a token or an hmac-secret output.
    pub fn decrypt(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
        let (iv, body) = match self.protocol {
            PinUvAuthProtocol::One => (&[0x00; BLOCK_LEN], ciphertext),
            PinUvAuthProtocol::Two => ciphertext
                .split_first_chunk::<BLOCK_LEN>()
                .ok_or(Error::MissingIv(ciphertext.len()))?,
        };
        if !body.len().is_multiple_of(BLOCK_LEN) {
            return Err(Error::CiphertextLength(ciphertext.len()));
        }
        let mut plaintext = Zeroizing::new(body.to_vec());
        Aes256CbcDec::new((&*self.aes_key).into(), iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut plaintext)
            .map_err(|_| Error::CiphertextLength(ciphertext.len()))?;
        Ok(plaintext)
    }

    /// The protocol's `authenticate(sharedSecret, message)` (CTAP 2.2 §6.5.6, §6.5.7): 16 bytes
    /// for protocol one, 32 for protocol two (keyed with the HMAC half of the secret).
    pub fn authenticate(&self, message: &[u8]) -> Vec<u8> {
        self.protocol.authenticate(&*self.hmac_key, message)
    }

    /// The protocol's `verify(sharedSecret, message, signature)` (CTAP 2.2 §6.5.6, §6.5.7),
    /// in constant time. Authenticators run this; platforms use it to mock one in tests.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.protocol.verify(&*self.hmac_key, message, signature)
    }

    /// `newPinEnc`: `encrypt(sharedSecret, PIN zero-padded to 64 bytes)` (CTAP 2.2 §6.5.5.5,
    /// §6.5.5.6).
    pub fn new_pin_enc(
        &self,
        pin: &Pin,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let mut padded = Zeroizing::new([0x00; PADDED_PIN_LEN]);
        // A `Pin` is at most 63 bytes, so at least one zero byte always follows it.
        padded
            .get_mut(..pin.as_bytes().len())
            .ok_or(Error::PinTooLong {
                bytes: pin.as_bytes().len(),
            })?
            .copy_from_slice(pin.as_bytes());
        self.encrypt(&*padded, rng).map(Zeroizing::new)
    }

    /// `pinHashEnc`: `encrypt(sharedSecret, LEFT(SHA-256(PIN), 16))` (CTAP 2.2 §6.5.5.6,
    /// §6.5.5.7.1, §6.5.5.7.2), for changePIN, getPinToken and
    /// getPinUvAuthTokenUsingPinWithPermissions.
    pub fn pin_hash_enc(
        &self,
        pin: &Pin,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Zeroizing<Vec<u8>>, Error> {
        let digest = sha256(pin.as_bytes());
        self.encrypt(digest.get(..PIN_HASH_LEN).unwrap_or_default(), rng)
            .map(Zeroizing::new)
    }

    /// The parameters of setPIN (CTAP 2.2 §6.5.5.5): `newPinEnc` and
    /// `pinUvAuthParam = authenticate(sharedSecret, newPinEnc)`.
    pub fn set_pin(
        &self,
        new_pin: &Pin,
        rng: &mut impl CryptoRngCore,
    ) -> Result<SetPinParameters, Error> {
        let new_pin_enc = self.new_pin_enc(new_pin, rng)?;
        let pin_uv_auth_param = self.authenticate(&new_pin_enc);
        Ok(SetPinParameters {
            new_pin_enc,
            pin_uv_auth_param,
        })
    }

    /// The parameters of changePIN (CTAP 2.2 §6.5.5.6): `newPinEnc`, `pinHashEnc` of the
    /// current PIN and `pinUvAuthParam = authenticate(sharedSecret, newPinEnc ‖ pinHashEnc)`.
    ///
    /// newPinEnc is encrypted first, so with protocol two its IV is the first 16 bytes drawn
    /// from `rng` and pinHashEnc's IV the next 16.
    pub fn change_pin(
        &self,
        current_pin: &Pin,
        new_pin: &Pin,
        rng: &mut impl CryptoRngCore,
    ) -> Result<ChangePinParameters, Error> {
        let new_pin_enc = self.new_pin_enc(new_pin, rng)?;
        let pin_hash_enc = self.pin_hash_enc(current_pin, rng)?;
        let mut message =
            Zeroizing::new(Vec::with_capacity(new_pin_enc.len() + pin_hash_enc.len()));
        message.extend_from_slice(&new_pin_enc);
        message.extend_from_slice(&pin_hash_enc);
        let pin_uv_auth_param = self.authenticate(&message);
        Ok(ChangePinParameters {
            new_pin_enc,
            pin_hash_enc,
            pin_uv_auth_param,
        })
    }

    /// Decrypts the `pinUvAuthToken` (0x02) of a getPinToken or
    /// getPinUvAuthTokenUsing{Pin,Uv}WithPermissions response (CTAP 2.2 §6.5.5.7) and checks
    /// its length: 16 or 32 bytes for protocol one, 32 for protocol two (CTAP 2.2 §6.5.6,
    /// §6.5.7).
    pub fn decrypt_pin_uv_auth_token(&self, encrypted: &[u8]) -> Result<PinUvAuthToken, Error> {
        PinUvAuthToken::new(self.protocol, self.decrypt(encrypted)?)
    }
}

impl fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedSecret")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of `data`, written straight into a zeroizing buffer.
fn sha256(data: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut digest = Zeroizing::new([0x00; KEY_LEN]);
    Sha256::new()
        .chain_update(data)
        .finalize_into((&mut *digest).into());
    digest
}

/// HKDF-Expand of 32 bytes into a zeroizing buffer.
#[allow(clippy::expect_used)]
fn hkdf_expand(hkdf: &Hkdf<Sha256>, info: &[u8]) -> Zeroizing<[u8; KEY_LEN]> {
    let mut okm = Zeroizing::new([0x00; KEY_LEN]);
    // INVARIANT: HKDF-SHA-256 can expand up to 255 * 32 bytes (RFC 5869 §2.3); 32 is fine.
    hkdf.expand(info, &mut *okm)
        .expect("32 bytes is a valid HKDF-SHA-256 length");
    okm
}

/// The byte strings of a setPIN request (CTAP 2.2 §6.5.5.5). `newPinEnc` is the PIN under
/// the shared secret: wiped on drop and left out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SetPinParameters {
    /// `newPinEnc` (0x05).
    pub new_pin_enc: Zeroizing<Vec<u8>>,
    /// `pinUvAuthParam` (0x04).
    pub pin_uv_auth_param: Vec<u8>,
}

/// The byte strings of a changePIN request (CTAP 2.2 §6.5.5.6). The encrypted PIN material
/// is wiped on drop and left out of `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ChangePinParameters {
    /// `newPinEnc` (0x05).
    pub new_pin_enc: Zeroizing<Vec<u8>>,
    /// `pinHashEnc` (0x06) of the current PIN.
    pub pin_hash_enc: Zeroizing<Vec<u8>>,
    /// `pinUvAuthParam` (0x04).
    pub pin_uv_auth_param: Vec<u8>,
}

impl fmt::Debug for SetPinParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetPinParameters").finish_non_exhaustive()
    }
}

impl fmt::Debug for ChangePinParameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangePinParameters")
            .finish_non_exhaustive()
    }
}

/// A pinUvAuthToken as returned by the token-issuing clientPIN subcommands (CTAP 2.2
/// §6.5.5.7), length-checked for its protocol.
///
/// Zeroized on drop; its `Debug` output shows the protocol and length only.
#[derive(Clone)]
pub struct PinUvAuthToken {
    protocol: PinUvAuthProtocol,
    bytes: Zeroizing<Vec<u8>>,
}

impl PinUvAuthToken {
    /// Wraps a decrypted token, checking its length: 16 or 32 bytes for protocol one, 32 for
    /// protocol two (CTAP 2.2 §6.5.6, §6.5.7).
    pub fn new(protocol: PinUvAuthProtocol, bytes: Zeroizing<Vec<u8>>) -> Result<Self, Error> {
        let valid = match protocol {
            PinUvAuthProtocol::One => matches!(bytes.len(), 16 | 32),
            PinUvAuthProtocol::Two => bytes.len() == 32,
        };
        if valid {
            Ok(Self { protocol, bytes })
        } else {
            Err(Error::TokenLength {
                protocol,
                len: bytes.len(),
            })
        }
    }

    /// The protocol the token was obtained with.
    pub fn protocol(&self) -> PinUvAuthProtocol {
        self.protocol
    }

    /// `authenticate(pinUvAuthToken, message)`: the `pinUvAuthParam` of a command, e.g.
    /// authenticatorMakeCredential's (0x08), computed over its clientDataHash (CTAP 2.2 §6.1).
    /// 16 bytes for protocol one, 32 for protocol two.
    pub fn authenticate(&self, message: &[u8]) -> Vec<u8> {
        self.protocol.authenticate(&self.bytes, message)
    }

    /// The token's bytes, for known-answer tests and for handing to another process.
    pub fn expose_secret(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for PinUvAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinUvAuthToken")
            .field("protocol", &self.protocol)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}

/// A PIN that meets the composition requirements of CTAP 2.2 §6.5.1, in Unicode
/// Normalization Form C.
///
/// CTAP 2.2 §6.5.1 has the platform send the PIN as the UTF-8 form of NFC-normalized text,
/// at least 4 Unicode code points long (or the authenticator's `minPINLength`) and at most
/// 63 bytes. Normalizing makes the same PIN typed on different keyboards or systems produce
/// the same bytes. PINs containing U+0000 are refused as well: the authenticator strips the
/// zero padding of newPinEnc, so such a PIN could not be set as typed.
///
/// Held in a zeroizing buffer; `Debug` never shows it. The normalizer's own small internal
/// buffers are not zeroized.
pub struct Pin(Zeroizing<String>);

impl Pin {
    /// The minimum PIN length in code points when the authenticator reports none
    /// (CTAP 2.2 §6.5.1).
    pub const MIN_CODE_POINTS: usize = 4;
    /// The maximum length of a PIN's UTF-8 form (CTAP 2.2 §6.5.1).
    pub const MAX_BYTES: usize = 63;

    /// Normalizes and validates `pin` against the baseline minimum of 4 code points.
    ///
    /// Use this for a PIN the user enters to unlock the key (getPinToken, changePIN's current
    /// PIN); use [`Pin::with_min_length`] for a new PIN.
    pub fn new(pin: &str) -> Result<Self, Error> {
        Self::with_min_length(pin, Self::MIN_CODE_POINTS)
    }

    /// Normalizes and validates `pin` against a minimum of `min_pin_length` code points, the
    /// authenticator's getInfo `minPINLength` (0x0D). A minimum below 4 is raised to 4.
    pub fn with_min_length(pin: &str, min_pin_length: usize) -> Result<Self, Error> {
        if pin.len() > PIN_INPUT_LIMIT {
            return Err(Error::PinTooLong { bytes: pin.len() });
        }
        // NFC expands UTF-8 text by at most a factor of three (UAX #15, maximum expansion
        // factors), so the buffer never reallocates and leaves no unzeroized copy behind.
        let mut normalized = Zeroizing::new(String::with_capacity(3 * pin.len()));
        normalized.extend(pin.nfc());
        let minimum = min_pin_length.max(Self::MIN_CODE_POINTS);
        let code_points = normalized.chars().count();
        if code_points < minimum {
            return Err(Error::PinTooShort {
                code_points,
                minimum,
            });
        }
        if normalized.len() > Self::MAX_BYTES {
            return Err(Error::PinTooLong {
                bytes: normalized.len(),
            });
        }
        if normalized.contains('\0') {
            return Err(Error::PinContainsNul);
        }
        Ok(Self(normalized))
    }

    /// The normalized PIN's UTF-8 bytes, as encrypted into newPinEnc and hashed into
    /// pinHashEnc.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The normalized PIN's length in Unicode code points.
    pub fn code_points(&self) -> usize {
        self.0.chars().count()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(<redacted>)")
    }
}

#[cfg(test)]
mod tests;
