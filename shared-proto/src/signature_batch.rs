//! Ed25519 signatures verified many at a time, each with the answer it would get alone.
//!
//! A batch ([`verify_batch`]) checks one random linear combination of many signature
//! equations, which costs less than half as much per signature as
//! [`PendingSignature::verify`] on its own, and less still when keys repeat. A batch only says
//! "all good" or "something in here is bad", so:
//!
//! - a failed batch re-checks each signature alone (strictly), and each gets its own answer;
//! - signatures a batch could judge differently from a strict check alone (a small-order
//!   public key or `R` point, which `verify_strict` refuses and the batch equation may miss)
//!   are never put in a batch;
//! - one signature is simply verified alone.
//!
//! What remains different from verifying each alone: a signature whose `R` (or key) carries
//! a torsion component passes a batch (whose equation is cofactored) and never passes alone.
//! Making one needs the signer's private key, so it cannot speak for anyone else; it is the
//! signer's own envelope in a malleable form.

use crate::envelope::EnvelopeError;
use crate::envelope::PendingSignature;

/// Verdicts for `signatures`, in order: `Ok` exactly for those that verify (see the module
/// doc for the one malleable form a batch can accept).
pub fn verify_each(signatures: &[&PendingSignature]) -> Vec<Result<(), EnvelopeError>> {
    let (batchable, alone): (Vec<usize>, Vec<usize>) =
        (0..signatures.len()).partition(|&i| batchable(signatures[i]));
    let mut verdicts: Vec<Option<Result<(), EnvelopeError>>> = vec![None; signatures.len()];
    for i in alone {
        verdicts[i] = Some(signatures[i].verify());
    }
    if batchable.len() >= 2 {
        let messages: Vec<&[u8]> = batchable
            .iter()
            .map(|&i| signatures[i].message.as_slice())
            .collect();
        let sigs: Vec<_> = batchable.iter().map(|&i| signatures[i].signature).collect();
        let keys: Vec<_> = batchable.iter().map(|&i| signatures[i].key).collect();
        if batch_equation_holds(&messages, &sigs, &keys) {
            for &i in &batchable {
                verdicts[i] = Some(Ok(()));
            }
        }
    }
    verdicts
        .into_iter()
        .zip(signatures)
        .map(|(verdict, pending)| verdict.unwrap_or_else(|| pending.verify()))
        .collect()
}

/// Whether every signature verifies, judged in one batch equation whose terms by the same
/// key are summed first:
///
/// `8·( −(Σ zᵢsᵢ)·B + Σ zᵢ·Rᵢ + Σ_A (Σ_{i: Aᵢ = A} zᵢkᵢ)·A ) = 0`, `kᵢ = H(Rᵢ ‖ Aᵢ ‖ Mᵢ)`,
///
/// with random 128-bit `zᵢ`: the multi-scalar multiplication has one point per signature and
/// one per distinct key, where `ed25519_dalek::verify_batch` has two per signature. Keys repeat
/// (a block's endorsers, a client's envelopes). Measured on this box with 64 signatures per
/// batch: by 1 or 3 keys, 1.6–1.7× the signatures per second of `ed25519_dalek::verify_batch`;
/// by 64 keys, the same (docs/performance.md, round 5). ed25519-zebra's batch verifier sums the
/// same way but decompresses each key again per batch, which cost 15 % with 64 keys; the keys
/// here come decompressed from the identity cache.
///
/// The equation is cofactored (as ed25519-zebra's, ZIP 215): a signature passes exactly when
/// it would pass a cofactored check alone, but for a 2^-128 chance, so every node reaches the
/// same verdict for the same batch whatever its coefficients. A batch holding what a strict
/// check alone refuses and a cofactored equation may not (a small-order key or `R`) is refused
/// whole, so its caller checks each signature alone; the one form left that passes here and
/// not alone is a signature whose `R` or key carries a torsion component, which only its
/// signer can make (module doc).
pub fn verify_batch(
    messages: &[&[u8]],
    signatures: &[ed25519_dalek::Signature],
    keys: &[ed25519_dalek::VerifyingKey],
) -> bool {
    signatures
        .iter()
        .zip(keys)
        .all(|(s, k)| batchable_signature(k, s))
        && batch_equation_holds(messages, signatures, keys)
}

