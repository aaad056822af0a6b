//! Admin calls for cluster tests: an Admin client over mutual TLS and signed ORDERER_ADMIN
//! requests.

use std::time::Duration;

use shared_proto::envelope;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::admin_client::AdminClient;
use tonic::transport::Certificate;
use tonic::transport::Channel as GrpcChannel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;

use super::now_unix;
use super::TestCluster;

/// An Admin client for node `i`, presenting the TLS certificate and key `tls` (none: no
/// client certificate).
pub fn admin_client(
    cluster: &TestCluster,
    i: usize,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> AdminClient<GrpcChannel> {
    let mut config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cluster.tls_ca()))
        .domain_name("127.0.0.1");
    if let Some((cert, key)) = tls {
        config = config.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{}", cluster.client_addr(i)))
        .unwrap()
        .tls_config(config)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    AdminClient::new(channel).max_encoding_message_size(64 * 1024 * 1024)
}

/// A signed envelope of `header_type` for `channel` carrying `data`.
pub fn admin_request_for(
    signer: &SigningIdentity,
    header_type: HeaderType,
    channel: &str,
    data: Vec<u8>,
    timestamp_unix_ms: u64,
) -> Envelope {
    envelope::create_signed_envelope(
        signer,
        header_type,
        channel,
        data,
        envelope::new_nonce(),
        timestamp_unix_ms,
    )
}

impl TestCluster {
    /// An Admin client for node `i` as the orderer org's Admin (its TLS certificate).
    pub fn orderer_admin_client(&self, i: usize) -> AdminClient<GrpcChannel> {
        let user = self.generated.user("OrdererMSP", "Admin").unwrap();
        admin_client(self, i, Some((&user.tls_cert, &user.tls_key)))
    }

    /// An ORDERER_ADMIN request for `channel` ("" for the node) signed by the orderer org's
    /// Admin, carrying `request`.
    pub fn orderer_admin_request(&self, channel: &str, request: &impl prost::Message) -> Envelope {
        let admin = super::config::admin(&self.generated, "OrdererMSP");
        admin_request_for(
            &admin,
            HeaderType::OrdererAdmin,
            channel,
            request.encode_to_vec(),
            now_unix() as u64 * 1000,
        )
    }

    /// Material and configs of a network whose nodes are not started.
    pub fn generate_only(opts: super::ClusterOptions) -> anyhow::Result<Self> {
        Self::start(super::ClusterOptions {
            no_start: true,
            ..opts
        })
    }

    /// A JoinChannel request for `block` (encoded), signed by this network's orderer Admin.
    pub fn join_request_as_its_admin(&self, block: &[u8]) -> Envelope {
        let decoded = <shared_proto::pb::common::Block as prost::Message>::decode(block).unwrap();
        let channel = shared_proto::channel::Channel::from_config_block(&decoded).unwrap();
        self.orderer_admin_request(
            channel.id(),
            &shared_proto::pb::orderer::JoinChannelRequest {
                block: block.to_vec(),
            },
        )
    }

    /// Channel `id`'s genesis config.
    pub fn channel_of(&self, id: &str) -> std::sync::Arc<shared_proto::channel::Channel> {
        let bytes = std::fs::read(self.genesis_path(id)).unwrap();
        let block =
            <shared_proto::pb::common::Block as prost::Message>::decode(bytes.as_slice()).unwrap();
        std::sync::Arc::new(shared_proto::channel::Channel::from_config_block(&block).unwrap())
    }

    /// The genesis block file of channel `id`.
    pub fn genesis_path(&self, id: &str) -> std::path::PathBuf {
        self.generated
            .channels
            .iter()
            .find(|(c, _)| c == id)
            .map(|(_, p)| p.clone())
            .unwrap()
    }
}
