//! Phase 1: the checks of one transaction that need nothing from the rest of the block, run in
//! parallel across the block (see the code table in the parent module for their order).
//!
//! Read/write set rules (`BAD_RWSET` unless said otherwise):
//! - at most [`MAX_RWSET_ITEMS`] reads + writes + range queries + range-query results in all;
//! - each namespace non-empty and appearing once;
//! - every key (read, written, or returned by a range query) passes
//!   [`crate::ledger::check_key`]: non-empty, at most 1 KiB, no NUL;
//! - a key is written at most once per namespace (so a transaction's writes are a set);
//! - a range query's results carry versions (they existed) and are strictly ascending within
//!   `[start_key, end_key)` (empty `end_key`: unbounded);
//! - writes only in the chaincode's own namespace, else `ILLEGAL_WRITESET` (reads of other
//!   namespaces are allowed, as Fabric).
//!
//! Endorsement signatures are checked by [`valid_endorsers`]: see there for what is batched.
//!
//! The endorsed result is bound to this envelope: the transaction carries the proposal the
//! endorsers answered; its hash must be the payload's `proposal_hash`, and its tx id, channel
//! and creator must be the envelope's (else `INVALID_ENDORSER_TRANSACTION`, or
//! `BAD_PROPOSAL_TXID` for another tx id), so nobody can re-wrap someone else's endorsed
//! writes into a new transaction.

use std::collections::HashSet;

use ed25519_dalek::Signature;
use ed25519_dalek::VerifyingKey;
use prost::Message as _;
use shared_proto::channel::Channel;
use shared_proto::envelope::EnvelopeError;
use shared_proto::envelope::PendingSignature;
use shared_proto::envelope::VerifiedEnvelope;
use shared_proto::msp::VerifiedIdentity;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::tx::Endorsement;
use shared_proto::pb::tx::ProposalResponsePayload;
use shared_proto::pb::tx::RangeQueryInfo;
use shared_proto::pb::tx::Transaction;
use shared_proto::pb::tx::TxReadWriteSet;
use shared_proto::pb::tx::TxValidationCode as Code;
use shared_proto::policy::Signer;
use shared_proto::signature_batch;
use shared_proto::signing;
use shared_proto::signing::Domain;

use super::MAX_ENDORSEMENTS;
use super::MAX_RWSET_ITEMS;
use crate::ledger::check_key;

/// Phase 1's verdict on one transaction.
#[derive(Debug)]
pub(super) struct CheckedTx {
    /// The tx id, when the envelope verified and carries one.
    pub(super) tx_id: Option<String>,
    /// The read/write set to check in order, or the code the transaction failed with.
    pub(super) outcome: Result<TxReadWriteSet, Code>,
}

impl CheckedTx {
    fn refused(code: Code) -> Self {
        CheckedTx {
            tx_id: None,
            outcome: Err(code),
        }
    }
}

/// A transaction after every phase-1 check except signature verification.
pub(super) enum Prepared {
    /// Refused before its creator could be identified: no tx id.
    Refused(Code),
    /// The envelope checked out (creator signature pending) but a later check failed.
    Failed {
        envelope: VerifiedEnvelope,
        creator: PendingSignature,
        code: Code,
    },
    /// Everything but the signatures and the endorsement policy checked out.
    Ready {
        envelope: VerifiedEnvelope,
        creator: PendingSignature,
        endorsed: Endorsed,
    },
}

/// An endorser transaction whose signatures await verification.
pub(super) struct Endorsed {
    rwset: TxReadWriteSet,
    chaincode: String,
    transaction: Transaction,
    candidates: Vec<Candidate>,
}

impl Prepared {
    /// The signatures this transaction adds to its block's batch (creator first), in order;
    /// empty when it has none to batch.
    pub(super) fn batch_items(&self) -> Vec<(&[u8], Signature, VerifyingKey)> {
        let Prepared::Ready {
            creator, endorsed, ..
        } = self
        else {
            return Vec::new();
        };
        let mut items = Vec::with_capacity(1 + endorsed.candidates.len());
        if !creator.key.is_weak() {
            items.push((creator.message.as_slice(), creator.signature, creator.key));
        }
        for c in &endorsed.candidates {
            items.push((c.message.as_slice(), c.signature, c.identity.public_key));
        }
        items
    }
}

