//! Ed25519 signatures verified many at a time, each with the answer it would get alone.
//!
//! `ed25519_dalek::verify_batch` checks one random linear combination of many signature
//! equations, which costs about half as much per signature as [`PendingSignature::verify`]
//! on its own. A batch only says "all good" or "something in here is bad", so:
//!
//! - a failed batch re-checks each signature alone (strictly), and each gets its own answer;
//! - signatures a batch could judge differently from a strict check alone (a small-order
//!   public key or `R` point, which `verify_strict` refuses and the batch equation may miss)
//!   are never put in a batch;
//! - one signature is simply verified alone.
//!
//! What remains different from verifying each alone: a signature whose `R` carries a
//! torsion component passes a batch with probability 1/8 and never passes alone. Making one
//! needs the signer's private key, so it cannot speak for anyone else; it is the signer's
//! own envelope in a malleable form.

use curve25519_dalek::edwards::CompressedEdwardsY;

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
        if ed25519_dalek::verify_batch(&messages, &sigs, &keys).is_ok() {
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

/// Whether a batch judges this signature as a strict check alone would: neither the key
/// nor `R` is of small order.
fn batchable(pending: &PendingSignature) -> bool {
    if pending.key.is_weak() {
        return false;
    }
    match CompressedEdwardsY(pending.signature.r_bytes().to_owned()).decompress() {
        Some(r) => !r.is_small_order(),
        None => false,
    }
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
