//! Admin (operators): cluster status and channel participation (list, join, remove), over
//! mutual TLS with requests signed by an orderer org's admin. Consenter changes are config
//! updates (see [`crate::membership`]), not Admin calls.

use std::sync::Arc;

use prost::Message as _;
use shared_proto::channel::Channel;
use shared_proto::envelope::verify_envelope;
use shared_proto::envelope::EnvelopeError;
use shared_proto::envelope::Refusal;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::admin_server::Admin;
use shared_proto::pb::orderer::ChannelInfo;
use shared_proto::pb::orderer::ChannelList;
use shared_proto::pb::orderer::ClusterStatusRequest;
use shared_proto::pb::orderer::ClusterStatusResponse;
use shared_proto::pb::orderer::JoinChannelRequest;
use shared_proto::pb::orderer::ListChannelsRequest;
use shared_proto::pb::orderer::RemoveChannelRequest;
use tonic::Request;
use tonic::Response;
use tonic::Status;

use crate::channels::ChannelRuntime;
use crate::channels::Registry;
use crate::runtime;
use crate::runtime::ChannelContext;
use crate::runtime::RuntimeError;

/// Cluster status and channel participation for operators.
///
/// Every call is authorised before anything else is looked at (see [`AdminService::authorize`]):
/// mutual TLS, then an `ORDERER_ADMIN` envelope signed by an admin of one of the channel's
/// orderer orgs, whose org's TLS CA issued the caller's TLS certificate.
#[derive(Debug, Clone)]
pub struct AdminService {
    pub registry: Arc<Registry>,
    pub ctx: Arc<ChannelContext>,
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
        let channel_id = channel_id_of(request.get_ref())?;
        let channel = self
            .registry
            .get(&channel_id)
            .ok_or(AdminAuthError::UnknownChannel(channel_id))?;
        let inner = self.authorize_against(request, &channel.config())?;
        Ok((channel, inner))
    }

    /// The checks of [`AdminService::authorize`] against `config` (a channel served here, or
    /// the one a block to join configures).
    fn authorize_against<T: prost::Message + Default>(
        &self,
        request: &Request<Envelope>,
        config: &Channel,
    ) -> Result<T, AdminAuthError> {
        self.authorize_as(request, config, false)
    }

    /// `node_request`: the envelope names no channel (a request about the node, checked
    /// against `config`'s organisations).
    fn authorize_as<T: prost::Message + Default>(
        &self,
        request: &Request<Envelope>,
        config: &Channel,
        node_request: bool,
    ) -> Result<T, AdminAuthError> {
        let certs = request
            .peer_certs()
            .filter(|c| !c.is_empty())
            .ok_or(AdminAuthError::NoClientCertificate)?;
        let envelope = request.get_ref();
        let now = self.registry.now_unix();
        let verified = if node_request {
            shared_proto::envelope::verify_node_request(config, envelope, now)?
        } else {
            verify_envelope(config, envelope, now)?
        };
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
        let orderer_orgs = config.orderer_orgs();
        if creator.role != shared_proto::msp::Role::Admin || !orderer_orgs.contains(&creator.msp_id)
        {
            return Err(AdminAuthError::NotOrdererAdmin {
                channel: config.id().to_owned(),
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
        T::decode(verified.data.as_slice()).map_err(|e| AdminAuthError::BadRequest(e.to_string()))
    }

    fn info(&self, channel: &ChannelRuntime) -> ChannelInfo {
        let role = crate::membership::role(self.registry.node_id, channel);
        let status = match role {
            "consenter" => "active",
            "onboarding" | "follower"
                if channel.store.height() < channel.status.borrow().next_block =>
            {
                "onboarding"
            }
            "onboarding" | "follower" => "active",
            _ => "inactive",
        };
        ChannelInfo {
            channel_id: channel.id.clone(),
            height: channel.store.height(),
            role: role.to_owned(),
            status: status.to_owned(),
            config_sequence: channel.config().sequence(),
        }
    }
}

fn channel_id_of(envelope: &Envelope) -> Result<String, AdminAuthError> {
    shared_proto::pb::common::Payload::decode(envelope.payload.as_slice())
        .ok()
        .and_then(|p| p.header?.channel_header)
        .map(|h| h.channel_id)
        .ok_or(AdminAuthError::NoChannelHeader)
}

fn runtime_status(e: RuntimeError) -> Status {
    let code = match &e {
        RuntimeError::AlreadyJoined(_) => tonic::Code::AlreadyExists,
        RuntimeError::Unknown(_) => tonic::Code::NotFound,
        RuntimeError::Genesis { .. } => tonic::Code::InvalidArgument,
        RuntimeError::NotGenesis(_) | RuntimeError::ForeignNetwork { .. } => {
            tonic::Code::FailedPrecondition
        }
        RuntimeError::Storage { .. } | RuntimeError::Raft { .. } => tonic::Code::Internal,
    };
    Status::new(code, e.to_string())
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
            config_sequence: channel.config().sequence(),
            role: crate::membership::role(self.registry.node_id, &channel).to_owned(),
        }))
    }

    async fn list_channels(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<ChannelList>, Status> {
        if request.peer_certs().filter(|c| !c.is_empty()).is_none() {
            return Err(AdminAuthError::NoClientCertificate.into_status());
        }
        let channels = self.registry.channels();
        let mut listed = Vec::new();
        let mut refusal = None;
        for channel in &channels {
            match self.authorize_as::<ListChannelsRequest>(&request, &channel.config(), true) {
                Ok(_) => listed.push(self.info(channel)),
                Err(e) => refusal = Some(e),
            }
        }
        match refusal {
            // The caller is an admin of none of the channels here.
            Some(e) if listed.is_empty() => Err(e.into_status()),
            _ => Ok(Response::new(ChannelList { channels: listed })),
        }
    }

    async fn join_channel(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<ChannelInfo>, Status> {
        // The block to join configures who may ask: decode it first (unauthenticated input,
        // bounded by the transport's message limit), then authorise against its config.
        let payload =
            shared_proto::pb::common::Payload::decode(request.get_ref().payload.as_slice())
                .map_err(|e| Status::invalid_argument(format!("malformed Admin envelope: {e}")))?;
        let join = JoinChannelRequest::decode(payload.data.as_slice())
            .map_err(|e| Status::invalid_argument(format!("malformed join request: {e}")))?;
        let block = Block::decode(join.block.as_slice())
            .map_err(|e| Status::invalid_argument(format!("the block does not decode: {e}")))?;
        let number = block.header.as_ref().map_or(0, |h| h.number);
        if number != 0 {
            return Err(runtime_status(RuntimeError::NotGenesis(number)));
        }
        let (config, _) = shared_proto::block::verify_genesis(&block)
            .map_err(|e| Status::invalid_argument(format!("not a valid genesis block: {e}")))?;
        let envelope_channel =
            channel_id_of(request.get_ref()).map_err(AdminAuthError::into_status)?;
        if envelope_channel != config.id() {
            return Err(AdminAuthError::ChannelMismatch {
                inner: config.id().to_owned(),
                outer: envelope_channel,
            }
            .into_status());
        }
        self.authorize_against::<JoinChannelRequest>(&request, &config)
            .map_err(AdminAuthError::into_status)?;
        let channel = runtime::join(&self.ctx, &self.registry, &block)
            .await
            .map_err(runtime_status)?;
        Ok(Response::new(self.info(&channel)))
    }

    async fn remove_channel(
        &self,
        request: Request<Envelope>,
    ) -> Result<Response<ChannelInfo>, Status> {
        let (channel, req) = self
            .authorize::<RemoveChannelRequest>(&request)
            .map_err(AdminAuthError::into_status)?;
        if req.channel_id != channel.id {
            return Err(AdminAuthError::ChannelMismatch {
                inner: req.channel_id,
                outer: channel.id.clone(),
            }
            .into_status());
        }
        let mut info = self.info(&channel);
        runtime::remove(&self.ctx, &self.registry, &channel.id)
            .await
            .map_err(runtime_status)?;
        info.role = "removed".into();
        info.status = "inactive".into();
        Ok(Response::new(info))
    }
}