/// Phase 1 without the signature checks: decode, envelope (creator signature deferred),
/// transaction, chaincode, rwset, endorser identities.
pub(super) fn prepare_tx(channel: &Channel, bytes: &[u8], now_unix: i64) -> Prepared {
    if bytes.is_empty() {
        return Prepared::Refused(Code::NilEnvelope);
    }
    let envelope = match shared_proto::envelope::decode_envelope(bytes) {
        Ok(envelope) => envelope,
        Err(_) => return Prepared::Refused(Code::BadPayload),
    };
    let (envelope, creator) =
        match shared_proto::envelope::verify_envelope_deferred(channel, &envelope, now_unix) {
            Ok(v) => v,
            Err(e) => return Prepared::Refused(envelope_code(&e)),
        };
    match prepare_endorser_tx(channel, &envelope, now_unix) {
        Ok(endorsed) => Prepared::Ready {
            envelope,
            creator,
            endorsed,
        },
        Err(code) => Prepared::Failed {
            envelope,
            creator,
            code,
        },
    }
}

/// Finishes phase 1 once the block's signature batch is known: `batch_ok` means every
/// signature of [`Prepared::batch_items`] verified (in a batch with other transactions'). When
/// the batch failed, this transaction's signatures are checked on their own to find the bad
/// ones. Reads no state: whether the tx id is already committed is looked up in the in-order
/// phase, so this can run while the previous block is still being committed.
pub(super) fn finish_tx(
    channel: &Channel,
    prepared: Prepared,
    batch_ok: bool,
    now_unix: i64,
) -> CheckedTx {
    let (envelope, outcome) = match prepared {
        Prepared::Refused(code) => return CheckedTx::refused(code),
        // A forged envelope reads BAD_CREATOR_SIGNATURE whatever else is wrong with it, and its
        // tx id is never trusted.
        Prepared::Failed {
            envelope,
            creator,
            code,
        } => {
            if code == Code::BadCreatorSignature || creator.verify().is_err() {
                return CheckedTx::refused(Code::BadCreatorSignature);
            }
            (envelope, Err(code))
        }
        Prepared::Ready {
            envelope,
            creator,
            endorsed,
        } => {
            let signers = if batch_ok {
                if creator.key.is_weak() {
                    // Not in the batch: verify_strict refuses it.
                    return CheckedTx::refused(Code::BadCreatorSignature);
                }
                distinct_signers(endorsed.candidates)
            } else {
                let tx = &endorsed.transaction;
                match valid_endorsers(
                    channel,
                    &tx.proposal_response_payload,
                    &tx.endorsements,
                    Some(&creator),
                    now_unix,
                ) {
                    Ok(signers) => signers,
                    Err(code) => return CheckedTx::refused(code),
                }
            };
            let outcome = match channel.evaluate_endorsement(&endorsed.chaincode, &signers) {
                Ok(true) => Ok(endorsed.rwset),
                Ok(false) => Err(Code::EndorsementPolicyFailure),
                Err(_) => Err(Code::InvalidChaincode),
            };
            (envelope, outcome)
        }
    };
    CheckedTx {
        tx_id: Some(envelope.tx_id).filter(|id| !id.is_empty()),
        outcome,
    }
}

/// The validation code for an envelope [`verify_envelope`] refused.
///
/// [`verify_envelope`]: shared_proto::envelope::verify_envelope
pub(crate) fn envelope_code(error: &EnvelopeError) -> Code {
    match error {
        EnvelopeError::MalformedEnvelope { .. }
        | EnvelopeError::EmptyPayload
        | EnvelopeError::MalformedPayload { .. } => Code::BadPayload,
        EnvelopeError::MissingHeader
        | EnvelopeError::MissingChannelHeader
        | EnvelopeError::MissingSignatureHeader
        | EnvelopeError::NonceTooShort { .. } => Code::BadCommonHeader,
        EnvelopeError::UnknownHeaderType { .. } => Code::UnknownTxType,
        EnvelopeError::WrongChannel { .. } => Code::TargetChainNotFound,
        EnvelopeError::BadTxId { .. } => Code::BadProposalTxid,
        EnvelopeError::Creator(_) | EnvelopeError::BadSignature { .. } => Code::BadCreatorSignature,
    }
}

