//! Creating and verifying signed envelopes: the one definition of when an envelope is
//! well-formed and signed by a member of a channel.
//!
//! [`create_signed_envelope`] builds what [`verify_envelope`] accepts. Verification checks, in
//! this order, stopping at the first failure (each failure has its own [`EnvelopeError`]
//! variant):
//!
//! 1. the payload is non-empty and decodes as a `Payload`;
//! 2. it has a header, a channel header and a signature header, and a known header type;
//! 3. the channel id is the channel's;
//! 4. the nonce is at least [`MIN_NONCE_LEN`] bytes;
//! 5. the tx id is `hash::tx_id(nonce, creator)`; a `DELIVER_SEEK_INFO` envelope may leave it
//!    empty (as Fabric's Deliver clients do), but a non-empty one must still be right;
//! 6. the creator is a valid member of one of the channel's organisations at `now_unix`
//!    (known org, chains to its CA, within its validity window, exactly one role);
//! 7. the creator's signature over the payload bytes, as transmitted, verifies
//!    ([`Domain::Envelope`]).
//!
//! Promises: [`verify_envelope`] never panics on any input and never re-encodes the payload. It
//! does not evaluate `Readers`/`Writers` policies and does not judge the timestamp; callers do
//! that (with [`Channel::evaluate`] and [`VerifiedEnvelope::signer`]). Every error maps to a
//! [`Refusal`], which servers translate to a gRPC code or a `common.Status`.

use prost::Message as _;
use rand_core::RngCore as _;

use crate::channel::Channel;
use crate::hash;
use crate::msp::MspError;
use crate::msp::SigningIdentity;
use crate::msp::VerifiedIdentity;
use crate::pb::common::ChannelHeader;
use crate::pb::common::Envelope;
use crate::pb::common::Header;
use crate::pb::common::HeaderType;
use crate::pb::common::Payload;
use crate::pb::common::SignatureHeader;
use crate::pb::common::Status;
use crate::policy::Signer;
use crate::signing;
use crate::signing::Domain;
use crate::signing::SignatureError;

/// Length of the nonces [`new_nonce`] makes (what `common.proto` asks of clients).
pub const NONCE_LEN: usize = 24;
/// Shortest nonce [`verify_envelope`] accepts (128 bits): shorter ones would let tx ids be
/// guessed or collide. Clients should send [`NONCE_LEN`] bytes.
pub const MIN_NONCE_LEN: usize = 16;

/// How a server should answer a refused request. Kept free of tonic so every crate can use it;
/// see [`Refusal::grpc_code_name`] and [`Refusal::status`] for the mappings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The input is malformed or inconsistent. gRPC `INVALID_ARGUMENT`; stream status
    /// `BAD_REQUEST`.
    InvalidArgument,
    /// The input is well-formed but names a channel other than the one it was checked against,
    /// i.e. the channel it asks for is not here. gRPC `NOT_FOUND` rather than
    /// `FAILED_PRECONDITION`: the request names something absent, not a state that could
    /// change, and it is what Fabric answers a Broadcast or Deliver for a channel the node does
    /// not serve. Stream status `NOT_FOUND`.
    NotFound,
    /// The signer is not an acceptable member, or a signature does not verify. gRPC
    /// `PERMISSION_DENIED`; stream status `FORBIDDEN`.
    PermissionDenied,
}

impl Refusal {
    /// The gRPC status code's canonical name (`INVALID_ARGUMENT`, ...).
    pub fn grpc_code_name(self) -> &'static str {
        match self {
            Refusal::InvalidArgument => "INVALID_ARGUMENT",
            Refusal::NotFound => "NOT_FOUND",
            Refusal::PermissionDenied => "PERMISSION_DENIED",
        }
    }

    /// The Fabric-style status carried inside stream responses (Broadcast, Deliver).
    pub fn status(self) -> Status {
        match self {
            Refusal::InvalidArgument => Status::BadRequest,
            Refusal::NotFound => Status::NotFound,
            Refusal::PermissionDenied => Status::Forbidden,
        }
    }
}

