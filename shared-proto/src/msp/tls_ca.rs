//! TLS certificate authorities and the TLS certificates they issue.
//!
//! TLS keys are not signing identities, so they need not be Ed25519: the TLS stack inside gRPC's
//! C core (Python, C++, Ruby, C#, PHP clients) does not offer Ed25519, and cert-manager issues
//! ECDSA or RSA. The generator issues ECDSA P-256 TLS certificates by default
//! ([`TlsKeyAlgorithm`]); nodes accept any key type rustls with ring verifies (ECDSA P-256/P-384,
//! RSA, Ed25519). A TLS CA and every certificate it issues use the same algorithm.

use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use rcgen::BasicConstraints;
use rcgen::CertificateParams;
use rcgen::DnType;
use rcgen::ExtendedKeyUsagePurpose;
use rcgen::IsCa;
use rcgen::Issuer;
use rcgen::KeyPair;
use rcgen::KeyUsagePurpose;
use serde::Deserialize;
use serde::Serialize;

use super::ca::der_to_pem;
use super::ca::pem_to_der;
use super::MspError;
use super::Validity;

/// Key (and signature) algorithm of an org's TLS CA and of the TLS certificates it issues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsKeyAlgorithm {
    /// ECDSA on P-256 with SHA-256: what every TLS stack speaks, gRPC's C core included.
    #[default]
    EcdsaP256,
    /// Ed25519: Rust (rustls) and Go clients only; gRPC's C core cannot connect.
    Ed25519,
}

impl TlsKeyAlgorithm {
    /// A fresh private key as PKCS#8 DER. Ed25519 keys are written in the RFC 8410 form
    /// (PKCS#8 v1, no public key), which every TLS library and Python's `cryptography` read.
    fn generate(self) -> Result<Vec<u8>, MspError> {
        match self {
            TlsKeyAlgorithm::EcdsaP256 => {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(generate_error)?;
                Ok(key.serialize_der())
            }
            TlsKeyAlgorithm::Ed25519 => {
                let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
                let bytes = ed25519_dalek::pkcs8::KeypairBytes {
                    secret_key: key.to_bytes(),
                    public_key: None,
                };
                bytes
                    .to_pkcs8_der()
                    .map(|d| d.as_bytes().to_vec())
                    .map_err(|e| MspError::Generate {
                        reason: format!("encoding key as PKCS#8: {e}"),
                    })
            }
        }
    }
}

/// A TLS certificate with its private key (PKCS#8), as the generator hands them out.
#[derive(Clone)]
pub struct TlsCert {
    pub cert_der: Vec<u8>,
    key_der: Vec<u8>,
}

impl std::fmt::Debug for TlsCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("TlsCert")
            .field("cert_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

impl TlsCert {
    pub fn cert_pem(&self) -> String {
        der_to_pem("CERTIFICATE", &self.cert_der)
    }

    /// PKCS#8 PEM (`PRIVATE KEY`), the form rustls, OpenSSL/BoringSSL and gRPC read.
    pub fn key_pem(&self) -> String {
        der_to_pem("PRIVATE KEY", &self.key_der)
    }
}

/// An organisation's TLS certificate authority.
#[derive(Debug, Clone)]
pub struct TlsCertificateAuthority {
    cert: TlsCert,
    org: String,
}

impl TlsCertificateAuthority {
    /// A new self-signed TLS CA for `org` (written as the subject O).
    pub fn generate(
        common_name: &str,
        org: &str,
        algorithm: TlsKeyAlgorithm,
        validity: Validity,
    ) -> Result<Self, MspError> {
        let key_der = algorithm.generate()?;
        let key = key_pair(&key_der)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity.apply(&mut params)?;
        let cert = params.self_signed(&key).map_err(generate_error)?;
        Ok(TlsCertificateAuthority {
            cert: TlsCert {
                cert_der: cert.der().to_vec(),
                key_der,
            },
            org: org.to_owned(),
        })
    }

    /// Loads a TLS CA written earlier ([`Self::cert_pem`], [`Self::key_pem`]).
    pub fn from_pem(cert_pem: &str, key_pem: &str, org: &str) -> Result<Self, MspError> {
        let cert_der = pem_to_der(cert_pem)?;
        let key_der = pem_to_der(key_pem)?;
        key_pair(&key_der)?;
        Ok(TlsCertificateAuthority {
            cert: TlsCert { cert_der, key_der },
            org: org.to_owned(),
        })
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert.cert_der
    }

    pub fn cert_pem(&self) -> String {
        self.cert.cert_pem()
    }

    pub fn key_pem(&self) -> String {
        self.cert.key_pem()
    }

    /// Issues a TLS server-and-client certificate for `common_name` with the CA's algorithm.
    /// `sans` are DNS names or IP addresses.
    pub fn issue(
        &self,
        common_name: &str,
        sans: &[String],
        validity: Validity,
    ) -> Result<TlsCert, MspError> {
        let issuer_key = key_pair(&self.cert.key_der)?;
        let algorithm = if issuer_key.algorithm() == &rcgen::PKCS_ED25519 {
            TlsKeyAlgorithm::Ed25519
        } else {
            TlsKeyAlgorithm::EcdsaP256
        };
        let key_der = algorithm.generate()?;
        let key = key_pair(&key_der)?;
        let mut params = CertificateParams::new(sans.to_vec()).map_err(generate_error)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params
            .distinguished_name
            .push(DnType::OrganizationName, self.org.as_str());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity.apply(&mut params)?;
        let issuer = Issuer::from_ca_cert_der(&self.cert.cert_der.clone().into(), issuer_key)
            .map_err(generate_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(generate_error)?;
        Ok(TlsCert {
            cert_der: cert.der().to_vec(),
            key_der,
        })
    }
}

fn key_pair(pkcs8_der: &[u8]) -> Result<KeyPair, MspError> {
    KeyPair::try_from(pkcs8_der).map_err(|e| MspError::Malformed {
        reason: format!("TLS key is not a PKCS#8 ECDSA P-256 or Ed25519 key: {e}"),
    })
}

fn generate_error(e: rcgen::Error) -> MspError {
    MspError::Generate {
        reason: e.to_string(),
    }
}

/// Checks that `der` is one well-formed X.509 certificate, of any key type (a TLS certificate
/// pinned in a channel config). Signing identities go through [`super::CertInfo`] instead,
/// which accepts Ed25519 only.
pub fn check_tls_cert_der(der: &[u8]) -> Result<(), MspError> {
    use x509_parser::prelude::FromDer as _;
    let (rest, _) =
        x509_parser::prelude::X509Certificate::from_der(der).map_err(|e| MspError::Malformed {
            reason: format!("not a DER X.509 certificate: {e}"),
        })?;
    if !rest.is_empty() {
        return Err(MspError::Malformed {
            reason: format!("{} trailing bytes after the certificate", rest.len()),
        });
    }
    Ok(())
}
