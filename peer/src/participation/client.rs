//! The operator's side of channel participation: a signed `JoinChannel` request to a peer's
//! service port (what `peer channel join` sends).

use std::time::Duration;

use prost::Message as _;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::envelope::new_nonce;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::peer::channel_participation_client::ChannelParticipationClient;
use shared_proto::pb::peer::ChannelInfo;
use shared_proto::pb::peer::JoinChannelRequest;
use tonic::transport::Channel;

use crate::sdk::ClientTls;
use crate::sdk::SdkError;

/// Longest a join may take (the peer writes the block durably and commits it).
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The signed request to join the channel of `block` (its encoded bytes, sent as they are):
/// a `PEER_ADMIN` envelope whose channel id is the block's (empty when `block` does not
/// decode as a genesis block: the peer then refuses it) and whose data is a
/// `JoinChannelRequest`.
pub fn join_request(admin: &SigningIdentity, block: Vec<u8>, timestamp_unix_ms: u64) -> Envelope {
    let channel_id = Block::decode(block.as_slice())
        .ok()
        .and_then(|b| shared_proto::channel::config_from_block(&b).ok())
        .map(|c| c.channel_id)
        .unwrap_or_default();
    join_request_for(admin, &channel_id, block, timestamp_unix_ms)
}

/// As [`join_request`], naming `channel_id` whatever the block says (tests).
pub fn join_request_for(
    admin: &SigningIdentity,
    channel_id: &str,
    block: Vec<u8>,
    timestamp_unix_ms: u64,
) -> Envelope {
    create_signed_envelope(
        admin,
        HeaderType::PeerAdmin,
        channel_id,
        JoinChannelRequest { block }.encode_to_vec(),
        new_nonce(),
        timestamp_unix_ms,
    )
}

/// An operator connected to one peer's service port.
#[derive(Debug, Clone)]
pub struct AdminClient {
    identity: SigningIdentity,
    client: ChannelParticipationClient<Channel>,
}

impl AdminClient {
    /// Signs as `identity`; presents `tls` to the peer at `addr` (host:port).
    pub fn new(identity: SigningIdentity, addr: &str, tls: &ClientTls) -> Result<Self, SdkError> {
        let channel = crate::sdk::channel_to(addr, tls)?;
        Ok(AdminClient {
            identity,
            client: ChannelParticipationClient::new(channel),
        })
    }

    /// User `user` (e.g. `Admin`) of org `msp_id` of a generated network, with its signing
    /// and TLS material.
    pub fn from_network(
        net: &Generated,
        msp_id: &str,
        user: &str,
        addr: &str,
    ) -> Result<Self, SdkError> {
        let u = net
            .user(msp_id, user)
            .ok_or_else(|| SdkError::Config(format!("no user {user} in {msp_id}")))?;
        let identity = SigningIdentity::from_pem_files(msp_id, &u.cert, &u.key)
            .map_err(|e| SdkError::Config(e.to_string()))?;
        Self::new(identity, addr, &ClientTls::from_network(net, msp_id, user)?)
    }

    pub fn identity(&self) -> &SigningIdentity {
        &self.identity
    }

    /// Joins the channel whose genesis block is `block` (encoded), signed now.
    pub async fn join(&self, block: Vec<u8>) -> Result<ChannelInfo, tonic::Status> {
        let request = join_request(&self.identity, block, crate::query::now_unix_ms());
        self.send(request).await
    }

    /// Sends a join request signed by anyone (tests of refusals).
    pub async fn send(&self, request: Envelope) -> Result<ChannelInfo, tonic::Status> {
        let mut request = tonic::Request::new(request);
        request.set_timeout(JOIN_TIMEOUT);
        let mut client = self.client.clone();
        client
            .join_channel(request)
            .await
            .map(tonic::Response::into_inner)
    }
}
