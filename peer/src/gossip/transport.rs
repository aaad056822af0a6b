//! Gossip transport: one outbound mutual-TLS stream per known endpoint (messages are sent
//! only on outbound streams), and the inbound service that authenticates each stream by the
//! sender's alive message and TLS certificate, rate-limits it and dispatches its messages.
//!
//! Links are bounded and pruned: an endpoint named in a `known` list is dialled on trust for
//! [`Outbound::prune`]'s grace only; the link stays while it is a bootstrap endpoint or the
//! endpoint of an alive member, and is closed otherwise. A member's own verified endpoint
//! ([`Outbound::confirm`]) displaces a link never confirmed when the table is full, so invented
//! endpoints cannot lock a real member out.

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::collections::HashSet;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use futures::Stream;
use futures::StreamExt as _;
use shared_proto::dial::Dialer;
use shared_proto::hash::sha256;
use shared_proto::hash::Hash;
use shared_proto::pb::peer::gossip_client::GossipClient;
use shared_proto::pb::peer::gossip_message::Content;
use shared_proto::pb::peer::GossipMessage;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use super::alive;
use super::reorder::Source;
use super::Shared;

/// Largest gossip message: a state response carries blocks up to
/// [`super::channel::RESPONSE_BYTES_MAX`], or one larger block, which no channel config can
/// make larger than its `bytes_absolute_max` ceiling plus framing.
pub const MESSAGE_BYTES_MAX: usize = 32 * 1024 * 1024;

