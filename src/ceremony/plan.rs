//! From LoginID's creation options and a key's getInfo to an authenticatorMakeCredential
//! request: the part of a WebAuthn client's work that needs no IO.
//!
//! - [`Creation`]: what the RP asked for, checked and decoded once per ceremony (rp, user,
//!   algorithms, exclude list, resident key, user verification, attestation, extensions).
//! - [`KeyPlan`]: that request fitted to one key: algorithms it lists, extensions it
//!   supports, `rk`, the exclude list in batches of `maxCredentialCountInList`, and the user
//!   verification method from the decision table (platform checklist §5.6).

use ctap::command::get_info;
use ctap::command::make_credential::{
    self, CredProtect, Extensions, MakeCredential, Options, PinUvAuth,
    PublicKeyCredentialDescriptor, PublicKeyCredentialParameters, RelyingParty, User,
};
use ctap::cose::alg;
use ctap::webauthn::auth_data::MAX_CREDENTIAL_ID_LEN;
use serde_json::Value as Json;

use super::error::{CeremonyError, NotSupported};
use crate::loginid::dto::{
    AttestationConveyance, CreationOptions, ResidentKeyRequirement, UserVerificationRequirement,
};

/// Most exclude-list entries taken from the RP. LoginID lists a user's passkeys; a user with
/// more than this many is not a case for a kiosk, and the bound keeps a hostile answer from
/// costing thousands of key round trips.
pub const MAX_EXCLUDE_CREDENTIALS: usize = 256;

/// What the RP asked for, decoded from `registrationRequestOptions`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Creation {
    pub(super) rp: RelyingParty,
    pub(super) user: User,
    pub(super) challenge: Vec<u8>,
    /// In the RP's order of preference; only `public-key` entries.
    pub(super) algorithms: Vec<i64>,
    pub(super) exclude: Vec<Vec<u8>>,
    pub(super) resident_key: ResidentKeyRequirement,
    pub(super) user_verification: UserVerificationRequirement,
    pub(super) attestation: AttestationConveyance,
    pub(super) cred_protect: Option<CredProtect>,
    pub(super) enforce_cred_protect: bool,
    pub(super) hmac_secret: bool,
    pub(super) min_pin_length: bool,
}

/// Why creation options cannot be used.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// `user.id` is empty or longer than 64 bytes.
    #[error("user.id must be 1 to 64 bytes")]
    UserId,
    /// The challenge is shorter than 16 bytes (WebAuthn L3 §13.4.3).
    #[error("the challenge is shorter than 16 bytes")]
    Challenge,
    /// No `public-key` algorithm is offered.
    #[error("no public-key algorithm is offered")]
    NoAlgorithm,
    /// The makeCredential request built from the options breaks CTAP's rules.
    #[error("the options make an invalid makeCredential request: {0}")]
    Request(make_credential::RequestError),
}

