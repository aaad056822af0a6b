//! What each signature covers, defined once.
//!
//! Every signature is Ed25519 over `domain tag ‖ parts`, where the tag names what is signed. The
//! tag keeps a signature made for one purpose (say, an endorsement) from being replayed as
//! another (an envelope), even when the signed bytes happen to decode as both. Signed bytes are
//! always the bytes as transmitted (`Envelope.payload`, `SignedProposal.proposal_bytes`), so
//! verification never re-encodes a message.

use ed25519_dalek::Signature;
use ed25519_dalek::Signer as _;
use ed25519_dalek::SigningKey;
use ed25519_dalek::VerifyingKey;

/// What a signature is for. Each has its own domain tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// `Envelope.signature` over `Envelope.payload`.
    Envelope,
    /// `SignedProposal.signature` over `SignedProposal.proposal_bytes`.
    Proposal,
    /// `Endorsement.signature` over `ProposalResponse.payload ‖ Endorsement.endorser`.
    Endorsement,
    /// `MetadataSignature.signature` over [`block_signing_parts`].
    Block,
    /// `AliveMessage.signature` over `AliveMessage.info` (peer gossip membership).
    GossipAlive,
    /// `ConfigSignature.signature` over `ConfigUpdate.config` (an admin approving a config).
    ConfigUpdate,
}

impl Domain {
    pub fn tag(self) -> &'static [u8] {
        match self {
            Domain::Envelope => b"weft/envelope/v1\0",
            Domain::Proposal => b"weft/proposal/v1\0",
            Domain::Endorsement => b"weft/endorsement/v1\0",
            Domain::Block => b"weft/block/v1\0",
            Domain::GossipAlive => b"weft/gossip-alive/v1\0",
            Domain::ConfigUpdate => b"weft/config-update/v1\0",
        }
    }
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is {len} bytes; Ed25519 signatures are 64")]
    BadLength { len: usize },
    #[error("{domain:?} signature does not verify")]
    Invalid { domain: Domain },
}

/// The exact bytes a signature of `domain` covers.
pub fn message(domain: Domain, parts: &[&[u8]]) -> Vec<u8> {
    let tag = domain.tag();
    let len = tag.len() + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(tag);
    for part in parts {
        msg.extend_from_slice(part);
    }
    msg
}

pub fn sign(key: &SigningKey, domain: Domain, parts: &[&[u8]]) -> Vec<u8> {
    key.sign(&message(domain, parts)).to_bytes().to_vec()
}

/// Verifies with strict checks (no malleable or small-order signatures).
pub fn verify(
    key: &VerifyingKey,
    domain: Domain,
    parts: &[&[u8]],
    signature: &[u8],
) -> Result<(), SignatureError> {
    let signature = parse_signature(signature)?;
    key.verify_strict(&message(domain, parts), &signature)
        .map_err(|_| SignatureError::Invalid { domain })
}

pub fn parse_signature(bytes: &[u8]) -> Result<Signature, SignatureError> {
    Signature::from_slice(bytes).map_err(|_| SignatureError::BadLength { len: bytes.len() })
}

