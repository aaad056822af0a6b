//! Acting as a node or an operator in cluster tests: identities of the network's members, a
//! cluster client with a consenter's certificate, the ops endpoint.

use std::time::Duration;

use super::*;

impl TestCluster {
    /// The signing identity (role peer) of the `n`th generated peer.
    pub fn peer_identity(&self, n: usize) -> SigningIdentity {
        let p = &self.generated.peers[n];
        SigningIdentity::from_pem_files(
            &p.msp_id,
            &p.dir.join("msp/cert.pem"),
            &p.dir.join("msp/key.pem"),
        )
        .unwrap()
    }

    /// The signing identity (role orderer) of orderer `i`.
    pub fn orderer_identity(&self, i: usize) -> SigningIdentity {
        let o = &self.generated.orderers[i];
        SigningIdentity::from_pem_files(
            &o.msp_id,
            &o.dir.join("msp/cert.pem"),
            &o.dir.join("msp/key.pem"),
        )
        .unwrap()
    }

    /// A `Cluster` service client for node `i` over mutual TLS, presenting the TLS certificate
    /// and key in `tls_dir` (`cert.pem`, `key.pem`), or no client certificate when `None`.
    pub fn cluster_client_as(
        &self,
        i: usize,
        tls_dir: Option<&std::path::Path>,
    ) -> shared_proto::pb::orderer::cluster_client::ClusterClient<GrpcChannel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.tls_ca.clone()))
            .domain_name("127.0.0.1");
        if let Some(dir) = tls_dir {
            tls = tls.identity(Identity::from_pem(
                std::fs::read(dir.join("cert.pem")).unwrap(),
                std::fs::read(dir.join("key.pem")).unwrap(),
            ));
        }
        let channel = Endpoint::from_shared(format!("https://{}", self.cluster_addr(i)))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        shared_proto::pb::orderer::cluster_client::ClusterClient::new(channel)
    }

    /// One plain HTTP/1.1 GET on node `i`'s ops endpoint: (status code, body).
    pub async fn ops_get(&self, i: usize, path: &str) -> anyhow::Result<(u16, String)> {
        use tokio::io::AsyncReadExt as _;
        use tokio::io::AsyncWriteExt as _;
        let addr = self.ops_addr(i);
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .context("ops endpoint did not answer in time")??;
        let text = String::from_utf8(raw)?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .context("HTTP response without end of headers")?;
        let status = head
            .lines()
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .context("HTTP response without status line")?
            .parse()?;
        let chunked = head
            .lines()
            .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        if !chunked {
            return Ok((status, body.to_owned()));
        }
        let mut rest = body;
        let mut decoded = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").context("bad chunk header")?;
            let size = usize::from_str_radix(size.trim(), 16)?;
            if size == 0 {
                return Ok((status, decoded));
            }
            decoded.push_str(after.get(..size).context("short chunk")?);
            rest = after.get(size + 2..).context("chunk without CRLF")?;
        }
    }
}
