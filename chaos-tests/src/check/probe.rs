//! Reads for the state checkers ([`super::balances_conserved`], [`super::forged_contained`]):
//! each peer's token balances through its query service, and each peer's count of refused
//! blocks from its metrics.

use std::collections::BTreeMap;
use std::time::Duration;

use peer::sdk::Gateway;
use shared_proto::material::Generated;

use super::collect::service_addr;
use super::BalancesView;
use crate::launcher;
use crate::launcher::Kind;
use crate::topology::NodeView;
use crate::topology::CHANNEL;

/// Every peer's balance of each of `accounts` (as Org1's User1), each peer within `timeout`.
pub async fn balances(
    g: &Generated,
    nodes: &[NodeView],
    accounts: &[&str],
    timeout: Duration,
) -> Vec<BalancesView> {
    let reads = nodes
        .iter()
        .filter(|n| n.kind == Kind::Peer)
        .map(|node| async move {
            let read = async {
                let addr = service_addr(node)?;
                let gw =
                    Gateway::from_network_with_endorsers(g, "Org1MSP", "User1", CHANNEL, &[addr])?;
                let mut out = BTreeMap::new();
                for account in accounts {
                    let answer = gw
                        .evaluate("token", "balance", &[account.as_bytes().to_vec()])
                        .await?;
                    let text = String::from_utf8_lossy(&answer).into_owned();
                    let balance: u64 = text
                        .parse()
                        .map_err(|_| anyhow::anyhow!("balance of {account} is {text:?}"))?;
                    out.insert((*account).to_owned(), balance);
                }
                Ok::<_, anyhow::Error>(out)
            };
            let balances = match tokio::time::timeout(timeout, read).await {
                Ok(Ok(b)) => Ok(b),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err(format!("no answer within {timeout:?}")),
            };
            BalancesView {
                member: node.name.clone(),
                balances,
            }
        });
    futures::future::join_all(reads).await
}

/// The metric every peer counts refused blocks in.
const REFUSED_METRIC: &str = "weft_peer_blocks_refused_total";

/// Every peer's count of refused blocks (`None` when its metrics could not be read).
pub async fn refused_blocks(nodes: &[NodeView]) -> BTreeMap<String, Option<u64>> {
    let reads = nodes
        .iter()
        .filter(|n| n.kind == Kind::Peer)
        .map(|node| async move {
            let count = match launcher::http_get(&node.ops, "/metrics").await {
                Ok((200, text)) => counter(&text, REFUSED_METRIC),
                _ => None,
            };
            (node.name.clone(), count)
        });
    futures::future::join_all(reads).await.into_iter().collect()
}

/// The value of counter `name` (no labels) in a Prometheus text exposition.
fn counter(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_is_read_from_the_exposition_and_absent_is_none() {
        let text = "# HELP weft_peer_blocks_refused Blocks refused\n\
                    # TYPE weft_peer_blocks_refused counter\n\
                    weft_peer_blocks_refused_total 3\n\
                    weft_peer_blocks_refused_total_other 9\n";
        assert_eq!(super::counter(text, super::REFUSED_METRIC), Some(3));
        assert_eq!(super::counter("", super::REFUSED_METRIC), None);
    }
}
