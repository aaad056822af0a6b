//! Operations endpoint (HTTP): `/healthz` (the process serves), `/readyz` (every channel has a
//! Raft leader and this node holds every block its state machine has cut), `/metrics`
//! (Prometheus text).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

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

/// Why the node is not ready, per channel; empty when ready.
pub fn not_ready_reasons(registry: &Registry) -> Vec<String> {
    let mut reasons = Vec::new();
    for (id, ch) in &registry.channels {
        if ch.leader().is_none() {
            reasons.push(format!("channel {id}: no Raft leader"));
        }
        let next = ch.status.borrow().next_block;
        let height = ch.store.height();
        if height < next {
            reasons.push(format!(
                "channel {id}: catching up (have {height} blocks, chain has {next})"
            ));
        }
    }
    reasons
}

async fn readyz(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let reasons = not_ready_reasons(&registry);
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
    for (id, ch) in &registry.channels {
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
                "raft": {
                    "term": raft.current_term,
                    "last_log_index": raft.last_log_index,
                    "snapshot_index": raft.snapshot.map(|l| l.index),
                    "purged_index": raft.purged.map(|l| l.index),
                },
            }),
        );
    }
    axum::Json(serde_json::json!({ "node_id": registry.node_id, "channels": channels }))
}

async fn metrics(State(registry): State<Arc<Registry>>) -> impl IntoResponse {
    let m: &Metrics = &registry.metrics;
    for (id, ch) in &registry.channels {
        let label = Metrics::channel(id);
        let raft = ch.raft.metrics().borrow().clone();
        m.height.get_or_create(&label).set(ch.store.height() as i64);
        m.is_leader
            .get_or_create(&label)
            .set(i64::from(raft.current_leader == Some(registry.node_id)));
        m.raft_term
            .get_or_create(&label)
            .set(raft.current_term as i64);
        m.pending_envelopes
            .get_or_create(&label)
            .set(ch.status.borrow().pending as i64);
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
