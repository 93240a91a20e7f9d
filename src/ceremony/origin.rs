//! The origin policy: which RP IDs the configured origin may register credentials for.
//!
//! passkeyd plays the browser, so it applies a browser's rules (WebAuthn L3 §5.1.3 step 8,
//! HTML "is a registrable domain suffix of or is equal to"):
//!
//! - the configured origin is `https` (plain `http` only to a loopback host, and only when
//!   development mode allows it), with a host and nothing but scheme, host and port;
//! - the RP ID is a domain (never an IP address) equal to the origin's host, or a parent
//!   domain of it that is not a public suffix: `login.example.com` may use `example.com`, but
//!   `example.co.uk` may not use `co.uk` and `a.github.io` may not use `github.io`.
//!
//! The public suffix list (ICANN and private sections) is compiled in through the `psl`
//! crate: nothing is downloaded at run time, and a newer list arrives with a crate update.

use std::net::IpAddr;

use url::{Host, Url};

/// Why an origin cannot be configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OriginError {
    /// The scheme is not https (nor http to a loopback host in development mode).
    #[error("the origin must use https (http only to a loopback host in development)")]
    Insecure,
    /// The URL has credentials, a path other than `/`, a query or a fragment, or no host.
    #[error("the origin must be scheme://host[:port] and nothing more")]
    NotAnOrigin,
}

/// Why the RP ID may not be used from the configured origin.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RpIdError {
    /// The RP ID is not a valid domain.
    #[error("the RP ID is not a valid domain")]
    Invalid,
    /// The RP ID or the origin's host is an IP address.
    #[error("IP addresses cannot be RP IDs")]
    IpAddress,
    /// The RP ID is neither the origin's host nor a parent domain of it.
    #[error("the RP ID is not the origin's host or a parent domain of it")]
    NotASuffix,
    /// The RP ID is a public suffix (or above the origin's registrable domain).
    #[error("the RP ID is a public suffix")]
    PublicSuffix,
}

/// A checked origin: what clientDataJSON carries and what RP IDs are checked against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    serialized: String,
    host: Host<String>,
}

impl Origin {
    /// Checks `url` as the origin passkeyd registers from. `allow_loopback_http` admits
    /// `http://localhost`, `http://127.0.0.1` and `http://[::1]` (any port), for development
    /// against a local relying party.
    pub fn new(url: &Url, allow_loopback_http: bool) -> Result<Self, OriginError> {
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
            || !matches!(url.path(), "" | "/")
        {
            return Err(OriginError::NotAnOrigin);
        }
        let host = url.host().ok_or(OriginError::NotAnOrigin)?.to_owned();
        match url.scheme() {
            "https" => {}
            "http" if allow_loopback_http && is_loopback(&host) => {}
            _ => return Err(OriginError::Insecure),
        }
        Ok(Self {
            // The ASCII serialization (WebAuthn L3 §5.8.1: "the fully qualified origin"):
            // scheme://host[:port], default port left out, IDN hosts in punycode.
            serialized: url.origin().ascii_serialization(),
            host,
        })
    }

    /// The origin as clientDataJSON carries it, e.g. `https://login.example.com`.
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// The origin's host.
    pub fn host(&self) -> &Host<String> {
        &self.host
    }

    /// The RP ID to use when the RP sent none: the origin's effective domain (WebAuthn L3
    /// §5.1.3 step 8). `None` when the host is an IP address.
    pub fn default_rp_id(&self) -> Option<&str> {
        match &self.host {
            Host::Domain(domain) => Some(domain),
            Host::Ipv4(_) | Host::Ipv6(_) => None,
        }
    }

    /// Checks that `rp_id` is this origin's host or a registrable parent domain of it, and
    /// returns it in canonical form (lower case ASCII, IDN labels in punycode).
    pub fn check_rp_id(&self, rp_id: &str) -> Result<String, RpIdError> {
        let rp_id = match Host::parse(rp_id).map_err(|_| RpIdError::Invalid)? {
            Host::Domain(domain) => domain,
            Host::Ipv4(_) | Host::Ipv6(_) => return Err(RpIdError::IpAddress),
        };
        if rp_id.is_empty() || rp_id.ends_with('.') || rp_id.starts_with('.') {
            return Err(RpIdError::Invalid);
        }
        let host = match &self.host {
            Host::Domain(domain) => domain.as_str(),
            Host::Ipv4(_) | Host::Ipv6(_) => return Err(RpIdError::IpAddress),
        };
        if host == rp_id {
            return Ok(rp_id);
        }
        let is_parent = host
            .strip_suffix(rp_id.as_str())
            .is_some_and(|rest| rest.ends_with('.'));
        if !is_parent {
            return Err(RpIdError::NotASuffix);
        }
        // A parent domain must not be above the host's registrable domain ("eTLD+1"): then it
        // would be a public suffix, shared by unrelated sites.
        let registrable = psl::domain_str(host).ok_or(RpIdError::PublicSuffix)?;
        if rp_id.len() >= registrable.len() && rp_id.ends_with(registrable) {
            Ok(rp_id)
        } else {
            Err(RpIdError::PublicSuffix)
        }
    }
}

