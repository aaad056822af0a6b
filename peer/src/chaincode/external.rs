//! External chaincode ("chaincode as a service"): the peer's side of `chaincode.proto`.
//!
//! An [`ExternalChaincode`] is a [`Chaincode`] whose contract runs in another process (any
//! language) as a gRPC server. Each invocation opens one `Chaincode.Invoke` stream, sends an
//! `InvokeRequest`, then answers every `get_state` / `put_state` / `del_state` / `get_range`
//! from the contract by calling the [`Stub`] (so the simulator records the reads and writes)
//! and replying with a `StateResult` (failures in its `error`), until the contract sends
//! `completed`. The contract never touches state directly.
//!
//! Promises:
//! - `completed` with status 200 → `Ok(payload)`; 4xx → [`ChaincodeError::BadRequest`];
//!   other statuses → [`ChaincodeError::Failed`] (see [`ChaincodeError::from_status`]).
//! - An unreachable server, a gRPC error, or a stream that ends before `completed` →
//!   [`ChaincodeError::Unavailable`]; an unexpected message → [`ChaincodeError::Failed`].
//! - Bounded: the whole invocation by the timeout ([`ChaincodeError::Timeout`]), the number of
//!   state requests by [`MAX_STATE_REQUESTS`], each message by [`MAX_MESSAGE_BYTES`] (a range
//!   result that would not fit is answered with an error instead).
//!
//! The connection is plain TCP (no TLS) in this iteration: run contracts on a trusted network
//! (same host or pod). The `creator` field of `InvokeRequest` is left empty; contracts get the
//! creator's MSP id.

use std::fmt;
use std::time::Duration;

