//! Part 1: the CTAP client cost of passkeyd, python-fido2 and libwebauthn on one virtual key.
//!
//! One `virtkey` process (the Trussed firmware, PIN set, touch automatic) serves one socket;
//! the clients take turns on it (one client at a time, as the socket allows), each in a
//! process whose CPU clock counts nothing of the key. Each round is the same three
//! operations: getInfo; a pinUvAuthToken (getKeyAgreement with protocol two, then
//! getPinUvAuthTokenUsingPinWithPermissions for `mc` and the RP ID, decrypted);
//! makeCredential (ES256, not resident) with the pinUvAuthParam of that token.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use ctap::command::client_pin::Permissions;
use ctap::command::get_info::GetInfo;
use ctap::command::make_credential::{
    MakeCredential, PinUvAuth, PublicKeyCredentialParameters, RelyingParty, Request, User,
};
use ctap::pin_uv::{Pin, PinUvAuthProtocol};
use passkeyd::device::{Authenticator, DeviceConfig, Registry, RegistryEvent, RegistryHandle};
use passkeyd::transport::virt::{self, VirtualConfig, VirtualTransport};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use crate::util::{OpSample, Samples, process_cpu};

pub const RP_ID: &str = "example.org";
pub const PIN: &str = "1234";
const CLIENT_DATA: &[u8] = b"peers-bench-client-data";
const USER_ID: &[u8] = b"peers-bench-user";
/// Bound on one operation.
const OP_DEADLINE: Duration = Duration::from_secs(30);

pub const GET_INFO: &str = "getInfo";
pub const PIN_TOKEN: &str = "pinToken";
pub const MAKE_CREDENTIAL: &str = "makeCredential";
pub const OPERATIONS: [&str; 3] = [GET_INFO, PIN_TOKEN, MAKE_CREDENTIAL];

fn client_data_hash() -> [u8; 32] {
    Sha256::digest(CLIENT_DATA).into()
}

/// Times `f` (wall and this process's CPU) into `samples[name]` when `keep`.
async fn timed<T, F: Future<Output = anyhow::Result<T>>>(
    samples: &mut Samples,
    keep: bool,
    name: &'static str,
    f: F,
) -> anyhow::Result<T> {
    let cpu = process_cpu();
    let wall = Instant::now();
    let value = f.await.with_context(|| name.to_owned())?;
    let sample = OpSample {
        wall: wall.elapsed(),
        cpu: process_cpu().saturating_sub(cpu),
    };
    if keep {
        samples.entry(name).or_default().push(sample);
    }
    Ok(value)
}