/// The batch equation of [`verify_batch`], for signatures already known to be batchable.
#[allow(non_snake_case)]
fn batch_equation_holds(
    messages: &[&[u8]],
    signatures: &[ed25519_dalek::Signature],
    keys: &[ed25519_dalek::VerifyingKey],
) -> bool {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use curve25519_dalek::edwards::EdwardsPoint;
    use curve25519_dalek::traits::IsIdentity as _;
    use curve25519_dalek::traits::VartimeMultiscalarMul as _;
    use curve25519_dalek::Scalar;
    use rand_core::RngCore as _;
    use sha2::Digest as _;

    let n = messages.len();
    if signatures.len() != n || keys.len() != n {
        return false;
    }
    let mut random = vec![0u8; 16 * n];
    rand_core::OsRng.fill_bytes(&mut random);
    let mut B_coeff = Scalar::ZERO;
    let mut R_coeffs = Vec::with_capacity(n);
    let mut Rs = Vec::with_capacity(n);
    let mut A_coeffs: Vec<Scalar> = Vec::new();
    let mut As: Vec<EdwardsPoint> = Vec::new();
    let mut A_index: std::collections::HashMap<[u8; 32], usize> = Default::default();
    for (i, ((message, signature), key)) in messages.iter().zip(signatures).zip(keys).enumerate() {
        let Some(R) = CompressedEdwardsY(*signature.r_bytes()).decompress() else {
            return false;
        };
        let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(*signature.s_bytes()))
        else {
            return false;
        };
        let k = Scalar::from_bytes_mod_order_wide(
            &sha2::Sha512::new()
                .chain_update(signature.r_bytes())
                .chain_update(key.as_bytes())
                .chain_update(message)
                .finalize()
                .into(),
        );
        let mut z_bytes = [0u8; 16];
        z_bytes.copy_from_slice(&random[16 * i..16 * (i + 1)]);
        let z = Scalar::from(u128::from_le_bytes(z_bytes));
        B_coeff -= z * s;
        Rs.push(R);
        R_coeffs.push(z);
        let j = *A_index.entry(*key.as_bytes()).or_insert_with(|| {
            As.push(key.to_edwards());
            A_coeffs.push(Scalar::ZERO);
            As.len() - 1
        });
        A_coeffs[j] += z * k;
    }
    let check = EdwardsPoint::vartime_multiscalar_mul(
        std::iter::once(&B_coeff)
            .chain(A_coeffs.iter())
            .chain(R_coeffs.iter()),
        std::iter::once(&curve25519_dalek::constants::ED25519_BASEPOINT_POINT)
            .chain(As.iter())
            .chain(Rs.iter()),
    );
    check.mul_by_cofactor().is_identity()
}

/// Whether a signature by `key` may join a batch: neither the key nor its `R` is of small
/// order (a strict check alone refuses those; see [`verify_batch`]).
fn batchable_signature(
    key: &ed25519_dalek::VerifyingKey,
    signature: &ed25519_dalek::Signature,
) -> bool {
    !key.is_weak() && !small_order_encoding(signature.r_bytes())
}

/// Whether a batch judges this signature as a strict check alone would: neither the key
/// nor `R` is of small order. `R` is judged from its encoding: decompressing it here, as well
/// as in the batch, cost ~6 % of a peer's validation CPU (docs/performance.md, round 5).
fn batchable(pending: &PendingSignature) -> bool {
    batchable_signature(&pending.key, &pending.signature)
}