use prost::Message;
use shared_proto::pb::chaincode::chaincode_client::ChaincodeClient;
use shared_proto::pb::chaincode::chaincode_message::Content;
use shared_proto::pb::chaincode::{
    ChaincodeMessage, Completed, InvokeRequest, KeyValue, StateResult,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use super::{Chaincode, ChaincodeError, Stub};

/// Largest gRPC message either side sends or accepts (16 MiB).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Most state requests one invocation may make.
pub const MAX_STATE_REQUESTS: usize = 100_000;
/// Longest wait for a TCP connection to the contract.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A contract reached over gRPC.
#[derive(Clone)]
pub struct ExternalChaincode {
    client: ChaincodeClient<Channel>,
    endpoint: String,
    timeout: Duration,
}

impl fmt::Debug for ExternalChaincode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalChaincode")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ExternalChaincode {
    /// A contract at `endpoint` (`host:port` or `http://host:port`), connected lazily on
    /// first use (and reconnected after failures); each invocation is bounded by `timeout`.
    /// Must be called within a tokio runtime. Fails only on a malformed endpoint.
    pub fn connect_lazy(endpoint: &str, timeout: Duration) -> Result<Self, ChaincodeError> {
        let uri = if endpoint.contains("://") {
            endpoint.to_owned()
        } else {
            format!("http://{endpoint}")
        };
        let channel = Endpoint::from_shared(uri)
            .map_err(|e| {
                ChaincodeError::Unavailable(format!("bad chaincode endpoint {endpoint:?}: {e}"))
            })?
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .tcp_nodelay(true)
            .connect_lazy();
        Ok(Self::new(channel, endpoint, timeout))
    }

    /// A contract over an existing channel; `endpoint` is only for messages.
    pub fn new(channel: Channel, endpoint: &str, timeout: Duration) -> Self {
        let client = ChaincodeClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        ExternalChaincode {
            client,
            endpoint: endpoint.to_owned(),
            timeout,
        }
    }

    async fn drive(
        &self,
        stub: &mut dyn Stub,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, ChaincodeError> {
        let unavailable =
            |what: String| ChaincodeError::Unavailable(format!("{}: {what}", self.endpoint));
        let (out, rx) = mpsc::channel::<ChaincodeMessage>(4);
        let invoke = InvokeRequest {
            channel_id: stub.channel_id().to_owned(),
            tx_id: stub.tx_id().to_owned(),
            function: function.to_owned(),
            args: args.to_vec(),
            creator_msp_id: stub.creator_msp_id().to_owned(),
            creator: Vec::new(),
        };
        out.send(message(Content::Invoke(invoke)))
            .await
            .map_err(|_| unavailable("request stream closed".to_owned()))?;
        let mut client = self.client.clone();
        let mut inbound = client
            .invoke(ReceiverStream::new(rx))
            .await
            .map_err(|s| unavailable(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let mut requests = 0usize;
        loop {
            let content = match inbound.message().await {
                Ok(Some(msg)) => msg.content,
                Ok(None) => return Err(unavailable("stream ended before completed".to_owned())),
                Err(s) => return Err(unavailable(format!("{:?}: {}", s.code(), s.message()))),
            };
            let result = match content {
                Some(Content::Completed(Completed {
                    status,
                    message,
                    payload,
                })) => {
                    return if status == 200 {
                        Ok(payload)
                    } else {
                        Err(ChaincodeError::from_status(status, message))
                    };
                }
                Some(
                    request @ (Content::GetState(_)
                    | Content::PutState(_)
                    | Content::DelState(_)
                    | Content::GetRange(_)),
                ) => {
                    requests += 1;
                    if requests > MAX_STATE_REQUESTS {
                        return Err(ChaincodeError::Limit(format!(
                            "more than {MAX_STATE_REQUESTS} state requests in one invocation"
                        )));
                    }
                    answer(stub, request).await
                }
                Some(Content::Invoke(_) | Content::StateResult(_)) | None => {
                    return Err(ChaincodeError::failed(
                        "chaincode protocol violation: expected a state request or completed",
                    ));
                }
            };
            out.send(message(Content::StateResult(result)))
                .await
                .map_err(|_| unavailable("request stream closed".to_owned()))?;
        }
    }
}

#[tonic::async_trait]
impl Chaincode for ExternalChaincode {
    async fn invoke(
        &self,
        stub: &mut dyn Stub,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, ChaincodeError> {
        match tokio::time::timeout(self.timeout, self.drive(stub, function, args)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(ChaincodeError::Timeout(self.timeout)),
        }
    }
}

fn message(content: Content) -> ChaincodeMessage {
    ChaincodeMessage {
        content: Some(content),
    }
}

/// Carries out one state request on the stub; failures go into `StateResult.error`.
async fn answer(stub: &mut dyn Stub, request: Content) -> StateResult {
    let failed = |e: ChaincodeError| StateResult {
        error: e.to_string(),
        ..StateResult::default()
    };
    match request {
        Content::GetState(g) => match stub.get(&g.key).await {
            Ok(Some(value)) => StateResult {
                found: true,
                value,
                ..StateResult::default()
            },
            Ok(None) => StateResult::default(),
            Err(e) => failed(e),
        },
        Content::PutState(p) => match stub.put(&p.key, p.value).await {
            Ok(()) => StateResult::default(),
            Err(e) => failed(e),
        },
        Content::DelState(d) => match stub.delete(&d.key).await {
            Ok(()) => StateResult::default(),
            Err(e) => failed(e),
        },
        Content::GetRange(r) => match stub.range(&r.start_key, &r.end_key).await {
            Ok(kvs) => {
                let result = StateResult {
                    kvs: kvs
                        .into_iter()
                        .map(|(key, value)| KeyValue { key, value })
                        .collect(),
                    ..StateResult::default()
                };
                // Leave room for the message framing around the result.
                if result.encoded_len() > MAX_MESSAGE_BYTES - 1024 {
                    failed(ChaincodeError::Limit(format!(
                        "range result larger than {MAX_MESSAGE_BYTES} bytes"
                    )))
                } else {
                    result
                }
            }
            Err(e) => failed(e),
        },
        _ => failed(ChaincodeError::failed("not a state request")),
    }
}