impl Creation {
    /// Decodes the RP's options; `rp_id` is the RP ID already checked against the origin.
    pub(super) fn new(options: &CreationOptions, rp_id: String) -> Result<Self, OptionsError> {
        let user_id = options.user.id.0.clone();
        if user_id.is_empty() || user_id.len() > make_credential::MAX_USER_ID_LEN {
            return Err(OptionsError::UserId);
        }
        if options.challenge.0.len() < 16 {
            return Err(OptionsError::Challenge);
        }
        let mut algorithms: Vec<i64> = Vec::new();
        for param in &options.pub_key_cred_params {
            if param.type_ == "public-key" && !algorithms.contains(&param.alg) {
                algorithms.push(param.alg);
            }
        }
        if algorithms.is_empty() {
            return Err(OptionsError::NoAlgorithm);
        }
        let exclude = options
            .exclude_credentials
            .iter()
            .filter(|d| d.type_ == "public-key")
            .map(|d| d.id.0.clone())
            .filter(|id| (1..=MAX_CREDENTIAL_ID_LEN).contains(&id.len()))
            .take(MAX_EXCLUDE_CREDENTIALS)
            .collect();
        let selection = options.authenticator_selection.clone().unwrap_or_default();
        // WebAuthn L3 §5.4.4: residentKey wins; requireResidentKey only when it is absent.
        let resident_key = match selection.resident_key {
            Some(
                rk @ (ResidentKeyRequirement::Required
                | ResidentKeyRequirement::Preferred
                | ResidentKeyRequirement::Discouraged),
            ) => rk,
            _ if selection.require_resident_key == Some(true) => ResidentKeyRequirement::Required,
            _ => ResidentKeyRequirement::Discouraged,
        };
        // Unknown values are ignored, i.e. the default applies (WebAuthn L3 §5.4.6).
        let user_verification = match selection.user_verification {
            Some(
                uv @ (UserVerificationRequirement::Required
                | UserVerificationRequirement::Preferred
                | UserVerificationRequirement::Discouraged),
            ) => uv,
            _ => UserVerificationRequirement::Preferred,
        };
        let attestation = match options.attestation {
            Some(
                a @ (AttestationConveyance::None
                | AttestationConveyance::Indirect
                | AttestationConveyance::Direct),
            ) => a,
            // Enterprise attestation needs an allow-list this daemon does not have; it is
            // treated as direct (CTAP 2.2 §7.1).
            Some(AttestationConveyance::Enterprise) => AttestationConveyance::Direct,
            _ => AttestationConveyance::None,
        };
        let extensions = options.extensions.as_ref();
        let get = |name: &str| extensions.and_then(|e| e.get(name));
        // WebAuthn credProtect extension inputs (CTAP 2.2 §12.1.1).
        let cred_protect = get("credentialProtectionPolicy").and_then(|v| match v.as_str() {
            Some("userVerificationOptional") => Some(CredProtect::UserVerificationOptional),
            Some("userVerificationOptionalWithCredentialIDList") => {
                Some(CredProtect::UserVerificationOptionalWithCredentialIdList)
            }
            Some("userVerificationRequired") => Some(CredProtect::UserVerificationRequired),
            _ => None,
        });
        let enforce_cred_protect =
            get("enforceCredentialProtectionPolicy").and_then(Json::as_bool) == Some(true);
        Ok(Self {
            rp: RelyingParty {
                id: rp_id,
                name: Some(options.rp.name.clone()),
            },
            user: User {
                id: user_id,
                name: Some(options.user.name.clone()),
                display_name: Some(options.user.display_name.clone()),
            },
            challenge: options.challenge.0.clone(),
            algorithms,
            exclude,
            resident_key,
            user_verification,
            attestation,
            cred_protect,
            enforce_cred_protect,
            hmac_secret: get("hmacCreateSecret").and_then(Json::as_bool) == Some(true),
            min_pin_length: get("minPinLength").and_then(Json::as_bool) == Some(true),
        })
    }

    /// Whether the RP requires user verification.
    pub(super) fn uv_required(&self) -> bool {
        self.user_verification == UserVerificationRequirement::Required
    }

    /// Whether a key that only speaks U2F can serve this request (platform checklist §5.9):
    /// ES256 acceptable, no discoverable credential required, no user verification required.
    pub(super) fn u2f_possible(&self) -> bool {
        self.algorithms.contains(&alg::ES256)
            && self.resident_key != ResidentKeyRequirement::Required
            && !self.uv_required()
    }
}

/// How user verification is obtained for one makeCredential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum UvMethod {
    /// User presence only.
    None,
    /// The key's built-in UV: `options.uv = true`.
    BuiltIn,
    /// A pinUvAuthToken from the key's PIN.
    Pin,
    /// The key has no PIN yet: set one, then use it.
    NewPin,
}

/// The decision table of the platform checklist (§5.6), CTAP 2.2 §6.1.2 steps 4–6 and
/// WebAuthn L3 §6.3.2.
///
/// `rk`: whether a discoverable credential will be made (keys with a PIN or UV configured
/// always verify the user for those).
pub(super) fn uv_method(
    requirement: UserVerificationRequirement,
    info: &get_info::Response,
    rk: bool,
) -> Result<UvMethod, NotSupported> {
    let built_in = info.uv().is_on();
    let pin = info.client_pin();
    let protected = built_in || pin.is_on();
    let verify_with = |built_in: bool| {
        if built_in {
            UvMethod::BuiltIn
        } else {
            UvMethod::Pin
        }
    };
    if requirement == UserVerificationRequirement::Required || info.always_uv() {
        return if built_in {
            Ok(UvMethod::BuiltIn)
        } else if pin.is_on() {
            Ok(UvMethod::Pin)
        } else if pin.is_present() {
            Ok(UvMethod::NewPin)
        } else {
            Err(NotSupported::UserVerification)
        };
    }
    match requirement {
        UserVerificationRequirement::Discouraged => {
            // The key insists on UV when it is protected and either the credential is
            // discoverable or it does not offer makeCredUvNotRqd (CTAP 2.0 keys never do).
            if protected && (rk || !info.make_cred_uv_not_rqd()) {
                Ok(verify_with(built_in))
            } else {
                Ok(UvMethod::None)
            }
        }
        // Preferred (and unknown values, which default to it).
        _ => {
            if protected {
                Ok(verify_with(built_in))
            } else {
                Ok(UvMethod::None)
            }
        }
    }
}

