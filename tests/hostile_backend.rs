//! Hostile backends: the LoginID client and the ceremony against an emulator that fails in
//! every way issue 8 lists (5xx, 429 with Retry-After, a slow drip, a 100 MB body, invalid
//! JSON, a wrong content type, a reset connection) and against TLS endpoints it must refuse.
//! Each ends in a typed error; the body cap holds while streaming; requests are retried only
//! where the retry policy says (counted in the emulator's request log).

// Helpers outside #[test] functions panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// The client rig (`support`) and the ceremony rig (`ceremony_support`) both bring the CTAP
// test drivers along; two copies of those in one test binary are harmless.
#![allow(clippy::duplicate_mod)]

mod ceremony_support;
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use loginid_emulator::{BodyFault, Endpoint, Fault};
use passkeyd::ceremony::{CeremonyError, ErrorKind};
use passkeyd::loginid::dto::{GrantRequest, RegCompleteRequest, scope};
use passkeyd::loginid::{ApiErrorCode, Error, LoginIdClient};
use support::{GENEROUS, ORIGIN, Rig, deadline, init_request, make_credential};
use tokio::time::Instant;

fn fault(f: impl FnOnce(&mut Fault)) -> Fault {
    let mut fault = Fault::default();
    f(&mut fault);
    fault
}

fn once(body: BodyFault) -> Fault {
    fault(|f| {
        f.body = Some(body);
        f.times = Some(1);
    })
}

fn status(status: u16, times: Option<u32>) -> Fault {
    fault(|f| {
        f.status = Some(status);
        f.times = times;
    })
}

/// Whether an error was caused by a TCP reset (an `io::Error` of kind `ConnectionReset`
/// somewhere in its source chain), as opposed to an orderly close.
fn caused_by_reset(error: &Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
        {
            return true;
        }
        source = current.source();
    }
    false
}

fn grant_request(username: &str) -> GrantRequest {
    GrantRequest {
        grants: vec![scope::REG_WRITE.to_owned()],
        username: Some(username.to_owned()),
    }
}

/// Requests the emulator received at `endpoint`, answered or not, once it has logged `at_least`
/// of them (requests that never got an answer are logged when the emulator notices the
/// closed connection).
async fn received(rig: &Rig, endpoint: Endpoint, at_least: usize) -> Vec<Option<u64>> {
    let count = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .filter(|l| l["path"] == endpoint.path())
            .count()
    };
    rig.wait_for_log(|lines| count(lines) >= at_least)
        .await
        .iter()
        .filter(|l| l["path"] == endpoint.path())
        .map(|l| l["status"].as_u64())
        .collect()
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

// ---- 5xx and 429 ----

