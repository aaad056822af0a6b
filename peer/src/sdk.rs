//! Client SDK: the whole execute-order-validate flow in one call.
//!
//! [`Gateway::submit`] builds and signs a proposal, collects endorsements from one peer of each
//! application org concurrently, checks they signed identical results, assembles and signs the
//! transaction envelope (same nonce, so the same tx id), submits it to an orderer (moving to the
//! next orderer while one is unavailable), then waits on a peer's `CommitStatus` and returns
//! the validation code. [`Gateway::evaluate`] runs a chaincode function read-only on one peer;
//! [`Gateway::block_by_number`] and [`Gateway::transaction_by_id`] read its ledger. Every query
//! is signed by the gateway's identity (see [`crate::query`]).

use std::time::Duration;

use prost::Message as _;
use shared_proto::envelope;
use shared_proto::hash;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::ChannelHeader;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::Header;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::SignatureHeader;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::peer::endorser_client::EndorserClient;
use shared_proto::pb::peer::query_client::QueryClient;
use shared_proto::pb::peer::BlockByNumberRequest;
use shared_proto::pb::peer::CommitStatusResponse;
use shared_proto::pb::peer::ProcessedTransaction;
use shared_proto::pb::peer::TransactionByIdRequest;
use shared_proto::pb::tx::ChaincodeId;
use shared_proto::pb::tx::ChaincodeInvocation;
use shared_proto::pb::tx::Proposal;
use shared_proto::pb::tx::ProposalResponse;
use shared_proto::pb::tx::SignedProposal;
use shared_proto::pb::tx::Transaction;
use shared_proto::pb::tx::TxValidationCode;
use shared_proto::signing::Domain;
use tonic::transport::Certificate;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;
use tonic::Code;

/// How long one submit may take end to end before giving up.
pub const SUBMIT_TIMEOUT: Duration = Duration::from_secs(60);
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Endorsement rounds tried when endorsers disagree (they were at different heights).
pub const ENDORSE_ATTEMPTS: u32 = 8;

/// Why a submit or evaluate did not complete.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("endorser {peer}: {status}")]
    Endorser { peer: String, status: tonic::Status },
    #[error("chaincode answered {status}: {message}")]
    Chaincode { status: i32, message: String },
    #[error("endorsers returned different results; the transaction would fail validation")]
    EndorsementMismatch,
    #[error("orderer refused the transaction: {0}")]
    Refused(tonic::Status),
    #[error("no orderer accepted the transaction in time: {0}")]
    Unavailable(String),
    #[error("commit status: {0}")]
    CommitStatus(tonic::Status),
    #[error("query: {0}")]
    Query(tonic::Status),
}

/// What happened to a submitted transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub tx_id: String,
    pub code: TxValidationCode,
    pub block_number: u64,
    /// The chaincode's answer (from the endorsement).
    pub payload: Vec<u8>,
}

/// Connections and identity of one application on one channel.
#[derive(Debug, Clone)]
pub struct Gateway {
    identity: SigningIdentity,
    channel_id: String,
    endorsers: Vec<(String, EndorserClient<Channel>)>,
    orderers: Vec<(String, AtomicBroadcastClient<Channel>)>,
    query: QueryClient<Channel>,
}

/// TLS settings for the gateway's connections.
#[derive(Debug, Clone)]
pub struct ClientTls {
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl ClientTls {
    /// The TLS material of user `user` of org `msp_id` of a generated network, trusting every
    /// org's TLS CA.
    pub fn from_network(net: &Generated, msp_id: &str, user: &str) -> Result<Self, SdkError> {
        let u = net
            .user(msp_id, user)
            .ok_or_else(|| SdkError::Config(format!("no user {user} in {msp_id}")))?;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| SdkError::Config(format!("{}: {e}", p.display())))
        };
        let mut ca_pem = Vec::new();
        for ca in &net.tls_ca_certs {
            ca_pem.extend(read(ca)?);
        }
        Ok(ClientTls {
            ca_pem,
            cert_pem: read(&u.tls_cert)?,
            key_pem: read(&u.tls_key)?,
        })
    }
}