const _: () = assert!(
    super::channel::RESPONSE_BYTES_MAX + 64 * 1024 <= MESSAGE_BYTES_MAX
        && shared_proto::channel::BYTES_ABSOLUTE_MAX_CEILING as usize
            + shared_proto::channel::BLOCK_FRAMING_BYTES
            + 64 * 1024
            <= MESSAGE_BYTES_MAX
);
/// Messages waiting for one outbound stream; more are dropped (pull repairs lost pushes).
pub const QUEUE_MAX: usize = 512;
/// Most endpoints this peer keeps streams to.
pub const ENDPOINTS_MAX: usize = 256;
/// Inbound messages per second and burst per stream; the excess is dropped.
pub const INBOUND_RATE: f64 = 500.0;
pub const INBOUND_BURST: f64 = 1000.0;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Outbound streams, by endpoint.
#[derive(Debug)]
pub struct Outbound {
    self_endpoint: String,
    dialer: Arc<Dialer>,
    local_ip: Option<IpAddr>,
    /// Bootstrap endpoints: never pruned.
    pinned: BTreeSet<String>,
    peers: Mutex<HashMap<String, Link>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// The queue of one outbound stream, and a bell that cuts its reconnect backoff short.
#[derive(Debug)]
struct Link {
    queue: mpsc::Sender<GossipMessage>,
    wake: Arc<tokio::sync::Notify>,
    task: tokio::task::AbortHandle,
    /// When a member last named this endpoint as its own, or when the link was made.
    vouched: Instant,
    confirmed: bool,
}

impl Outbound {
    pub fn new(
        self_endpoint: String,
        dialer: Arc<Dialer>,
        local_ip: Option<IpAddr>,
        bootstrap: &[String],
    ) -> Self {
        Outbound {
            self_endpoint,
            dialer,
            local_ip,
            pinned: bootstrap.iter().cloned().collect(),
            peers: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// Starts a stream to `endpoint` unless there is one (or it is this peer, or the table is
    /// full).
    pub fn ensure(&self, endpoint: &str) {
        self.open(endpoint, false);
    }

    /// `endpoint` is the verified alive member's own: keeps (or starts) its stream, making
    /// room by closing the oldest link no member ever confirmed if the table is full.
    pub fn confirm(&self, endpoint: &str) {
        self.open(endpoint, true);
    }

    fn open(&self, endpoint: &str, confirmed: bool) {
        if endpoint == self.self_endpoint || !endpoint.contains(':') {
            return;
        }
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = peers.get_mut(endpoint) {
            if confirmed {
                link.vouched = now;
                link.confirmed = true;
            }
            return;
        }
        if peers.len() >= ENDPOINTS_MAX {
            let unconfirmed = peers
                .iter()
                .filter(|(e, l)| !l.confirmed && !self.pinned.contains(*e))
                .min_by_key(|(_, l)| l.vouched)
                .map(|(e, _)| e.clone());
            match unconfirmed {
                Some(e) if confirmed => close(&mut peers, &e),
                _ => return,
            }
        }
        let (queue, rx) = mpsc::channel(QUEUE_MAX);
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(connection(
            endpoint.to_owned(),
            self.dialer.clone(),
            self.local_ip,
            rx,
            wake.clone(),
        ));
        peers.insert(
            endpoint.to_owned(),
            Link {
                queue,
                wake,
                task: task.abort_handle(),
                vouched: now,
                confirmed,
            },
        );
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
    }

    /// Closes the links that are neither pinned nor in `keep` (the endpoints of alive
    /// members) and were not vouched for within `grace`; returns how many.
    pub fn prune(&self, keep: &HashSet<String>, grace: Duration) -> usize {
        let now = Instant::now();
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        let stale: Vec<String> = peers
            .iter()
            .filter(|(e, l)| {
                !self.pinned.contains(*e)
                    && !keep.contains(*e)
                    && now.saturating_duration_since(l.vouched) > grace
            })
            .map(|(e, _)| e.clone())
            .collect();
        for e in &stale {
            close(&mut peers, e);
        }
        stale.len()
    }

    /// Streams kept (connected or reconnecting).
    pub fn len(&self) -> usize {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `endpoint` was just heard from: if its stream waits to reconnect, try now.
    pub fn wake(&self, endpoint: &str) {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(link) = peers.get(endpoint) {
            link.wake.notify_one();
        }
    }

    /// Queues `message` for `endpoint`; false if there is no stream or its queue is full.
    pub fn send(&self, endpoint: &str, message: GossipMessage) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .get(endpoint)
            .is_some_and(|link| link.queue.try_send(message).is_ok())
    }

    /// Queues `message` for every endpoint; returns how many queues took it.
    pub fn send_all(&self, message: &GossipMessage) -> usize {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .values()
            .filter(|link| link.queue.try_send(message.clone()).is_ok())
            .count()
    }

    pub fn abort_all(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

fn close(peers: &mut HashMap<String, Link>, endpoint: &str) {
    if let Some(link) = peers.remove(endpoint) {
        link.task.abort();
        tracing::debug!(%endpoint, "gossip link closed");
    }
}

/// Keeps one stream to `endpoint` up, reconnecting with backoff, until the queue closes.
async fn connection(
    endpoint: String,
    dialer: Arc<Dialer>,
    local_ip: Option<IpAddr>,
    mut queue: mpsc::Receiver<GossipMessage>,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let started = Instant::now();
        match session(&endpoint, &dialer, local_ip, &mut queue).await {
            Ok(()) => return,
            Err(e) => tracing::debug!(%endpoint, error = %e, "gossip stream ended"),
        }
        if started.elapsed() > BACKOFF_MAX * 2 {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = wake.notified() => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// A client for `endpoint`'s gossip service over mutual TLS (dialled where the peer's
/// `address_overrides` say; the certificate is verified for `endpoint`'s host).
pub async fn connect(
    endpoint: &str,
    dialer: &Dialer,
    local_ip: Option<IpAddr>,
) -> Result<GossipClient<tonic::transport::Channel>, String> {
    let ep = dialer
        .endpoint(endpoint)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .local_address(local_ip)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5));
    let conn = ep.connect().await.map_err(|e| format!("connect: {e}"))?;
    Ok(GossipClient::new(conn)
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX))
}

/// One stream: forwards queued messages until the stream breaks (Err) or the queue closes.
async fn session(
    endpoint: &str,
    dialer: &Dialer,
    local_ip: Option<IpAddr>,
    queue: &mut mpsc::Receiver<GossipMessage>,
) -> Result<(), String> {
    let mut client = connect(endpoint, dialer, local_ip).await?;
    let (tx, rx) = mpsc::channel(16);
    let mut responses = client
        .gossip_stream(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("open stream: {s}"))?
        .into_inner();
    loop {
        tokio::select! {
            message = queue.recv() => match message {
                None => return Ok(()),
                Some(m) => tx.send(m).await.map_err(|_| "stream closed".to_owned())?,
            },
            response = responses.message() => match response {
                Ok(Some(_)) => {}
                Ok(None) => return Err("peer ended the stream".into()),
                Err(s) => return Err(s.to_string()),
            },
        }
    }
}

/// Token bucket for one inbound stream.
#[derive(Debug)]
struct Limiter {
    tokens: f64,
    last: Instant,
}

impl Limiter {
    fn new(now: Instant) -> Self {
        Limiter {
            tokens: INBOUND_BURST,
            last: now,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * INBOUND_RATE;
        self.tokens = (self.tokens + refill).min(INBOUND_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The gossip gRPC service.
#[derive(Debug, Clone)]
pub struct GossipService {
    pub(super) shared: Arc<Shared>,
}

type Responses = Pin<Box<dyn Stream<Item = Result<GossipMessage, Status>> + Send>>;

#[tonic::async_trait]
impl shared_proto::pb::peer::gossip_server::Gossip for GossipService {
    type GossipStreamStream = Responses;

    async fn gossip_stream(
        &self,
        request: Request<Streaming<GossipMessage>>,
    ) -> Result<Response<Responses>, Status> {
        let cert = request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
            .ok_or_else(|| Status::unauthenticated("gossip needs a client TLS certificate"))?;
        let sender = sha256(&cert);
        if self.shared.is_banned(&sender) {
            self.shared.metrics.gossip_drop("banned_sender");
            return Err(Status::permission_denied(
                "this sender sent refused blocks and is ignored for a while",
            ));
        }
        let shared = self.shared.clone();
        let inbound = request.into_inner();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            inbound_loop(shared, sender, inbound).await;
            let _ = done_tx.send(());
        });
        // Nothing is sent back on this stream (replies go out on our own outbound stream to
        // the sender's endpoint); it ends when the inbound side does.
        let closes = futures::stream::once(async move {
            let _ = done_rx.await;
        })
        .filter_map(|()| async { None });
        Ok(Response::new(Box::pin(closes)))
    }
}

async fn inbound_loop(shared: Arc<Shared>, sender: Hash, mut inbound: Streaming<GossipMessage>) {
    let mut limiter = Limiter::new(Instant::now());
    // Channel -> the sender's endpoint and identity, once it proved who it is on that channel.
    let mut authenticated: HashMap<String, (String, Hash)> = HashMap::new();
    let mut announced: HashSet<String> = HashSet::new();
    loop {
        let message = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(status) => {
                shared.metrics.gossip_drop("stream_error");
                tracing::debug!(error = %status, "gossip inbound stream failed");
                return;
            }
        };
        if shared.is_banned(&sender) {
            shared.metrics.gossip_drop("banned_sender");
            return;
        }
        if !limiter.take(Instant::now()) {
            shared.metrics.gossip_drop("rate_limited");
            continue;
        }
        let Some(channel) = shared.channel(&message.channel_id) else {
            shared.metrics.gossip_drop("unknown_channel");
            continue;
        };
        let content = match message.content {
            Some(Content::Alive(a)) => {
                let verified = alive::verify_alive(
                    &channel.committer.config(),
                    &shared.msp_id,
                    &a,
                    &sender,
                    shared.now_unix(),
                );
                match verified {
                    Ok(v) => {
                        let endpoint = v.info.endpoint.clone();
                        shared.outbound.confirm(&endpoint);
                        if announced.insert(endpoint.clone()) {
                            shared.outbound.wake(&endpoint);
                        }
                        for known in v.info.known.iter().take(alive::KNOWN_MAX) {
                            shared.outbound.ensure(known);
                        }
                        channel.on_alive(&shared, &v);
                        authenticated.insert(message.channel_id.clone(), (endpoint, v.identity_id));
                    }
                    Err(e) => {
                        shared.metrics.gossip_drop("bad_alive");
                        tracing::debug!(error = %e, "gossip alive message refused");
                    }
                }
                continue;
            }
            Some(other) => other,
            None => {
                shared.metrics.gossip_drop("empty");
                continue;
            }
        };
        let Some((from, identity)) = authenticated.get(&message.channel_id) else {
            shared.metrics.gossip_drop("unauthenticated");
            continue;
        };
        match content {
            Content::Block(block) => channel.on_block(&shared, sender, block, Source::Push),
            Content::StateRequest(request) => channel.on_state_request(&shared, from, request),
            Content::StateResponse(response) => {
                channel
                    .on_state_response(&shared, *identity, sender, response)
                    .await
            }
            Content::Alive(_) => {}
        }
    }
}
