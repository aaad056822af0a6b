//! Dialling another node: connect where `address_overrides` says, verify the certificate of
//! the node that was advertised.
//!
//! Every outbound connection of a node (orderer to orderer on the cluster port, catch-up
//! Deliver, peer to orderer Deliver, peer to peer gossip) starts from an address another node
//! advertised and goes through one [`Dialer`], built once from the node's config and passed
//! down. The TCP connection goes to [`AddressBook::resolve`]'s answer; TLS verifies the
//! server certificate for the advertised host, the name it was issued for, so a proxy or an
//! in-cluster name in between changes where bytes flow and nothing about who is trusted.
//!
//! | advertised  | `address_overrides`     | TCP to      | TLS name |
//! |-------------|-------------------------|-------------|----------|
//! | `o2:7050`   | none                    | `o2:7050`   | `o2`     |
//! | `o2:7050`   | `o2:7050 -> proxy:9050` | `proxy:9050`| `o2`     |

use std::collections::HashMap;
use std::sync::Arc;

use tonic::transport::Endpoint;

use crate::node_config::AddressOverride;
use crate::tls::host_of;
use crate::tls::TlsMaterial;

/// The address could not be made into an endpoint.
#[derive(Debug, thiserror::Error)]
#[error("cannot dial {advertised} (via {dialed}): {reason}")]
pub struct DialError {
    pub advertised: String,
    pub dialed: String,
    pub reason: String,
}

/// Advertised address -> address to dial, from `address_overrides` (validated at load: no
/// `from` twice).
#[derive(Debug, Clone, Default)]
pub struct AddressBook {
    overrides: HashMap<String, String>,
}

impl AddressBook {
    pub fn new(overrides: &[AddressOverride]) -> Self {
        AddressBook {
            overrides: overrides
                .iter()
                .map(|o| (o.from.clone(), o.to.clone()))
                .collect(),
        }
    }

    /// Where to connect for `advertised`: its override, else itself. Exact match on the
    /// string as advertised.
    pub fn resolve<'a>(&'a self, advertised: &'a str) -> &'a str {
        self.overrides
            .get(advertised)
            .map_or(advertised, String::as_str)
    }
}

/// This node's TLS material and address book: makes every client endpoint to another node.
#[derive(Debug, Clone)]
pub struct Dialer {
    tls: Arc<TlsMaterial>,
    book: AddressBook,
}

impl Dialer {
    pub fn new(tls: Arc<TlsMaterial>, book: AddressBook) -> Self {
        Dialer { tls, book }
    }

    /// A dialer with no overrides (tools and tests).
    pub fn direct(tls: Arc<TlsMaterial>) -> Self {
        Self::new(tls, AddressBook::default())
    }

    pub fn tls(&self) -> &Arc<TlsMaterial> {
        &self.tls
    }

    pub fn book(&self) -> &AddressBook {
        &self.book
    }

    /// A mutual-TLS endpoint for the node advertised at `advertised` (host:port): connects to
    /// its override, verifies the server as the advertised host. Callers add timeouts and
    /// connect.
    pub fn endpoint(&self, advertised: &str) -> Result<Endpoint, DialError> {
        let dialed = self.book.resolve(advertised);
        let err = |e: tonic::transport::Error| DialError {
            advertised: advertised.to_owned(),
            dialed: dialed.to_owned(),
            reason: e.to_string(),
        };
        Endpoint::from_shared(format!("https://{dialed}"))
            .map_err(err)?
            .tls_config(self.tls.client(host_of(advertised)))
            .map_err(err)
    }
}

#[cfg(test)]
#[path = "dial_tests.rs"]
mod tests;
