//! Membership service providers: who is a member of which org, in which role.
//!
//! An identity is an X.509 certificate with an Ed25519 key, issued by one of its org's root CAs.
//! Its role (client, peer, orderer, admin) is the subject OU, as Fabric's NodeOUs. Verification
//! checks chain, validity window and role, and is cached by certificate hash.

mod ca;
mod cert;
mod identity;
mod membership;
mod role;
mod tls_ca;

pub use ca::der_to_pem;
pub use ca::key_from_pem;
pub use ca::key_to_pem;
pub use ca::pem_to_der;
pub use ca::pem_to_der_all;
pub use ca::CertificateAuthority;
pub use ca::IssuedCert;
pub use ca::Usage;
pub use ca::Validity;
pub use cert::CertInfo;
pub use identity::SigningIdentity;
pub use membership::Msp;
pub use membership::MspManager;
pub use membership::VerifiedIdentity;
pub use membership::ANY_TIME;
pub use role::Role;
pub use role::UnknownRole;
pub use tls_ca::check_tls_cert_der;
pub use tls_ca::TlsCert;
pub use tls_ca::TlsCertificateAuthority;
pub use tls_ca::TlsKeyAlgorithm;

/// Why an identity or certificate was refused. Each variant says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MspError {
    #[error("malformed certificate or key: {reason}")]
    Malformed { reason: String },
    #[error("{what} uses algorithm {oid}; only Ed25519 (1.3.101.112) is accepted")]
    NotEd25519 { what: &'static str, oid: String },
    #[error("malformed serialized identity: {reason}")]
    MalformedIdentity { reason: String },
    #[error("unknown MSP {msp_id:?}: not an organisation of this channel")]
    UnknownMsp { msp_id: String },
    #[error("certificate {subject:?} was not issued by a root CA of {msp_id}")]
    UntrustedIssuer { msp_id: String, subject: String },
    #[error("root certificate of {msp_id} is not a self-signed CA certificate")]
    BadRoot { msp_id: String },
    #[error("certificate {subject:?} has expired (not after {not_after_unix}, now {now_unix})")]
    Expired {
        subject: String,
        not_after_unix: i64,
        now_unix: i64,
    },
    #[error(
        "certificate {subject:?} is not yet valid (not before {not_before_unix}, now {now_unix})"
    )]
    NotYetValid {
        subject: String,
        not_before_unix: i64,
        now_unix: i64,
    },
    #[error("certificate {subject:?} is a CA certificate; members must be leaf certificates")]
    IsCa { subject: String },
    #[error("certificate {subject:?} carries no role OU (found {found:?})")]
    NoRole { subject: String, found: Vec<String> },
    #[error("certificate {subject:?} carries more than one role OU ({found:?})")]
    AmbiguousRole { subject: String, found: Vec<String> },
    #[error("{subject:?} has role {found}; {expected} required")]
    WrongRole {
        subject: String,
        expected: Role,
        found: Role,
    },
    #[error("signature by {subject:?} does not verify: {source}")]
    BadSignature {
        subject: String,
        #[source]
        source: crate::signing::SignatureError,
    },
    #[error("cannot generate certificate: {reason}")]
    Generate { reason: String },
    #[error("cannot read {path}: {reason}")]
    Io { path: String, reason: String },
}

#[cfg(test)]
mod tests;
