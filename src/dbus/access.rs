//! Who is calling: the caller's uid and groups from the bus (GetConnectionCredentials), and
//! the allow-list decision.

/// A caller's identity as the bus daemon vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `UnixUserID`.
    pub uid: u32,
    /// `UnixGroupIDs`: the primary and supplementary groups (empty when the bus does not
    /// tell).
    pub gids: Vec<u32>,
}
