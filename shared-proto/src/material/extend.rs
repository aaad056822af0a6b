//! Extending the material of an existing network: one more orderer or peer of an existing org
//! (issued by the org's CAs, whose keys lie beside their certificates), one more application
//! org (new CAs, an `Admin`, its users and peers), one more channel (its genesis block).
//!
//! Only what is new is written; every existing file stays as it is, byte for byte, except
//! `network.toml`, which is replaced whole (written beside it, then renamed) once the new
//! material is complete, so [`Generated::load`] then finds it. A refused or failed extension
//! leaves the directory as it found it. Orderer node ids are pinned in `network.toml` the
//! first time it is extended, so they never depend on an orderer's position again.

use std::path::Path;
use std::path::PathBuf;

use super::generate::Generated;
use super::issue;
use super::issue::OrgCas;
use super::issue::OrgRoots;
use super::spec::ChannelSpec;
use super::spec::NetworkSpec;
use super::spec::OrdererSpec;
use super::spec::PeerOrgSpec;
use super::spec::PeerSpec;
use super::MaterialError;
use crate::msp::Role;
use crate::msp::SigningIdentity;
use crate::msp::Validity;
use crate::pb::config as cfg;

/// The material before and after a change of the spec, not yet written.
struct Extension {
    dir: PathBuf,
    after: Generated,
    validity: Validity,
}

impl Extension {
    /// Loads `dir`'s spec, pins the orderer ids, applies `edit` and checks the result.
    fn prepare(
        dir: &Path,
        now_unix: i64,
        edit: impl FnOnce(&mut NetworkSpec) -> Result<(), MaterialError>,
    ) -> Result<Self, MaterialError> {
        let before = Generated::load(dir)?;
        let mut spec = before.spec.clone();
        let ids = spec.orderer_ids();
        let orderers = spec.orderer_orgs.iter_mut().flat_map(|o| &mut o.orderers);
        for (o, id) in orderers.zip(ids) {
            o.id = Some(id);
        }
        edit(&mut spec)?;
        spec.validate()?;
        Ok(Extension {
            dir: dir.to_path_buf(),
            validity: Validity::days_from(now_unix, spec.validity_days),
            after: Generated::layout(&spec, dir),
        })
    }

    /// Runs `write`, which creates `new` (paths that must not exist yet); on failure removes
    /// them again. Then records the new spec.
    fn write<T>(
        self,
        new: &[&Path],
        write: impl FnOnce(&Generated, Validity) -> Result<T, MaterialError>,
    ) -> Result<(Generated, T), MaterialError> {
        if let Some(taken) = new.iter().find(|p| p.exists()) {
            return Err(MaterialError::Exists {
                path: taken.display().to_string(),
            });
        }
        let written = write(&self.after, self.validity)
            .and_then(|t| issue::write_spec(&self.dir, &self.after.spec).map(|()| t));
        match written {
            Ok(t) => Ok((self.after, t)),
            Err(e) => {
                for path in new {
                    let _ = std::fs::remove_dir_all(path);
                }
                Err(e)
            }
        }
    }
}

fn org_dir(dir: &Path, msp_id: &str) -> PathBuf {
    dir.join("orgs").join(msp_id)
}

/// `msp_id` is not an org of `kind` (`orderer` or `application`); `known` are those there are.
fn unknown_org(kind: &str, msp_id: &str, known: Vec<String>) -> MaterialError {
    let field = if kind == "orderer" {
        "orderer_orgs.msp_id"
    } else {
        "peer_orgs.msp_id"
    };
    MaterialError::Spec {
        field: field.into(),
        message: format!(
            "{msp_id:?} is not an {kind} org of the network ({kind} orgs: {})",
            known.join(", ")
        ),
    }
}

/// What the edited spec lacks although the edit put it there (a bug, not bad input).
fn not_added(what: String) -> MaterialError {
    MaterialError::Spec {
        field: "(extension)".into(),
        message: format!("{what} is missing from the layout after adding it"),
    }
}

