//! Fault injection: per endpoint, a queue of faults applied to the next requests.
//!
//! Set at start (`--faults FILE`, [`EmulatorConfig::faults`](crate::EmulatorConfig)) and at run
//! time through `PUT /admin/faults` or [`Emulator::set_faults`](crate::Emulator::set_faults).
//! JSON form: `{"reg/complete": [{"status": 500, "times": 1}], "jwks": [{"delayMs": 60000}]}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// An endpoint that faults can be attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Endpoint {
    /// `POST /fido2/v2/mgmt/grant`.
    #[serde(rename = "grant")]
    Grant,
    /// `POST /fido2/v2/mgmt/token/verify`.
    #[serde(rename = "token/verify")]
    TokenVerify,
    /// `GET /fido2/v2/.well-known/jwks.json`.
    #[serde(rename = "jwks")]
    Jwks,
    /// `POST /fido2/v2/reg/init`.
    #[serde(rename = "reg/init")]
    RegInit,
    /// `POST /fido2/v2/reg/complete`.
    #[serde(rename = "reg/complete")]
    RegComplete,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Self; 5] = [
        Self::Grant,
        Self::TokenVerify,
        Self::Jwks,
        Self::RegInit,
        Self::RegComplete,
    ];

    /// The path the endpoint is served at: the one table that both the router and fault
    /// injection read.
    pub const fn path(self) -> &'static str {
        match self {
            Self::Grant => "/fido2/v2/mgmt/grant",
            Self::TokenVerify => "/fido2/v2/mgmt/token/verify",
            Self::Jwks => "/fido2/v2/.well-known/jwks.json",
            Self::RegInit => "/fido2/v2/reg/init",
            Self::RegComplete => "/fido2/v2/reg/complete",
        }
    }

    /// The endpoint served at `path`, if any.
    pub fn from_path(path: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|endpoint| endpoint.path() == path)
    }
}

/// What is wrong with the body of a faulty response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", deny_unknown_fields)]
pub enum BodyFault {
    /// The real response, cut in half: `Content-Length` announces the full body, half of it is
    /// sent, then the connection is closed. The request *is* processed.
    Truncated,
    /// Instead of the real response, `bytes` bytes of JSON-looking filler are streamed (never
    /// held in memory). The request is not processed.
    #[serde(rename_all = "camelCase")]
    Oversized {
        /// Body size.
        bytes: u64,
        /// Announce the size in `Content-Length` (otherwise chunked).
        #[serde(default)]
        declare_length: bool,
    },
    /// The real response with `Content-Type: text/html`. The request is processed.
    WrongContentType,
    /// The connection is closed without any response. The request is not processed.
    DropConnection,
    /// The connection is reset (TCP RST, `SO_LINGER` 0) without any response. The request is
    /// not processed.
    ResetConnection,
    /// `200 OK` as `application/json` with a body that is not JSON. The request is not
    /// processed.
    InvalidJson,
    /// The real response, its headers (with the full `Content-Length`) at once and its body
    /// trickled `bytes` bytes every `every_ms` milliseconds: a server that never stalls long
    /// enough for a read timeout yet takes as long as it likes. The request is processed.
    #[serde(rename_all = "camelCase")]
    SlowDrip {
        /// Bytes per piece (0 counts as 1).
        bytes: usize,
        /// Pause before each piece.
        every_ms: u64,
    },
}

/// One fault. Status, delay and body faults combine; the delay comes first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Answer with this status and an `AppError` body instead of processing the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` header value sent with `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// Answer `307 Temporary Redirect` to this URL instead of processing the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// Wait this long before anything else (a stalled server when long).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Body fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<BodyFault>,
    /// Apply to this many requests, then move on to the next fault in the queue; absent means
    /// every request from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
}

impl Fault {
    /// Short description for the request log.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ms) = self.delay_ms {
            parts.push(format!("delay {ms}ms"));
        }
        if let Some(status) = self.status {
            parts.push(format!("status {status}"));
        }
        if self.redirect_to.is_some() {
            parts.push("redirect".to_owned());
        }
        match &self.body {
            Some(BodyFault::Truncated) => parts.push("truncated".to_owned()),
            Some(BodyFault::Oversized { bytes, .. }) => parts.push(format!("oversized {bytes}")),
            Some(BodyFault::WrongContentType) => parts.push("wrong content type".to_owned()),
            Some(BodyFault::DropConnection) => parts.push("drop connection".to_owned()),
            Some(BodyFault::ResetConnection) => parts.push("reset connection".to_owned()),
            Some(BodyFault::InvalidJson) => parts.push("invalid JSON".to_owned()),
            Some(BodyFault::SlowDrip { bytes, every_ms }) => {
                parts.push(format!("slow drip {bytes}B/{every_ms}ms"));
            }
            None => {}
        }
        parts.join(", ")
    }
}

/// Fault queues per endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FaultPlan(pub BTreeMap<Endpoint, Vec<Fault>>);

