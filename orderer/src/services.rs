//! gRPC services: client-facing `AtomicBroadcast` and `Admin`, orderer-to-orderer `Cluster`.
//! Handlers only translate; the work happens in broadcast, deliver and consensus.

use std::sync::Arc;

use openraft::raft::AppendEntriesRequest;
use openraft::raft::InstallSnapshotRequest;
use openraft::raft::VoteRequest;
use prost::Message as _;
use shared_proto::envelope::verify_envelope;
use shared_proto::envelope::EnvelopeError;
use shared_proto::envelope::Refusal;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::admin_server::Admin;
use shared_proto::pb::orderer::atomic_broadcast_server::AtomicBroadcast;
use shared_proto::pb::orderer::cluster_server::Cluster;
use shared_proto::pb::orderer::raft_request::Kind;
use shared_proto::pb::orderer::BroadcastResponse;
use shared_proto::pb::orderer::ClusterStatusRequest;
use shared_proto::pb::orderer::ClusterStatusResponse;
use shared_proto::pb::orderer::ConsenterChange;
use shared_proto::pb::orderer::ForwardRequest;
use shared_proto::pb::orderer::ForwardResponse;
use shared_proto::pb::orderer::RaftRequest;
use shared_proto::pb::orderer::RaftResponse;
use shared_proto::pb::orderer::RaftStateRequest;
use shared_proto::pb::orderer::RaftStateResponse;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use crate::broadcast;
use crate::channels::ChannelRuntime;
use crate::channels::Registry;
use crate::consensus::decode;
use crate::consensus::encode;
use crate::consensus::NodeId;
use crate::consensus::TypeConfig;
use crate::deliver;

/// Broadcast, Submit and Deliver.
#[derive(Debug, Clone)]
pub struct AtomicBroadcastService {
    pub registry: Arc<Registry>,
}

#[tonic::async_trait]
impl AtomicBroadcast for AtomicBroadcastService {
    type BroadcastStream = broadcast::BroadcastStream;

    async fn broadcast(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::BroadcastStream>, Status> {
        Ok(Response::new(broadcast::serve_stream(
            self.registry.clone(),
            request.into_inner(),
        )))
    }

    type DeliverStream = deliver::DeliverStream;

    async fn deliver(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        Ok(Response::new(deliver::serve_stream(
            self.registry.clone(),
            request.into_inner(),
        )))
    }

    async fn submit(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<BroadcastResponse>, Status> {
        let result = broadcast::order(&self.registry, request.into_inner()).await;
        match result {
            Ok(tx_id) => Ok(Response::new(broadcast::response(
                &self.registry,
                Ok(tx_id),
            ))),
            Err(e) => {
                self.registry.metrics.broadcast(e.codes().1);
                Err(e.into_status())
            }
        }
    }
}

/// Raft traffic and forwarded envelopes; callers must be pinned consenters.
#[derive(Debug, Clone)]
pub struct ClusterService {
    pub registry: Arc<Registry>,
}

impl ClusterService {
    /// The channel, if the caller's TLS certificate is a pinned consenter of it. A caller that
    /// is no consenter of any channel learns nothing (not even which channels exist).
    fn channel_for<T>(
        &self,
        request: &Request<T>,
        channel_id: &str,
    ) -> Result<Arc<ChannelRuntime>, Status> {
        let cert = caller_cert(request);
        let denied = || {
            Status::permission_denied(format!(
                "caller's TLS certificate is not a pinned consenter of channel {channel_id:?}"
            ))
        };
        let channels = &self.registry.channels;
        if !channels.values().any(|c| c.is_pinned_consenter(&cert)) {
            return Err(denied());
        }
        let channel = self.registry.get(channel_id).ok_or_else(|| {
            Status::not_found(format!("channel {channel_id:?} is not served here"))
        })?;
        if !channel.is_pinned_consenter(&cert) {
            return Err(denied());
        }
        Ok(channel.clone())
    }

    /// The channel and the Raft node id pinned with the caller's TLS certificate: the only
    /// node the caller may speak as.
    fn consenter_for<T>(
        &self,
        request: &Request<T>,
        channel_id: &str,
    ) -> Result<(Arc<ChannelRuntime>, NodeId), Status> {
        let channel = self.channel_for(request, channel_id)?;
        let cert = caller_cert(request);
        let id = channel
            .config()
            .consenters()
            .iter()
            .find(|c| c.client_tls_cert == cert)
            .map(|c| c.id)
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "caller's TLS certificate is not a pinned consenter of channel {channel_id:?}"
                ))
            })?;
        Ok((channel, id))
    }
}

