//! Reading an X.509 certificate: only what membership checks need, copied out of the DER.

use ed25519_dalek::Signature;
use ed25519_dalek::VerifyingKey;
use x509_parser::oid_registry::OID_SIG_ED25519;
use x509_parser::prelude::FromDer;
use x509_parser::prelude::X509Certificate;

use super::MspError;

/// The facts of a certificate that membership decisions use.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// DER of the subject name; compared byte-for-byte with an issuer's subject.
    pub subject_raw: Vec<u8>,
    pub issuer_raw: Vec<u8>,
    pub common_name: String,
    /// Subject O; informational (membership comes from the issuing root, not this field).
    pub organization: String,
    pub organizational_units: Vec<String>,
    pub not_before_unix: i64,
    pub not_after_unix: i64,
    pub public_key: VerifyingKey,
    pub is_ca: bool,
    /// The to-be-signed part and the issuer's signature over it.
    pub tbs_raw: Vec<u8>,
    pub signature: Signature,
}

impl CertInfo {
    /// Parses a DER certificate. Anything but a well-formed Ed25519 certificate signed with
    /// Ed25519 is refused with a reason; no byte string panics.
    pub fn from_der(der: &[u8]) -> Result<Self, MspError> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| MspError::Malformed {
            reason: format!("not a DER X.509 certificate: {e}"),
        })?;
        if !rest.is_empty() {
            return Err(MspError::Malformed {
                reason: format!("{} trailing bytes after the certificate", rest.len()),
            });
        }
        let tbs = &cert.tbs_certificate;
        let spki = &tbs.subject_pki;
        if spki.algorithm.algorithm != OID_SIG_ED25519 {
            return Err(MspError::NotEd25519 {
                what: "subject public key",
                oid: spki.algorithm.algorithm.to_id_string(),
            });
        }
        if cert.signature_algorithm.algorithm != OID_SIG_ED25519 {
            return Err(MspError::NotEd25519 {
                what: "certificate signature",
                oid: cert.signature_algorithm.algorithm.to_id_string(),
            });
        }
        let key_bytes: [u8; 32] =
            spki.subject_public_key
                .data
                .as_ref()
                .try_into()
                .map_err(|_| MspError::Malformed {
                    reason: "Ed25519 public key is not 32 bytes".into(),
                })?;
        let public_key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| MspError::Malformed {
            reason: "Ed25519 public key is not a valid curve point".into(),
        })?;
        let sig_bytes: [u8; 64] =
            cert.signature_value
                .data
                .as_ref()
                .try_into()
                .map_err(|_| MspError::Malformed {
                    reason: "Ed25519 certificate signature is not 64 bytes".into(),
                })?;
        let text = |attr: &x509_parser::x509::AttributeTypeAndValue<'_>| {
            attr.as_str()
                .map(str::to_owned)
                .map_err(|_| MspError::Malformed {
                    reason: "subject attribute is not a string".into(),
                })
        };
        let common_name = match tbs.subject.iter_common_name().next() {
            Some(cn) => text(cn)?,
            None => String::new(),
        };
        let organization = match tbs.subject.iter_organization().next() {
            Some(o) => text(o)?,
            None => String::new(),
        };
        let organizational_units = tbs
            .subject
            .iter_organizational_unit()
            .map(text)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CertInfo {
            subject_raw: tbs.subject.as_raw().to_vec(),
            issuer_raw: tbs.issuer.as_raw().to_vec(),
            common_name,
            organization,
            organizational_units,
            not_before_unix: tbs.validity.not_before.timestamp(),
            not_after_unix: tbs.validity.not_after.timestamp(),
            public_key,
            is_ca: cert.is_ca(),
            tbs_raw: tbs.as_ref().to_vec(),
            signature: Signature::from_bytes(&sig_bytes),
        })
    }

    /// Whether `issuer` signed this certificate: names match and the signature verifies.
    pub fn is_signed_by(&self, issuer: &CertInfo) -> bool {
        self.issuer_raw == issuer.subject_raw
            && issuer
                .public_key
                .verify_strict(&self.tbs_raw, &self.signature)
                .is_ok()
    }
}