/// The checks after the envelope: transaction, action, chaincode, rwset, endorser identities
/// (their signatures and the policy come in [`finish_tx`]).
fn prepare_endorser_tx(
    channel: &Channel,
    envelope: &VerifiedEnvelope,
    now_unix: i64,
) -> Result<Endorsed, Code> {
    if envelope.header_type == HeaderType::ConfigUpdate {
        return Err(Code::InvalidConfigTransaction);
    }
    if envelope.header_type != HeaderType::EndorserTransaction {
        return Err(Code::UnknownTxType);
    }
    let tx = Transaction::decode(envelope.data.as_slice()).map_err(|_| Code::BadPayload)?;
    if tx.endorsements.len() > MAX_ENDORSEMENTS {
        return Err(Code::InvalidEndorserTransaction);
    }
    let payload = ProposalResponsePayload::decode(tx.proposal_response_payload.as_slice())
        .map_err(|_| Code::BadResponsePayload)?;
    let action = payload.action.ok_or(Code::NilTxaction)?;
    check_proposal(envelope, &tx.proposal, &payload.proposal_hash)?;
    let chaincode = action.chaincode_id.unwrap_or_default();
    let definition = channel
        .chaincode(&chaincode.name)
        .map_err(|_| Code::InvalidChaincode)?;
    if chaincode.version != definition.version {
        return Err(Code::ChaincodeVersionConflict);
    }
    match action.response {
        Some(response) if response.status < 400 => {}
        _ => return Err(Code::EndorsementPolicyFailure),
    }
    let rwset = action.results.unwrap_or_default();
    check_rwset(&chaincode.name, &rwset)?;
    let candidates = candidates(
        channel,
        &tx.proposal_response_payload,
        &tx.endorsements,
        now_unix,
    );
    Ok(Endorsed {
        rwset,
        chaincode: chaincode.name,
        transaction: tx,
        candidates,
    })
}

/// The proposal in the transaction is the one endorsed, and it is this envelope's.
fn check_proposal(
    envelope: &VerifiedEnvelope,
    proposal: &[u8],
    proposal_hash: &[u8],
) -> Result<(), Code> {
    if shared_proto::hash::proposal_hash(proposal).as_slice() != proposal_hash {
        return Err(Code::InvalidEndorserTransaction);
    }
    let proposal = shared_proto::pb::tx::Proposal::decode(proposal)
        .map_err(|_| Code::InvalidEndorserTransaction)?;
    let header = proposal.header.ok_or(Code::InvalidEndorserTransaction)?;
    let ch = header
        .channel_header
        .ok_or(Code::InvalidEndorserTransaction)?;
    let sh = header
        .signature_header
        .ok_or(Code::InvalidEndorserTransaction)?;
    if ch.tx_id != envelope.tx_id {
        return Err(Code::BadProposalTxid);
    }
    if ch.channel_id != envelope.channel_header.channel_id
        || sh.creator != envelope.signature_header.creator
    {
        return Err(Code::InvalidEndorserTransaction);
    }
    Ok(())
}

/// The read/write set rules of the module doc.
pub(super) fn check_rwset(chaincode: &str, rwset: &TxReadWriteSet) -> Result<(), Code> {
    let mut items: usize = 0;
    for ns in &rwset.ns_rwset {
        let ranges = ns.range_queries_info.iter().map(|q| q.raw_reads.len());
        items = items
            .saturating_add(ns.reads.len())
            .saturating_add(ns.writes.len())
            .saturating_add(ns.range_queries_info.len())
            .saturating_add(ranges.fold(0, usize::saturating_add));
        if items > MAX_RWSET_ITEMS {
            return Err(Code::BadRwset);
        }
    }
    let mut namespaces = HashSet::new();
    for ns in &rwset.ns_rwset {
        let name = ns.namespace.as_str();
        if name.is_empty() || !namespaces.insert(name) {
            return Err(Code::BadRwset);
        }
        let key_ok = |key: &str| check_key(name, key).is_ok();
        if !ns.reads.iter().all(|r| key_ok(&r.key)) {
            return Err(Code::BadRwset);
        }
        let mut written = HashSet::with_capacity(ns.writes.len());
        if !ns
            .writes
            .iter()
            .all(|w| key_ok(&w.key) && written.insert(w.key.as_str()))
        {
            return Err(Code::BadRwset);
        }
        if !ns.range_queries_info.iter().all(|q| range_ok(name, q)) {
            return Err(Code::BadRwset);
        }
    }
    if rwset
        .ns_rwset
        .iter()
        .any(|ns| !ns.writes.is_empty() && ns.namespace != chaincode)
    {
        return Err(Code::IllegalWriteset);
    }
    Ok(())
}

/// A range query's recorded results are existing keys, strictly ascending, within its range.
fn range_ok(namespace: &str, query: &RangeQueryInfo) -> bool {
    let mut previous: Option<&str> = None;
    for read in &query.raw_reads {
        let key = read.key.as_str();
        if read.version.is_none()
            || check_key(namespace, key).is_err()
            || key < query.start_key.as_str()
            || (!query.end_key.is_empty() && key >= query.end_key.as_str())
            || previous.is_some_and(|p| key <= p)
        {
            return false;
        }
        previous = Some(key);
    }
    true
}