/// DER of the caller's TLS client certificate (empty without one).
fn caller_cert<T>(request: &Request<T>) -> Vec<u8> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
        .unwrap_or_default()
}

/// Refuses a Raft message whose sender (`claimed`: the candidate of a vote, the leader of
/// append-entries and install-snapshot) is not the node pinned with the caller's certificate:
/// one consenter must not depose, vote or lead in another's name.
fn speaks_as_itself(pinned: NodeId, claimed: Option<NodeId>, what: &str) -> Result<(), Status> {
    match claimed {
        Some(id) if id == pinned => Ok(()),
        Some(id) => Err(Status::permission_denied(format!(
            "{what} names node {id} as sender, but the caller's TLS certificate is pinned to node {pinned}"
        ))),
        None => Err(Status::permission_denied(format!(
            "{what} names no sender; the caller's TLS certificate is pinned to node {pinned}"
        ))),
    }
}

fn bad_payload(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("cannot decode raft message: {e}"))
}

fn encoded<T: serde::Serialize>(value: &T) -> Result<Response<RaftResponse>, Status> {
    encode(value)
        .map(|payload| Response::new(RaftResponse { payload }))
        .map_err(|e| Status::internal(format!("cannot encode raft response: {e}")))
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn raft(&self, request: Request<RaftRequest>) -> Result<Response<RaftResponse>, Status> {
        let (channel, pinned) = self.consenter_for(&request, &request.get_ref().channel_id)?;
        let req = request.into_inner();
        let raft = &channel.raft;
        match Kind::try_from(req.kind) {
            Ok(Kind::AppendEntries) => {
                let rpc: AppendEntriesRequest<TypeConfig> =
                    decode(&req.payload).map_err(bad_payload)?;
                speaks_as_itself(pinned, rpc.vote.leader_id().voted_for(), "append-entries")?;
                encoded(&raft.append_entries(rpc).await)
            }
            Ok(Kind::Vote) => {
                let rpc: VoteRequest<NodeId> = decode(&req.payload).map_err(bad_payload)?;
                speaks_as_itself(pinned, rpc.vote.leader_id().voted_for(), "vote request")?;
                if !channel.rejoin.may_vote(rpc.vote.leader_id().term) {
                    return Err(Status::unavailable(format!(
                        "this node lost or never had its Raft state for channel {:?} and does \
                         not vote until it has caught up with the cluster's terms",
                        channel.id
                    )));
                }
                encoded(&raft.vote(rpc).await)
            }
            Ok(Kind::InstallSnapshot) => {
                let rpc: InstallSnapshotRequest<TypeConfig> =
                    decode(&req.payload).map_err(bad_payload)?;
                speaks_as_itself(pinned, rpc.vote.leader_id().voted_for(), "install-snapshot")?;
                encoded(&raft.install_snapshot(rpc).await)
            }
            Err(_) => Err(Status::invalid_argument(format!(
                "unknown raft message kind {}",
                req.kind
            ))),
        }
    }

    async fn raft_state(
        &self,
        request: Request<RaftStateRequest>,
    ) -> Result<Response<RaftStateResponse>, Status> {
        let channel = self.channel_for(&request, &request.get_ref().channel_id)?;
        let m = channel.raft.metrics().borrow().clone();
        let has_log = m.last_log_index.is_some()
            || m.snapshot.is_some()
            || m.vote != openraft::Vote::default();
        Ok(Response::new(RaftStateResponse {
            term: m.current_term,
            has_log,
            last_log_index: m.last_log_index.unwrap_or(0),
            leader_id: m.current_leader.unwrap_or(0),
        }))
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        let channel = self.channel_for(&request, &request.get_ref().channel_id)?;
        let req = request.into_inner();
        // The forwarding orderer is a pinned consenter that already verified each envelope
        // (signature, Writers, size, replay): propose them as they are, concurrently, instead
        // of verifying every signature a second time on the leader.
        let results = futures::future::join_all(req.envelopes.into_iter().map(|bytes| {
            let channel = channel.clone();
            async move {
                let result = broadcast::order_forwarded(&self.registry, &channel, bytes).await;
                broadcast::response(&self.registry, result)
            }
        }))
        .await;
        Ok(Response::new(ForwardResponse { results }))
    }
}

