//! Calls to one orderer: Admin (status, channel participation), Deliver of the config in
//! force, Submit. Each over TLS with an orderer-org admin's client certificate, each with a
//! deadline.

use std::time::Duration;

use futures::StreamExt as _;
use prost::Message as _;
use shared_proto::channel::Channel;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::envelope::new_nonce;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::admin_client::AdminClient;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::orderer::deliver_response::Type;
use shared_proto::pb::orderer::seek_info::SeekBehavior;
use shared_proto::pb::orderer::seek_position;
use shared_proto::pb::orderer::BroadcastResponse;
use shared_proto::pb::orderer::ChannelInfo;
use shared_proto::pb::orderer::ClusterStatusRequest;
use shared_proto::pb::orderer::ClusterStatusResponse;
use shared_proto::pb::orderer::JoinChannelRequest;
use shared_proto::pb::orderer::ListChannelsRequest;
use shared_proto::pb::orderer::RemoveChannelRequest;
use shared_proto::pb::orderer::SeekInfo;
use shared_proto::pb::orderer::SeekNewest;
use shared_proto::pb::orderer::SeekPosition;
use tonic::transport::Channel as GrpcChannel;
use tonic::transport::Endpoint;

use super::material::Network;
use super::material::OrdererNode;
use super::now_unix_ms;
use super::AdminClientError;

/// Deadline of one unary call (and of one whole Deliver of a block).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Deadline of a TCP + TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest message accepted (a block; the orderers' `bytes_absolute_max` ceiling is 16 MiB).
const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The config in force on a channel, as one orderer delivered it.
#[derive(Debug)]
pub struct CurrentConfig {
    pub channel: Channel,
    /// The block that set it (its `last_config_index`).
    pub block_number: u64,
    /// The chain height the node had when asked.
    pub height: u64,
    /// Which orderer answered.
    pub node: String,
}

/// `code` as gRPC spells it (`FAILED_PRECONDITION`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The error for `status` answered by `node` to `call`; a transport failure keeps its cause.
pub fn refused(node: &OrdererNode, call: &'static str, status: &tonic::Status) -> AdminClientError {
    let mut message = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    AdminClientError::Refused {
        node: node.name.clone(),
        address: node.address.clone(),
        call,
        code: status.code(),
        code_name: code_name(status.code()),
        message,
    }
}

impl Network {
    /// A lazily connecting channel to `node`, authenticated as its org's admin.
    fn connect(&self, node: &OrdererNode) -> Result<GrpcChannel, AdminClientError> {
        let admin = self.admin(&node.msp_id)?;
        let endpoint = Endpoint::from_shared(format!("https://{}", node.address))
            .and_then(|e| e.tls_config(self.tls(node, &admin)))
            .map_err(|e| AdminClientError::Connect {
                node: node.name.clone(),
                address: node.address.clone(),
                reason: e.to_string(),
            })?;
        Ok(endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy())
    }

    fn admin_client(
        &self,
        node: &OrdererNode,
    ) -> Result<AdminClient<GrpcChannel>, AdminClientError> {
        Ok(AdminClient::new(self.connect(node)?).max_decoding_message_size(MESSAGE_BYTES_MAX))
    }

    /// An `ORDERER_ADMIN` envelope for `channel_id` carrying `data`, signed by `node`'s org
    /// admin.
    fn admin_envelope(
        &self,
        node: &OrdererNode,
        channel_id: &str,
        data: Vec<u8>,
    ) -> Result<Envelope, AdminClientError> {
        let admin = self.admin(&node.msp_id)?;
        Ok(create_signed_envelope(
            &admin.identity,
            HeaderType::OrdererAdmin,
            channel_id,
            data,
            new_nonce(),
            now_unix_ms(),
        ))
    }

