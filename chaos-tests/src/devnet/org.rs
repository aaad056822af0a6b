//! `devnet add-org`: a new application org with one peer, added to the running network's
//! channels by config update.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use orderer::admin_client::Network;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::ServerName;
use shared_proto::material;
use shared_proto::material::Generated;
use shared_proto::material::PeerOrgSpec;
use shared_proto::material::PeerSpec;
use shared_proto::node_config::PeerConfig;

use super::describe_channels;
use super::free_ports;
use super::nodes::print_started;
use super::nodes::wait_caught_up;
use super::now_unix;
use super::start_node;
use super::view_of;
use super::DataDir;
use super::CONFIG_UPDATE_DEADLINE;
use crate::topology::NodeView;

/// Adds org `msp_id` (new CA and TLS CA, `Admin`, `User1`, `peer0`) to the material, then to
/// every channel the material puts it on (each by one config update approved by every org
/// admin the channel knows, waited for until the leader applies it), then starts its peer,
/// which replays each channel from the genesis block up to the config that names its org.
pub async fn add_org(data: &DataDir, msp_id: &str) -> anyhow::Result<()> {
    let g = data.running().await?;
    let ports = free_ports(&g, 3)?;
    let org = PeerOrgSpec {
        msp_id: msp_id.to_owned(),
        peers: vec![PeerSpec {
            name: "peer0".into(),
            host: "127.0.0.1".into(),
            port: ports[0],
            gossip_port: ports[1],
            ops_port: ports[2],
            orderer_connected: true,
        }],
        users: vec!["User1".into()],
    };
    let (g, entry) = material::add_peer_org(&data.net(), org, now_unix())?;
    println!(
        "{msp_id}: CA, TLS CA, Admin, User1 and peer0 in {}",
        data.net().join("orgs").join(msp_id).display()
    );

    let net = Network::load(&data.net())?;
    let on = |c: &material::ChannelSpec| {
        c.orgs
            .as_ref()
            .is_none_or(|o| o.iter().any(|m| m == msp_id))
    };
    let mut applied_on = Vec::new();
    for ch in g.spec.channels.iter().filter(|c| on(c)) {
        let current = net.current_config(&ch.id).await?;
        if current
            .channel
            .application_orgs()
            .iter()
            .any(|m| m == msp_id)
        {
            println!("{}: {msp_id} is already a member", ch.id);
            continue;
        }
        let mut next = current.channel.config().clone();
        next.sequence += 1;
        next.application_orgs.push(entry.clone());
        let applied = net
            .apply(&current, &next, None, CONFIG_UPDATE_DEADLINE)
            .await?;
        let signers: Vec<&str> = current
            .channel
            .application_orgs()
            .iter()
            .chain(current.channel.orderer_orgs())
            .map(String::as_str)
            .collect();
        println!(
            "{}: config update adding {msp_id} applied (config sequence {} -> {}, tx {}, \
             ordered by {}, approved by the Admins of {}, {} ms; leader {})",
            ch.id,
            applied.previous_sequence,
            applied.config_sequence,
            applied.tx_id,
            applied.submitted_to,
            signers.join(", "),
            applied.elapsed_ms,
            applied.status.leader.as_deref().unwrap_or("none")
        );
        applied_on.push((ch.id.clone(), applied.config_sequence));
    }

    let view = view_of(&g, &format!("{msp_id}/peer0"))?;
    let started = start_node(data, &view).await?;
    print_started(&started);
    if let Some(refusal) = orderers_refuse_tls(&g, &view).await? {
        anyhow::bail!(
            "{name} runs but cannot pull blocks: {refusal}. Orderers trust the TLS root CAs of \
             every org of the channels they serve, from the latest config block they applied; \
             this one has not applied the update naming {msp_id} (its log: {log})",
            name = view.name,
            log = started.log.display()
        );
    }
    let status = wait_caught_up(&g, &started).await?;
    for line in describe_channels(&status) {
        println!("  {line}");
    }
    // Every other peer of those channels commits the config block too before the verb
    // returns, so the new org's transactions are endorsed wherever they go next.
    let peers: Vec<NodeView> = crate::topology::nodes(&g)
        .into_iter()
        .filter(|v| v.kind == crate::launcher::Kind::Peer && v.name != view.name)
        .collect();
    for (channel, sequence) in &applied_on {
        for p in &peers {
            super::wait_status(p, "the config update", CONFIG_UPDATE_DEADLINE, |s| {
                let ch = &s["channels"][channel.as_str()];
                ch.is_null() || ch["config"]["sequence"].as_u64() >= Some(*sequence)
            })
            .await?;
        }
        println!(
            "{channel}: every peer has committed config sequence {sequence} ({} peers)",
            peers.len() + 1
        );
    }
    Ok(())
}

