//! Renewing one node's TLS certificate in an existing network's material (rotation before
//! expiry): a new key and certificate from the node's org TLS CA, for the same names (the
//! spec's host, the node's name, `localhost`, `127.0.0.1`), valid `validity_days` from now
//! (never past the CA).
//!
//! The new pair replaces `tls/{cert,key}.pem` in the node's folder; the pair it replaces is kept
//! as `tls/{cert,key}.pem.prev` (a way back while the change is not yet in force). Nothing else
//! is written: an orderer's consenter entry pins its TLS certificate, so the channel config
//! must then be changed to the new one (`orderer admin consenter replace`) and the node
//! restarted to present it.

use std::path::Path;
use std::path::PathBuf;

use super::generate::Generated;
use super::issue;
use super::issue::OrgCas;
use super::MaterialError;
use crate::msp::Validity;

/// What [`renew_tls`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewedTls {
    /// `orderer` or `peer`.
    pub kind: &'static str,
    /// `tls/cert.pem` of the node (the new certificate).
    pub cert: PathBuf,
    /// SHA-256 of the DER of the certificate replaced, and of the new one (hex).
    pub previous_sha256: String,
    pub sha256: String,
    pub not_after_unix: i64,
}

/// Issues a new TLS key and certificate for node `name` (an orderer or a peer) of org `msp_id`
/// in the material in `dir`, from that org's TLS CA; the previous pair is kept as `*.prev`.
pub fn renew_tls(
    dir: &Path,
    msp_id: &str,
    name: &str,
    now_unix: i64,
) -> Result<RenewedTls, MaterialError> {
    let net = Generated::load(dir)?;
    let is = |n: &&super::NodeMaterial| n.msp_id == msp_id && n.name == name;
    let orderer_host = net
        .orderers
        .iter()
        .zip(net.spec.orderer_orgs.iter().flat_map(|o| &o.orderers))
        .find(|(n, _)| is(n))
        .map(|(n, o)| (n.clone(), o.host.clone(), "orderer"));
    let peer_host = || {
        net.peers
            .iter()
            .zip(net.spec.peer_orgs.iter().flat_map(|o| &o.peers))
            .find(|(n, _)| is(n))
            .map(|(n, p)| (n.clone(), p.host.clone(), "peer"))
    };
    let Some((node, host, kind)) = orderer_host.or_else(peer_host) else {
        let known: Vec<String> = net
            .orderers
            .iter()
            .chain(&net.peers)
            .map(|n| format!("{}/{}", n.msp_id, n.name))
            .collect();
        return Err(MaterialError::Spec {
            field: "node".into(),
            message: format!(
                "no orderer or peer {name:?} of {msp_id:?} in {} (nodes: {})",
                dir.display(),
                known.join(", ")
            ),
        });
    };
    let tls_dir = node.dir.join("tls");
    let cert_path = tls_dir.join("cert.pem");
    let key_path = tls_dir.join("key.pem");
    let previous = read_der(&cert_path)?;
    let org = OrgCas::load(&dir.join("orgs").join(msp_id), msp_id)?;
    let validity = Validity::days_from(now_unix, net.spec.validity_days);
    let tls = org.issue_tls(name, &issue::node_sans(&host, name), validity)?;
    // The new pair is complete beside the old one before either is replaced.
    let staged = tls_dir.join("next");
    issue::write_tls_pair(&staged, &tls)?;
    for (from, to) in [
        (&cert_path, tls_dir.join("cert.pem.prev")),
        (&key_path, tls_dir.join("key.pem.prev")),
    ] {
        std::fs::copy(from, &to).map_err(|e| issue::io(&to, e))?;
    }
    for (file, to) in [("key.pem", &key_path), ("cert.pem", &cert_path)] {
        std::fs::rename(staged.join(file), to).map_err(|e| issue::io(to, e))?;
    }
    std::fs::remove_dir(&staged).map_err(|e| issue::io(&staged, e))?;
    let not_after_unix = org.within(validity).not_after_unix;
    Ok(RenewedTls {
        kind,
        cert: cert_path,
        previous_sha256: hex(&crate::hash::sha256(&previous)),
        sha256: hex(&crate::hash::sha256(&tls.cert_der)),
        not_after_unix,
    })
}

fn read_der(path: &Path) -> Result<Vec<u8>, MaterialError> {
    let text = std::fs::read_to_string(path).map_err(|e| issue::io(path, e))?;
    Ok(crate::msp::pem_to_der(&text)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
