//! The README's protocol page is a contract: a client written from it must be accepted. This
//! reads the signature domain tags from README.md and signs exactly as it says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ed25519_dalek::Signer as _;
use ed25519_dalek::SigningKey;
use shared_proto::signing;
use shared_proto::signing::Domain;

const README: &str = include_str!("../../README.md");

/// Every `weft/…/v1\0` tag the README names, as bytes (`\0` read as the NUL byte).
fn readme_tags() -> Vec<Vec<u8>> {
    let mut tags = Vec::new();
    for piece in README.split('`') {
        if piece.starts_with("weft/") && piece.ends_with("\\0") {
            let text = piece.trim_end_matches("\\0");
            let mut bytes = text.as_bytes().to_vec();
            bytes.push(0);
            tags.push(bytes);
        }
    }
    tags
}

#[test]
fn readme_names_every_signature_domain_tag_with_its_nul_byte() {
    let tags = readme_tags();
    for domain in [
        Domain::Envelope,
        Domain::Proposal,
        Domain::Endorsement,
        Domain::Block,
        Domain::GossipAlive,
    ] {
        assert!(
            tags.contains(&domain.tag().to_vec()),
            "README does not name the {domain:?} tag {:?}",
            String::from_utf8_lossy(domain.tag())
        );
    }
}

#[test]
fn envelope_signed_as_the_readme_says_verifies_and_without_the_nul_it_does_not() {
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let payload = b"an envelope payload as sent";
    let tag = readme_tags()
        .into_iter()
        .find(|t| t.starts_with(b"weft/envelope/"))
        .expect("README names the envelope tag");
    let signature = key.sign(&[&tag[..], payload].concat()).to_bytes();
    signing::verify(
        &key.verifying_key(),
        Domain::Envelope,
        &[payload],
        &signature,
    )
    .unwrap();

    let without_nul = key
        .sign(&[&tag[..tag.len() - 1], payload].concat())
        .to_bytes();
    assert!(signing::verify(
        &key.verifying_key(),
        Domain::Envelope,
        &[payload],
        &without_nul
    )
    .is_err());
}
