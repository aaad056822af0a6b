//! The one definition of every hash the chain depends on.
//!
//! Hashes are SHA-256 over explicit, length-prefixed byte layouts (big-endian integers), never
//! over a protobuf re-encoding, so two implementations agree by construction.
//!
//! | hash | layout |
//! |---|---|
//! | block header | `u64 number ‖ u32 len ‖ previous_hash ‖ u32 len ‖ data_hash` |
//! | block data | `u64 count ‖ (u64 len ‖ item)*` |
//! | tx id | hex of `SHA-256(nonce ‖ creator)` (Fabric's rule) |
//! | proposal | `SHA-256(proposal_bytes)` |

use sha2::Digest;
use sha2::Sha256;

use crate::pb::common::BlockHeader;

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Hash of a block header: what the next block's `previous_hash` holds and what orderers sign.
pub fn block_header_hash(header: &BlockHeader) -> Hash {
    let mut h = Sha256::new();
    h.update(header.number.to_be_bytes());
    h.update(len_u32(&header.previous_hash).to_be_bytes());
    h.update(&header.previous_hash);
    h.update(len_u32(&header.data_hash).to_be_bytes());
    h.update(&header.data_hash);
    h.finalize().into()
}

/// Hash of a block's data items (each an encoded envelope), in order.
pub fn block_data_hash<T: AsRef<[u8]>>(items: &[T]) -> Hash {
    let mut h = Sha256::new();
    h.update((items.len() as u64).to_be_bytes());
    for item in items {
        let item = item.as_ref();
        h.update((item.len() as u64).to_be_bytes());
        h.update(item);
    }
    h.finalize().into()
}

/// A transaction id: lowercase hex of SHA-256(nonce ‖ creator), where `creator` is the encoded
/// `SerializedIdentity` as it appears in the signature header.
pub fn tx_id(nonce: &[u8], creator: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(nonce);
    h.update(creator);
    hex::encode(h.finalize())
}

/// Hash of a proposal, which an endorser's response commits to.
pub fn proposal_hash(proposal_bytes: &[u8]) -> Hash {
    sha256(proposal_bytes)
}

pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

/// Header hash fields are at most a few dozen bytes; a longer one is clamped so hashing never
/// panics (such a header will not verify anyway).
fn len_u32(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.len()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vectors computed independently with Python's hashlib and struct.pack('>Q'/'>I').

    #[test]
    fn genesis_header_hash_matches_fixed_vector() {
        let header = BlockHeader {
            number: 0,
            previous_hash: vec![],
            data_hash: vec![0; 32],
        };
        assert_eq!(
            hex::encode(block_header_hash(&header)),
            "6fcdd6f28d7f7b569eca957b989b87863ae859bfed236dfda2739f8ed6e12a1d"
        );
    }

    #[test]
    fn header_hash_matches_fixed_vector_and_covers_every_field() {
        let header = BlockHeader {
            number: 7,
            previous_hash: vec![0x11; 32],
            data_hash: vec![0x22; 32],
        };
        let h = block_header_hash(&header);
        assert_eq!(
            hex::encode(h),
            "42407c67ef5b14d0606679bbb717a18420b4b2ae2ff8dc2d9e57e260d10915a1"
        );
        let mut other = header.clone();
        other.number = 8;
        assert_ne!(block_header_hash(&other), h);
        let mut other = header.clone();
        other.previous_hash[31] ^= 1;
        assert_ne!(block_header_hash(&other), h);
        let mut other = header;
        other.data_hash[0] ^= 1;
        assert_ne!(block_header_hash(&other), h);
    }

    #[test]
    fn data_hash_matches_fixed_vectors_and_is_unambiguous() {
        let empty: [&[u8]; 0] = [];
        assert_eq!(
            hex::encode(block_data_hash(&empty)),
            "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"
        );
        let ab_c = block_data_hash(&[b"ab".as_slice(), b"c"]);
        let a_bc = block_data_hash(&[b"a".as_slice(), b"bc"]);
        assert_eq!(
            hex::encode(ab_c),
            "8e502afb4273fb33b57a8c24a5709d6c7030c2c8626f421ddae7b4f93707455f"
        );
        assert_eq!(
            hex::encode(a_bc),
            "5eee4f0e9c8cfac2efc9945e5e600f0a57d45023af5ddc3c1dc04bfcdf9657fc"
        );
        assert_ne!(
            ab_c, a_bc,
            "moving a byte between items must change the hash"
        );
    }

    #[test]
    fn tx_id_is_hex_sha256_of_nonce_then_creator() {
        assert_eq!(
            tx_id(b"nonce-123", b"creator-bytes"),
            "11aec889a8f9b71c5452e67642a4f86974a8f9d32eb49e4eac1b4852b1b4ad64"
        );
        assert_ne!(
            tx_id(b"nonce-124", b"creator-bytes"),
            tx_id(b"nonce-123", b"creator-bytes")
        );
    }
}