/// Cluster status for operators. Membership changes are not offered yet.
///
/// Every call is authorised before anything else is looked at (see [`AdminService::authorize`]):
/// mutual TLS, then an `ORDERER_ADMIN` envelope signed by an admin of one of the channel's
/// orderer orgs, whose org's TLS CA issued the caller's TLS certificate.
#[derive(Debug, Clone)]
pub struct AdminService {
    pub registry: Arc<Registry>,
}

/// How far an Admin request's timestamp may be from this orderer's clock (Fabric's window).
/// Bounds how long a captured request stays usable.
pub const ADMIN_REQUEST_WINDOW_SECS: i64 = 15 * 60;

/// Why an Admin call was refused. Only the missing client certificate is `UNAUTHENTICATED`
/// (the caller proved nothing); a caller that did authenticate but is not an orderer org's
/// admin is `PERMISSION_DENIED`.
#[derive(Debug, thiserror::Error)]
pub enum AdminAuthError {
    #[error(
        "Admin calls need mutual TLS: present a client TLS certificate issued by an org's TLS CA"
    )]
    NoClientCertificate,
    #[error("Admin request is not a signed envelope with a channel header")]
    NoChannelHeader,
    #[error("channel {0:?} is not served here")]
    UnknownChannel(String),
    #[error("Admin request refused: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("Admin request has header type {0:?}; ORDERER_ADMIN is required")]
    WrongType(HeaderType),
    #[error(
        "Admin request timestamp {timestamp_unix_ms} ms is more than {ADMIN_REQUEST_WINDOW_SECS} s from this orderer's clock ({now_unix} s)"
    )]
    OutsideWindow {
        timestamp_unix_ms: u64,
        now_unix: i64,
    },
    #[error(
        "Admin calls on channel {channel:?} need an admin of an orderer org ({orgs}); {subject:?} of {msp_id} has role {role}"
    )]
    NotOrdererAdmin {
        channel: String,
        orgs: String,
        subject: String,
        msp_id: String,
        role: shared_proto::msp::Role,
    },
    #[error("the client TLS certificate was not issued by a TLS CA of {msp_id}, the admin's org: {reason}")]
    TlsCertificateNotOfAdminOrg { msp_id: String, reason: String },
    #[error("cannot decode the Admin request in the envelope: {0}")]
    BadRequest(String),
    #[error("the request names channel {inner:?}, its envelope channel {outer:?}")]
    ChannelMismatch { inner: String, outer: String },
}

impl AdminAuthError {
    pub fn into_status(self) -> Status {
        let code = match &self {
            AdminAuthError::NoClientCertificate => tonic::Code::Unauthenticated,
            AdminAuthError::NoChannelHeader
            | AdminAuthError::WrongType(_)
            | AdminAuthError::BadRequest(_)
            | AdminAuthError::ChannelMismatch { .. } => tonic::Code::InvalidArgument,
            AdminAuthError::UnknownChannel(_) => tonic::Code::NotFound,
            AdminAuthError::Envelope(e) => match e.refusal() {
                Refusal::InvalidArgument => tonic::Code::InvalidArgument,
                Refusal::NotFound => tonic::Code::NotFound,
                Refusal::PermissionDenied => tonic::Code::PermissionDenied,
            },
            AdminAuthError::OutsideWindow { .. }
            | AdminAuthError::NotOrdererAdmin { .. }
            | AdminAuthError::TlsCertificateNotOfAdminOrg { .. } => tonic::Code::PermissionDenied,
        };
        Status::new(code, self.to_string())
    }
}

