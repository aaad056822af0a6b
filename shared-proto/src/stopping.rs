//! Ending a gRPC service's calls when its node stops.
//!
//! tonic's graceful shutdown stops accepting connections and then waits for every open call to
//! finish, so one client's follow-forever Deliver stream, or a peer's gossip stream, keeps a
//! stopping node alive until it is killed. [`Stopping`] wraps a service so that, once the
//! node's stop signal fires, every call of that service ends at a message boundary with
//! `UNAVAILABLE` "node is stopping" (retryable; the client moves to another node or retries
//! later):
//!
//! - a call whose handler has not answered yet gets that status as its answer;
//! - an open response stream ends with that status in its trailers;
//! - an open request stream fails with that status, so a handler reading it (gossip, Broadcast)
//!   returns instead of waiting for a client that will not hang up.
//!
//! Nothing is cut mid-message: a response frame is always a whole encoded message.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Context;
use std::task::Poll;

use http_body::Frame;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::server::NamedService;

/// The message clients see.
pub const STOPPING: &str = "node is stopping";

/// A future that completes when the node stops.
pub type StopFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Makes a fresh [`StopFuture`] for each call (e.g. from a `watch` receiver).
pub type StopSignal = Arc<dyn Fn() -> StopFuture + Send + Sync>;

/// The status every call ends with once the node stops.
pub fn stopping_status() -> tonic::Status {
    tonic::Status::unavailable(STOPPING)
}

/// A gRPC service whose calls end when `signal` fires (see the module doc).
#[derive(Clone)]
pub struct Stopping<S> {
    inner: S,
    signal: StopSignal,
}

impl<S> std::fmt::Debug for Stopping<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopping").finish_non_exhaustive()
    }
}

impl<S> Stopping<S> {
    pub fn new(inner: S, signal: StopSignal) -> Self {
        Stopping { inner, signal }
    }
}

impl<S: NamedService> NamedService for Stopping<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Stopping<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let request = request.map(|body| {
            Body::new(StopBody {
                inner: body,
                stop: (self.signal)(),
                side: Side::Request,
                done: false,
            })
        });
        let mut answer = Box::pin(self.inner.call(request));
        let mut stop = (self.signal)();
        let signal = self.signal.clone();
        Box::pin(std::future::poll_fn(move |cx| {
            if let Poll::Ready(response) = answer.as_mut().poll(cx) {
                return Poll::Ready(response.map(|r| {
                    r.map(|body| {
                        Body::new(StopBody {
                            inner: body,
                            stop: signal(),
                            side: Side::Response,
                            done: false,
                        })
                    })
                }));
            }
            match stop.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Ok(stopping_status().into_http())),
                Poll::Pending => Poll::Pending,
            }
        }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

/// A request or response body that ends when the stop signal fires.
struct StopBody {
    inner: Body,
    stop: StopFuture,
    side: Side,
    done: bool,
}

impl http_body::Body for StopBody {
    type Data = tonic::codegen::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.stop.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(match self.side {
                Side::Request => Err(stopping_status()),
                Side::Response => {
                    let mut trailers = http::HeaderMap::new();
                    match stopping_status().add_header(&mut trailers) {
                        Ok(()) => Ok(Frame::trailers(trailers)),
                        Err(status) => Err(status),
                    }
                }
            }));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Waits for a stopping node's server tasks until `bound` has passed, then aborts the ones
/// still draining (their connections close). Errors are logged: the node is stopping anyway.
pub async fn drain_servers<E: std::fmt::Display>(
    servers: Vec<tokio::task::JoinHandle<Result<(), E>>>,
    bound: std::time::Duration,
) {
    let deadline = tokio::time::Instant::now() + bound;
    for mut server in servers {
        match tokio::time::timeout_at(deadline, &mut server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => {
                tracing::warn!(after = ?bound, "server still draining; closing its connections");
                server.abort();
            }
        }
    }
}
