//! Operations endpoint (HTTP): `/healthz` (the process serves), `/readyz`, `/metrics`
//! (Prometheus text, see `docs/metrics.md`), `/status` (JSON, per channel).
//!
//! Readiness is per channel: a channel is ready when a follower knows a Raft leader and has
//! applied what that leader had committed when it first heard from it, a leader
//! has heard from a quorum within [`crate::consensus::quorum_silence_max`], and this node holds
//! every block its state machine has cut. `/readyz?channel=CH` answers for one channel (503
//! too for a channel this node was removed from). `/readyz` answers for the node: ready while
//! at least one channel is (or it has none), so one channel without a leader does not take a
//! node serving others out of service — unless `ready_requires_every_channel = true` in the
//! node config. The body names each channel and why it is not ready.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::channels::ChannelRuntime;
use crate::channels::Registry;
use crate::metrics::Metrics;

/// Serves the ops endpoint until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(registry);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Why one channel is not ready on this node; empty when ready.
pub fn channel_not_ready(registry: &Registry, ch: &ChannelRuntime) -> Vec<String> {
    let (node_id, id) = (registry.node_id, &ch.id);
    if let Some(sequence) = ch.removed_at() {
        return vec![format!(
            "channel {id}: this node was removed from its consenters (config sequence {sequence})"
        )];
    }
    let mut reasons = Vec::new();
    if let Some(reason) = cert_not_pinned(registry, ch) {
        reasons.push(format!("channel {id}: {reason}"));
    }
    if let Some(reason) = raft_not_ready(node_id, ch) {
        reasons.push(format!("channel {id}: {reason}"));
    }
    let next = ch.status.borrow().next_block;
    let height = ch.store.height();
    if height < next {
        reasons.push(format!(
            "channel {id}: catching up (have {height} blocks, chain has {next})"
        ));
    }
    reasons
}

/// Why this node's consenter entry does not pin the TLS certificate it runs with, if it does
/// not: the other consenters then refuse everything it sends (votes, forwarded envelopes),
/// while it still receives blocks, so nothing else shows it. Happens when a node is restarted
/// with renewed TLS files before `orderer admin consenter replace` was ordered.
fn cert_not_pinned(registry: &Registry, ch: &ChannelRuntime) -> Option<String> {
    if registry.own_tls_cert.is_empty() {
        return None;
    }
    let config = ch.config();
    let entry = config
        .consenters()
        .iter()
        .find(|c| c.id == registry.node_id)?;
    (entry.client_tls_cert != registry.own_tls_cert).then(|| {
        format!(
            "this node's TLS certificate is not the one its consenter entry (id {}) pins: the \
             other consenters refuse what it sends; order `orderer admin consenter replace` \
             with its current certificate",
            registry.node_id
        )
    })
}

/// Why the node is not ready; empty when ready (see the module doc).
pub fn not_ready_reasons(registry: &Registry) -> Vec<String> {
    let mut reasons = Vec::new();
    let mut ready = 0;
    let mut counted = 0;
    for ch in registry.channels() {
        if ch.removed_at().is_some() {
            continue; // reported by /readyz?channel= and /status
        }
        counted += 1;
        let why = channel_not_ready(registry, &ch);
        ready += usize::from(why.is_empty());
        reasons.extend(why);
    }
    let unready = if registry.ready_requires_every_channel {
        ready < counted
    } else {
        counted > 0 && ready == 0
    };
    if unready {
        reasons
    } else {
        Vec::new()
    }
}

/// Why this node's Raft cannot order now, if it cannot. A follower needs a leader, and to have
/// applied what that leader had committed when it first heard from it
/// ([`crate::channels::CatchUp`]): openraft
/// reports none once the follower's election timeout passes without hearing from one (it then
/// campaigns with an uncommitted vote). A leader needs a quorum that acknowledged it within
/// [`crate::consensus::quorum_silence_max`]: a leader in a minority partition keeps leading in
/// openraft 0.9, and Broadcasts sent to it would wait for a commit that cannot happen (the
/// proposer refuses them at once, see [`crate::consensus::proposer`]).
pub(crate) fn raft_not_ready(node_id: u64, ch: &ChannelRuntime) -> Option<String> {
    let metrics = ch.raft.metrics();
    let (leader, acked, applied) = {
        let m = metrics.borrow();
        let applied = m.last_applied.map_or(0, |l| l.index + 1);
        (m.current_leader, m.millis_since_quorum_ack, applied)
    };
    let leader = match leader {
        None => return Some("no Raft leader".to_owned()),
        Some(l) => l,
    };
    if leader != node_id {
        return ch.catch_up.not_caught_up(applied);
    }
    let bound = crate::consensus::quorum_silence_max(ch.raft.config());
    match acked {
        Some(ms) if Duration::from_millis(ms) <= bound => None,
        Some(ms) => Some(format!(
            "leader has not heard from a quorum for {ms} ms (bound {} ms): cut off from the \
             other consenters?",
            bound.as_millis()
        )),
        None => Some("leader not yet acknowledged by a quorum".to_owned()),
    }
}

async fn readyz(State(registry): State<Arc<Registry>>, uri: axum::http::Uri) -> impl IntoResponse {
    let channel = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("channel="));
    let reasons = match channel {
        None => not_ready_reasons(&registry),
        Some(id) => match registry.get(id) {
            Some(ch) => channel_not_ready(&registry, &ch),
            None => {
                return (
                    StatusCode::NOT_FOUND,
                    format!("channel {id:?} is not served here\n"),
                )
            }
        },
    };
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n")
    }
}

/// Per channel: height, last block's header hash (hex), Raft leader, pending envelopes, and
/// the Raft log's term, last index, snapshot and purge points.
async fn status(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let mut channels = serde_json::Map::new();
    for ch in registry.channels() {
        let id = &ch.id;
        let height = ch.store.height();
        let last_hash = height
            .checked_sub(1)
            .and_then(|n| ch.store.get(n).ok().flatten())
            .and_then(|b| shared_proto::block::header_hash(&b).ok())
            .map(hex::encode)
            .unwrap_or_default();
        let raft = ch.raft.metrics().borrow().clone();
        channels.insert(
            id.clone(),
            serde_json::json!({
                "height": height,
                "last_block_hash": last_hash,
                "leader": ch.leader(),
                "pending": ch.status.borrow().pending,
                "config_sequence": ch.status.borrow().config_sequence,
                "role": crate::membership::role(registry.node_id, &ch),
                "not_ready": channel_not_ready(&registry, &ch),
                "raft": {
                    "term": raft.current_term,
                    "last_log_index": raft.last_log_index,
                    "snapshot_index": raft.snapshot.map(|l| l.index),
                    "purged_index": raft.purged.map(|l| l.index),
                    "start": ch.rejoin.start().as_str(),
                },
            }),
        );
    }
    axum::Json(serde_json::json!({ "node_id": registry.node_id, "channels": channels }))
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let m: &Metrics = &registry.metrics;
    for ch in registry.channels() {
        m.refresh(registry.node_id, &ch);
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &m.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