/// A lazily connected mutual-TLS channel to `addr` (host:port).
pub fn channel_to(addr: &str, tls: &ClientTls) -> Result<Channel, SdkError> {
    let host = shared_proto::tls::host_of(addr).to_owned();
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(tls.ca_pem.clone()))
        .identity(Identity::from_pem(
            tls.cert_pem.clone(),
            tls.key_pem.clone(),
        ))
        .domain_name(host);
    Ok(Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| SdkError::Config(format!("{addr}: {e}")))?
        .tls_config(config)
        .map_err(|e| SdkError::Config(format!("{addr}: {e}")))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .connect_lazy())
}

impl Gateway {
    /// A gateway with explicit endpoints: `endorsers` (one per org the policy needs; the first
    /// also answers commit status and evaluations) and `orderers` (client ports).
    pub fn new(
        identity: SigningIdentity,
        channel_id: &str,
        endorsers: &[String],
        orderers: &[String],
        tls: &ClientTls,
    ) -> Result<Self, SdkError> {
        if endorsers.is_empty() || orderers.is_empty() {
            return Err(SdkError::Config(
                "needs at least one endorser and one orderer".into(),
            ));
        }
        let endorsers = endorsers
            .iter()
            .map(|a| Ok((a.clone(), EndorserClient::new(channel_to(a, tls)?))))
            .collect::<Result<Vec<_>, SdkError>>()?;
        let orderers = orderers
            .iter()
            .map(|a| Ok((a.clone(), AtomicBroadcastClient::new(channel_to(a, tls)?))))
            .collect::<Result<Vec<_>, SdkError>>()?;
        let query = QueryClient::new(channel_to(&endorsers[0].0, tls)?)
            .max_decoding_message_size(crate::node::MESSAGE_BYTES_MAX);
        Ok(Gateway {
            identity,
            channel_id: channel_id.to_owned(),
            endorsers,
            orderers,
            query,
        })
    }

    /// A gateway for user `user` of org `msp_id` of a generated network: endorsers are the
    /// first peer of each application org (the user's own org first), orderers all orderers.
    pub fn from_network(
        net: &Generated,
        msp_id: &str,
        user: &str,
        channel_id: &str,
    ) -> Result<Self, SdkError> {
        let mut orgs: Vec<&shared_proto::material::PeerOrgSpec> =
            net.spec.peer_orgs.iter().collect();
        orgs.sort_by_key(|o| o.msp_id != msp_id);
        let endorsers: Vec<String> = orgs
            .iter()
            .filter_map(|o| o.peers.first().map(|p| format!("{}:{}", p.host, p.port)))
            .collect();
        Self::from_network_with_endorsers(net, msp_id, user, channel_id, &endorsers)
    }

    /// As [`Gateway::from_network`], with the endorsing peers (host:port) chosen by the caller.
    pub fn from_network_with_endorsers(
        net: &Generated,
        msp_id: &str,
        user: &str,
        channel_id: &str,
        endorsers: &[String],
    ) -> Result<Self, SdkError> {
        let u = net
            .user(msp_id, user)
            .ok_or_else(|| SdkError::Config(format!("no user {user} in {msp_id}")))?;
        let identity = SigningIdentity::from_pem_files(msp_id, &u.cert, &u.key)
            .map_err(|e| SdkError::Config(e.to_string()))?;
        let tls = ClientTls::from_network(net, msp_id, user)?;
        let orderers: Vec<String> = net
            .spec
            .orderer_orgs
            .iter()
            .flat_map(|o| o.orderers.iter().map(|n| format!("{}:{}", n.host, n.port)))
            .collect();
        Gateway::new(identity, channel_id, endorsers, &orderers, &tls)
    }