/// The parts a block signature covers: the channel (so a block of one channel cannot pass as
/// another's), the header hash (which commits to number, previous hash and data) and the last
/// config index. Signatures and validation codes stay outside, so copies never fork.
pub fn block_signing_parts(
    channel_id: &str,
    header_hash: &[u8; 32],
    last_config_index: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + channel_id.len() + 32 + 8);
    out.extend_from_slice(&(channel_id.len() as u32).to_be_bytes());
    out.extend_from_slice(channel_id.as_bytes());
    out.extend_from_slice(header_hash);
    out.extend_from_slice(&last_config_index.to_be_bytes());
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn signature_verifies_and_any_tampering_is_detected() {
        let k = key(7);
        let payload = b"hello ledger".to_vec();
        let sig = sign(&k, Domain::Envelope, &[&payload]);
        assert_eq!(
            verify(&k.verifying_key(), Domain::Envelope, &[&payload], &sig),
            Ok(())
        );
        for i in 0..payload.len() {
            let mut tampered = payload.clone();
            tampered[i] ^= 0x01;
            assert!(verify(&k.verifying_key(), Domain::Envelope, &[&tampered], &sig).is_err());
        }
        let mut bad_sig = sig.clone();
        bad_sig[10] ^= 0x80;
        assert_eq!(
            verify(&k.verifying_key(), Domain::Envelope, &[&payload], &bad_sig),
            Err(SignatureError::Invalid {
                domain: Domain::Envelope
            })
        );
    }

    #[test]
    fn signature_from_another_key_is_refused() {
        let sig = sign(&key(1), Domain::Proposal, &[b"p"]);
        assert!(verify(&key(2).verifying_key(), Domain::Proposal, &[b"p"], &sig).is_err());
    }

    #[test]
    fn signature_for_one_domain_does_not_verify_in_another() {
        let k = key(3);
        let sig = sign(&k, Domain::Endorsement, &[b"payload", b"endorser"]);
        assert!(verify(
            &k.verifying_key(),
            Domain::Endorsement,
            &[b"payload", b"endorser"],
            &sig
        )
        .is_ok());
        assert!(verify(
            &k.verifying_key(),
            Domain::Envelope,
            &[b"payloadendorser"],
            &sig
        )
        .is_err());
    }

    #[test]
    fn truncated_signature_is_a_length_error() {
        let k = key(4);
        assert_eq!(
            verify(&k.verifying_key(), Domain::Block, &[b"x"], &[0u8; 10]),
            Err(SignatureError::BadLength { len: 10 })
        );
        assert_eq!(
            verify(&k.verifying_key(), Domain::Block, &[b"x"], &[]),
            Err(SignatureError::BadLength { len: 0 })
        );
    }

    /// Every domain with the name its README tag carries (`weft/<name>/v1`).
    const DOMAINS: [(Domain, &str); 5] = [
        (Domain::Envelope, "envelope"),
        (Domain::Proposal, "proposal"),
        (Domain::Endorsement, "endorsement"),
        (Domain::Block, "block"),
        (Domain::GossipAlive, "gossip-alive"),
    ];

    /// The domain tags a document states: every backquoted `weft/...` in `section` (the text from
    /// that heading line to the next heading of the same level), with a written `\0` read as the
    /// NUL byte, exactly as a client author would type them.
    fn documented_tags(doc: &str, heading: &str) -> Vec<Vec<u8>> {
        let level = heading.split(' ').next().unwrap_or("#");
        let start = doc
            .find(heading)
            .unwrap_or_else(|| panic!("heading {heading:?} not found"));
        let body = &doc[start + heading.len()..];
        let end = body.find(&format!("\n{level} ")).unwrap_or(body.len());
        body[..end]
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|code| code.starts_with("weft/"))
            .map(|code| code.replace("\\0", "\0").into_bytes())
            .collect()
    }

    /// Signs as the document says (Ed25519 over tag bytes then the signed bytes, built here by
    /// hand rather than with [`message`]) with a CA-issued member identity, and checks what the
    /// verifier says.
    fn check_documented_tags(doc: &str, heading: &str) {
        use crate::msp::CertificateAuthority;
        use crate::msp::Msp;
        use crate::msp::Role;
        use crate::msp::Usage;
        use crate::msp::Validity;

        let now = 1_800_000_000;
        let validity = Validity::days_from(now, 1);
        let ca = CertificateAuthority::generate("ca.Org1MSP", "Org1MSP", validity).unwrap();
        let issued = ca
            .issue("User1", Usage::Signing(Role::Client), &[], validity)
            .unwrap();
        let member = Msp::new("Org1MSP", &[ca.cert_der().to_vec()], None)
            .unwrap()
            .validate(&issued.cert_der, now)
            .unwrap();
        let tags = documented_tags(doc, heading);
        let bytes = b"payload bytes as transmitted";
        for (domain, name) in DOMAINS {
            let prefix = format!("weft/{name}/");
            let tag = tags
                .iter()
                .find(|t| t.starts_with(prefix.as_bytes()))
                .unwrap_or_else(|| panic!("{heading}: no documented tag for {domain:?}"));
            let mut signed = tag.clone();
            signed.extend_from_slice(bytes);
            let sig = issued.key.sign(&signed).to_bytes();
            assert_eq!(
                member.verify(domain, &[bytes], &sig),
                Ok(()),
                "{heading}: {domain:?} signature made as documented, over {:?} + bytes, is refused",
                String::from_utf8_lossy(tag)
            );
        }
        assert_eq!(tags.len(), DOMAINS.len(), "{heading}: tags {tags:?}");
    }

    #[test]
    fn readme_protocol_page_states_the_signature_domain_tags_exactly() {
        check_documented_tags(include_str!("../../README.md"), "## Protocol in one page");
    }

    #[test]
    fn architecture_doc_states_the_signature_domain_tags_exactly() {
        check_documented_tags(
            include_str!("../../docs/architecture.md"),
            "## Foundation decisions",
        );
    }

    #[test]
    fn tag_without_its_nul_byte_is_refused() {
        let k = key(5);
        for (domain, _) in DOMAINS {
            let tag = domain.tag();
            assert_eq!(tag.last(), Some(&0u8), "{domain:?}");
            let mut signed = tag[..tag.len() - 1].to_vec();
            signed.extend_from_slice(b"bytes");
            let sig = k.sign(&signed).to_bytes();
            assert_eq!(
                verify(&k.verifying_key(), domain, &[b"bytes"], &sig),
                Err(SignatureError::Invalid { domain })
            );
        }
    }

    #[test]
    fn block_signing_parts_bind_channel_hash_and_config_index() {
        let h = [0xab; 32];
        let a = block_signing_parts("ch1", &h, 0);
        assert_ne!(a, block_signing_parts("ch2", &h, 0));
        assert_ne!(a, block_signing_parts("ch1", &[0xac; 32], 0));
        assert_ne!(a, block_signing_parts("ch1", &h, 1));
        // Length prefix: "ch" + "1..." can't collide with "ch1" + "...".
        assert_eq!(&a[..4], &3u32.to_be_bytes());
    }
}