/// Adds orderer `orderer` to orderer org `msp_id` of the material in `dir`: identity and TLS
/// certificates from the org's CAs, an `orderer.toml` naming every channel's genesis block (it
/// starts as a follower until a config update makes it a consenter). Without an id it gets
/// the next free one.
pub fn add_orderer(
    dir: &Path,
    msp_id: &str,
    orderer: OrdererSpec,
    now_unix: i64,
) -> Result<Generated, MaterialError> {
    let name = orderer.name.clone();
    let ext = Extension::prepare(dir, now_unix, |spec| {
        let next_id = spec.orderer_ids().into_iter().max().unwrap_or(0) + 1;
        let known = spec.orderer_orgs.iter().map(|o| o.msp_id.clone()).collect();
        let org = spec
            .orderer_orgs
            .iter_mut()
            .find(|o| o.msp_id == msp_id)
            .ok_or_else(|| unknown_org("orderer", msp_id, known))?;
        org.orderers.push(OrdererSpec {
            id: Some(orderer.id.unwrap_or(next_id)),
            ..orderer
        });
        Ok(())
    })?;
    let specs = ext.after.spec.orderer_orgs.iter().flat_map(|o| &o.orderers);
    let Some(((node, o), id)) = ext
        .after
        .orderers
        .iter()
        .zip(specs)
        .zip(ext.after.spec.orderer_ids())
        .find(|((n, _), _)| n.msp_id == msp_id && n.name == name)
    else {
        return Err(not_added(format!("orderer {name} of {msp_id}")));
    };
    let (node, o) = (node.clone(), o.clone());
    let cas_dir = org_dir(dir, msp_id);
    let (after, _) = ext.write(&[&node.dir], |net, validity| {
        let org = OrgCas::load(&cas_dir, msp_id)?;
        issue::issue_orderer(net, &org, &node, &o, id, validity)
    })?;
    Ok(after)
}

/// Adds peer `peer` to application org `msp_id` of the material in `dir`: certificates from
/// the org's CAs, a `peer.toml` naming the genesis block of every channel of its org and the
/// org's other peers as gossip bootstrap (they learn of it from its alive messages; their
/// files are not touched).
pub fn add_peer(
    dir: &Path,
    msp_id: &str,
    peer: PeerSpec,
    now_unix: i64,
) -> Result<Generated, MaterialError> {
    let name = peer.name.clone();
    let ext = Extension::prepare(dir, now_unix, |spec| {
        let known = spec.peer_orgs.iter().map(|o| o.msp_id.clone()).collect();
        spec.peer_orgs
            .iter_mut()
            .find(|o| o.msp_id == msp_id)
            .ok_or_else(|| unknown_org("application", msp_id, known))?
            .peers
            .push(peer);
        Ok(())
    })?;
    let org_spec = ext
        .after
        .spec
        .peer_orgs
        .iter()
        .find(|o| o.msp_id == msp_id)
        .cloned();
    let node = ext
        .after
        .peers
        .iter()
        .find(|n| n.msp_id == msp_id && n.name == name)
        .cloned();
    let (Some(org_spec), Some(node)) = (org_spec, node) else {
        return Err(not_added(format!("peer {name} of {msp_id}")));
    };
    let Some(p) = org_spec.peers.iter().find(|p| p.name == name) else {
        return Err(not_added(format!("peer {name} of {msp_id}")));
    };
    let cas_dir = org_dir(dir, msp_id);
    let (after, ()) = ext.write(&[&node.dir], |net, validity| {
        let org = OrgCas::load(&cas_dir, msp_id)?;
        let bootstrap = issue::bootstrap_of(&org_spec, &name);
        issue::issue_peer(net, &org, &node, p, bootstrap, validity)
    })?;
    Ok(after)
}

