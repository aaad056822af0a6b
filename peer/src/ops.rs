//! Operations endpoint (HTTP): `/healthz`, `/readyz` (every channel's ledger is within
//! [`READY_LAG_BLOCKS`] of the highest block seen from the orderers or, for a gossip-only
//! peer, from its org's peers), `/metrics`, `/status` (heights, hashes, config in force, gossip
//! role).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use crate::channels::Registry;
use crate::gossip::Gossip;
use crate::metrics::Metrics;

/// What the ops handlers read.
#[derive(Debug, Clone)]
pub struct OpsState {
    pub registry: Arc<Registry>,
    pub gossip: Gossip,
}

/// How far behind the orderers' tip a peer may be and still be ready.
pub const READY_LAG_BLOCKS: u64 = 5;

pub async fn serve(
    listener: TcpListener,
    state: OpsState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(OpsState { registry, .. }): State<OpsState>) -> impl IntoResponse {
    let mut reasons = Vec::new();
    for ch in registry.channels() {
        let id = &ch.id;
        let height = ch.ledger.height();
        let tip = ch.committer.tip_seen();
        if tip > height + READY_LAG_BLOCKS {
            reasons.push(format!(
                "channel {id}: at block {height}, orderers or org peers at {tip}"
            ));
        }
        if height == 0 {
            reasons.push(format!("channel {id}: no block committed"));
        }
    }
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, reasons.join("\n") + "\n")
    }
}

/// Per channel: height, last block's header hash and the state hash (hex), so operators and
/// tools can compare peers; the config in force (its sequence and the block that set it); and
/// gossip: whether this peer leads (pulls from the orderers) and
/// which org peers it hears.
async fn status(State(OpsState { registry, gossip }): State<OpsState>) -> impl IntoResponse {
    let mut channels = serde_json::Map::new();
    for ch in registry.channels() {
        let id = &ch.id;
        let ledger = ch.ledger.clone();
        let leader = gossip.is_leader(id);
        let members = gossip.members_alive(id);
        let config_sequence = ch.config().sequence();
        let config_block = ch.committer.live_config().in_force_block();
        let view = tokio::task::spawn_blocking(move || {
            let hash = |h: Option<[u8; 32]>| h.map(hex::encode).unwrap_or_default();
            serde_json::json!({
                "height": ledger.height(),
                "last_block_hash": hash(ledger.last_block_hash().ok().flatten()),
                "state_hash": hash(ledger.state_hash().ok()),
                "config": { "sequence": config_sequence, "block": config_block },
                "gossip": { "leader": leader, "members_alive": members },
            })
        })
        .await
        .unwrap_or_default();
        channels.insert(id.clone(), view);
    }
    axum::Json(serde_json::json!({ "channels": channels }))
}

async fn metrics(State(OpsState { registry, .. }): State<OpsState>) -> impl IntoResponse {
    let m: &Metrics = &registry.metrics;
    for ch in registry.channels() {
        m.height
            .get_or_create(&Metrics::channel(&ch.id))
            .set(ch.ledger.height() as i64);
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