impl AdminService {
    /// The channel and the decoded request, if the caller may make it. In order: a client TLS
    /// certificate (rustls already chained it to a TLS CA this node trusts); an envelope for a
    /// channel served here that passes [`verify_envelope`] (creator a valid member, signature
    /// over the payload as sent); header type `ORDERER_ADMIN`; timestamp within
    /// [`ADMIN_REQUEST_WINDOW_SECS`]; creator with role admin in one of the channel's orderer
    /// orgs; the TLS certificate chains to that org's TLS roots in the channel config (so the
    /// TLS session and the signature belong to the same org); the data decodes as `T`.
    fn authorize<T: prost::Message + Default>(
        &self,
        request: &Request<Envelope>,
    ) -> Result<(Arc<ChannelRuntime>, T), AdminAuthError> {
        let certs = request
            .peer_certs()
            .filter(|c| !c.is_empty())
            .ok_or(AdminAuthError::NoClientCertificate)?;
        let envelope = request.get_ref();
        let channel_id = shared_proto::pb::common::Payload::decode(envelope.payload.as_slice())
            .ok()
            .and_then(|p| p.header?.channel_header)
            .map(|h| h.channel_id)
            .ok_or(AdminAuthError::NoChannelHeader)?;
        let channel = self
            .registry
            .get(&channel_id)
            .ok_or(AdminAuthError::UnknownChannel(channel_id))?
            .clone();
        let now = self.registry.now_unix();
        let verified = verify_envelope(&channel.config(), envelope, now)?;
        if verified.header_type != HeaderType::OrdererAdmin {
            return Err(AdminAuthError::WrongType(verified.header_type));
        }
        let ts = verified.channel_header.timestamp_unix_ms;
        let skew_ms = i128::from(ts) - i128::from(now) * 1000;
        if skew_ms.abs() > i128::from(ADMIN_REQUEST_WINDOW_SECS) * 1000 {
            return Err(AdminAuthError::OutsideWindow {
                timestamp_unix_ms: ts,
                now_unix: now,
            });
        }
        let creator = &verified.creator;
        let config = channel.config();
        let orderer_orgs = config.orderer_orgs();
        if creator.role != shared_proto::msp::Role::Admin || !orderer_orgs.contains(&creator.msp_id)
        {
            return Err(AdminAuthError::NotOrdererAdmin {
                channel: channel.id.clone(),
                orgs: orderer_orgs.join(", "),
                subject: creator.common_name.clone(),
                msp_id: creator.msp_id.clone(),
                role: creator.role,
            });
        }
        let roots = config
            .config()
            .orderer_orgs
            .iter()
            .filter(|o| o.msp_id == creator.msp_id)
            .flat_map(|o| o.tls_root_certs.iter().cloned());
        verify_client_cert(&certs, roots, now).map_err(|e| {
            AdminAuthError::TlsCertificateNotOfAdminOrg {
                msp_id: creator.msp_id.clone(),
                reason: e.to_string(),
            }
        })?;
        let inner = T::decode(verified.data.as_slice())
            .map_err(|e| AdminAuthError::BadRequest(e.to_string()))?;
        Ok((channel, inner))
    }
}

/// Whether the client certificate chain `certs` (end entity first) chains to one of `roots`
/// (DER) and is valid at `now_unix` for client authentication. Any key type rustls with ring
/// verifies (ECDSA, RSA, Ed25519).
fn verify_client_cert(
    certs: &[rustls::pki_types::CertificateDer<'static>],
    roots: impl Iterator<Item = Vec<u8>>,
    now_unix: i64,
) -> Result<(), rustls::Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::UnixTime;
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(CertificateDer::from(root))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
    let (end_entity, intermediates) = certs
        .split_first()
        .ok_or(rustls::Error::NoCertificatesPresented)?;
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now_unix).unwrap_or(0),
    ));
    verifier.verify_client_cert(end_entity, intermediates, now)?;
    Ok(())
}

const MEMBERSHIP_UNIMPLEMENTED: &str =
    "membership changes are not implemented yet; the consenter set comes from the genesis block";

#[tonic::async_trait]
impl Admin for AdminService {
    async fn cluster_status(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        let (channel, req) = self
            .authorize::<ClusterStatusRequest>(&request)
            .map_err(AdminAuthError::into_status)?;
        if !req.channel_id.is_empty() && req.channel_id != channel.id {
            return Err(AdminAuthError::ChannelMismatch {
                inner: req.channel_id,
                outer: channel.id.clone(),
            }
            .into_status());
        }
        let metrics = channel.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        Ok(Response::new(ClusterStatusResponse {
            channel_id: channel.id.clone(),
            node_id: self.registry.node_id,
            leader_id: metrics.current_leader.unwrap_or(0),
            height: channel.store.height(),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
        }))
    }

    async fn add_consenter(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        self.authorize::<ConsenterChange>(&request)
            .map_err(AdminAuthError::into_status)?;
        Err(Status::unimplemented(MEMBERSHIP_UNIMPLEMENTED))
    }

    async fn remove_consenter(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        self.authorize::<ConsenterChange>(&request)
            .map_err(AdminAuthError::into_status)?;
        Err(Status::unimplemented(MEMBERSHIP_UNIMPLEMENTED))
    }
}
