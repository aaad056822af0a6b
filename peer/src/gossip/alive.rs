//! Alive messages: who a gossip sender is, proven.
//!
//! A sender signs [`AliveInfo`] with its peer identity. The info names the SHA-256 of the TLS
//! certificate the sender uses, so a receiver that sees the message arrive over a mutual-TLS
//! connection with that very certificate knows the stream belongs to that member. The
//! identity must be a `peer` of this peer's own org on the channel (gossip stays inside an
//! org: each org pulls from the orderers through its own leader).

use prost::Message as _;
use shared_proto::channel::Channel;
use shared_proto::hash::Hash;
use shared_proto::msp::MspError;
use shared_proto::msp::Role;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::msp::SerializedIdentity;
use shared_proto::pb::peer::AliveInfo;
use shared_proto::pb::peer::AliveMessage;
use shared_proto::signing::Domain;

/// Longest `known` list accepted (and sent).
pub const KNOWN_MAX: usize = 64;

/// Why an alive message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AliveError {
    #[error("alive info does not decode: {0}")]
    Malformed(String),
    #[error("alive message is for channel {found:?}, sent on {expected:?}")]
    WrongChannel { expected: String, found: String },
    #[error("sender identity: {0}")]
    Identity(#[from] MspError),
    #[error("sender {msp_id} is not of this peer's org {own}")]
    OtherOrg { msp_id: String, own: String },
    #[error("alive message names another TLS certificate than the connection's")]
    TlsMismatch,
    #[error("alive message has {0} known endpoints; at most {KNOWN_MAX}")]
    TooManyKnown(usize),
}

/// An alive message whose signature, identity and TLS binding were checked.
#[derive(Debug, Clone)]
pub struct VerifiedAlive {
    pub info: AliveInfo,
    /// SHA-256 of the sender's signing certificate.
    pub identity_id: Hash,
}

/// Signs `info` (its `identity` and `tls_cert_hash` must already be this node's).
pub fn sign_alive(identity: &SigningIdentity, info: &AliveInfo) -> AliveMessage {
    let info = info.encode_to_vec();
    let signature = identity.sign(Domain::GossipAlive, &[&info]);
    AliveMessage { info, signature }
}

/// Checks an alive message received for `channel` over a TLS connection whose client
/// certificate hashes to `tls_cert_hash`. Certificates are checked at `now_unix`: membership
/// is about now, unlike block validation.
pub fn verify_alive(
    channel: &Channel,
    own_msp: &str,
    message: &AliveMessage,
    tls_cert_hash: &Hash,
    now_unix: i64,
) -> Result<VerifiedAlive, AliveError> {
    let info = AliveInfo::decode(message.info.as_slice())
        .map_err(|e| AliveError::Malformed(e.to_string()))?;
    if info.channel_id != channel.id() {
        return Err(AliveError::WrongChannel {
            expected: channel.id().to_owned(),
            found: info.channel_id,
        });
    }
    if info.known.len() > KNOWN_MAX {
        return Err(AliveError::TooManyKnown(info.known.len()));
    }
    if info.tls_cert_hash.as_slice() != tls_cert_hash.as_slice() {
        return Err(AliveError::TlsMismatch);
    }
    let serialized = SerializedIdentity::decode(info.identity.as_slice())
        .map_err(|e| AliveError::Malformed(e.to_string()))?;
    if serialized.mspid != own_msp {
        return Err(AliveError::OtherOrg {
            msp_id: serialized.mspid,
            own: own_msp.to_owned(),
        });
    }
    let sender = channel
        .msps()
        .deserialize_identity(&info.identity, now_unix)?;
    sender.require_role(Role::Peer)?;
    sender.verify(Domain::GossipAlive, &[&message.info], &message.signature)?;
    Ok(VerifiedAlive {
        identity_id: sender.id,
        info,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::validate::testkit::kit;
    use crate::validate::testkit::CHANNEL;
    use crate::validate::testkit::NOW;

    const TLS: Hash = [9; 32];

    fn info(identity: &SigningIdentity) -> AliveInfo {
        AliveInfo {
            endpoint: "peer1.org1:7051".into(),
            identity: identity.serialized().to_vec(),
            height: 12,
            sequence: 1,
            can_lead: true,
            leader: false,
            tls_cert_hash: TLS.to_vec(),
            known: vec![],
            channel_id: CHANNEL.into(),
        }
    }

    fn check(message: &AliveMessage, tls: &Hash) -> Result<VerifiedAlive, AliveError> {
        verify_alive(&kit().channel, "Org1MSP", message, tls, NOW)
    }

    #[test]
    fn member_of_own_org_with_matching_tls_is_accepted() {
        let peer = &kit().org1_peers[1];
        let v = check(&sign_alive(peer, &info(peer)), &TLS).unwrap();
        assert_eq!(v.info.height, 12);
    }

    #[test]
    fn alive_over_another_tls_connection_is_refused() {
        let peer = &kit().org1_peers[1];
        let err = check(&sign_alive(peer, &info(peer)), &[1; 32]).unwrap_err();
        assert!(matches!(err, AliveError::TlsMismatch), "{err}");
    }

    #[test]
    fn peer_of_another_org_is_refused() {
        let peer = &kit().org2_peers[0];
        let err = check(&sign_alive(peer, &info(peer)), &TLS).unwrap_err();
        assert!(matches!(err, AliveError::OtherOrg { .. }), "{err}");
    }

    #[test]
    fn client_identity_is_not_a_gossip_member() {
        let client = &kit().client;
        let err = check(&sign_alive(client, &info(client)), &TLS).unwrap_err();
        assert!(matches!(err, AliveError::Identity(_)), "{err}");
    }

    #[test]
    fn tampered_or_resigned_alive_is_refused() {
        let peer = &kit().org1_peers[1];
        let mut message = sign_alive(peer, &info(peer));
        let mut tampered = info(peer);
        tampered.height = 1_000_000;
        message.info = tampered.encode_to_vec();
        assert!(matches!(
            check(&message, &TLS).unwrap_err(),
            AliveError::Identity(MspError::BadSignature { .. })
        ));
        // Signed by another member of the org while naming this one's identity.
        let other = &kit().org1_peers[0];
        let forged = AliveMessage {
            info: info(peer).encode_to_vec(),
            signature: other.sign(Domain::GossipAlive, &[&info(peer).encode_to_vec()]),
        };
        assert!(check(&forged, &TLS).is_err());
    }

    #[test]
    fn alive_for_another_channel_is_refused() {
        let peer = &kit().org1_peers[1];
        let mut i = info(peer);
        i.channel_id = "other".into();
        let err = check(&sign_alive(peer, &i), &TLS).unwrap_err();
        assert!(matches!(err, AliveError::WrongChannel { .. }), "{err}");
    }
}
