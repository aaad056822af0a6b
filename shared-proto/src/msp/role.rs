//! Roles a member certificate can carry (Fabric's NodeOUs), read from the subject's OU.

use std::fmt;
use std::str::FromStr;

/// What a certificate's holder may act as. A certificate carries exactly one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Client,
    Peer,
    Orderer,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Client, Role::Peer, Role::Orderer, Role::Admin];

    /// The default OU value for this role (the `NodeOus` defaults).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Peer => "peer",
            Role::Orderer => "orderer",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string named no role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}; expected one of client, peer, orderer, admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}
