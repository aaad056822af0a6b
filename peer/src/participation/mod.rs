//! Channel participation (operators -> [participation] -> runtime): an admin of this peer's
//! org joins it to a channel with the channel's genesis block, over the service port (mutual
//! TLS); the peer records the block, commits it and follows the channel from then on, across
//! restarts (see [`crate::runtime`]).
//!
//! `JoinChannel` checks, in this order, stopping at the first failure; a refusal changes
//! nothing:
//!
//! | check | refusal |
//! |---|---|
//! | a client TLS certificate (the port takes only those of a TLS CA of the network) | `UNAUTHENTICATED` |
//! | the envelope's payload, its `JoinChannelRequest` and the block decode | `INVALID_ARGUMENT` |
//! | the block is block 0 | `FAILED_PRECONDITION` |
//! | it is a valid genesis block (one config envelope, a valid channel config) | `INVALID_ARGUMENT` |
//! | its channel has this peer's org and accepts this peer's identity ([`runtime::check_member`]) | `FAILED_PRECONDITION` |
//! | the envelope names the block's channel | `INVALID_ARGUMENT` |
//! | `verify_envelope` against the block's config (shape, creator a member, signature) | its [`Refusal`] |
//! | header type `PEER_ADMIN` | `INVALID_ARGUMENT` |
//! | timestamp within [`ADMIN_REQUEST_WINDOW`] of the peer's clock | `PERMISSION_DENIED` |
//! | the signer has role admin in this peer's org | `PERMISSION_DENIED` |
//! | the client TLS certificate was issued by that org's TLS CA in the block's config | `PERMISSION_DENIED` |
//! | the channel is not joined yet | `ALREADY_EXISTS` |
//! | the block is recorded, committed and the channel started | `INTERNAL` (storage) |
//!
//! The block is judged before the caller: the block alone says who may ask (its config holds
//! the org's admins and TLS CA, as for the orderer's JoinChannel), and a block whose channel
//! cannot have this peer as a member (another network's, or a channel of other orgs) can have
//! no admin of this peer's org either; saying so (`FAILED_PRECONDITION`) tells the operator
//! which file is wrong, and reveals nothing the caller did not send. The TLS session and the
//! signature must belong to the same org, so a leaked signed request is useless without that
//! org's TLS key, and it expires with its timestamp.

pub mod client;

use std::time::Duration;

use prost::Message as _;
use shared_proto::channel::Channel;
use shared_proto::envelope::verify_envelope;
use shared_proto::envelope::EnvelopeError;
use shared_proto::envelope::Refusal;
use shared_proto::msp::Role;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Payload;
use shared_proto::pb::peer::channel_participation_server::ChannelParticipation;
use shared_proto::pb::peer::ChannelInfo;
use shared_proto::pb::peer::JoinChannelRequest;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::runtime;
use crate::runtime::ChannelContext;
use crate::runtime::RuntimeError;

/// How far a join request's timestamp may be from the peer's clock (Fabric's window for admin
/// requests). Bounds how long a captured request stays usable.
pub const ADMIN_REQUEST_WINDOW: Duration = Duration::from_secs(15 * 60);

/// Why a join was refused. [`JoinError::into_status`] is the only place it becomes a status.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("JoinChannel needs mutual TLS: present a client TLS certificate issued by your org's TLS CA")]
    NoClientCertificate,
    #[error("malformed join request: {0}")]
    Malformed(String),
    #[error("the request names channel {outer:?}, its block channel {inner:?}")]
    ChannelMismatch { inner: String, outer: String },
    #[error("join request refused: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("join request has header type {0:?}; PEER_ADMIN is required")]
    WrongType(HeaderType),
    #[error("join request timestamp {timestamp_unix_ms} ms is more than {ADMIN_REQUEST_WINDOW:?} from the peer's clock ({now_unix} s)")]
    OutsideWindow {
        timestamp_unix_ms: u64,
        now_unix: i64,
    },
    #[error("JoinChannel needs an admin of {peer_msp_id}, this peer's org; {subject:?} of {msp_id} has role {role}")]
    NotPeerAdmin {
        peer_msp_id: String,
        subject: String,
        msp_id: String,
        role: Role,
    },
    #[error("the client TLS certificate was not issued by a TLS CA of {msp_id}, the admin's org, in the block's config: {reason}")]
    TlsCertificateNotOfOrg { msp_id: String, reason: String },
    #[error("{0}")]
    Runtime(#[from] RuntimeError),
}