/// The request fitted to one key.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct KeyPlan {
    pub(super) params: Vec<PublicKeyCredentialParameters>,
    pub(super) rk: bool,
    pub(super) extensions: Extensions,
    pub(super) uv: UvMethod,
    /// The exclude list in batches the key accepts; empty when there is none.
    pub(super) exclude_batches: Vec<Vec<PublicKeyCredentialDescriptor>>,
    /// Whether to ask the key for no attestation (CTAP 2.2 attestationFormatsPreference).
    pub(super) prefer_no_attestation: bool,
}

impl KeyPlan {
    /// Fits `creation` to the key described by `info`.
    pub(super) fn new(
        creation: &Creation,
        info: &get_info::Response,
    ) -> Result<Self, NotSupported> {
        // pubKeyCredParams filtered by the key's algorithms (CTAP 2.2 §6.4 0x0A); a key that
        // lists none gets the RP's list and picks itself.
        let params: Vec<_> = creation
            .algorithms
            .iter()
            .copied()
            .filter(|&a| info.supports_algorithm(a) != Some(false))
            .map(PublicKeyCredentialParameters::public_key)
            .collect();
        if params.is_empty() {
            return Err(NotSupported::Algorithm);
        }
        let rk = match creation.resident_key {
            ResidentKeyRequirement::Required if !info.rk() => {
                return Err(NotSupported::ResidentKey);
            }
            ResidentKeyRequirement::Required => true,
            // Preferred: a discoverable credential when the key can store one (WebAuthn L3
            // §6.3.2 step 3).
            ResidentKeyRequirement::Preferred => info.rk(),
            _ => false,
        };
        let mut extensions = Extensions::default();
        if let Some(policy) = creation.cred_protect {
            if info.supports_extension(make_credential::extension::CRED_PROTECT) {
                extensions.cred_protect = Some(policy);
            } else if creation.enforce_cred_protect
                && policy != CredProtect::UserVerificationOptional
            {
                return Err(NotSupported::CredProtect);
            }
        }
        extensions.hmac_secret = creation.hmac_secret
            && info.supports_extension(make_credential::extension::HMAC_SECRET);
        extensions.min_pin_length = creation.min_pin_length
            && info.supports_extension(make_credential::extension::MIN_PIN_LENGTH);
        let uv = uv_method(creation.user_verification, info, rk)?;
        Ok(Self {
            params,
            rk,
            extensions,
            uv,
            exclude_batches: exclude_batches(&creation.exclude, info),
            prefer_no_attestation: creation.attestation == AttestationConveyance::None
                && info
                    .attestation_formats
                    .as_ref()
                    .is_some_and(|formats| formats.iter().any(|f| f == "none")),
        })
    }

    /// The makeCredential request with `exclude` as excludeList and `auth` as
    /// pinUvAuthParam (or `options.uv` for built-in UV).
    pub(super) fn request(
        &self,
        creation: &Creation,
        client_data_hash: [u8; 32],
        exclude: &[PublicKeyCredentialDescriptor],
        auth: Option<PinUvAuth>,
    ) -> Result<MakeCredential, CeremonyError> {
        let mut request = make_credential::Request::new(
            client_data_hash,
            creation.rp.clone(),
            creation.user.clone(),
            self.params.clone(),
        );
        request.exclude_list = exclude.to_vec();
        request.extensions = self.extensions.clone();
        request.options = Options {
            rk: self.rk.then_some(true),
            // `up` is left out: true is the default, and some keys refuse the member.
            up: None,
            uv: (self.uv == UvMethod::BuiltIn && auth.is_none()).then_some(true),
        };
        request.pin_uv_auth = auth;
        if self.prefer_no_attestation {
            request.attestation_formats_preference = vec!["none".to_owned()];
        }
        MakeCredential::new(request)
            .map_err(|error| CeremonyError::BadOptions(OptionsError::Request(error)))
    }
}