/// Why an envelope was refused. Each variant is one check of [`verify_envelope`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The envelope bytes do not decode (only from [`decode_envelope`]).
    #[error("malformed envelope: {reason}")]
    MalformedEnvelope { reason: String },
    /// Check 1: the payload is empty.
    #[error("envelope payload is empty")]
    EmptyPayload,
    /// Check 1: the payload does not decode as a `Payload`.
    #[error("malformed envelope payload: {reason}")]
    MalformedPayload { reason: String },
    /// Check 2: no `Header`.
    #[error("payload has no header")]
    MissingHeader,
    /// Check 2: no `ChannelHeader`.
    #[error("payload header has no channel header")]
    MissingChannelHeader,
    /// Check 2: no `SignatureHeader`.
    #[error("payload header has no signature header")]
    MissingSignatureHeader,
    /// Check 2: the header type is not a `HeaderType` value.
    #[error("channel header type {value} is not a known header type")]
    UnknownHeaderType { value: i32 },
    /// Check 3: the envelope names another channel.
    #[error("envelope is for channel {found:?}, not {expected:?}")]
    WrongChannel { expected: String, found: String },
    /// Check 4: the nonce is shorter than [`MIN_NONCE_LEN`] (or empty).
    #[error("nonce is {len} bytes; at least {min} are required")]
    NonceTooShort { len: usize, min: usize },
    /// Check 5: the tx id is not `hash::tx_id(nonce, creator)`.
    #[error("tx id {found:?} is not hex(SHA-256(nonce ‖ creator)) = {expected:?}")]
    BadTxId { expected: String, found: String },
    /// Check 6: the creator is not a valid member of the channel (malformed identity,
    /// unknown org, foreign CA, expired or not yet valid, no or several roles, ...).
    #[error("creator refused: {0}")]
    Creator(#[source] MspError),
    /// Check 7: the signature does not verify (wrong length, other key, other bytes).
    #[error("envelope signature by {subject:?} does not verify: {source}")]
    BadSignature {
        subject: String,
        #[source]
        source: SignatureError,
    },
}

impl EnvelopeError {
    /// How a server should answer: malformed input is `InvalidArgument`, another channel is
    /// `NotFound`, an unacceptable creator or signature is `PermissionDenied`.
    pub fn refusal(&self) -> Refusal {
        match self {
            EnvelopeError::MalformedEnvelope { .. }
            | EnvelopeError::EmptyPayload
            | EnvelopeError::MalformedPayload { .. }
            | EnvelopeError::MissingHeader
            | EnvelopeError::MissingChannelHeader
            | EnvelopeError::MissingSignatureHeader
            | EnvelopeError::UnknownHeaderType { .. }
            | EnvelopeError::NonceTooShort { .. }
            | EnvelopeError::BadTxId { .. } => Refusal::InvalidArgument,
            EnvelopeError::WrongChannel { .. } => Refusal::NotFound,
            EnvelopeError::Creator(_) | EnvelopeError::BadSignature { .. } => {
                Refusal::PermissionDenied
            }
        }
    }
}

/// An envelope that passed [`verify_envelope`], with its parts decoded once.
#[derive(Debug, Clone)]
pub struct VerifiedEnvelope {
    /// The header type, known to be one of [`HeaderType`]'s values.
    pub header_type: HeaderType,
    /// The channel header as sent (channel id checked, tx id checked).
    pub channel_header: ChannelHeader,
    /// `creator` holds the encoded identity as signed; `nonce` is at least [`MIN_NONCE_LEN`].
    pub signature_header: SignatureHeader,
    /// The creator, verified against the channel's MSPs at the time given.
    pub creator: VerifiedIdentity,
    /// The payload's data (e.g. an encoded `tx.Transaction` or `orderer.SeekInfo`).
    pub data: Vec<u8>,
    /// The tx id: checked equal to `hash::tx_id(nonce, creator)`, or empty for a
    /// `DELIVER_SEEK_INFO` envelope that carried none.
    pub tx_id: String,
    /// Length in bytes of the encoded payload (what the signature covers).
    pub payload_len: usize,
}

impl VerifiedEnvelope {
    /// The creator as a policy signer, for `channel.evaluate(WRITERS, &[env.signer()])`.
    pub fn signer(&self) -> Signer {
        Signer {
            id: self.creator.id,
            msp_id: self.creator.msp_id.clone(),
            role: self.creator.role,
        }
    }
}