/// Whether `encoding` decompresses to a point of small order, read without decompressing it.
/// A point is of small order exactly when its y coordinate is one of the 8-torsion points' (a
/// y names a point and its negation, both then of small order), and an encoding's y is its low
/// 255 bits reduced mod p (`decompress` accepts the non-canonical y + p for y < 19).
/// An encoding of no point at all is not of small order: the batch fails on it, and every
/// signature of the batch gets its answer alone.
fn small_order_encoding(encoding: &[u8; 32]) -> bool {
    static SMALL_ORDER_YS: std::sync::LazyLock<Vec<[u8; 32]>> = std::sync::LazyLock::new(|| {
        curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|p| canonical_y(&p.compress().to_bytes()))
            .collect()
    });
    SMALL_ORDER_YS.contains(&canonical_y(encoding))
}

/// The y coordinate an encoding names: its sign bit cleared, reduced mod p = 2^255 - 19.
fn canonical_y(encoding: &[u8; 32]) -> [u8; 32] {
    let mut y = *encoding;
    y[31] &= 0x7f;
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&b| b == 0xff) && y[0] >= 0xed;
    if at_least_p {
        let low = y[0] - 0xed;
        y = [0; 32];
        y[0] = low;
    }
    y
}

/// `message` signed by the key whose secret is 32 bytes of `seed`, named "signer {seed}": a
/// valid signature for tests of the verifiers (this crate's and the orderer's).
#[doc(hidden)]
pub fn signed_with_seed(seed: u8, message: &[u8]) -> PendingSignature {
    use ed25519_dalek::Signer as _;
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    PendingSignature::new(
        key.verifying_key(),
        message.to_vec(),
        key.sign(message),
        format!("signer {seed}"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::signed_with_seed as signed;
    use super::*;

    #[test]
    fn a_batch_of_good_signatures_all_verify() {
        let sigs: Vec<_> = (1..=20).map(|i| signed(i, &[i; 40])).collect();
        let refs: Vec<_> = sigs.iter().collect();
        assert!(verify_each(&refs).iter().all(Result::is_ok));
    }

    #[test]
    fn one_forged_signature_in_a_batch_is_the_only_one_refused() {
        let mut sigs: Vec<_> = (1..=10).map(|i| signed(i, &[i; 40])).collect();
        // Signed over other bytes than the ones presented.
        sigs[4].message = b"not what was signed".to_vec();
        let refs: Vec<_> = sigs.iter().collect();
        let verdicts = verify_each(&refs);
        for (i, verdict) in verdicts.iter().enumerate() {
            match (i, verdict) {
                (4, Err(EnvelopeError::BadSignature { subject, .. })) => {
                    assert_eq!(subject, "signer 5")
                }
                (4, other) => panic!("forged signature answered {other:?}"),
                (_, verdict) => assert!(verdict.is_ok(), "signature {i}: {verdict:?}"),
            }
        }
    }

    /// Every encoding `decompress` takes to a small-order point, and only those, is flagged
    /// from its bytes: the 8-torsion points' encodings with either sign bit, their
    /// non-canonical forms (y + p), ordinary points and random bytes.
    #[test]
    fn small_order_r_is_recognised_from_its_encoding_as_decompressing_would() {
        use curve25519_dalek::edwards::CompressedEdwardsY;
        let mut encodings: Vec<[u8; 32]> = Vec::new();
        for p in curve25519_dalek::constants::EIGHT_TORSION {
            let c = p.compress().to_bytes();
            let mut flipped = c;
            flipped[31] ^= 0x80;
            encodings.extend([c, flipped]);
            let y = canonical_y(&c);
            if y[1..].iter().all(|&b| b == 0) && y[0] < 19 {
                let mut plus_p = [0xff; 32];
                plus_p[0] = 0xed + y[0];
                plus_p[31] = 0x7f;
                let mut plus_p_flipped = plus_p;
                plus_p_flipped[31] |= 0x80;
                encodings.extend([plus_p, plus_p_flipped]);
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..2_000u32 {
            let point = curve25519_dalek::constants::ED25519_BASEPOINT_POINT
                * curve25519_dalek::Scalar::from(i + 1);
            encodings.push(point.compress().to_bytes());
            let mut random = [0u8; 32];
            for b in &mut random {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                *b = (state >> 56) as u8;
            }
            encodings.push(random);
        }
        let mut small = 0;
        for e in &encodings {
            let by_decompressing = CompressedEdwardsY(*e)
                .decompress()
                .is_some_and(|p| p.is_small_order());
            assert_eq!(small_order_encoding(e), by_decompressing, "{e:02x?}");
            small += usize::from(by_decompressing);
        }
        assert!(small >= 16, "only {small} small-order encodings tried");
    }

    #[test]
    fn a_batch_with_repeated_keys_passes_whole_and_fails_on_one_forged_signature() {
        // Three signers, 64 signatures: the terms of each key are summed before the check.
        let sigs: Vec<_> = (0..64u8).map(|i| signed(1 + i % 3, &[i; 100])).collect();
        let messages: Vec<&[u8]> = sigs.iter().map(|s| s.message.as_slice()).collect();
        let signatures: Vec<_> = sigs.iter().map(|s| s.signature).collect();
        let keys: Vec<_> = sigs.iter().map(|s| s.key).collect();
        assert!(verify_batch(&messages, &signatures, &keys));
        // One signature presented over other bytes than its signer signed.
        let mut forged = messages.clone();
        forged[40] = b"not what was signed";
        assert!(!verify_batch(&forged, &signatures, &keys));
        // One signature presented under another of the three keys.
        let mut swapped = keys.clone();
        swapped[7] = keys[8];
        assert!(!verify_batch(&messages, &signatures, &swapped));
        // Inputs that do not pair up are refused, not truncated.
        assert!(!verify_batch(&messages[1..], &signatures, &keys));
    }

    #[test]
    fn a_signature_with_a_small_order_r_is_refused_as_alone_even_in_a_batch() {
        // R = the identity point's encoding, S = 0, under a real key: a strict check refuses it.
        let mut sigs: Vec<_> = (1..=5).map(|i| signed(i, &[i; 40])).collect();
        let mut r_s = [0u8; 64];
        r_s[0] = 1;
        let key = sigs[0].key;
        sigs.push(PendingSignature::new(
            key,
            b"anything".to_vec(),
            ed25519_dalek::Signature::from_bytes(&r_s),
            "small R".into(),
        ));
        assert!(!batchable(&sigs[5]));
        let refs: Vec<_> = sigs.iter().collect();
        let verdicts = verify_each(&refs);
        assert!(verdicts[..5].iter().all(Result::is_ok));
        assert!(matches!(
            &verdicts[5],
            Err(EnvelopeError::BadSignature { subject, .. }) if subject == "small R"
        ));
    }

    #[test]
    fn a_signature_under_a_small_order_key_is_refused_as_alone_even_in_a_batch() {
        // The identity point as a public key: a strict check refuses it whatever is signed.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = ed25519_dalek::VerifyingKey::from_bytes(&identity).expect("a valid point");
        assert!(weak.is_weak());
        let mut sigs: Vec<_> = (1..=5).map(|i| signed(i, &[i; 40])).collect();
        let mut r_s = [0u8; 64];
        r_s[..32].copy_from_slice(&identity);
        sigs.push(PendingSignature::new(
            weak,
            b"anything".to_vec(),
            ed25519_dalek::Signature::from_bytes(&r_s),
            "weak".into(),
        ));
        let refs: Vec<_> = sigs.iter().collect();
        let verdicts = verify_each(&refs);
        assert!(verdicts[..5].iter().all(Result::is_ok));
        assert!(matches!(
            &verdicts[5],
            Err(EnvelopeError::BadSignature { subject, .. }) if subject == "weak"
        ));
        assert_eq!(
            verdicts[5].as_ref().err().map(ToString::to_string),
            sigs[5].verify().err().map(|e| e.to_string())
        );
    }
}