    fn proposal(
        &self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
        nonce: &[u8],
    ) -> SignedProposal {
        let creator = self.identity.serialized().to_vec();
        let proposal = Proposal {
            header: Some(Header {
                channel_header: Some(ChannelHeader {
                    r#type: HeaderType::EndorserTransaction as i32,
                    channel_id: self.channel_id.clone(),
                    tx_id: hash::tx_id(nonce, &creator),
                    timestamp_unix_ms: now_ms(),
                }),
                signature_header: Some(SignatureHeader {
                    creator,
                    nonce: nonce.to_vec(),
                }),
            }),
            invocation: Some(ChaincodeInvocation {
                chaincode_id: Some(ChaincodeId {
                    name: chaincode.to_owned(),
                    version: String::new(),
                }),
                function: function.to_owned(),
                args: args.to_vec(),
            }),
        }
        .encode_to_vec();
        let signature = self.identity.sign(Domain::Proposal, &[&proposal]);
        SignedProposal {
            proposal_bytes: proposal,
            signature,
        }
    }

    /// Runs `function` read-only on the first endorser; nothing is ordered.
    pub async fn evaluate(
        &self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, SdkError> {
        let signed = self.proposal(chaincode, function, args, &envelope::new_nonce());
        let response = self
            .query
            .clone()
            .evaluate(signed)
            .await
            .map_err(|status| SdkError::Endorser {
                peer: self.endorsers[0].0.clone(),
                status,
            })?
            .into_inner();
        chaincode_result(&response).map(|r| r.payload)
    }

    /// Endorses, orders and waits for the commit of one transaction.
    ///
    /// Endorsers at different heights can read different versions and so sign different
    /// results; the proposal is then endorsed again (fresh tx id, nothing was ordered), up to
    /// [`ENDORSE_ATTEMPTS`] times.
    pub async fn submit(
        &self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Submitted, SdkError> {
        self.submit_observed(chaincode, function, args, &Unobserved)
            .await
    }

    /// [`Gateway::submit`], telling `observe` when each transaction (one per endorsement
    /// round) goes to the orderers and when an orderer acknowledged it (what a chaos history
    /// records).
    pub async fn submit_observed(
        &self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
        observe: &dyn Observe,
    ) -> Result<Submitted, SdkError> {
        let mut attempt = 1;
        loop {
            match self.submit_once(chaincode, function, args, observe).await {
                Err(SdkError::EndorsementMismatch) if attempt < ENDORSE_ATTEMPTS => {
                    tokio::time::sleep(RETRY_PAUSE / 4 * attempt).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn submit_once(
        &self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
        observe: &dyn Observe,
    ) -> Result<Submitted, SdkError> {
        let nonce = envelope::new_nonce();
        let signed = self.proposal(chaincode, function, args, &nonce);
        let responses = futures::future::join_all(self.endorsers.iter().map(|(addr, client)| {
            let (mut client, signed) = (client.clone(), signed.clone());
            async move {
                client
                    .process_proposal(signed)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|status| SdkError::Endorser {
                        peer: addr.clone(),
                        status,
                    })
            }
        }))
        .await;
        let mut endorsements = Vec::new();
        let mut payload: Option<Vec<u8>> = None;
        let mut result = Vec::new();
        for r in responses {
            let r = r?;
            let response = chaincode_result(&r)?;
            match &payload {
                None => payload = Some(r.payload.clone()),
                Some(p) if *p != r.payload => return Err(SdkError::EndorsementMismatch),
                Some(_) => {}
            }
            result = response.payload;
            endorsements.extend(r.endorsement);
        }
        let transaction = Transaction {
            proposal_response_payload: payload.unwrap_or_default(),
            endorsements,
            proposal: signed.proposal_bytes,
        };
        let env = envelope::create_signed_envelope(
            &self.identity,
            HeaderType::EndorserTransaction,
            &self.channel_id,
            transaction.encode_to_vec(),
            nonce,
            now_ms(),
        );
        let tx_id = crate::commit::tx_id_of(&env.encode_to_vec()).unwrap_or_default();
        observe.ordering(&tx_id);
        let orderer = self.order(env).await?;
        observe.acked(&tx_id, &orderer);
        let status = self.commit_status(&tx_id).await?;
        Ok(Submitted {
            tx_id,
            code: TxValidationCode::try_from(status.validation_code)
                .unwrap_or(TxValidationCode::InvalidOtherReason),
            block_number: status.block_number,
            payload: result,
        })
    }

    /// A query request for `query`, signed by this gateway's identity.
    fn sign(&self, query: shared_proto::pb::peer::query_request::Query) -> Envelope {
        crate::query::sign(
            &self.identity,
            &self.channel_id,
            query,
            crate::query::now_unix_ms(),
        )
    }

    /// Block `number` as the first endorser committed it.
    pub async fn block_by_number(&self, number: u64) -> Result<Block, SdkError> {
        let mut request = BlockByNumberRequest {
            channel_id: self.channel_id.clone(),
            number,
            signed: None,
        };
        request.signed = Some(self.sign(crate::query::block_by_number(&request)));
        self.query
            .clone()
            .get_block_by_number(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(SdkError::Query)
    }

    /// A committed transaction with its validation code, from the first endorser.
    pub async fn transaction_by_id(&self, tx_id: &str) -> Result<ProcessedTransaction, SdkError> {
        let mut request = TransactionByIdRequest {
            channel_id: self.channel_id.clone(),
            tx_id: tx_id.to_owned(),
            signed: None,
        };
        request.signed = Some(self.sign(crate::query::transaction_by_id(&request)));
        self.query
            .clone()
            .get_transaction_by_id(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(SdkError::Query)
    }

    /// Waits for `tx_id`'s commit on the first endorser; a peer whose waits are all taken
    /// (`RESOURCE_EXHAUSTED`) is asked again until [`SUBMIT_TIMEOUT`].
    async fn commit_status(&self, tx_id: &str) -> Result<CommitStatusResponse, SdkError> {
        let deadline = tokio::time::Instant::now() + SUBMIT_TIMEOUT;
        loop {
            let mut request = TransactionByIdRequest {
                channel_id: self.channel_id.clone(),
                tx_id: tx_id.to_owned(),
                signed: None,
            };
            request.signed = Some(self.sign(crate::query::commit_status(&request)));
            match self.query.clone().commit_status(request).await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s)
                    if s.code() == Code::ResourceExhausted
                        && tokio::time::Instant::now() + RETRY_PAUSE < deadline =>
                {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(s) => return Err(SdkError::CommitStatus(s)),
            }
        }
    }

    /// Submits to the orderers until one orders it; ALREADY_EXISTS means an earlier attempt
    /// whose answer was lost got it ordered.
    /// Broadcasts `env` until an orderer acknowledges it; returns that orderer's address.
    async fn order(&self, env: Envelope) -> Result<String, SdkError> {
        let deadline = tokio::time::Instant::now() + SUBMIT_TIMEOUT;
        let mut last = String::from("no attempt");
        for attempt in 0usize.. {
            let (addr, client) = &self.orderers[attempt % self.orderers.len()];
            let mut request = tonic::Request::new(env.clone());
            request.set_timeout(Duration::from_secs(10));
            match client.clone().submit(request).await {
                Ok(_) => return Ok(addr.clone()),
                Err(s) if s.code() == Code::AlreadyExists => return Ok(addr.clone()),
                Err(s)
                    if matches!(
                        s.code(),
                        Code::Unavailable
                            | Code::Unknown
                            | Code::DeadlineExceeded
                            | Code::Cancelled
                    ) =>
                {
                    last = format!("{addr}: {s}");
                }
                Err(s) => return Err(SdkError::Refused(s)),
            }
            if tokio::time::Instant::now() + RETRY_PAUSE > deadline {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(SdkError::Unavailable(last))
    }
}

/// What [`Gateway::submit_observed`] reports as a transaction moves on.
pub trait Observe: Send + Sync {
    /// The endorsed transaction `tx_id` is about to be broadcast.
    fn ordering(&self, _tx_id: &str) {}
    /// Orderer `orderer` (host:port) acknowledged `tx_id`: it is ordered and must not be lost.
    fn acked(&self, _tx_id: &str, _orderer: &str) {}
}

struct Unobserved;

impl Observe for Unobserved {}

fn chaincode_result(r: &ProposalResponse) -> Result<shared_proto::pb::tx::Response, SdkError> {
    let response = r.response.clone().unwrap_or_default();
    if response.status >= 400 || response.status == 0 {
        return Err(SdkError::Chaincode {
            status: response.status,
            message: response.message,
        });
    }
    Ok(response)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