/// Whether the orderers refuse the TLS client certificate of peer `view` (what its deliver
/// client presents): `Some(why)` from the first orderer that answers at all.
async fn orderers_refuse_tls(g: &Generated, view: &NodeView) -> anyhow::Result<Option<String>> {
    let config = PeerConfig::load(&view.config)
        .with_context(|| format!("reading {}", view.config.display()))?;
    let tls = client_tls(&config)?;
    for o in g.spec.orderer_orgs.iter().flat_map(|o| &o.orderers) {
        let (tls, host, address) = (
            tls.clone(),
            o.host.clone(),
            format!("{}:{}", o.host, o.port),
        );
        let answer = tokio::task::spawn_blocking(move || tls_answer(tls, &host, &address)).await?;
        match answer {
            Ok(()) => return Ok(None),
            Err(TlsProbe::Refused(why)) => {
                return Ok(Some(format!(
                    "{} refuses its TLS client certificate ({why})",
                    o.name
                )))
            }
            Err(TlsProbe::Unreachable) => {}
        }
    }
    Ok(None)
}

/// The TLS client config `config`'s node dials with: its certificate, every CA it trusts.
fn client_tls(config: &PeerConfig) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let pem = |path: &std::path::Path| -> anyhow::Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .with_context(|| format!("reading {}", path.display()))
    };
    let mut roots = rustls::RootCertStore::empty();
    for ca in &config.tls.ca_roots {
        for cert in pem(ca)? {
            roots.add(cert)?;
        }
    }
    let key = PrivateKeyDer::from_pem_file(&config.tls.key)
        .with_context(|| format!("reading {}", config.tls.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(pem(&config.tls.cert)?, key)?;
    client.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(client))
}

enum TlsProbe {
    /// The server sent a TLS alert (it refused the certificate).
    Refused(String),
    /// No connection, or no answer within the probe's deadline: nothing learnt.
    Unreachable,
}

/// A TLS connection to `address` as `tls`, then a read: an HTTP/2 server sends its settings at
/// once, and a server that refused the client certificate sends an alert instead (with TLS 1.3
/// only after the client's side of the handshake ended, so the handshake alone proves nothing).
fn tls_answer(tls: Arc<rustls::ClientConfig>, host: &str, address: &str) -> Result<(), TlsProbe> {
    use std::io::Read as _;
    use std::io::Write as _;
    let deadline = Some(Duration::from_secs(3));
    let addr = address
        .parse::<std::net::SocketAddr>()
        .map_err(|_| TlsProbe::Unreachable)?;
    let mut socket = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|_| TlsProbe::Unreachable)?;
    socket
        .set_read_timeout(deadline)
        .and_then(|()| socket.set_write_timeout(deadline))
        .map_err(|_| TlsProbe::Unreachable)?;
    let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsProbe::Unreachable)?;
    let mut conn = rustls::ClientConnection::new(tls, name).map_err(|_| TlsProbe::Unreachable)?;
    let mut stream = rustls::Stream::new(&mut conn, &mut socket);
    let refused = |e: std::io::Error| {
        let alert = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .is_some_and(|r| matches!(r, rustls::Error::AlertReceived(_)));
        if alert {
            TlsProbe::Refused(e.to_string())
        } else {
            TlsProbe::Unreachable
        }
    };
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .map_err(refused)?;
    let mut buf = [0u8; 64];
    stream.read(&mut buf).map(|_| ()).map_err(refused)
}