/// A fresh random nonce of [`NONCE_LEN`] bytes from the operating system.
pub fn new_nonce() -> Vec<u8> {
    let mut nonce = vec![0u8; NONCE_LEN];
    rand_core::OsRng.fill_bytes(&mut nonce);
    nonce
}

/// Builds and signs an envelope: `tx_id = hash::tx_id(nonce, creator)`, creator = `signer`'s
/// serialized identity, signature over the encoded payload with [`Domain::Envelope`].
pub fn create_signed_envelope(
    signer: &SigningIdentity,
    header_type: HeaderType,
    channel_id: &str,
    data: Vec<u8>,
    nonce: Vec<u8>,
    timestamp_unix_ms: u64,
) -> Envelope {
    let creator = signer.serialized().to_vec();
    let channel_header = ChannelHeader {
        r#type: header_type as i32,
        channel_id: channel_id.to_owned(),
        tx_id: hash::tx_id(&nonce, &creator),
        timestamp_unix_ms,
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: Some(channel_header),
            signature_header: Some(SignatureHeader { creator, nonce }),
        }),
        data,
    }
    .encode_to_vec();
    let signature = signer.sign(Domain::Envelope, &[&payload]);
    Envelope { payload, signature }
}

/// Decodes an encoded envelope (e.g. one item of a block's data).
pub fn decode_envelope(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    Envelope::decode(bytes).map_err(|e| EnvelopeError::MalformedEnvelope {
        reason: e.to_string(),
    })
}

/// Whether a header type must carry a tx id. Only `DELIVER_SEEK_INFO` may omit it.
fn requires_tx_id(header_type: HeaderType) -> bool {
    header_type != HeaderType::DeliverSeekInfo
}

/// Verifies `envelope` against `channel` at time `now_unix` (see the module doc for the checks
/// and their order).
pub fn verify_envelope(
    channel: &Channel,
    envelope: &Envelope,
    now_unix: i64,
) -> Result<VerifiedEnvelope, EnvelopeError> {
    let (verified, pending) = verify_envelope_deferred(channel, envelope, now_unix)?;
    pending.verify()?;
    Ok(verified)
}

/// The creator's envelope signature, parsed but not yet verified.
#[derive(Debug, Clone)]
pub struct PendingSignature {
    pub key: ed25519_dalek::VerifyingKey,
    /// The exact bytes signed (domain tag ‖ payload).
    pub message: Vec<u8>,
    pub signature: ed25519_dalek::Signature,
    subject: String,
}

impl PendingSignature {
    /// `signature` by `key` over `message`; `subject` names the signer in errors.
    pub fn new(
        key: ed25519_dalek::VerifyingKey,
        message: Vec<u8>,
        signature: ed25519_dalek::Signature,
        subject: String,
    ) -> Self {
        PendingSignature {
            key,
            message,
            signature,
            subject,
        }
    }

    /// Verifies it on its own (strict), with the error [`verify_envelope`] would give.
    pub fn verify(&self) -> Result<(), EnvelopeError> {
        self.key
            .verify_strict(&self.message, &self.signature)
            .map_err(|_| EnvelopeError::BadSignature {
                subject: self.subject.clone(),
                source: SignatureError::Invalid {
                    domain: Domain::Envelope,
                },
            })
    }
}

/// Every check of [`verify_envelope`] except the creator's signature, which is returned for
/// the caller to verify, e.g. in one ed25519 batch with a transaction's endorsements. The
/// envelope is verified only once that signature is.
pub fn verify_envelope_deferred(
    channel: &Channel,
    envelope: &Envelope,
    now_unix: i64,
) -> Result<(VerifiedEnvelope, PendingSignature), EnvelopeError> {
    verify_deferred(channel, envelope, now_unix, false)
}

/// [`verify_envelope`] for a request about a node rather than a channel (e.g. listing the
/// channels an admin may see): the channel id must be empty, and the creator is checked
/// against `channel`'s organisations.
pub fn verify_node_request(
    channel: &Channel,
    envelope: &Envelope,
    now_unix: i64,
) -> Result<VerifiedEnvelope, EnvelopeError> {
    let (verified, pending) = verify_deferred(channel, envelope, now_unix, true)?;
    pending.verify()?;
    Ok(verified)
}

