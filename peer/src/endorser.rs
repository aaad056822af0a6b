//! Endorser (application -> [endorser] -> chaincode on a simulator -> signed read/write set).
//!
//! `ProcessProposal` checks the proposal (decodes; channel served here; creator certificate
//! and signature; tx id = SHA-256(nonce ‖ creator); creator satisfies the channel's Readers
//! policy; tx id not already committed), runs the chaincode named by the channel's definition
//! against a simulator over the current state (reads record versions, writes are buffered, a
//! tx does not see its own writes), and returns the read/write set signed by this peer. A
//! chaincode error, panic or timeout becomes an error response (status ≥ 400, no endorsement);
//! the peer keeps serving.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use shared_proto::channel::READERS;
use shared_proto::hash;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::tx::ChaincodeAction;
use shared_proto::pb::tx::ChaincodeId;
use shared_proto::pb::tx::Endorsement;
use shared_proto::pb::tx::Proposal;
use shared_proto::pb::tx::ProposalResponse;
use shared_proto::pb::tx::ProposalResponsePayload;
use shared_proto::pb::tx::Response;
use shared_proto::pb::tx::SignedProposal;
use shared_proto::signing::Domain;
use tonic::Code;

use crate::chaincode;
use crate::channels::Registry;
use crate::ledger::StateReader;
use crate::simulator::TxSimulator;

/// Longest a chaincode invocation may run.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Shortest nonce accepted (as for envelopes).
const NONCE_LEN_MIN: usize = 16;

/// Why a proposal was refused before the chaincode ran.
#[derive(Debug, thiserror::Error)]
pub enum EndorseError {
    #[error("malformed proposal: {0}")]
    Malformed(String),
    #[error("channel {0:?} is not joined by this peer")]
    UnknownChannel(String),
    #[error("creator refused: {0}")]
    Creator(String),
    #[error("proposal signature does not verify: {0}")]
    BadSignature(String),
    #[error("tx id {found:?} is not hex(SHA-256(nonce ‖ creator))")]
    BadTxId { found: String },
    #[error("creator is not a member of channel {0} (Readers policy)")]
    NotMember(String),
    #[error("tx {0} is already committed")]
    Duplicate(String),
    #[error("ledger: {0}")]
    Ledger(String),
}

impl EndorseError {
    pub fn into_status(self) -> tonic::Status {
        let code = match &self {
            EndorseError::Malformed(_) | EndorseError::BadTxId { .. } => Code::InvalidArgument,
            EndorseError::UnknownChannel(_) => Code::NotFound,
            EndorseError::Creator(_)
            | EndorseError::BadSignature(_)
            | EndorseError::NotMember(_) => Code::PermissionDenied,
            EndorseError::Duplicate(_) => Code::AlreadyExists,
            EndorseError::Ledger(_) => Code::Internal,
        };
        tonic::Status::new(code, self.to_string())
    }
}

fn error_response(status: i32, message: String) -> ProposalResponse {
    ProposalResponse {
        response: Some(Response {
            status,
            message,
            payload: Vec::new(),
        }),
        payload: Vec::new(),
        endorsement: None,
    }
}