    /// `ClusterStatus` of `channel` on `node`.
    pub async fn cluster_status(
        &self,
        node: &OrdererNode,
        channel: &str,
    ) -> Result<ClusterStatusResponse, AdminClientError> {
        let data = ClusterStatusRequest {
            channel_id: channel.to_owned(),
        }
        .encode_to_vec();
        let request = self.admin_envelope(node, channel, data)?;
        self.admin_client(node)?
            .cluster_status(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| refused(node, "ClusterStatus", &s))
    }

    /// The channels `node` serves whose orderer-org admins include this network's admin.
    ///
    /// The Admin service documents a ListChannels envelope with an empty channel id, but the
    /// orderer checks the envelope against each channel's config, channel id included, so it
    /// refuses that (NOT_FOUND, "envelope is for channel \"\"") and lists only the channel an
    /// envelope names. Until the server lists all, this asks once with an empty id and, on
    /// that refusal, once per channel of the material (a channel joined from elsewhere is
    /// then missed).
    pub async fn list_channels(
        &self,
        node: &OrdererNode,
    ) -> Result<Vec<ChannelInfo>, AdminClientError> {
        match self.list_channels_as(node, "").await {
            Err(e) if e.code() == Some(tonic::Code::NotFound) => {}
            other => return other,
        }
        let mut listed: Vec<ChannelInfo> = Vec::new();
        for (id, _) in &self.generated.channels {
            match self.list_channels_as(node, id).await {
                Ok(found) => {
                    for c in found {
                        if !listed.iter().any(|l| l.channel_id == c.channel_id) {
                            listed.push(c);
                        }
                    }
                }
                // Not served here.
                Err(e) if e.code() == Some(tonic::Code::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(listed)
    }

    async fn list_channels_as(
        &self,
        node: &OrdererNode,
        channel_id: &str,
    ) -> Result<Vec<ChannelInfo>, AdminClientError> {
        let request =
            self.admin_envelope(node, channel_id, ListChannelsRequest {}.encode_to_vec())?;
        self.admin_client(node)?
            .list_channels(request)
            .await
            .map(|r| r.into_inner().channels)
            .map_err(|s| refused(node, "ListChannels", &s))
    }

    /// Joins `node` to the channel `block` (a genesis block) configures.
    pub async fn join_channel(
        &self,
        node: &OrdererNode,
        channel_id: &str,
        block: Vec<u8>,
    ) -> Result<ChannelInfo, AdminClientError> {
        let data = JoinChannelRequest { block }.encode_to_vec();
        let request = self.admin_envelope(node, channel_id, data)?;
        self.admin_client(node)?
            .join_channel(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| refused(node, "JoinChannel", &s))
    }

    /// Removes `channel` from `node` (its Raft state and blocks are deleted there).
    pub async fn remove_channel(
        &self,
        node: &OrdererNode,
        channel: &str,
    ) -> Result<ChannelInfo, AdminClientError> {
        let data = RemoveChannelRequest {
            channel_id: channel.to_owned(),
        }
        .encode_to_vec();
        let request = self.admin_envelope(node, channel, data)?;
        self.admin_client(node)?
            .remove_channel(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| refused(node, "RemoveChannel", &s))
    }

    /// Sends `envelope` with `AtomicBroadcast.Submit`; answered once it is ordered.
    pub async fn submit(
        &self,
        node: &OrdererNode,
        envelope: Envelope,
    ) -> Result<BroadcastResponse, AdminClientError> {
        let mut client = AtomicBroadcastClient::new(self.connect(node)?);
        client
            .submit(envelope)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| refused(node, "Submit", &s))
    }

    /// One block of `channel` from `node` by Deliver (`None`: the newest).
    async fn deliver_one(
        &self,
        node: &OrdererNode,
        channel: &str,
        number: Option<u64>,
    ) -> Result<Block, AdminClientError> {
        let position = SeekPosition {
            r#type: Some(match number {
                Some(n) => {
                    seek_position::Type::Specified(shared_proto::pb::orderer::SeekSpecified {
                        number: n,
                    })
                }
                None => seek_position::Type::Newest(SeekNewest {}),
            }),
        };
        let seek = SeekInfo {
            start: Some(position),
            stop: Some(position),
            behavior: SeekBehavior::FailIfNotReady as i32,
        };
        let admin = self.admin(&node.msp_id)?;
        let request = create_signed_envelope(
            &admin.identity,
            HeaderType::DeliverSeekInfo,
            channel,
            seek.encode_to_vec(),
            new_nonce(),
            now_unix_ms(),
        );
        let bad = |reason: String| AdminClientError::BadAnswer {
            node: node.name.clone(),
            call: "Deliver",
            reason,
        };
        let mut client = AtomicBroadcastClient::new(self.connect(node)?)
            .max_decoding_message_size(MESSAGE_BYTES_MAX);
        let deliver = async {
            let mut stream = client
                .deliver(futures::stream::iter([request]))
                .await
                .map_err(|s| refused(node, "Deliver", &s))?
                .into_inner();
            let mut block = None;
            while let Some(message) = stream.next().await {
                match message.map_err(|s| refused(node, "Deliver", &s))?.r#type {
                    Some(Type::Block(b)) if block.is_none() => block = Some(b),
                    Some(Type::Block(_)) => {
                        return Err(bad("more than the one block asked".into()))
                    }
                    Some(Type::Status(s)) => {
                        let success = shared_proto::pb::common::Status::Success as i32;
                        return match block {
                            Some(b) if s == success => Ok(b),
                            _ => Err(AdminClientError::Refused {
                                node: node.name.clone(),
                                address: node.address.clone(),
                                call: "Deliver",
                                code: tonic::Code::Unknown,
                                code_name: "DELIVER_STATUS",
                                message: format!(
                                    "status {}",
                                    shared_proto::pb::common::Status::try_from(s).map_or_else(
                                        |_| s.to_string(),
                                        |v| v.as_str_name().to_owned()
                                    )
                                ),
                            }),
                        };
                    }
                    None => return Err(bad("an empty response".into())),
                }
            }
            Err(bad("the stream ended without a status".into()))
        };
        tokio::time::timeout(CALL_TIMEOUT, deliver)
            .await
            .map_err(|_| {
                refused(
                    node,
                    "Deliver",
                    &tonic::Status::deadline_exceeded(format!(
                        "no answer within {} s",
                        CALL_TIMEOUT.as_secs()
                    )),
                )
            })?
    }

    /// The config in force on `channel` at `node`: its newest block names the last config
    /// block (`last_config_index`), which is fetched and decoded.
    pub async fn latest_config(
        &self,
        node: &OrdererNode,
        channel: &str,
    ) -> Result<CurrentConfig, AdminClientError> {
        let newest = self.deliver_one(node, channel, None).await?;
        let number = newest.header.as_ref().map_or(0, |h| h.number);
        let config_index = shared_proto::block::last_config_index(&newest);
        let config_block = if config_index == number {
            newest
        } else {
            self.deliver_one(node, channel, Some(config_index)).await?
        };
        let got = config_block.header.as_ref().map_or(0, |h| h.number);
        let bad = |reason: String| AdminClientError::BadAnswer {
            node: node.name.clone(),
            call: "Deliver",
            reason,
        };
        if got != config_index {
            return Err(bad(format!(
                "asked for block {config_index}, got block {got}"
            )));
        }
        let channel_config = Channel::from_config_block(&config_block)
            .map_err(|e| bad(format!("block {config_index} (the last config block): {e}")))?;
        if channel_config.id() != channel {
            return Err(bad(format!(
                "block {config_index} configures channel {:?}, not {channel:?}",
                channel_config.id()
            )));
        }
        Ok(CurrentConfig {
            channel: channel_config,
            block_number: config_index,
            height: number + 1,
            node: node.name.clone(),
        })
    }
}