/// The daemon's device side on `dir`: virtual transport, registry, one key's actor; returns
/// once the key has been probed.
pub async fn attach(
    dir: &Path,
) -> anyhow::Result<(RegistryHandle, VirtualTransport, Authenticator)> {
    let (events_tx, events_rx) = mpsc::channel(16);
    let registry = Registry::spawn(events_rx, DeviceConfig::default());
    let mut subscription = registry.subscribe().await.context("registry stopped")?;
    let transport = virt::spawn(
        VirtualConfig {
            dir: dir.to_owned(),
        },
        events_tx,
    )?;
    let authenticator = tokio::time::timeout(crate::util::READY_DEADLINE, async {
        loop {
            match subscription.events.recv().await {
                Ok(RegistryEvent::Added(device)) => return Ok(device.authenticator),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .context("the key was not found in time")??;
    Ok((registry, transport, authenticator))
}

/// passkeyd's client: `Authenticator` (device actor, CTAPHID engine, the virtual transport's
/// socket IO) on a runtime of `workers` threads (0: current thread).
pub fn passkeyd(
    dir: &Path,
    rounds: usize,
    warm_up: usize,
    workers: usize,
) -> anyhow::Result<Samples> {
    let runtime = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()?
    };
    let samples = runtime.block_on(async {
        let (registry, transport, authenticator) = attach(dir).await?;
        let pin = Pin::new(PIN)?;
        let mut samples = Samples::new();
        for round in 0..warm_up + rounds {
            let keep = round >= warm_up;
            timed(&mut samples, keep, GET_INFO, async {
                let deadline = tokio::time::Instant::now() + OP_DEADLINE;
                let info = authenticator.command(&GetInfo, deadline).result().await?;
                anyhow::ensure!(!info.versions.is_empty(), "no versions");
                Ok(())
            })
            .await?;
            let token = timed(&mut samples, keep, PIN_TOKEN, async {
                Ok(authenticator
                    .pin_token(
                        PinUvAuthProtocol::Two,
                        &pin,
                        Permissions::MAKE_CREDENTIAL,
                        Some(RP_ID),
                    )
                    .await?)
            })
            .await?;
            timed(&mut samples, keep, MAKE_CREDENTIAL, async {
                let hash = client_data_hash();
                let mut request = Request::new(
                    hash,
                    RelyingParty {
                        id: RP_ID.to_owned(),
                        name: Some("Example".to_owned()),
                    },
                    User {
                        id: USER_ID.to_vec(),
                        name: Some("alice".to_owned()),
                        display_name: Some("Alice".to_owned()),
                    },
                    vec![PublicKeyCredentialParameters::public_key(
                        ctap::cose::alg::ES256,
                    )],
                );
                request.pin_uv_auth = Some(PinUvAuth {
                    param: token.authenticate(&hash),
                    protocol: 2,
                });
                let request = MakeCredential::new(request)?;
                let deadline = tokio::time::Instant::now() + OP_DEADLINE;
                let response = authenticator
                    .make_credential(&request, deadline)
                    .result()
                    .await?;
                anyhow::ensure!(response.fmt == "packed", "format {:?}", response.fmt);
                Ok(())
            })
            .await?;
        }
        drop(authenticator);
        drop(transport);
        drop(registry);
        anyhow::Ok(samples)
    })?;
    // The socket closes with the runtime's tasks.
    drop(runtime);
    Ok(samples)
}

/// python-fido2 (its CtapHidDevice, Ctap2 and ClientPin) in the venv's interpreter.
pub fn python_fido2(
    python: &Path,
    script: &Path,
    socket: &Path,
    rounds: usize,
    warm_up: usize,
) -> anyhow::Result<Samples> {
    let output = Command::new(python)
        .arg(script)
        .arg("--socket")
        .arg(socket)
        .args(["--pin", PIN, "--rp-id", RP_ID])
        .args(["--rounds", &rounds.to_string()])
        .args(["--warm-up", &warm_up.to_string()])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "python-fido2 client failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let parsed: serde_json::Value =
        serde_json::from_slice(&output.stdout).context("the python client's JSON")?;
    let mut samples = Samples::new();
    for name in OPERATIONS {
        let list = parsed
            .get(name)
            .and_then(|v| v.as_array())
            .with_context(|| format!("no {name} in the python client's output"))?;
        for pair in list {
            let wall = pair.get(0).and_then(serde_json::Value::as_u64);
            let cpu = pair.get(1).and_then(serde_json::Value::as_u64);
            let (Some(wall), Some(cpu)) = (wall, cpu) else {
                bail!("bad sample {pair} for {name}");
            };
            samples.entry(name).or_default().push(OpSample {
                wall: Duration::from_nanos(wall),
                cpu: Duration::from_nanos(cpu),
            });
        }
    }
    Ok(samples)
}

/// libwebauthn's CTAP2 layer (`Ctap2` on its `HidChannel`: its CTAPHID framing, CBOR and PIN
/// protocol two) over its `virt` pipe, which here is the virtkey socket.
pub fn libwebauthn(socket: &Path, rounds: usize, warm_up: usize) -> anyhow::Result<Samples> {
    use libwebauthn::pin::{PinUvAuthProtocol as _, PinUvAuthProtocolTwo, pin_hash};
    use libwebauthn::proto::ctap2::{
        Ctap2, Ctap2AuthTokenPermissionRole, Ctap2COSEAlgorithmIdentifier, Ctap2ClientPinRequest,
        Ctap2CredentialType, Ctap2MakeCredentialRequest, Ctap2PinUvAuthProtocol,
        Ctap2PublicKeyCredentialRpEntity, Ctap2PublicKeyCredentialType,
        Ctap2PublicKeyCredentialUserEntity,
    };
    use libwebauthn::transport::{ChannelSettings, Device as _};
    use serde_bytes::ByteBuf;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut device =
            libwebauthn::transport::hid::virtual_device(SeqpacketPipe::connect(socket)?);
        let mut channel = device
            .channel(ChannelSettings::default())
            .await
            .map_err(|e| anyhow::anyhow!("libwebauthn channel: {e:?}"))?;
        let mut samples = Samples::new();
        let timeout = OP_DEADLINE;
        for round in 0..warm_up + rounds {
            let keep = round >= warm_up;
            timed(&mut samples, keep, GET_INFO, async {
                let info = channel
                    .ctap2_get_info()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                anyhow::ensure!(!info.versions.is_empty(), "no versions");
                Ok(())
            })
            .await?;
            let (protocol, token) = timed(&mut samples, keep, PIN_TOKEN, async {
                let protocol = PinUvAuthProtocolTwo::new();
                let agreement = channel
                    .ctap2_client_pin(
                        &Ctap2ClientPinRequest::new_get_key_agreement(Ctap2PinUvAuthProtocol::Two),
                        timeout,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let peer = agreement.key_agreement.context("no keyAgreement")?;
                let (public_key, shared_secret) = protocol
                    .encapsulate(&peer)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let pin_hash_enc = protocol
                    .encrypt(&shared_secret, &pin_hash(PIN.as_bytes()))
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let response = channel
                    .ctap2_client_pin(
                        &Ctap2ClientPinRequest::new_get_pin_token_with_perm(
                            Ctap2PinUvAuthProtocol::Two,
                            public_key,
                            &pin_hash_enc,
                            Ctap2AuthTokenPermissionRole::MAKE_CREDENTIAL,
                            Some(RP_ID),
                        ),
                        timeout,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let encrypted = response.pin_uv_auth_token.context("no pinUvAuthToken")?;
                let token = protocol
                    .decrypt(&shared_secret, &encrypted)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                Ok((protocol, token))
            })
            .await?;
            timed(&mut samples, keep, MAKE_CREDENTIAL, async {
                let hash = client_data_hash();
                let param = protocol
                    .authenticate(&token, &hash)
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let request = Ctap2MakeCredentialRequest {
                    hash: ByteBuf::from(hash.to_vec()),
                    relying_party: Ctap2PublicKeyCredentialRpEntity::new(RP_ID, "Example"),
                    user: Ctap2PublicKeyCredentialUserEntity::new(USER_ID, "alice", "Alice"),
                    algorithms: vec![Ctap2CredentialType::new(
                        Ctap2PublicKeyCredentialType::PublicKey,
                        Ctap2COSEAlgorithmIdentifier::ES256,
                    )],
                    exclude: None,
                    extensions: None,
                    options: None,
                    pin_auth_param: Some(ByteBuf::from(param)),
                    pin_auth_proto: Some(Ctap2PinUvAuthProtocol::Two as u32),
                    enterprise_attestation: None,
                    attestation_formats_preference: None,
                };
                let response = channel
                    .ctap2_make_credential(&request, timeout)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                anyhow::ensure!(
                    response.format == "packed"
                        && response.authenticator_data.attested_credential.is_some(),
                    "format {:?}",
                    response.format
                );
                Ok(())
            })
            .await?;
        }
        drop(channel);
        anyhow::Ok(samples)
    })
}

/// libwebauthn's virtual HID pipe over a virtkey socket: its messages cut into 64-byte
/// reports and reassembled by its own framing code.
#[derive(Debug)]
struct SeqpacketPipe {
    socket: rustix::fd::OwnedFd,
}

impl SeqpacketPipe {
    fn connect(path: &Path) -> anyhow::Result<Self> {
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketType, connect, socket};
        let fd = socket(AddressFamily::UNIX, SocketType::SEQPACKET, None)?;
        connect(&fd, &SocketAddrUnix::new(path)?)
            .with_context(|| format!("connecting to {}", path.display()))?;
        Ok(Self { socket: fd })
    }
}

impl libwebauthn::transport::hid::HidPipeBackend for SeqpacketPipe {
    fn send(&mut self, msg: &libwebauthn::transport::hid::framing::HidMessage) {
        // The trait has no error path: a broken socket ends the benchmark.
        #[allow(clippy::expect_used)]
        let packets = msg.packets(64).expect("CTAPHID framing");
        for packet in packets {
            let mut report = [0u8; 64];
            let len = packet.len().min(64);
            report[..len].copy_from_slice(&packet[..len]);
            #[allow(clippy::expect_used)]
            rustix::net::send(&self.socket, &report, rustix::net::SendFlags::empty())
                .expect("writing to the virtkey socket");
        }
    }

    fn recv(&mut self) -> libwebauthn::transport::hid::framing::HidMessage {
        use libwebauthn::transport::hid::framing::{HidMessageParser, HidMessageParserState};
        let mut parser = HidMessageParser::new();
        loop {
            let mut report = [0u8; 64];
            #[allow(clippy::expect_used)]
            let (len, _) =
                rustix::net::recv(&self.socket, &mut report, rustix::net::RecvFlags::empty())
                    .expect("reading the virtkey socket");
            assert!(len == 64, "virtkey closed the socket");
            #[allow(clippy::expect_used)]
            if let HidMessageParserState::Done = parser.update(&report).expect("CTAPHID frame") {
                #[allow(clippy::expect_used)]
                return parser.message().expect("CTAPHID message");
            }
        }
    }
}

/// The key's socket for the clients.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("peer.sock")
}