/// Adds application org `org` to the material in `dir`: new CAs, its `Admin`, users and peers
/// (each peer's `peer.toml` naming every channel's genesis block and trusting every org's TLS
/// CA). Returns the org as a channel config holds it, for the config update that adds it to a
/// running channel.
///
/// A channel whose spec lists no orgs is on every application org, so the new org counts as on
/// it from now on: the caller adds it to those channels by config update.
pub fn add_peer_org(
    dir: &Path,
    org: PeerOrgSpec,
    now_unix: i64,
) -> Result<(Generated, cfg::Organization), MaterialError> {
    let msp_id = org.msp_id.clone();
    let ext = Extension::prepare(dir, now_unix, |spec| {
        spec.peer_orgs.push(org);
        Ok(())
    })?;
    let org_path = org_dir(dir, &msp_id);
    ext.write(&[&org_path], |net, validity| {
        let Some(org_spec) = net.spec.peer_orgs.iter().find(|o| o.msp_id == msp_id) else {
            return Err(not_added(format!("org {msp_id}")));
        };
        let cas = OrgCas::generate(&msp_id, net.spec.tls_key_algorithm, validity)?;
        cas.write(&org_path)?;
        for user in net.users.iter().filter(|u| u.msp_id == msp_id) {
            issue::issue_user(&cas, user, validity)?;
        }
        for node in net.peers.iter().filter(|n| n.msp_id == msp_id) {
            if let Some(p) = org_spec.peers.iter().find(|p| p.name == node.name) {
                let bootstrap = issue::bootstrap_of(org_spec, &p.name);
                issue::issue_peer(net, &cas, node, p, bootstrap, validity)?;
            }
        }
        Ok(issue::application_org(org_spec, &cas.roots()))
    })
}

/// Adds channel `channel` to the material in `dir`: its genesis block (every org the spec puts
/// on it, with the CA certificates on disk; `consenters` and `endpoints` as given, e.g. those
/// in force on a running channel), signed by the first orderer org's `Admin`. Existing node
/// configs are not touched: running nodes join it through their admin APIs.
pub fn add_channel(
    dir: &Path,
    channel: ChannelSpec,
    consenters: &[cfg::Consenter],
    endpoints: &[String],
    now_unix: i64,
) -> Result<Generated, MaterialError> {
    let id = channel.id.clone();
    let ext = Extension::prepare(dir, now_unix, |spec| {
        spec.channels.push(channel);
        Ok(())
    })?;
    let Some((_, genesis)) = ext.after.channels.iter().find(|(c, _)| *c == id).cloned() else {
        return Err(not_added(format!("channel {id}")));
    };
    let channel_dir = genesis.parent().unwrap_or(dir).to_path_buf();
    let (after, ()) = ext.write(&[&channel_dir], |net, _| {
        let spec = &net.spec;
        let orgs = spec
            .orderer_orgs
            .iter()
            .map(|o| &o.msp_id)
            .chain(spec.peer_orgs.iter().map(|o| &o.msp_id));
        let roots = orgs
            .map(|m| OrgRoots::load(&org_dir(dir, m), m))
            .collect::<Result<Vec<_>, _>>()?;
        let Some(admin) = spec
            .orderer_orgs
            .first()
            .and_then(|o| net.user(&o.msp_id, "Admin"))
            .filter(|u| u.role == Role::Admin)
        else {
            return Err(MaterialError::Spec {
                field: "orderer_orgs".into(),
                message: "needs at least one orderer org".into(),
            });
        };
        let admin = SigningIdentity::from_pem_files(&admin.msp_id, &admin.cert, &admin.key)?;
        let Some(ch) = spec.channels.iter().find(|c| c.id == id) else {
            return Ok(());
        };
        issue::write_genesis(
            spec, ch, &roots, consenters, endpoints, &admin, now_unix, &genesis,
        )
    })?;
    Ok(after)
}