#[tokio::test]
async fn server_errors_are_retried_on_reg_complete_only() {
    let rig = Rig::start(|_| {}).await;
    // reg/init: a 500 reached the server; not retried.
    rig.emulator
        .push_fault(Endpoint::RegInit, status(500, Some(1)));
    let result = rig
        .client
        .reg_init(&init_request("ann@example.com"), None, deadline())
        .await;
    match result {
        Err(Error::Api(api)) => {
            assert_eq!(api.status, 500);
            assert_eq!(api.code, ApiErrorCode::InternalError);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(received(&rig, Endpoint::RegInit, 1).await, [Some(500)]);

    // mgmt/grant: never retried.
    rig.emulator.push_fault(Endpoint::Grant, status(503, None));
    let result = rig
        .client
        .grant(&rig.api_key, &grant_request("ann@example.com"))
        .await;
    assert_eq!(result.err().and_then(|e| e.status()), Some(503));
    assert_eq!(received(&rig, Endpoint::Grant, 1).await, [Some(503)]);
    rig.emulator.set_faults(Default::default());

    // reg/complete: 502 and 503 are retried, with back-off, until the answer comes.
    let request = ready_to_complete(&rig, "ann@example.com").await;
    rig.emulator
        .push_fault(Endpoint::RegComplete, status(502, Some(1)));
    rig.emulator
        .push_fault(Endpoint::RegComplete, status(503, Some(1)));
    rig.client.reg_complete(&request, deadline()).await.unwrap();
    assert_eq!(
        received(&rig, Endpoint::RegComplete, 3).await,
        [Some(502), Some(503), Some(200)]
    );
}

#[tokio::test]
async fn a_lasting_outage_ends_reg_complete_at_its_deadline() {
    let rig = Rig::start(|_| {}).await;
    let request = ready_to_complete(&rig, "bea@example.com").await;
    rig.emulator
        .push_fault(Endpoint::RegComplete, status(500, None));
    let limit = Duration::from_secs(2);
    let started = Instant::now();
    let result = rig
        .client
        .reg_complete(&request, Instant::now() + limit)
        .await;
    let elapsed = started.elapsed();
    match &result {
        Err(Error::DeadlineExceeded { last }) => assert_eq!(last.status(), Some(500)),
        other => panic!("{other:?}"),
    }
    assert!(elapsed <= limit + GENEROUS / 4, "{elapsed:?}");
    // Back-off 20, 40, 80, 160, 200, 200 ms...: a handful of attempts, not a hot loop.
    let attempts = received(&rig, Endpoint::RegComplete, 2).await.len();
    assert!((2..=20).contains(&attempts), "{attempts}");
}

#[tokio::test]
async fn too_many_requests_waits_out_retry_after_where_retried() {
    let rig = Rig::start(|_| {}).await;
    let throttled = fault(|f| {
        f.status = Some(429);
        f.retry_after = Some("1".into());
        f.times = Some(1);
    });
    // reg/init: the Retry-After is reported, not waited out.
    rig.emulator
        .push_fault(Endpoint::RegInit, throttled.clone());
    let result = rig
        .client
        .reg_init(&init_request("cat@example.com"), None, deadline())
        .await;
    match result {
        Err(Error::Api(api)) => {
            assert_eq!(api.status, 429);
            assert_eq!(api.retry_after, Some(Duration::from_secs(1)));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(received(&rig, Endpoint::RegInit, 1).await, [Some(429)]);

    // mgmt/grant: neither.
    rig.emulator.push_fault(Endpoint::Grant, throttled.clone());
    let result = rig
        .client
        .grant(&rig.api_key, &grant_request("cat@example.com"))
        .await;
    assert_eq!(result.err().and_then(|e| e.status()), Some(429));
    assert_eq!(received(&rig, Endpoint::Grant, 1).await, [Some(429)]);

    // reg/complete: retried once the second has passed.
    let request = ready_to_complete(&rig, "cat@example.com").await;
    rig.emulator.push_fault(Endpoint::RegComplete, throttled);
    let started = Instant::now();
    rig.client.reg_complete(&request, deadline()).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(
        received(&rig, Endpoint::RegComplete, 2).await,
        [Some(429), Some(200)]
    );
}

// ---- bodies ----

#[tokio::test]
async fn a_slow_drip_is_cut_by_the_request_timeout() {
    let timeout = Duration::from_millis(800);
    let rig = Rig::start_with(|_| {}, |c| c.request_timeout = timeout).await;
    // One byte every 50 ms: never silent long enough for a read timeout, and the JWKS
    // (a few hundred bytes) would take over ten seconds.
    let drip = BodyFault::SlowDrip {
        bytes: 1,
        every_ms: 50,
    };
    rig.emulator.push_fault(Endpoint::Jwks, once(drip.clone()));
    let started = Instant::now();
    let result = rig.client.jwks().await;
    let elapsed = started.elapsed();
    assert!(matches!(result, Err(Error::Timeout)), "{result:?}");
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < timeout + GENEROUS / 4, "{elapsed:?}");

    // On reg/complete the request was processed before the drip began: the timeout is
    // retried, and the retry meets a session already used (docs/loginid.md, question 17).
    let request = ready_to_complete(&rig, "dan@example.com").await;
    rig.emulator.push_fault(Endpoint::RegComplete, once(drip));
    let result = rig.client.reg_complete(&request, deadline()).await;
    assert_eq!(result.err().and_then(|e| e.status()), Some(403));
    let statuses = received(&rig, Endpoint::RegComplete, 2).await;
    assert_eq!(statuses.len(), 2, "{statuses:?}");
    assert_eq!(statuses[1], Some(403));
}

#[tokio::test]
async fn a_100_mb_body_stops_at_the_cap_and_is_not_retried() {
    let rig = Rig::start(|_| {}).await;
    let huge = BodyFault::Oversized {
        bytes: 100 << 20,
        declare_length: false,
    };
    let request = ready_to_complete(&rig, "eve@example.com").await;
    rig.emulator
        .push_fault(Endpoint::RegComplete, once(huge.clone()));
    let started = Instant::now();
    let result = rig.client.reg_complete(&request, deadline()).await;
    assert!(
        matches!(result, Err(Error::ResponseTooLarge { limit: 1_048_576 })),
        "{result:?}"
    );
    assert!(started.elapsed() < GENEROUS / 4);
    // Not retried: a body too large is not a transient failure.
    assert_eq!(received(&rig, Endpoint::RegComplete, 1).await.len(), 1);
    // The client stopped reading at the cap; the emulator got rid of what the socket
    // buffers took, and no more.
    let sent = rig.emulator.oversize_bytes_sent();
    assert!(sent >= 1 << 20, "{sent}");
    assert!(sent < 32 << 20, "{sent}");

    // The same on reg/init, which is not retried either.
    rig.emulator.push_fault(Endpoint::RegInit, once(huge));
    let result = rig
        .client
        .reg_init(&init_request("eve@example.com"), None, deadline())
        .await;
    assert!(
        matches!(result, Err(Error::ResponseTooLarge { .. })),
        "{result:?}"
    );
    assert_eq!(received(&rig, Endpoint::RegInit, 2).await.len(), 2);
}

#[tokio::test]
async fn invalid_json_is_a_decode_error_and_not_retried() {
    let rig = Rig::start(|_| {}).await;
    for endpoint in [Endpoint::Grant, Endpoint::RegInit, Endpoint::Jwks] {
        rig.emulator
            .push_fault(endpoint, once(BodyFault::InvalidJson));
    }
    let grant = rig
        .client
        .grant(&rig.api_key, &grant_request("fay@example.com"))
        .await;
    assert!(matches!(grant, Err(Error::Decode(_))), "{grant:?}");
    let init = rig
        .client
        .reg_init(&init_request("fay@example.com"), None, deadline())
        .await;
    assert!(matches!(init, Err(Error::Decode(_))), "{init:?}");
    let jwks = rig.client.jwks().await;
    assert!(matches!(jwks, Err(Error::Decode(_))), "{jwks:?}");

    let request = ready_to_complete(&rig, "fay@example.com").await;
    rig.emulator
        .push_fault(Endpoint::RegComplete, once(BodyFault::InvalidJson));
    let complete = rig.client.reg_complete(&request, deadline()).await;
    assert!(matches!(complete, Err(Error::Decode(_))), "{complete:?}");
    assert_eq!(received(&rig, Endpoint::RegComplete, 1).await, [Some(200)]);
    assert_eq!(received(&rig, Endpoint::Grant, 1).await, [Some(200)]);
    // The failed reg/init, then the one of ready_to_complete.
    assert_eq!(received(&rig, Endpoint::RegInit, 2).await.len(), 2);
}

#[tokio::test]
async fn a_wrong_content_type_is_refused_and_not_retried() {
    let rig = Rig::start(|_| {}).await;
    let request = ready_to_complete(&rig, "gus@example.com").await;
    rig.emulator
        .push_fault(Endpoint::RegComplete, once(BodyFault::WrongContentType));
    let result = rig.client.reg_complete(&request, deadline()).await;
    assert!(
        matches!(
            &result,
            Err(Error::UnexpectedContentType { content_type: Some(c) }) if c.starts_with("text/html")
        ),
        "{result:?}"
    );
    assert_eq!(received(&rig, Endpoint::RegComplete, 1).await, [Some(200)]);
}

// ---- connections ----

#[tokio::test]
async fn a_reset_connection_is_retried_only_on_reg_complete() {
    let rig = Rig::start(|_| {}).await;
    for endpoint in [Endpoint::Grant, Endpoint::RegInit] {
        rig.emulator
            .push_fault(endpoint, once(BodyFault::ResetConnection));
    }
    let grant = rig
        .client
        .grant(&rig.api_key, &grant_request("hal@example.com"))
        .await;
    assert!(matches!(grant, Err(Error::Transport(_))), "{grant:?}");
    assert!(caused_by_reset(grant.as_ref().unwrap_err()), "{grant:?}");
    // The request was sent: reg/init cannot know whether it was processed, so no retry.
    let init = rig
        .client
        .reg_init(&init_request("hal@example.com"), None, deadline())
        .await;
    assert!(matches!(init, Err(Error::Transport(_))), "{init:?}");
    assert_eq!(received(&rig, Endpoint::Grant, 1).await, [None]);
    assert_eq!(received(&rig, Endpoint::RegInit, 1).await, [None]);

    // reg/complete: retried, and the retry (on a new connection) succeeds.
    let request = ready_to_complete(&rig, "hal@example.com").await;
    rig.emulator
        .push_fault(Endpoint::RegComplete, once(BodyFault::ResetConnection));
    rig.client.reg_complete(&request, deadline()).await.unwrap();
    assert_eq!(
        received(&rig, Endpoint::RegComplete, 2).await,
        [None, Some(200)]
    );
}

/// A TLS server on 127.0.0.1 with a freshly made self-signed certificate, counting the
/// handshakes it is offered. It never gets past one: the client refuses the certificate.
struct SelfSignedTls {
    url: url::Url,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SelfSignedTls {
    async fn start() -> Self {
        use p256::pkcs8::EncodePrivateKey as _;
        use std::str::FromStr as _;
        use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
        use x509_cert::der::Encode as _;
        use x509_cert::name::Name;
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        use x509_cert::time::Validity;

        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let signer = p256::ecdsa::SigningKey::from(&secret);
        let spki = SubjectPublicKeyInfoOwned::from_key(*signer.verifying_key()).unwrap();
        let cert = CertificateBuilder::new(
            Profile::Root,
            SerialNumber::new(&[0x01]).unwrap(),
            Validity::from_now(Duration::from_secs(3600)).unwrap(),
            Name::from_str("CN=127.0.0.1").unwrap(),
            spki,
            &signer,
        )
        .unwrap()
        .build::<p256::ecdsa::DerSignature>()
        .unwrap()
        .to_der()
        .unwrap();
        let key = secret.to_pkcs8_der().unwrap().as_bytes().to_vec();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url::Url::parse(&format!("https://{}", listener.local_addr().unwrap())).unwrap();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let handshakes = Arc::clone(&handshakes);
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let stream = stream.into_std().unwrap();
                    stream.set_nonblocking(false).unwrap();
                    stream.set_read_timeout(Some(GENEROUS)).unwrap();
                    let config = Arc::clone(&config);
                    let handshakes = Arc::clone(&handshakes);
                    tokio::task::spawn_blocking(move || {
                        use std::io::Read as _;
                        let connection = rustls::ServerConnection::new(config).unwrap();
                        let mut tls = rustls::StreamOwned::new(connection, stream);
                        // Drives the handshake; the client aborts it with an alert.
                        let read = tls.read(&mut [0u8; 64]);
                        assert!(read.is_err() || read.is_ok_and(|n| n == 0));
                        handshakes.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
        });
        Self {
            url,
            handshakes,
            task,
        }
    }

    /// Handshakes finished (refused) so far, once at least `at_least` are.
    async fn handshakes(&self, at_least: usize) -> usize {
        let give_up = Instant::now() + GENEROUS;
        loop {
            let count = self.handshakes.load(Ordering::SeqCst);
            if count >= at_least {
                return count;
            }
            assert!(Instant::now() < give_up, "{count} handshakes");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for SelfSignedTls {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn a_self_signed_certificate_is_a_connection_error_retried_only_where_unsent() {
    let server = SelfSignedTls::start().await;
    let client = LoginIdClient::new(support::client_config(server.url.clone())).unwrap();
    let api_key = passkeyd::loginid::ApiKey::new(support::API_KEY);

    let grant = client
        .grant(&api_key, &grant_request("ivy@example.com"))
        .await;
    assert!(matches!(grant, Err(Error::Connect(_))), "{grant:?}");
    assert_eq!(server.handshakes(1).await, 1);

    // reg/init is retried on connection failures: the request never left.
    let init = client
        .reg_init(&init_request("ivy@example.com"), None, deadline())
        .await;
    assert!(matches!(init, Err(Error::Connect(_))), "{init:?}");
    let attempts = client.config().retry.init_attempts as usize;
    assert_eq!(server.handshakes(1 + attempts).await, 1 + attempts);

    // The same against plain HTTP: the handshake fails, nothing reaches the server.
    let rig = Rig::start(|_| {}).await;
    let url = url::Url::parse(&format!("https://{}", rig.emulator.addr())).unwrap();
    let client = LoginIdClient::new(support::client_config(url)).unwrap();
    let jwks = client.jwks().await;
    assert!(matches!(jwks, Err(Error::Connect(_))), "{jwks:?}");
    assert!(rig.log_lines().await.is_empty());
}

// ---- the ceremony ----

mod ceremony {
    use super::*;
    use ceremony_support::{Driver, Seen, touch_only, without_touch};
    use virtkey::Config;

    const USER: &str = "kim@example.com";

    async fn rig_with_key() -> (
        ceremony_support::Rig,
        ceremony_support::device_support::HidBridge,
    ) {
        let mut rig = ceremony_support::Rig::start(touch_only).await;
        let key = rig.plug("alpha", Config::default()).await;
        (rig, key)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reg_init_failures_end_the_ceremony_before_any_key_is_touched() {
        let (rig, _key) = rig_with_key().await;
        let faults = [
            status(503, Some(1)),
            fault(|f| {
                f.status = Some(429);
                f.retry_after = Some("30".into());
                f.times = Some(1);
            }),
            once(BodyFault::InvalidJson),
            once(BodyFault::WrongContentType),
            once(BodyFault::ResetConnection),
            once(BodyFault::Oversized {
                bytes: 100 << 20,
                declare_length: false,
            }),
        ];
        for (i, injected) in faults.into_iter().enumerate() {
            rig.emulator.push_fault(Endpoint::RegInit, injected.clone());
            let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
            let (seen, result) = Driver::new(ceremony).finish().await;
            assert_eq!(
                seen,
                [Seen::Failed(ErrorKind::BackendUnavailable)],
                "{injected:?}"
            );
            let error = match result {
                Err(CeremonyError::BackendUnavailable(error)) => error,
                other => panic!("{injected:?}: {other:?}"),
            };
            match i {
                0 => assert_eq!(error.status(), Some(503)),
                1 => assert!(matches!(
                    &error,
                    Error::Api(api) if api.retry_after == Some(Duration::from_secs(30))
                )),
                2 => assert!(matches!(error, Error::Decode(_)), "{error:?}"),
                3 => assert!(
                    matches!(error, Error::UnexpectedContentType { .. }),
                    "{error:?}"
                ),
                4 => assert!(matches!(error, Error::Transport(_)), "{error:?}"),
                _ => assert!(matches!(error, Error::ResponseTooLarge { .. }), "{error:?}"),
            }
            // One reg/init per ceremony: none of these was retried.
            assert_eq!(
                rig.statuses("/fido2/v2/reg/init").await.len(),
                i + 1,
                "{injected:?}"
            );
        }
        assert!(rig.statuses("/fido2/v2/reg/complete").await.is_empty());
        // The key was never asked for anything.
        rig.key("virtual_alpha").await.wink().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_jwks_outage_is_backend_unavailable_every_time() {
        let (rig, _key) = rig_with_key().await;
        rig.emulator.push_fault(Endpoint::Jwks, status(500, None));
        // The first ceremony downloads and fails; the second comes within the minimum refresh
        // interval, is not allowed a download, and must still report an unavailable backend,
        // not a rejected registration.
        for user in ["lou@example.com", "mae@example.com"] {
            let ceremony = rig.ceremonies.start(rig.request(user).await).unwrap();
            let (seen, result) = Driver::new(ceremony).finish().await;
            assert_eq!(
                seen.last(),
                Some(&Seen::Failed(ErrorKind::BackendUnavailable)),
                "{user}: {result:?}"
            );
            assert!(
                matches!(result, Err(CeremonyError::BackendUnavailable(_))),
                "{user}: {result:?}"
            );
        }
        let jwks = rig.statuses(Endpoint::Jwks.path()).await;
        assert_eq!(jwks, [Some(500)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_during_reg_complete_is_retried_and_the_passkey_is_kept() {
        let (rig, _key) = rig_with_key().await;
        rig.emulator
            .push_fault(Endpoint::RegComplete, once(BodyFault::ResetConnection));
        let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
        let (seen, result) = Driver::new(ceremony).finish().await;
        assert_eq!(
            without_touch(&seen),
            [
                Seen::Registering("virtual_alpha".into()),
                Seen::Completed("virtual_alpha".into())
            ]
        );
        rig.check_registration(&result.unwrap(), USER).await;
        assert_eq!(
            rig.statuses("/fido2/v2/reg/complete").await,
            [None, Some(200)]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unusable_reg_complete_answers_are_not_retried() {
        let (rig, _key) = rig_with_key().await;
        let faults = [
            once(BodyFault::InvalidJson),
            once(BodyFault::Oversized {
                bytes: 100 << 20,
                declare_length: false,
            }),
        ];
        for (i, injected) in faults.into_iter().enumerate() {
            rig.emulator
                .push_fault(Endpoint::RegComplete, injected.clone());
            let user = format!("user{i}@example.com");
            let ceremony = rig.ceremonies.start(rig.request(&user).await).unwrap();
            let (seen, result) = Driver::new(ceremony).finish().await;
            assert_eq!(
                seen.last(),
                Some(&Seen::Failed(ErrorKind::BackendUnavailable)),
                "{injected:?}"
            );
            match (i, result) {
                (0, Err(CeremonyError::BackendUnavailable(Error::Decode(_)))) => {}
                (1, Err(CeremonyError::BackendUnavailable(Error::ResponseTooLarge { .. }))) => {}
                (_, other) => panic!("{injected:?}: {other:?}"),
            }
            assert_eq!(
                rig.statuses("/fido2/v2/reg/complete").await.len(),
                i + 1,
                "{injected:?}"
            );
        }
    }
}

#[tokio::test]
async fn an_absurd_retry_after_under_a_lenient_policy_gives_up_without_panicking() {
    // A policy that waits out any Retry-After, and a server asking for 2^64 - 1 seconds.
    let rig = Rig::start_with(|_| {}, |c| c.retry.max_retry_after = Duration::MAX).await;
    let request = ready_to_complete(&rig, "max@example.com").await;
    rig.emulator.push_fault(
        Endpoint::RegComplete,
        fault(|f| {
            f.status = Some(429);
            f.retry_after = Some(u64::MAX.to_string());
            f.times = Some(1);
        }),
    );
    let result = rig.client.reg_complete(&request, deadline()).await;
    match result {
        Err(Error::DeadlineExceeded { last }) => assert_eq!(last.status(), Some(429)),
        other => panic!("{other:?}"),
    }
    assert_eq!(received(&rig, Endpoint::RegComplete, 1).await, [Some(429)]);
}