/// The exclude list in batches of `maxCredentialCountInList` (CTAP 2.2 §6.4 0x07), without
/// ids longer than the key's `maxCredentialIdLength` (0x08), which cannot be its own. A key
/// that states no limit gets the list in one batch.
pub(super) fn exclude_batches(
    exclude: &[Vec<u8>],
    info: &get_info::Response,
) -> Vec<Vec<PublicKeyCredentialDescriptor>> {
    let max_id = info
        .max_credential_id_length
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(MAX_CREDENTIAL_ID_LEN);
    let ids: Vec<_> = exclude
        .iter()
        .filter(|id| id.len() <= max_id)
        .map(|id| PublicKeyCredentialDescriptor::public_key(id.clone()))
        .collect();
    let batch = info
        .max_credential_count_in_list
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .unwrap_or(ids.len().max(1));
    ids.chunks(batch).map(<[_]>::to_vec).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::loginid::Base64Bytes;
    use crate::loginid::dto::{
        AuthenticatorSelection, CredentialDescriptor, PubKeyCredParam, RelyingParty as RpDto,
        UserEntity,
    };

    /// A getInfo answer from CBOR diagnostic pieces: versions, options, and extra members.
    fn info(versions: &[&str], options: &[(&str, bool)]) -> get_info::Response {
        use ctap::cbor::Value;
        let map = Value::Map(vec![
            (
                Value::from(1),
                Value::Array(versions.iter().map(|v| Value::from(*v)).collect()),
            ),
            (
                Value::from(2),
                Value::Array(vec![Value::from("credProtect"), Value::from("hmac-secret")]),
            ),
            (Value::from(3), Value::Bytes(vec![0; 16])),
            (
                Value::from(4),
                Value::Map(
                    options
                        .iter()
                        .map(|(k, v)| (Value::from(*k), Value::Bool(*v)))
                        .collect(),
                ),
            ),
            (
                Value::from(6),
                Value::Array(vec![Value::from(2), Value::from(1)]),
            ),
            (Value::from(7), Value::from(3)),
            (Value::from(8), Value::from(64)),
            (
                Value::from(0x0A),
                Value::Array(vec![Value::Map(vec![
                    (Value::from("alg"), Value::from(-7)),
                    (Value::from("type"), Value::from("public-key")),
                ])]),
            ),
        ]);
        get_info::Response::from_cbor(&ctap::cbor::to_canonical_vec(&map).unwrap()).unwrap()
    }

    pub(in crate::ceremony) fn options() -> CreationOptions {
        CreationOptions {
            rp: RpDto {
                id: Some("example.com".into()),
                name: "Example".into(),
            },
            user: UserEntity {
                id: Base64Bytes(vec![7; 16]),
                name: "alice".into(),
                display_name: "Alice".into(),
            },
            challenge: Base64Bytes(vec![1; 32]),
            pub_key_cred_params: vec![
                PubKeyCredParam {
                    type_: "public-key".into(),
                    alg: -7,
                },
                PubKeyCredParam {
                    type_: "public-key".into(),
                    alg: -257,
                },
            ],
            timeout: Some(60_000),
            attestation: Some(AttestationConveyance::Direct),
            authenticator_selection: Some(AuthenticatorSelection {
                authenticator_attachment: None,
                require_resident_key: Some(true),
                resident_key: None,
                user_verification: Some(Required),
            }),
            exclude_credentials: Vec::new(),
            extensions: None,
        }
    }

    use UserVerificationRequirement::{Discouraged, Preferred, Required};

    #[test]
    fn uv_decision_table() {
        let no_pin = info(&["FIDO_2_1"], &[("clientPin", false), ("rk", true)]);
        let pin = info(&["FIDO_2_1"], &[("clientPin", true), ("rk", true)]);
        let pin_uv_not_rqd = info(
            &["FIDO_2_1"],
            &[("clientPin", true), ("makeCredUvNotRqd", true)],
        );
        let built_in = info(&["FIDO_2_1"], &[("uv", true), ("clientPin", true)]);
        let nothing = info(&["FIDO_2_0"], &[]);
        let always = info(&["FIDO_2_1"], &[("clientPin", false), ("alwaysUv", true)]);

        // Required: built-in UV, else the PIN, else a new PIN, else impossible.
        assert_eq!(uv_method(Required, &built_in, false), Ok(UvMethod::BuiltIn));
        assert_eq!(uv_method(Required, &pin, false), Ok(UvMethod::Pin));
        assert_eq!(uv_method(Required, &no_pin, false), Ok(UvMethod::NewPin));
        assert_eq!(
            uv_method(Required, &nothing, false),
            Err(NotSupported::UserVerification)
        );
        // Preferred: whatever is configured, else presence only.
        assert_eq!(uv_method(Preferred, &pin, false), Ok(UvMethod::Pin));
        assert_eq!(
            uv_method(Preferred, &built_in, false),
            Ok(UvMethod::BuiltIn)
        );
        assert_eq!(uv_method(Preferred, &no_pin, true), Ok(UvMethod::None));
        assert_eq!(uv_method(Preferred, &nothing, false), Ok(UvMethod::None));
        // Discouraged: nothing, unless the key insists.
        assert_eq!(uv_method(Discouraged, &no_pin, true), Ok(UvMethod::None));
        assert_eq!(
            uv_method(Discouraged, &pin_uv_not_rqd, false),
            Ok(UvMethod::None)
        );
        assert_eq!(
            uv_method(Discouraged, &pin_uv_not_rqd, true),
            Ok(UvMethod::Pin)
        );
        assert_eq!(uv_method(Discouraged, &pin, false), Ok(UvMethod::Pin));
        assert_eq!(uv_method(Discouraged, &nothing, true), Ok(UvMethod::None));
        // alwaysUv turns every requirement into "required".
        assert_eq!(uv_method(Discouraged, &always, false), Ok(UvMethod::NewPin));
    }

    #[test]
    fn creation_options_are_decoded() {
        let creation = Creation::new(&options(), "example.com".into()).unwrap();
        assert_eq!(creation.rp.id, "example.com");
        assert_eq!(creation.rp.name.as_deref(), Some("Example"));
        assert_eq!(creation.user.id, vec![7; 16]);
        assert_eq!(creation.algorithms, [-7, -257]);
        assert_eq!(creation.resident_key, ResidentKeyRequirement::Required);
        assert!(creation.uv_required());
        assert!(!creation.u2f_possible());

        let mut o = options();
        o.authenticator_selection = Some(AuthenticatorSelection {
            resident_key: Some(ResidentKeyRequirement::Discouraged),
            require_resident_key: Some(true),
            user_verification: Some(UserVerificationRequirement::Unknown),
            ..AuthenticatorSelection::default()
        });
        o.attestation = Some(AttestationConveyance::Unknown);
        let c = Creation::new(&o, "example.com".into()).unwrap();
        assert_eq!(c.resident_key, ResidentKeyRequirement::Discouraged);
        assert_eq!(c.user_verification, Preferred);
        assert_eq!(c.attestation, AttestationConveyance::None);
        assert!(c.u2f_possible());
    }

    #[test]
    fn unusable_creation_options_are_refused() {
        let mut o = options();
        o.user.id = Base64Bytes(vec![1; 65]);
        assert_eq!(
            Creation::new(&o, "example.com".into()),
            Err(OptionsError::UserId)
        );
        let mut o = options();
        o.user.id = Base64Bytes(Vec::new());
        assert_eq!(
            Creation::new(&o, "example.com".into()),
            Err(OptionsError::UserId)
        );
        let mut o = options();
        o.challenge = Base64Bytes(vec![1; 15]);
        assert_eq!(
            Creation::new(&o, "example.com".into()),
            Err(OptionsError::Challenge)
        );
        let mut o = options();
        o.pub_key_cred_params = vec![PubKeyCredParam {
            type_: "password".into(),
            alg: -7,
        }];
        assert_eq!(
            Creation::new(&o, "example.com".into()),
            Err(OptionsError::NoAlgorithm)
        );
    }

    #[test]
    fn the_plan_fits_the_key() {
        let mut o = options();
        o.extensions = Some(
            serde_json::json!({
                "credentialProtectionPolicy": "userVerificationOptionalWithCredentialIDList",
                "hmacCreateSecret": true,
                "minPinLength": true,
            })
            .as_object()
            .unwrap()
            .clone(),
        );
        let creation = Creation::new(&o, "example.com".into()).unwrap();
        let key = info(&["FIDO_2_1"], &[("clientPin", true), ("rk", true)]);
        let plan = KeyPlan::new(&creation, &key).unwrap();
        // RS256 is not in the key's algorithms.
        assert_eq!(plan.params, [PublicKeyCredentialParameters::public_key(-7)]);
        assert!(plan.rk);
        assert_eq!(
            plan.extensions.cred_protect,
            Some(CredProtect::UserVerificationOptionalWithCredentialIdList)
        );
        assert!(plan.extensions.hmac_secret);
        // Not listed by the key: left out.
        assert!(!plan.extensions.min_pin_length);
        assert_eq!(plan.uv, UvMethod::Pin);

        let request = plan
            .request(
                &creation,
                [9; 32],
                &[],
                Some(PinUvAuth {
                    param: vec![1; 32],
                    protocol: 2,
                }),
            )
            .unwrap();
        assert_eq!(
            request.request().options,
            Options {
                rk: Some(true),
                up: None,
                uv: None
            }
        );

        let no_rk = info(&["FIDO_2_0"], &[("rk", false)]);
        assert_eq!(
            KeyPlan::new(&creation, &no_rk),
            Err(NotSupported::ResidentKey)
        );

        let mut o = options();
        o.pub_key_cred_params = vec![PubKeyCredParam {
            type_: "public-key".into(),
            alg: -257,
        }];
        let rs_only = Creation::new(&o, "example.com".into()).unwrap();
        assert_eq!(KeyPlan::new(&rs_only, &key), Err(NotSupported::Algorithm));

        let mut o = options();
        o.extensions = Some(
            serde_json::json!({
                "credentialProtectionPolicy": "userVerificationRequired",
                "enforceCredentialProtectionPolicy": true,
            })
            .as_object()
            .unwrap()
            .clone(),
        );
        let enforced = Creation::new(&o, "example.com".into()).unwrap();
        let without_cred_protect = {
            use ctap::cbor::Value;
            let map = Value::Map(vec![
                (Value::from(1), Value::Array(vec![Value::from("FIDO_2_0")])),
                (Value::from(3), Value::Bytes(vec![0; 16])),
                (
                    Value::from(4),
                    Value::Map(vec![
                        (Value::from("rk"), Value::Bool(true)),
                        (Value::from("clientPin"), Value::Bool(true)),
                    ]),
                ),
            ]);
            get_info::Response::from_cbor(&ctap::cbor::to_canonical_vec(&map).unwrap()).unwrap()
        };
        assert_eq!(
            KeyPlan::new(&enforced, &without_cred_protect),
            Err(NotSupported::CredProtect)
        );
    }

    #[test]
    fn built_in_uv_sends_the_uv_option() {
        let creation = Creation::new(&options(), "example.com".into()).unwrap();
        let key = info(&["FIDO_2_1"], &[("uv", true), ("rk", true)]);
        let plan = KeyPlan::new(&creation, &key).unwrap();
        assert_eq!(plan.uv, UvMethod::BuiltIn);
        let request = plan.request(&creation, [0; 32], &[], None).unwrap();
        assert_eq!(request.request().options.uv, Some(true));
        assert_eq!(request.request().pin_uv_auth, None);
    }

    #[test]
    fn exclude_lists_are_batched_by_the_keys_limit() {
        let key = info(&["FIDO_2_1"], &[]);
        // Limit 3 per list, ids up to 64 bytes.
        let ids: Vec<Vec<u8>> = (0..7u8).map(|i| vec![i; 16]).chain([vec![9; 65]]).collect();
        let batches = exclude_batches(&ids, &key);
        let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, [3, 3, 1]);
        assert_eq!(batches[2][0].id, vec![6; 16]);
        assert!(exclude_batches(&[], &key).is_empty());

        let no_limits = info(&["FIDO_2_0"], &[]);
        let no_limits = get_info::Response {
            max_credential_count_in_list: None,
            max_credential_id_length: None,
            ..no_limits
        };
        assert_eq!(
            exclude_batches(&ids, &no_limits)
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>(),
            [8]
        );

        let mut o = options();
        o.exclude_credentials = vec![
            CredentialDescriptor {
                id: Base64Bytes(vec![1; 16]),
                type_: "public-key".into(),
                transports: Some(vec!["usb".into()]),
            },
            CredentialDescriptor {
                id: Base64Bytes(vec![2; 16]),
                type_: "other".into(),
                transports: None,
            },
            CredentialDescriptor {
                id: Base64Bytes(Vec::new()),
                type_: "public-key".into(),
                transports: None,
            },
        ];
        let creation = Creation::new(&o, "example.com".into()).unwrap();
        assert_eq!(creation.exclude, [vec![1; 16]]);
    }
}
