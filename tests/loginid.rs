//! The LoginID client against the local emulator: the whole ceremony, the authorization
//! rules, and a hostile or failing backend. Loopback traffic only.

// Helpers outside #[test] functions panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use loginid_emulator::soft_authenticator::{AttestationFormat, FLAG_UP};
use loginid_emulator::{BodyFault, Endpoint, Fault, FaultPlan};
use passkeyd::loginid::dto::{RegCompleteRequest, RegInitAction, UserVerificationRequirement};
use passkeyd::loginid::{
    ApiErrorCode, AuthorizationScheme, Error, LoginIdClient, Token, TokenError, TokenVerifier,
    USER_AGENT,
};
use support::{
    GENEROUS, ORIGIN, Rig, deadline, init_request, make_credential, make_credential_on_virtual_key,
};
use tokio::time::Instant;

fn fault(f: impl FnOnce(&mut Fault)) -> Fault {
    let mut fault = Fault::default();
    f(&mut fault);
    fault
}

fn api_error(result: Result<impl std::fmt::Debug, Error>) -> (u16, ApiErrorCode) {
    match result {
        Err(Error::Api(api)) => (api.status, api.code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// grant → reg/init → registration → reg/complete, returning the complete request too.
async fn register(rig: &Rig, username: &str) -> (RegCompleteRequest, Token) {
    let authz = rig.grant(username).await;
    let init = rig
        .client
        .reg_init(&init_request(username), Some(&authz), deadline())
        .await
        .unwrap();
    let request = RegCompleteRequest {
        creation_result: make_credential(&init.registration_request_options, ORIGIN, |_| {}),
        session: init.session,
        passkey_name: Some("Security key".to_owned()),
    };
    let done = rig.client.reg_complete(&request, deadline()).await.unwrap();
    (request, done.jwt_access)
}

#[tokio::test]
async fn full_ceremony_with_token_verified_two_ways() {
    let rig = Rig::start(|c| c.protected = true).await;
    let authz = rig.grant("alice@example.com").await;
    let init = rig
        .client
        .reg_init(&init_request("alice@example.com"), Some(&authz), deadline())
        .await
        .unwrap();
    assert_eq!(init.action, RegInitAction::Proceed);
    let options = &init.registration_request_options;
    assert_eq!(options.rp.id.as_deref(), Some("example.com"));
    assert_eq!(options.challenge.as_slice().len(), 32);
    assert_eq!(options.user.id.as_slice().len(), 16);
    assert_eq!(options.user.name, "alice@example.com");
    assert_eq!(
        options
            .pub_key_cred_params
            .iter()
            .map(|p| p.alg)
            .collect::<Vec<_>>(),
        [-7, -257]
    );
    let selection = options.authenticator_selection.as_ref().unwrap();
    assert_eq!(
        selection.user_verification,
        Some(UserVerificationRequirement::Required)
    );
    assert!(options.exclude_credentials.is_empty());

    // The virtual key runs the firmware for seconds: off the runtime's thread.
    let creation_result = tokio::task::spawn_blocking({
        let options = options.clone();
        move || make_credential_on_virtual_key(&options, ORIGIN)
    })
    .await
    .unwrap();
    let request = RegCompleteRequest {
        creation_result,
        session: init.session.clone(),
        passkey_name: None,
    };
    let done = rig.client.reg_complete(&request, deadline()).await.unwrap();
    assert!(done.user_id.is_some() && done.passkey_id.is_some() && done.device_id.is_some());

    let verifier = TokenVerifier::new(rig.client.clone());
    let claims = verifier
        .verify(&done.jwt_access, "alice@example.com")
        .await
        .unwrap();
    assert_eq!(claims.username, "alice@example.com");
    assert_eq!(claims.sub, done.user_id);
    assert_eq!(claims.cred_id, done.passkey_id);
    assert_eq!(claims.token_type.as_deref(), Some("jwtAccess"));
    assert_eq!(claims.rp_id.as_deref(), Some("example.com"));
    assert_eq!(claims.exp - claims.iat.unwrap(), 600);
    rig.client
        .verify_token(&rig.api_key, &done.jwt_access)
        .await
        .unwrap();

    // The same token for someone else is refused locally.
    let wrong_user = verifier.verify(&done.jwt_access, "bob@example.com").await;
    assert!(matches!(
        wrong_user,
        Err(Error::Token(TokenError::WrongUser))
    ));

    // The request log: one line per request, the client's User-Agent, and no secret at all.
    let lines = rig.log_lines().await;
    let paths: Vec<&str> = lines.iter().map(|l| l["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "/fido2/v2/mgmt/grant",
            "/fido2/v2/reg/init",
            "/fido2/v2/reg/complete",
            "/fido2/v2/.well-known/jwks.json",
            "/fido2/v2/mgmt/token/verify",
        ]
    );
    assert!(lines.iter().all(|l| l["userAgent"] == USER_AGENT));
    assert_eq!(lines[0]["authorization"]["scheme"], "basic");
    assert_eq!(lines[1]["authorization"]["scheme"], "raw");
    let text = rig.log_text().await;
    for secret in [
        authz.expose(),
        init.session.expose(),
        done.jwt_access.expose(),
        support::API_KEY,
    ] {
        assert!(!text.contains(secret));
        // Not even a recognizable piece of one.
        assert!(!text.contains(&secret[secret.len() - 12..]));
    }
}

#[tokio::test]
async fn bearer_scheme_and_second_passkey() {
    let rig = Rig::start_with(
        |_| {},
        |c| c.authorization_scheme = AuthorizationScheme::Bearer,
    )
    .await;
    // Unprotected application: the first passkey needs no token ...
    let init = rig
        .client
        .reg_init(&init_request("carol@example.com"), None, deadline())
        .await
        .unwrap();
    let first = RegCompleteRequest {
        creation_result: make_credential(&init.registration_request_options, ORIGIN, |_| {}),
        session: init.session,
        passkey_name: None,
    };
    rig.client.reg_complete(&first, deadline()).await.unwrap();
    // ... the second does.
    let refused = rig
        .client
        .reg_init(&init_request("carol@example.com"), None, deadline())
        .await;
    assert_eq!(api_error(refused), (401, ApiErrorCode::Unauthorized));
    let (second, _) = register(&rig, "carol@example.com").await;
    assert_ne!(
        second.creation_result.credential_id,
        first.creation_result.credential_id
    );
    assert!(
        rig.log_lines()
            .await
            .iter()
            .any(|l| l["authorization"]["scheme"] == "bearer")
    );
    // The second init listed the first credential for exclusion.
    let authz = rig.grant("carol@example.com").await;
    let third = rig
        .client
        .reg_init(&init_request("carol@example.com"), Some(&authz), deadline())
        .await
        .unwrap();
    let excluded: Vec<&[u8]> = third
        .registration_request_options
        .exclude_credentials
        .iter()
        .map(|c| c.id.as_slice())
        .collect();
    assert_eq!(excluded.len(), 2);
    assert!(excluded.contains(&first.creation_result.credential_id.as_slice()));
}

#[tokio::test]
async fn protected_mode_authorization_failures() {
    let rig = Rig::start(|c| c.protected = true).await;
    let request = init_request("dave@example.com");

    let missing = rig.client.reg_init(&request, None, deadline()).await;
    assert_eq!(api_error(missing), (401, ApiErrorCode::Unauthorized));

    let for_other = rig.grant("eve@example.com").await;
    let other = rig
        .client
        .reg_init(&request, Some(&for_other), deadline())
        .await;
    assert_eq!(api_error(other), (403, ApiErrorCode::Forbidden));

    let expired =
        Token::new(
            rig.emulator
                .mint_token("dave@example.com", &["reg:write"], -120, "authzToken"),
        );
    let expired = rig
        .client
        .reg_init(&request, Some(&expired), deadline())
        .await;
    assert_eq!(api_error(expired), (401, ApiErrorCode::Unauthorized));

    let unscoped = Token::new(rig.emulator.mint_token(
        "dave@example.com",
        &["passkey:read"],
        60,
        "authzToken",
    ));
    let unscoped = rig
        .client
        .reg_init(&request, Some(&unscoped), deadline())
        .await;
    assert_eq!(api_error(unscoped), (403, ApiErrorCode::Forbidden));

    let garbage = Token::new("not-a-jwt");
    let garbage = rig
        .client
        .reg_init(&request, Some(&garbage), deadline())
        .await;
    assert_eq!(api_error(garbage), (401, ApiErrorCode::Unauthorized));
}

#[tokio::test]
async fn wrong_origin_is_rejected() {
    let rig = Rig::start(|_| {}).await;
    let init = rig
        .client
        .reg_init(&init_request("frank@example.com"), None, deadline())
        .await
        .unwrap();
    let request = RegCompleteRequest {
        creation_result: make_credential(
            &init.registration_request_options,
            "https://evil.example",
            |_| {},
        ),
        session: init.session,
        passkey_name: None,
    };
    let result = rig.client.reg_complete(&request, deadline()).await;
    match result {
        Err(Error::Api(api)) => {
            assert_eq!((api.status, api.code), (400, ApiErrorCode::BadRequest));
            assert!(api.message.unwrap().contains("InvalidRPOrigin"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn replayed_session_is_rejected() {
    let rig = Rig::start(|_| {}).await;
    let (request, _) = register(&rig, "grace@example.com").await;
    let replay = rig.client.reg_complete(&request, deadline()).await;
    assert_eq!(api_error(replay), (403, ApiErrorCode::Forbidden));
}

#[tokio::test]
async fn attestation_formats_and_flags() {
    let rig = Rig::start(|_| {}).await;
    for (i, format) in [
        AttestationFormat::None,
        AttestationFormat::PackedSelf,
        AttestationFormat::FidoU2f,
    ]
    .into_iter()
    .enumerate()
    {
        let user = format!("user{i}@example.com");
        let init = rig
            .client
            .reg_init(&init_request(&user), None, deadline())
            .await
            .unwrap();
        let request = RegCompleteRequest {
            creation_result: make_credential(&init.registration_request_options, ORIGIN, |r| {
                r.format = format;
            }),
            session: init.session,
            passkey_name: None,
        };
        rig.client
            .reg_complete(&request, deadline())
            .await
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
    }
    // UV is required by default: a touch without verification is refused.
    let init = rig
        .client
        .reg_init(&init_request("nouv@example.com"), None, deadline())
        .await
        .unwrap();
    let request = RegCompleteRequest {
        creation_result: make_credential(&init.registration_request_options, ORIGIN, |r| {
            r.flags = FLAG_UP;
        }),
        session: init.session,
        passkey_name: None,
    };
    let result = rig.client.reg_complete(&request, deadline()).await;
    assert_eq!(api_error(result), (400, ApiErrorCode::BadRequest));
}

#[tokio::test]
async fn padded_base64_from_the_server_is_accepted() {
    let rig = Rig::start(|c| c.padded_base64 = true).await;
    let init = rig
        .client
        .reg_init(&init_request("heidi@example.com"), None, deadline())
        .await
        .unwrap();
    assert_eq!(
        init.registration_request_options.challenge.as_slice().len(),
        32
    );
    let request = RegCompleteRequest {
        creation_result: make_credential(&init.registration_request_options, ORIGIN, |_| {}),
        session: init.session,
        passkey_name: None,
    };
    rig.client.reg_complete(&request, deadline()).await.unwrap();
}

/// reg/init up to the point where the credential exists on the key.
async fn ready_to_complete(rig: &Rig, username: &str) -> RegCompleteRequest {
    let init = rig
        .client
        .reg_init(&init_request(username), None, deadline())
        .await
        .unwrap();
    RegCompleteRequest {
        creation_result: make_credential(&init.registration_request_options, ORIGIN, |_| {}),
        session: init.session,
        passkey_name: None,
    }
}

async fn complete_statuses(rig: &Rig) -> Vec<Option<u64>> {
    rig.log_lines()
        .await
        .iter()
        .filter(|l| l["path"] == "/fido2/v2/reg/complete")
        .map(|l| l["status"].as_u64())
        .collect()
}

#[tokio::test]
async fn complete_survives_500_then_succeeds() {
    let rig = Rig::start(|_| {}).await;
    let request = ready_to_complete(&rig, "ivan@example.com").await;
    rig.emulator.push_fault(
        Endpoint::RegComplete,
        fault(|f| {
            f.status = Some(500);
            f.times = Some(2);
        }),
    );
    let done = rig.client.reg_complete(&request, deadline()).await.unwrap();
    assert!(!done.jwt_access.is_empty());
    assert_eq!(
        complete_statuses(&rig).await,
        [Some(500), Some(500), Some(200)]
    );
}

#[tokio::test]
async fn complete_honours_retry_after() {
    let rig = Rig::start(|_| {}).await;
    let request = ready_to_complete(&rig, "judy@example.com").await;
    rig.emulator.push_fault(
        Endpoint::RegComplete,
        fault(|f| {
            f.status = Some(429);
            f.retry_after = Some("1".to_owned());
            f.times = Some(1);
        }),
    );
    let started = Instant::now();
    rig.client.reg_complete(&request, deadline()).await.unwrap();
    let elapsed = started.elapsed();
    // Back-off alone would have retried after 20 ms; the wait is `Retry-After`, not more
    // (it is not added to the back-off, nor stretched to `max_retry_after`).
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    // Exactly two attempts: the refused one and the one after the wait.
    let attempts = complete_statuses(&rig).await;
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts, [Some(429), Some(200)]);
}

#[tokio::test]
async fn retry_after_zero_does_not_spin() {
    let rig = Rig::start(|_| {}).await;
    let request = ready_to_complete(&rig, "kim@example.com").await;
    rig.emulator.push_fault(
        Endpoint::RegComplete,
        fault(|f| {
            f.status = Some(503);
            f.retry_after = Some("0".to_owned());
        }),
    );
    let result = rig
        .client
        .reg_complete(&request, Instant::now() + Duration::from_secs(1))
        .await;
    assert!(
        matches!(&result, Err(Error::DeadlineExceeded { last }) if last.status() == Some(503)),
        "{result:?}"
    );
    // The back-off (20, 40, 80, 160, 200, 200, ... ms) still applies: the waits before the
    // deadline leave room for eight attempts at most, where `Retry-After: 0` taken literally
    // would send hundreds.
    let attempts = complete_statuses(&rig).await;
    assert!((2..=8).contains(&attempts.len()), "{attempts:?}");
    assert!(attempts.iter().all(|s| *s == Some(503)), "{attempts:?}");
}

#[tokio::test]
async fn retry_after_beyond_the_deadline_gives_up_at_once() {
    let rig = Rig::start(|_| {}).await;
    let request = ready_to_complete(&rig, "ken@example.com").await;
    rig.emulator.push_fault(
        Endpoint::RegComplete,
        fault(|f| {
            f.status = Some(503);
            f.retry_after = Some("30".to_owned());
        }),
    );
    let result = rig
        .client
        .reg_complete(&request, Instant::now() + Duration::from_secs(10))
        .await;
    match result {
        Err(Error::DeadlineExceeded { last }) => {
            let Error::Api(api) = *last else {
                panic!("{last:?}")
            };
            assert_eq!(api.status, 503);
            assert_eq!(api.retry_after, Some(Duration::from_secs(30)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(complete_statuses(&rig).await, [Some(503)]);
}

#[tokio::test]
async fn complete_retries_after_timeout_and_dropped_connection() {
    let rig = Rig::start(|_| {}).await;
    let request = ready_to_complete(&rig, "leo@example.com").await;
    // A per-exchange timeout for reg/complete only: short next to the stalled attempt, and
    // still ample on a loaded machine for the answer that finally comes, WebAuthn check
    // included (a timed-out attempt that the server did process would burn the session).
    let mut config = rig.client.config().clone();
    config.request_timeout = Duration::from_secs(10);
    let client = LoginIdClient::new(config).unwrap();
    rig.emulator.set_faults(FaultPlan(
        [(
            Endpoint::RegComplete,
            vec![
                fault(|f| {
                    f.body = Some(BodyFault::DropConnection);
                    f.times = Some(1);
                }),
                fault(|f| {
                    f.delay_ms = Some(600_000);
                    f.times = Some(1);
                }),
            ],
        )]
        .into(),
    ));
    client.reg_complete(&request, deadline()).await.unwrap();
    // Two attempts that never got an answer, then the real one. The stalled attempt's line
    // is written once the emulator notices its connection closed, which may come after the
    // answered one: wait for all three, in any order.
    let lines: Vec<_> = rig
        .wait_for_log(|lines| {
            lines
                .iter()
                .filter(|l| l["path"] == "/fido2/v2/reg/complete")
                .count()
                >= 3
        })
        .await
        .into_iter()
        .filter(|l| l["path"] == "/fido2/v2/reg/complete")
        .collect();
    assert_eq!(lines.len(), 3);
    let with_fault = |label: &str| {
        let found: Vec<_> = lines.iter().filter(|l| l["fault"] == label).collect();
        assert_eq!(found.len(), 1, "{label}: {lines:?}");
        found[0]
    };
    for unanswered in [with_fault("drop connection"), with_fault("delay 600000ms")] {
        assert!(unanswered["status"].is_null(), "{unanswered}");
        assert_eq!(
            unanswered["outcome"], "connection closed before a response",
            "{unanswered}"
        );
    }
    let answered: Vec<_> = lines.iter().filter(|l| l["fault"].is_null()).collect();
    assert_eq!(answered.len(), 1, "{lines:?}");
    assert_eq!(answered[0]["status"], 200);
}

#[tokio::test]
async fn a_passed_deadline_sends_nothing() {
    let rig = Rig::start(|_| {}).await;
    let request = ready_to_complete(&rig, "olga@example.com").await;
    let result = rig.client.reg_complete(&request, Instant::now()).await;
    assert!(
        matches!(&result, Err(Error::DeadlineExceeded { last }) if matches!(**last, Error::Timeout)),
        "{result:?}"
    );
    assert!(complete_statuses(&rig).await.is_empty());
    // The session is still there for an attempt in time.
    rig.client.reg_complete(&request, deadline()).await.unwrap();
}

#[tokio::test]
async fn https_really_speaks_tls() {
    // The emulator speaks plain HTTP: a TLS handshake with it fails, as a connection error.
    let rig = Rig::start(|_| {}).await;
    let url = url::Url::parse(&format!("https://{}", rig.emulator.addr())).unwrap();
    let client = LoginIdClient::new(support::client_config(url)).unwrap();
    let result = client.jwks().await;
    assert!(matches!(result, Err(Error::Connect(_))), "{result:?}");
    assert!(rig.log_lines().await.is_empty());
}

#[tokio::test]
async fn init_is_not_retried_once_the_request_was_sent() {
    let rig = Rig::start(|_| {}).await;
    rig.emulator.push_fault(
        Endpoint::RegInit,
        fault(|f| {
            f.body = Some(BodyFault::DropConnection);
            f.times = Some(1);
        }),
    );
    let result = rig
        .client
        .reg_init(&init_request("mia@example.com"), None, deadline())
        .await;
    assert!(matches!(result, Err(Error::Transport(_))), "{result:?}");
}

#[tokio::test]
async fn init_is_retried_on_connection_failure() {
    // A server that accepts TCP and hangs up at once: every TLS handshake fails, so no
    // request is ever sent, and each attempt is one accepted connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("https://{}", listener.local_addr().unwrap())).unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = tokio::spawn({
        let accepted = std::sync::Arc::clone(&accepted);
        async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(stream);
            }
        }
    });
    let mut config = support::client_config(url);
    config.retry.init_attempts = 3;
    let client = LoginIdClient::new(config).unwrap();
    let started = Instant::now();
    let result = client
        .reg_init(&init_request("nick@example.com"), None, deadline())
        .await;
    assert!(matches!(result, Err(Error::Connect(_))), "{result:?}");
    // Counted before each hang-up, so before the client saw the attempt fail.
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    // Two back-offs (20 ms, 40 ms) were waited between the three attempts.
    assert!(started.elapsed() >= Duration::from_millis(60));
    server.abort();
}

#[tokio::test]
async fn init_is_retried_on_connection_refused() {
    // A port that was just free: nothing listens there, so every attempt fails to connect.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    drop(listener);
    let mut config = support::client_config(url);
    config.retry.init_attempts = 2;
    let client = LoginIdClient::new(config).unwrap();
    let result = client
        .reg_init(&init_request("nick@example.com"), None, deadline())
        .await;
    assert!(matches!(result, Err(Error::Connect(_))), "{result:?}");
}

#[tokio::test]
async fn a_100_mb_body_is_refused_while_streaming() {
    let rig = Rig::start(|_| {}).await;
    rig.emulator.push_fault(
        Endpoint::Grant,
        fault(|f| {
            f.body = Some(BodyFault::Oversized {
                bytes: 100 << 20,
                declare_length: false,
            });
            f.times = Some(1);
        }),
    );
    let request = passkeyd::loginid::dto::GrantRequest {
        grants: vec!["reg:write".into()],
        username: Some("olivia@example.com".into()),
    };
    let result = rig.client.grant(&rig.api_key, &request).await;
    assert!(
        matches!(result, Err(Error::ResponseTooLarge { limit: 1_048_576 })),
        "{result:?}"
    );
    // The client stopped reading at 1 MiB; the server could only push what the socket
    // buffers took before the connection closed, far from 100 MiB.
    let sent = rig.emulator.oversize_bytes_sent();
    assert!(sent > 1 << 20, "{sent}");
    assert!(sent < 64 << 20, "{sent}");

    // With Content-Length announced, the body is refused before any of it is read. The
    // server still gets to push what the socket buffers take (a few MiB on loopback) before
    // the connection closes; with a cap far above that, a client that read up to the cap
    // would have drawn 48 MiB out of the server.
    let mut config = rig.client.config().clone();
    config.max_response_bytes = 48 << 20;
    let client = LoginIdClient::new(config).unwrap();
    let before = rig.emulator.oversize_bytes_sent();
    rig.emulator.push_fault(
        Endpoint::Grant,
        fault(|f| {
            f.body = Some(BodyFault::Oversized {
                bytes: 100 << 20,
                declare_length: true,
            });
            f.times = Some(1);
        }),
    );
    let result = client.grant(&rig.api_key, &request).await;
    assert!(
        matches!(result, Err(Error::ResponseTooLarge { limit: 0x300_0000 })),
        "{result:?}"
    );
    let sent = rig.emulator.oversize_bytes_sent() - before;
    assert!(sent < 16 << 20, "{sent}");
}

#[tokio::test]
async fn a_stalled_server_times_out() {
    let rig = Rig::start_with(|_| {}, |c| c.request_timeout = Duration::from_millis(300)).await;
    rig.emulator
        .push_fault(Endpoint::Jwks, fault(|f| f.delay_ms = Some(60_000)));
    let started = Instant::now();
    let result = rig.client.jwks().await;
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(started.elapsed() < GENEROUS);
}

#[tokio::test]
async fn wrong_content_type_and_truncated_body() {
    let rig = Rig::start(|_| {}).await;
    rig.emulator.push_fault(
        Endpoint::Jwks,
        fault(|f| {
            f.body = Some(BodyFault::WrongContentType);
            f.times = Some(1);
        }),
    );
    let result = rig.client.jwks().await;
    assert!(
        matches!(
            &result,
            Err(Error::UnexpectedContentType { content_type: Some(c) }) if c.starts_with("text/html")
        ),
        "{result:?}"
    );
    rig.emulator.push_fault(
        Endpoint::Jwks,
        fault(|f| {
            f.body = Some(BodyFault::Truncated);
            f.times = Some(1);
        }),
    );
    let result = rig.client.jwks().await;
    assert!(matches!(result, Err(Error::Transport(_))), "{result:?}");
    // And the next request is served normally.
    assert_eq!(rig.client.jwks().await.unwrap().keys.len(), 1);
}

#[tokio::test]
async fn redirects_stay_within_the_origin() {
    let rig = Rig::start(|_| {}).await;
    let base = rig.emulator.base_url();
    // Same origin: followed.
    rig.emulator.push_fault(
        Endpoint::Jwks,
        fault(|f| {
            f.redirect_to = Some(format!("{base}fido2/v2/.well-known/jwks.json"));
            f.times = Some(1);
        }),
    );
    assert_eq!(rig.client.jwks().await.unwrap().keys.len(), 1);
    // Another origin (same host, another port): refused.
    let port = rig.emulator.addr().port().wrapping_add(1);
    rig.emulator.push_fault(
        Endpoint::Jwks,
        fault(|f| {
            f.redirect_to = Some(format!(
                "http://127.0.0.1:{port}/fido2/v2/.well-known/jwks.json"
            ));
            f.times = Some(1);
        }),
    );
    let result = rig.client.jwks().await;
    assert!(matches!(result, Err(Error::Redirect)), "{result:?}");
}

#[tokio::test]
async fn jwks_is_refreshed_for_an_unknown_kid() {
    let rig = Rig::start_with(|_| {}, |c| c.jwks_min_refresh_interval = Duration::ZERO).await;
    let verifier = TokenVerifier::new(rig.client.clone());
    let first = Token::new(
        rig.emulator
            .mint_token("pat@example.com", &[], 600, "jwtAccess"),
    );
    verifier.verify(&first, "pat@example.com").await.unwrap();
    rig.emulator.rotate_key();
    let second = Token::new(
        rig.emulator
            .mint_token("pat@example.com", &[], 600, "jwtAccess"),
    );
    verifier.verify(&second, "pat@example.com").await.unwrap();
    // The cached set answered the first token again without a download.
    verifier.verify(&first, "pat@example.com").await.unwrap();
    let downloads = rig
        .log_lines()
        .await
        .iter()
        .filter(|l| l["path"] == "/fido2/v2/.well-known/jwks.json")
        .count();
    assert_eq!(downloads, 2);

    let expired = Token::new(
        rig.emulator
            .mint_token("pat@example.com", &[], -120, "jwtAccess"),
    );
    let result = verifier.verify(&expired, "pat@example.com").await;
    assert!(
        matches!(result, Err(Error::Token(TokenError::Expired))),
        "{result:?}"
    );
    let result = rig.client.verify_token(&rig.api_key, &expired).await;
    assert_eq!(api_error(result), (401, ApiErrorCode::Unauthorized));
}

async fn jwks_downloads(rig: &Rig) -> usize {
    rig.log_lines()
        .await
        .iter()
        .filter(|l| l["path"] == "/fido2/v2/.well-known/jwks.json")
        .count()
}

/// Tokens of `count` different signing keys (the emulator keeps publishing old keys).
fn tokens_of_new_keys(rig: &Rig, username: &str, count: usize) -> Vec<Token> {
    (0..count)
        .map(|_| {
            rig.emulator.rotate_key();
            Token::new(rig.emulator.mint_token(username, &[], 600, "jwtAccess"))
        })
        .collect()
}

#[tokio::test]
async fn unknown_kids_share_one_download() {
    let rig = Rig::start_with(
        |_| {},
        |c| c.jwks_min_refresh_interval = Duration::from_secs(60),
    )
    .await;
    // Concurrent verifications of three unknown kids, while the download is slow.
    let verifier = TokenVerifier::new(rig.client.clone());
    let tokens = tokens_of_new_keys(&rig, "ria@example.com", 3);
    rig.emulator.push_fault(
        Endpoint::Jwks,
        fault(|f| {
            f.delay_ms = Some(300);
            f.times = Some(1);
        }),
    );
    let user = "ria@example.com";
    let results = tokio::join!(
        verifier.verify(&tokens[0], user),
        verifier.verify(&tokens[1], user),
        verifier.verify(&tokens[2], user),
    );
    assert!(
        results.0.is_ok() && results.1.is_ok() && results.2.is_ok(),
        "{results:?}"
    );
    assert_eq!(jwks_downloads(&rig).await, 1);

    // A failing endpoint: the failed download counts against the interval too, so further
    // unknown kids do not download again.
    let verifier = TokenVerifier::new(rig.client.clone());
    rig.emulator
        .push_fault(Endpoint::Jwks, fault(|f| f.status = Some(503)));
    let tokens = tokens_of_new_keys(&rig, "ria@example.com", 3);
    let first = verifier.verify(&tokens[0], "ria@example.com").await;
    assert_eq!(first.unwrap_err().status(), Some(503));
    for token in &tokens[1..] {
        let result = verifier.verify(token, "ria@example.com").await;
        assert!(
            matches!(result, Err(Error::Token(TokenError::JwksUnavailable))),
            "{result:?}"
        );
    }
    assert_eq!(jwks_downloads(&rig).await, 2);
}

#[tokio::test]
async fn cached_keys_outlive_a_failing_jwks_for_a_grace_period() {
    let rig = Rig::start_with(
        |_| {},
        |c| {
            c.jwks_min_refresh_interval = Duration::ZERO;
            c.jwks_max_age = Duration::from_millis(300);
            c.jwks_stale_grace = Duration::from_secs(4);
        },
    )
    .await;
    let verifier = TokenVerifier::new(rig.client.clone());
    let known = Token::new(
        rig.emulator
            .mint_token("sam@example.com", &[], 600, "jwtAccess"),
    );
    verifier.verify(&known, "sam@example.com").await.unwrap();
    let fetched = Instant::now();
    rig.emulator
        .push_fault(Endpoint::Jwks, fault(|f| f.status = Some(503)));
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Stale: a download is tried, fails, and the known key still verifies.
    verifier.verify(&known, "sam@example.com").await.unwrap();
    assert_eq!(jwks_downloads(&rig).await, 2);
    // A key the cache never had cannot be served.
    let unknown = tokens_of_new_keys(&rig, "sam@example.com", 1);
    let result = verifier.verify(&unknown[0], "sam@example.com").await;
    assert_eq!(result.unwrap_err().status(), Some(503));
    // Past max age plus grace, the known key is refused too.
    tokio::time::sleep_until(fetched + Duration::from_millis(4_500)).await;
    let result = verifier.verify(&known, "sam@example.com").await;
    assert_eq!(result.unwrap_err().status(), Some(503));
}

#[tokio::test]
async fn a_download_does_not_hold_up_cached_keys() {
    let rig = Rig::start_with(|_| {}, |c| c.jwks_min_refresh_interval = Duration::ZERO).await;
    let verifier = std::sync::Arc::new(TokenVerifier::new(rig.client.clone()));
    let known = Token::new(
        rig.emulator
            .mint_token("tom@example.com", &[], 600, "jwtAccess"),
    );
    verifier.verify(&known, "tom@example.com").await.unwrap();
    // An unknown kid starts a download that stalls.
    rig.emulator.push_fault(
        Endpoint::Jwks,
        fault(|f| {
            f.delay_ms = Some(600_000);
            f.times = Some(1);
        }),
    );
    let unknown = tokens_of_new_keys(&rig, "tom@example.com", 1).remove(0);
    let stalled = tokio::spawn({
        let verifier = std::sync::Arc::clone(&verifier);
        async move { verifier.verify(&unknown, "tom@example.com").await }
    });
    // The stalled download has reached the emulator once its fault is taken.
    let started = Instant::now();
    while !rig.emulator.faults().0.is_empty() {
        assert!(started.elapsed() < GENEROUS, "the download never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cached = tokio::time::timeout(
        Duration::from_secs(10),
        verifier.verify(&known, "tom@example.com"),
    )
    .await;
    assert!(matches!(cached, Ok(Ok(_))), "{cached:?}");
    assert!(!stalled.is_finished());
    stalled.abort();
}

#[tokio::test]
async fn tokens_of_another_application_are_rejected() {
    let rig = Rig::start(|_| {}).await;
    let other = Rig::start(|c| c.app_id = "another-app".into()).await;
    let verifier = TokenVerifier::new(rig.client.clone());
    // Signed by a key this application's JWKS does not have.
    let foreign = Token::new(
        other
            .emulator
            .mint_token("quinn@example.com", &[], 600, "jwtAccess"),
    );
    let result = verifier.verify(&foreign, "quinn@example.com").await;
    assert!(
        matches!(result, Err(Error::Token(TokenError::UnknownKeyId))),
        "{result:?}"
    );
}

#[tokio::test]
async fn wrong_api_key_is_unauthorized() {
    let rig = Rig::start(|_| {}).await;
    let request = passkeyd::loginid::dto::GrantRequest {
        grants: vec!["reg:write".into()],
        username: Some("rob@example.com".into()),
    };
    let result = rig
        .client
        .grant(&passkeyd::loginid::ApiKey::new("wrong"), &request)
        .await;
    assert_eq!(api_error(result), (401, ApiErrorCode::Unauthorized));
}

#[test]
fn plain_http_needs_loopback_and_permission() {
    let mut config = support::client_config(url::Url::parse("http://192.0.2.1:8080").unwrap());
    assert!(matches!(
        LoginIdClient::new(config.clone()),
        Err(Error::Config(
            passkeyd::loginid::ConfigError::InsecureBaseUrl
        ))
    ));
    config.base_url = url::Url::parse("http://127.0.0.1:8080").unwrap();
    config.allow_http_loopback = false;
    assert!(matches!(
        LoginIdClient::new(config),
        Err(Error::Config(
            passkeyd::loginid::ConfigError::InsecureBaseUrl
        ))
    ));
}
