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