impl FaultPlan {
    /// The fault for the next request to `endpoint`, consuming one use of it.
    ///
    /// Faults with `times: 0` are spent before they apply: they are dropped, all at once, so
    /// that a plan holding many of them (an admin body may) costs one pass over the queue.
    pub fn take(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let queue = self.0.get_mut(&endpoint)?;
        let spent = queue
            .iter()
            .take_while(|fault| fault.times == Some(0))
            .count();
        queue.drain(..spent);
        let fault = match queue.first_mut() {
            None => None,
            Some(first) => {
                let fault = first.clone();
                match &mut first.times {
                    None => {}
                    Some(n) if *n > 1 => *n -= 1,
                    Some(_) => {
                        queue.remove(0);
                    }
                }
                Some(fault)
            }
        };
        if queue.is_empty() {
            self.0.remove(&endpoint);
        }
        fault
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_form_and_queue_order() {
        let mut plan: FaultPlan = serde_json::from_str(
            r#"{"reg/complete":[{"status":500,"times":1},
                                {"status":429,"retryAfter":"1","times":2}],
                "jwks":[{"delayMs":5,"body":{"kind":"oversized","bytes":10,"declareLength":true}}]}"#,
        )
        .unwrap();
        let take = |plan: &mut FaultPlan| plan.take(Endpoint::RegComplete).map(|f| f.status);
        assert_eq!(take(&mut plan), Some(Some(500)));
        assert_eq!(take(&mut plan), Some(Some(429)));
        assert_eq!(take(&mut plan), Some(Some(429)));
        assert_eq!(take(&mut plan), None);
        for _ in 0..3 {
            let fault = plan.take(Endpoint::Jwks).unwrap();
            assert_eq!(
                fault.body,
                Some(BodyFault::Oversized {
                    bytes: 10,
                    declare_length: true
                })
            );
        }
        assert_eq!(plan.take(Endpoint::Grant), None);
    }

    #[test]
    fn spent_faults_are_skipped_without_recursion() {
        // As many `times: 0` faults as a 256 KiB admin body can hold, and then some: one
        // stack frame per fault would overflow the stack.
        let mut queue = vec![
            Fault {
                times: Some(0),
                ..Fault::default()
            };
            500_000
        ];
        queue.push(Fault {
            status: Some(503),
            times: Some(1),
            ..Fault::default()
        });
        queue.extend(std::iter::repeat_n(
            Fault {
                times: Some(0),
                ..Fault::default()
            },
            3,
        ));
        let mut plan = FaultPlan([(Endpoint::RegInit, queue)].into());
        assert_eq!(
            plan.take(Endpoint::RegInit).map(|f| f.status),
            Some(Some(503))
        );
        // The trailing spent faults go with the next take, which finds nothing to apply.
        assert_eq!(plan.take(Endpoint::RegInit), None);
        assert!(plan.0.is_empty());
        let mut only_spent = FaultPlan(
            [(
                Endpoint::Jwks,
                vec![
                    Fault {
                        times: Some(0),
                        ..Fault::default()
                    };
                    3
                ],
            )]
            .into(),
        );
        assert_eq!(only_spent.take(Endpoint::Jwks), None);
        assert!(only_spent.0.is_empty());
    }

    #[test]
    fn new_body_faults_in_json_form() {
        let plan: FaultPlan = serde_json::from_str(
            r#"{"reg/init":[{"body":{"kind":"resetConnection"},"times":1},
                            {"body":{"kind":"invalidJson"},"times":1},
                            {"body":{"kind":"slowDrip","bytes":2,"everyMs":50}}]}"#,
        )
        .unwrap();
        let queue = &plan.0[&Endpoint::RegInit];
        assert_eq!(queue[0].body, Some(BodyFault::ResetConnection));
        assert_eq!(queue[1].body, Some(BodyFault::InvalidJson));
        assert_eq!(
            queue[2].body,
            Some(BodyFault::SlowDrip {
                bytes: 2,
                every_ms: 50
            })
        );
        assert_eq!(queue[2].label(), "slow drip 2B/50ms");
        assert_eq!(queue[0].label(), "reset connection");
    }

    #[test]
    fn unknown_members_are_refused() {
        assert!(serde_json::from_str::<FaultPlan>(r#"{"grant":[{"stauts":500}]}"#).is_err());
        assert!(serde_json::from_str::<FaultPlan>(r#"{"nope":[]}"#).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(
            Endpoint::from_path("/fido2/v2/reg/init"),
            Some(Endpoint::RegInit)
        );
        assert_eq!(Endpoint::from_path("/fido2/v2/reg/init/"), None);
        assert_eq!(Endpoint::from_path("/admin/faults"), None);
        for endpoint in Endpoint::ALL {
            assert_eq!(Endpoint::from_path(endpoint.path()), Some(endpoint));
        }
        assert_eq!(Endpoint::Jwks.path(), "/fido2/v2/.well-known/jwks.json");
    }
}