fn is_loopback(host: &Host<String>) -> bool {
    match host {
        Host::Domain(domain) => domain == "localhost" || domain.ends_with(".localhost"),
        Host::Ipv4(ip) => IpAddr::V4(*ip).is_loopback(),
        Host::Ipv6(ip) => IpAddr::V6(*ip).is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: &str) -> Origin {
        Origin::new(&Url::parse(url).unwrap(), false).unwrap()
    }

    #[test]
    fn origins_must_be_https_and_bare() {
        let parse = |url: &str, dev| Origin::new(&Url::parse(url).unwrap(), dev);
        assert_eq!(
            parse("https://example.com", false).unwrap().as_str(),
            "https://example.com"
        );
        assert_eq!(
            parse("https://example.com/", false).unwrap().as_str(),
            "https://example.com"
        );
        assert_eq!(
            parse("https://Login.Example.com:8443", false)
                .unwrap()
                .as_str(),
            "https://login.example.com:8443"
        );
        assert_eq!(
            parse("https://bücher.example", false).unwrap().as_str(),
            "https://xn--bcher-kva.example"
        );
        assert_eq!(
            parse("http://example.com", false),
            Err(OriginError::Insecure)
        );
        assert_eq!(
            parse("http://example.com", true),
            Err(OriginError::Insecure)
        );
        assert_eq!(
            parse("http://localhost:8080", false),
            Err(OriginError::Insecure)
        );
        assert_eq!(
            parse("http://localhost:8080", true).unwrap().as_str(),
            "http://localhost:8080"
        );
        assert_eq!(
            parse("http://127.0.0.1:1", true).unwrap().as_str(),
            "http://127.0.0.1:1"
        );
        assert_eq!(
            parse("http://[::1]", true).unwrap().as_str(),
            "http://[::1]"
        );
        assert_eq!(parse("ftp://example.com", true), Err(OriginError::Insecure));
        for bad in [
            "https://example.com/login",
            "https://example.com/?q=1",
            "https://example.com/#f",
            "https://user:pw@example.com",
            "https://user@example.com",
        ] {
            assert_eq!(parse(bad, false), Err(OriginError::NotAnOrigin), "{bad}");
        }
        assert_eq!(
            parse("data:text/plain,hi", false),
            Err(OriginError::NotAnOrigin)
        );
    }

    #[test]
    fn rp_id_equal_to_the_host_is_accepted() {
        assert_eq!(
            origin("https://example.com")
                .check_rp_id("example.com")
                .unwrap(),
            "example.com"
        );
        assert_eq!(
            origin("https://example.com")
                .check_rp_id("EXAMPLE.com")
                .unwrap(),
            "example.com"
        );
        let dev = Origin::new(&Url::parse("http://localhost:3000").unwrap(), true).unwrap();
        assert_eq!(dev.check_rp_id("localhost").unwrap(), "localhost");
        assert_eq!(dev.default_rp_id(), Some("localhost"));
    }

    #[test]
    fn registrable_parent_domains_are_accepted() {
        let o = origin("https://a.login.example.com");
        assert_eq!(
            o.check_rp_id("login.example.com").unwrap(),
            "login.example.com"
        );
        assert_eq!(o.check_rp_id("example.com").unwrap(), "example.com");
        let uk = origin("https://shop.example.co.uk");
        assert_eq!(uk.check_rp_id("example.co.uk").unwrap(), "example.co.uk");
    }

    #[test]
    fn public_suffixes_are_refused() {
        let o = origin("https://a.login.example.com");
        assert_eq!(o.check_rp_id("com"), Err(RpIdError::PublicSuffix));
        let uk = origin("https://shop.example.co.uk");
        assert_eq!(uk.check_rp_id("co.uk"), Err(RpIdError::PublicSuffix));
        assert_eq!(uk.check_rp_id("uk"), Err(RpIdError::PublicSuffix));
        // The private section of the list counts too.
        let pages = origin("https://alice.github.io");
        assert_eq!(pages.check_rp_id("github.io"), Err(RpIdError::PublicSuffix));
        assert_eq!(
            pages.check_rp_id("alice.github.io").unwrap(),
            "alice.github.io"
        );
    }

    #[test]
    fn other_domains_are_refused() {
        let o = origin("https://login.example.com");
        assert_eq!(o.check_rp_id("example.org"), Err(RpIdError::NotASuffix));
        assert_eq!(o.check_rp_id("ample.com"), Err(RpIdError::NotASuffix));
        assert_eq!(
            o.check_rp_id("xlogin.example.com"),
            Err(RpIdError::NotASuffix)
        );
        assert_eq!(
            o.check_rp_id("a.login.example.com"),
            Err(RpIdError::NotASuffix)
        );
        assert_eq!(o.check_rp_id("evil.com"), Err(RpIdError::NotASuffix));
    }

    #[test]
    fn malformed_rp_ids_and_ip_addresses_are_refused() {
        let o = origin("https://login.example.com");
        assert_eq!(o.check_rp_id(""), Err(RpIdError::Invalid));
        assert_eq!(o.check_rp_id("exa mple.com"), Err(RpIdError::Invalid));
        assert_eq!(o.check_rp_id("example.com."), Err(RpIdError::Invalid));
        assert_eq!(o.check_rp_id(".example.com"), Err(RpIdError::Invalid));
        assert_eq!(o.check_rp_id("127.0.0.1"), Err(RpIdError::IpAddress));
        assert_eq!(o.check_rp_id("[::1]"), Err(RpIdError::IpAddress));
        let ip = Origin::new(&Url::parse("http://127.0.0.1:8080").unwrap(), true).unwrap();
        assert_eq!(ip.check_rp_id("127.0.0.1"), Err(RpIdError::IpAddress));
        assert_eq!(ip.default_rp_id(), None);
    }
}