impl JoinError {
    pub fn into_status(self) -> Status {
        let code = match &self {
            JoinError::NoClientCertificate => tonic::Code::Unauthenticated,
            JoinError::Malformed(_)
            | JoinError::ChannelMismatch { .. }
            | JoinError::WrongType(_) => tonic::Code::InvalidArgument,
            JoinError::Envelope(e) => match e.refusal() {
                Refusal::InvalidArgument => tonic::Code::InvalidArgument,
                Refusal::NotFound => tonic::Code::NotFound,
                Refusal::PermissionDenied => tonic::Code::PermissionDenied,
            },
            JoinError::OutsideWindow { .. }
            | JoinError::NotPeerAdmin { .. }
            | JoinError::TlsCertificateNotOfOrg { .. } => tonic::Code::PermissionDenied,
            JoinError::Runtime(e) => match e {
                RuntimeError::Genesis { .. } => tonic::Code::InvalidArgument,
                RuntimeError::NotGenesis(_)
                | RuntimeError::OrgNotInChannel { .. }
                | RuntimeError::ForeignNetwork { .. } => tonic::Code::FailedPrecondition,
                RuntimeError::AlreadyJoined(_) => tonic::Code::AlreadyExists,
                RuntimeError::Storage { .. } => tonic::Code::Internal,
            },
        };
        Status::new(code, self.to_string())
    }
}

/// The `ChannelParticipation` service.
#[derive(Debug, Clone)]
pub struct ParticipationService {
    ctx: ChannelContext,
}

impl ParticipationService {
    pub fn new(ctx: ChannelContext) -> Self {
        ParticipationService { ctx }
    }

    /// Every check of the module doc up to the caller's; returns the block to join.
    fn authorize(&self, request: &Request<Envelope>) -> Result<Block, JoinError> {
        let certs = request
            .peer_certs()
            .filter(|c| !c.is_empty())
            .ok_or(JoinError::NoClientCertificate)?;
        let envelope = request.get_ref();
        let malformed = |what: &str, e: prost::DecodeError| {
            JoinError::Malformed(format!("{what} does not decode: {e}"))
        };
        let payload = Payload::decode(envelope.payload.as_slice())
            .map_err(|e| malformed("the envelope payload", e))?;
        let join = JoinChannelRequest::decode(payload.data.as_slice())
            .map_err(|e| malformed("the JoinChannelRequest", e))?;
        let block = Block::decode(join.block.as_slice()).map_err(|e| malformed("the block", e))?;
        let registry = &self.ctx.registry;
        let config = runtime::check_joinable(registry, &block)?;
        let outer = payload
            .header
            .and_then(|h| h.channel_header)
            .map(|h| h.channel_id)
            .unwrap_or_default();
        if outer != config.id() {
            return Err(JoinError::ChannelMismatch {
                inner: config.id().to_owned(),
                outer,
            });
        }
        let now = registry.now_unix();
        self.check_admin(&config, envelope, now)?;
        let org_msp_id = registry.identity.msp_id();
        let roots: Vec<Vec<u8>> = config
            .config()
            .application_orgs
            .iter()
            .filter(|o| o.msp_id == org_msp_id)
            .flat_map(|o| o.tls_root_certs.iter().cloned())
            .collect();
        shared_proto::tls::verify_issued(&certs[0], &roots, now).map_err(|reason| {
            JoinError::TlsCertificateNotOfOrg {
                msp_id: org_msp_id.to_owned(),
                reason,
            }
        })?;
        Ok(block)
    }

    /// The envelope verifies against `config`, is a `PEER_ADMIN` request within the window,
    /// signed by an admin of this peer's org.
    fn check_admin(
        &self,
        config: &Channel,
        envelope: &Envelope,
        now: i64,
    ) -> Result<(), JoinError> {
        let verified = verify_envelope(config, envelope, now)?;
        if verified.header_type != HeaderType::PeerAdmin {
            return Err(JoinError::WrongType(verified.header_type));
        }
        let timestamp_unix_ms = verified.channel_header.timestamp_unix_ms;
        let now_ms = u64::try_from(now).unwrap_or(0).saturating_mul(1000);
        if timestamp_unix_ms.abs_diff(now_ms) > ADMIN_REQUEST_WINDOW.as_millis() as u64 {
            return Err(JoinError::OutsideWindow {
                timestamp_unix_ms,
                now_unix: now,
            });
        }
        let creator = &verified.creator;
        let peer_msp_id = self.ctx.registry.identity.msp_id();
        if creator.role != Role::Admin || creator.msp_id != peer_msp_id {
            return Err(JoinError::NotPeerAdmin {
                peer_msp_id: peer_msp_id.to_owned(),
                subject: creator.common_name.clone(),
                msp_id: creator.msp_id.clone(),
                role: creator.role,
            });
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl ChannelParticipation for ParticipationService {
    async fn join_channel(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<ChannelInfo>, Status> {
        let refused = |e: JoinError| {
            tracing::warn!(error = %e, "JoinChannel refused");
            e.into_status()
        };
        let block = self.authorize(&request).map_err(refused)?;
        let channel = runtime::join(&self.ctx, &block)
            .await
            .map_err(|e| refused(JoinError::Runtime(e)))?;
        Ok(Response::new(ChannelInfo {
            channel_id: channel.id.clone(),
            height: channel.ledger.height(),
            config_sequence: channel.config().sequence(),
        }))
    }
}