/// An endorsement whose identity checked out, awaiting its signature check.
struct Candidate {
    identity: VerifiedIdentity,
    signature: Signature,
    message: Vec<u8>,
}

/// The distinct endorsers (first occurrence of each certificate wins) whose identity
/// deserializes through the channel's MSPs at `now_unix` and whose `Domain::Endorsement`
/// signature over `payload ‖ endorser` verifies. Invalid endorsements are dropped, as Fabric.
///
/// **Batched:** all endorsement signatures of one transaction that survive the identity and
/// signature-length checks are verified together with
/// `shared_proto::signature_batch::verify_batch` (one multi-scalar multiplication, one point
/// per distinct key, cofactored: the same verdict at every peer). If the batch fails, each is
/// verified on its own with `verify_strict` to find the bad ones; a lone signature is verified
/// on its own. Keys of small order (`is_weak`, which `verify_strict` refuses) are dropped
/// before batching, and a signature with a small-order `R` sends the transaction to the
/// checks one by one. Residual difference from `verify_strict`: a signature built by the key
/// holder with a torsion component in R or in the key passes the cofactored batch equation while
/// `verify_strict` refuses it; it cannot be produced without the private key.
///
/// **The creator's envelope signature joins the batch** (`creator`, from
/// `verify_envelope_deferred`, which does every other envelope check): three signatures per
/// transaction in one multi-scalar multiplication. If the batch fails, the creator's signature
/// is verified alone and a bad one refuses the transaction (`Err(BAD_CREATOR_SIGNATURE)`).
pub(super) fn valid_endorsers(
    channel: &Channel,
    payload: &[u8],
    endorsements: &[Endorsement],
    creator: Option<&PendingSignature>,
    now_unix: i64,
) -> Result<Vec<Signer>, Code> {
    let candidates = candidates(channel, payload, endorsements, now_unix);
    let creator_batchable = creator.filter(|c| !c.key.is_weak());
    let all_valid = candidates.len() + usize::from(creator_batchable.is_some()) > 1
        && batch_verifies(&candidates, creator_batchable);
    if !all_valid {
        if let Some(c) = creator {
            c.verify().map_err(|_| Code::BadCreatorSignature)?;
        }
    }
    let verified = candidates.into_iter().filter(|c| {
        all_valid
            || c.identity
                .public_key
                .verify_strict(&c.message, &c.signature)
                .is_ok()
    });
    Ok(distinct_signers(verified))
}

/// The endorsements whose identity deserializes at `now_unix`, with a well-formed signature by
/// a key that is not of small order, ready for signature verification.
fn candidates(
    channel: &Channel,
    payload: &[u8],
    endorsements: &[Endorsement],
    now_unix: i64,
) -> Vec<Candidate> {
    let mut candidates = Vec::with_capacity(endorsements.len());
    for endorsement in endorsements {
        let Ok(identity) = channel
            .msps()
            .deserialize_identity(&endorsement.endorser, now_unix)
        else {
            continue;
        };
        let Ok(signature) = signing::parse_signature(&endorsement.signature) else {
            continue;
        };
        if identity.public_key.is_weak() {
            continue;
        }
        let message = signing::message(Domain::Endorsement, &[payload, &endorsement.endorser]);
        candidates.push(Candidate {
            identity,
            signature,
            message,
        });
    }
    candidates
}

/// Signers of `candidates` whose signatures are known good, first occurrence of each
/// certificate kept.
fn distinct_signers(candidates: impl IntoIterator<Item = Candidate>) -> Vec<Signer> {
    let mut signers: Vec<Signer> = Vec::new();
    for c in candidates {
        if signers.iter().any(|s| s.id == c.identity.id) {
            continue;
        }
        signers.push(Signer {
            id: c.identity.id,
            msp_id: c.identity.msp_id,
            role: c.identity.role,
        });
    }
    signers
}

fn batch_verifies(candidates: &[Candidate], creator: Option<&PendingSignature>) -> bool {
    let mut messages: Vec<&[u8]> = candidates.iter().map(|c| c.message.as_slice()).collect();
    let mut signatures: Vec<Signature> = candidates.iter().map(|c| c.signature).collect();
    let mut keys: Vec<VerifyingKey> = candidates.iter().map(|c| c.identity.public_key).collect();
    if let Some(c) = creator {
        messages.push(&c.message);
        signatures.push(c.signature);
        keys.push(c.key);
    }
    signature_batch::verify_batch(&messages, &signatures, &keys)
}