/// Simulates the proposal; with `endorse`, signs the result (ProcessProposal), else only
/// returns the chaincode's answer (Query.Evaluate: nothing is ordered).
pub async fn process(
    registry: &Registry,
    signed: SignedProposal,
    endorse: bool,
) -> Result<ProposalResponse, EndorseError> {
    let malformed = |e: &dyn std::fmt::Display| EndorseError::Malformed(e.to_string());
    let proposal = Proposal::decode(signed.proposal_bytes.as_slice()).map_err(|e| malformed(&e))?;
    let header = proposal.header.ok_or_else(|| malformed(&"no header"))?;
    let ch = header
        .channel_header
        .ok_or_else(|| malformed(&"no channel header"))?;
    let sh = header
        .signature_header
        .ok_or_else(|| malformed(&"no signature header"))?;
    if ch.r#type != HeaderType::EndorserTransaction as i32 {
        return Err(malformed(&"header type is not ENDORSER_TRANSACTION"));
    }
    let invocation = proposal
        .invocation
        .ok_or_else(|| malformed(&"no invocation"))?;
    let cc_id = invocation.chaincode_id.clone().unwrap_or_default();
    let channel = registry
        .get(&ch.channel_id)
        .ok_or_else(|| EndorseError::UnknownChannel(ch.channel_id.clone()))?;
    // One config for the whole proposal, though a config block may commit meanwhile.
    let config = channel.config();
    let creator = config
        .msps()
        .deserialize_identity(&sh.creator, registry.now_unix())
        .map_err(|e| EndorseError::Creator(e.to_string()))?;
    creator
        .verify(
            Domain::Proposal,
            &[&signed.proposal_bytes],
            &signed.signature,
        )
        .map_err(|e| EndorseError::BadSignature(e.to_string()))?;
    if sh.nonce.len() < NONCE_LEN_MIN || ch.tx_id != hash::tx_id(&sh.nonce, &sh.creator) {
        return Err(EndorseError::BadTxId { found: ch.tx_id });
    }
    let signer = shared_proto::policy::Signer {
        id: creator.id,
        msp_id: creator.msp_id.clone(),
        role: creator.role,
    };
    if !matches!(config.evaluate(READERS, &[signer]), Ok(true)) {
        return Err(EndorseError::NotMember(channel.id.clone()));
    }
    if endorse
        && channel
            .ledger
            .has_tx(&ch.tx_id)
            .map_err(|e| EndorseError::Ledger(e.to_string()))?
    {
        return Err(EndorseError::Duplicate(ch.tx_id));
    }
    // Which chaincode runs is the channel's decision; the version must match its definition.
    let definition = match config.chaincode(&cc_id.name) {
        Ok(d) => d,
        Err(e) => return Ok(error_response(404, e.to_string())),
    };
    let Some((installed_version, cc)) = registry.chaincodes.get(&cc_id.name) else {
        return Ok(error_response(
            404,
            format!("chaincode {:?} is not installed on this peer", cc_id.name),
        ));
    };
    if installed_version != definition.version {
        return Ok(error_response(
            409,
            format!(
                "chaincode {} installed at version {installed_version}, channel defines {}",
                cc_id.name, definition.version
            ),
        ));
    }
    let state: Arc<dyn StateReader> = Arc::new(channel.ledger.clone());
    let sim = TxSimulator::new(state, &channel.id, &cc_id.name, &ch.tx_id, &creator.msp_id);
    let (sim, result) = chaincode::invoke_isolated(
        cc,
        sim,
        invocation.function,
        invocation.args,
        INVOKE_TIMEOUT,
    )
    .await;
    let payload = match result {
        Ok(p) => p,
        Err(e) => return Ok(error_response(e.status(), e.to_string())),
    };
    let response = Response {
        status: 200,
        message: String::new(),
        payload,
    };
    if !endorse {
        return Ok(ProposalResponse {
            response: Some(response),
            payload: Vec::new(),
            endorsement: None,
        });
    }
    let prp = ProposalResponsePayload {
        proposal_hash: hash::proposal_hash(&signed.proposal_bytes).to_vec(),
        action: Some(ChaincodeAction {
            chaincode_id: Some(ChaincodeId {
                name: cc_id.name,
                version: definition.version.clone(),
            }),
            results: Some(sim.into_rwset()),
            response: Some(response.clone()),
            events: Vec::new(),
        }),
    }
    .encode_to_vec();
    let endorser = registry.identity.serialized().to_vec();
    let signature = registry
        .identity
        .sign(Domain::Endorsement, &[&prp, &endorser]);
    Ok(ProposalResponse {
        response: Some(response),
        payload: prp,
        endorsement: Some(Endorsement {
            endorser,
            signature,
        }),
    })
}