/// An envelope's payload, decoded once: the channel header (to route the envelope by its
/// channel) and what [`verify_opened_deferred`] checks next. It holds the envelope it was
/// decoded from, so the signature checked is the one over these bytes.
#[derive(Debug, Clone)]
pub struct OpenedPayload<'a> {
    envelope: &'a Envelope,
    pub channel_header: ChannelHeader,
    signature_header: Option<SignatureHeader>,
    data: Vec<u8>,
}

/// Decodes `envelope`'s payload down to its channel header: the first checks of
/// [`verify_envelope`], with the same errors.
pub fn open_payload(envelope: &Envelope) -> Result<OpenedPayload<'_>, EnvelopeError> {
    if envelope.payload.is_empty() {
        return Err(EnvelopeError::EmptyPayload);
    }
    let payload = Payload::decode(envelope.payload.as_slice()).map_err(|e| {
        EnvelopeError::MalformedPayload {
            reason: e.to_string(),
        }
    })?;
    let header = payload.header.ok_or(EnvelopeError::MissingHeader)?;
    let channel_header = header
        .channel_header
        .ok_or(EnvelopeError::MissingChannelHeader)?;
    Ok(OpenedPayload {
        envelope,
        channel_header,
        signature_header: header.signature_header,
        data: payload.data,
    })
}

/// [`verify_envelope_deferred`] of the envelope [`open_payload`] decoded (not decoded again).
pub fn verify_opened_deferred(
    channel: &Channel,
    opened: OpenedPayload<'_>,
    now_unix: i64,
) -> Result<(VerifiedEnvelope, PendingSignature), EnvelopeError> {
    verify_opened(channel, opened, now_unix, false)
}

fn verify_deferred(
    channel: &Channel,
    envelope: &Envelope,
    now_unix: i64,
    node_request: bool,
) -> Result<(VerifiedEnvelope, PendingSignature), EnvelopeError> {
    let opened = open_payload(envelope)?;
    verify_opened(channel, opened, now_unix, node_request)
}

fn verify_opened(
    channel: &Channel,
    opened: OpenedPayload<'_>,
    now_unix: i64,
    node_request: bool,
) -> Result<(VerifiedEnvelope, PendingSignature), EnvelopeError> {
    let OpenedPayload {
        envelope,
        channel_header,
        signature_header,
        data,
    } = opened;
    let signature_header = signature_header.ok_or(EnvelopeError::MissingSignatureHeader)?;
    let header_type = HeaderType::try_from(channel_header.r#type).map_err(|_| {
        EnvelopeError::UnknownHeaderType {
            value: channel_header.r#type,
        }
    })?;
    let expected_channel = if node_request { "" } else { channel.id() };
    if channel_header.channel_id != expected_channel {
        return Err(EnvelopeError::WrongChannel {
            expected: expected_channel.to_owned(),
            found: channel_header.channel_id,
        });
    }
    if signature_header.nonce.len() < MIN_NONCE_LEN {
        return Err(EnvelopeError::NonceTooShort {
            len: signature_header.nonce.len(),
            min: MIN_NONCE_LEN,
        });
    }
    if requires_tx_id(header_type) || !channel_header.tx_id.is_empty() {
        let expected = hash::tx_id(&signature_header.nonce, &signature_header.creator);
        if channel_header.tx_id != expected {
            return Err(EnvelopeError::BadTxId {
                expected,
                found: channel_header.tx_id,
            });
        }
    }
    let creator = channel
        .msps()
        .deserialize_identity(&signature_header.creator, now_unix)
        .map_err(EnvelopeError::Creator)?;
    let signature = signing::parse_signature(&envelope.signature).map_err(|source| {
        EnvelopeError::BadSignature {
            subject: creator.common_name.clone(),
            source,
        }
    })?;
    let pending = PendingSignature {
        key: creator.public_key,
        message: signing::message(Domain::Envelope, &[&envelope.payload]),
        signature,
        subject: creator.common_name.clone(),
    };
    let verified = VerifiedEnvelope {
        header_type,
        tx_id: channel_header.tx_id.clone(),
        channel_header,
        signature_header,
        creator,
        data,
        payload_len: envelope.payload.len(),
    };
    Ok((verified, pending))
}

#[cfg(test)]
#[path = "testnet.rs"]
pub(crate) mod testnet;

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
