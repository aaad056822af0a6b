//! The contract side of chaincode as a service, in Rust: serves any [`Chaincode`] (e.g.
//! [`TokenChaincode`](super::token::TokenChaincode)) as a gRPC `Chaincode` service that a
//! peer's [`ExternalChaincode`](super::external::ExternalChaincode) drives.
//!
//! Per `Invoke` stream: the first message must be `invoke`; the contract then runs with a
//! [`RemoteStub`] whose every state access is a request on the response stream answered by
//! the peer's `StateResult` on the request stream (strictly one outstanding request, so
//! answers match requests by order); finally `completed` carries the payload (status 200) or
//! the error's status and message.
//!
//! Promises: a contract that panics answers `completed` with status 500 ("chaincode
//! panicked"); a contract still running when the peer goes away or when the server's time
//! bound passes is aborted (at its next await point); messages are bounded by
//! [`MAX_MESSAGE_BYTES`]. Plain TCP (no TLS) in this iteration: serve on a trusted network.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use shared_proto::pb::chaincode::chaincode_message::Content;
use shared_proto::pb::chaincode::chaincode_server::{self, ChaincodeServer as GrpcServer};
use shared_proto::pb::chaincode::{
    ChaincodeMessage, Completed, DelState, GetRange, GetState, InvokeRequest, PutState, StateResult,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

use super::external::MAX_MESSAGE_BYTES;
use super::{Chaincode, ChaincodeError, Stub};

/// Default bound on one invocation, server side.
pub const DEFAULT_INVOKE_TIMEOUT: Duration = Duration::from_secs(300);

/// Serves one contract over the `chaincode.Chaincode` gRPC service.
#[derive(Clone)]
pub struct ChaincodeServer {
    chaincode: Arc<dyn Chaincode>,
    timeout: Duration,
}

impl fmt::Debug for ChaincodeServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChaincodeServer")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ChaincodeServer {
    pub fn new(chaincode: Arc<dyn Chaincode>) -> Self {
        ChaincodeServer {
            chaincode,
            timeout: DEFAULT_INVOKE_TIMEOUT,
        }
    }

    /// Bounds each invocation to `timeout` (default [`DEFAULT_INVOKE_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The tonic service, with message sizes bounded by [`MAX_MESSAGE_BYTES`].
    pub fn into_service(self) -> GrpcServer<Self> {
        GrpcServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// Serves `chaincode` on `listener` (plain TCP) until `shutdown` completes.
pub async fn serve<F>(
    listener: tokio::net::TcpListener,
    chaincode: Arc<dyn Chaincode>,
    shutdown: F,
) -> Result<(), tonic::transport::Error>
where
    F: Future<Output = ()>,
{
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(ChaincodeServer::new(chaincode).into_service())
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
}

type Outbound = mpsc::Sender<Result<ChaincodeMessage, Status>>;

#[tonic::async_trait]
impl chaincode_server::Chaincode for ChaincodeServer {
    type InvokeStream = ReceiverStream<Result<ChaincodeMessage, Status>>;

    async fn invoke(
        &self,
        request: Request<Streaming<ChaincodeMessage>>,
    ) -> Result<Response<Self::InvokeStream>, Status> {
        let inbound = request.into_inner();
        let (out, rx) = mpsc::channel(4);
        tokio::spawn(run_invocation(
            self.chaincode.clone(),
            self.timeout,
            inbound,
            out,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Reads the `invoke`, runs the contract in its own task, sends `completed`.
async fn run_invocation(
    chaincode: Arc<dyn Chaincode>,
    timeout: Duration,
    mut inbound: Streaming<ChaincodeMessage>,
    out: Outbound,
) {
    let invoke = match inbound.message().await {
        Ok(Some(ChaincodeMessage {
            content: Some(Content::Invoke(invoke)),
        })) => invoke,
        Ok(_) => {
            let status = Status::invalid_argument("the first message must be invoke");
            let _ = out.send(Err(status)).await;
            return;
        }
        Err(_) => return,
    };
    let InvokeRequest {
        channel_id,
        tx_id,
        function,
        args,
        creator_msp_id,
        creator: _,
    } = invoke;
    let mut stub = RemoteStub {
        inbound,
        out: out.clone(),
        channel_id,
        tx_id,
        creator_msp_id,
    };
    let mut task = tokio::spawn(async move { chaincode.invoke(&mut stub, &function, &args).await });
    let result = tokio::select! {
        joined = &mut task => match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(ChaincodeError::failed("chaincode panicked")),
            Err(_) => Err(ChaincodeError::failed("chaincode task was cancelled")),
        },
        () = out.closed() => {
            task.abort();
            return;
        }
        () = tokio::time::sleep(timeout) => {
            task.abort();
            Err(ChaincodeError::Timeout(timeout))
        }
    };
    let completed = match result {
        Ok(payload) => Completed {
            status: 200,
            message: String::new(),
            payload,
        },
        Err(e) => Completed {
            status: e.status(),
            message: e.to_string(),
            payload: Vec::new(),
        },
    };
    let _ = out
        .send(Ok(ChaincodeMessage {
            content: Some(Content::Completed(completed)),
        }))
        .await;
}

/// A [`Stub`] whose state lives in the peer: each call is one request/answer exchange on
/// the invocation's stream. Errors the peer reports become [`ChaincodeError::State`]; a
/// vanished peer becomes [`ChaincodeError::Unavailable`].
pub struct RemoteStub {
    inbound: Streaming<ChaincodeMessage>,
    out: Outbound,
    channel_id: String,
    tx_id: String,
    creator_msp_id: String,
}

impl fmt::Debug for RemoteStub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStub")
            .field("channel_id", &self.channel_id)
            .field("tx_id", &self.tx_id)
            .field("creator_msp_id", &self.creator_msp_id)
            .finish_non_exhaustive()
    }
}

impl RemoteStub {
    async fn request(&mut self, content: Content) -> Result<StateResult, ChaincodeError> {
        let gone = || ChaincodeError::Unavailable("the peer closed the stream".to_owned());
        self.out
            .send(Ok(ChaincodeMessage {
                content: Some(content),
            }))
            .await
            .map_err(|_| gone())?;
        match self.inbound.message().await {
            Ok(Some(ChaincodeMessage {
                content: Some(Content::StateResult(result)),
            })) => {
                if result.error.is_empty() {
                    Ok(result)
                } else {
                    Err(ChaincodeError::State(result.error))
                }
            }
            Ok(Some(_)) => Err(ChaincodeError::failed(
                "chaincode protocol violation: expected state_result",
            )),
            Ok(None) => Err(gone()),
            Err(s) => Err(ChaincodeError::Unavailable(s.message().to_owned())),
        }
    }
}

#[tonic::async_trait]
impl Stub for RemoteStub {
    async fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ChaincodeError> {
        let r = self
            .request(Content::GetState(GetState {
                key: key.to_owned(),
            }))
            .await?;
        Ok(r.found.then_some(r.value))
    }

    async fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), ChaincodeError> {
        self.request(Content::PutState(PutState {
            key: key.to_owned(),
            value,
        }))
        .await
        .map(drop)
    }

    async fn delete(&mut self, key: &str) -> Result<(), ChaincodeError> {
        self.request(Content::DelState(DelState {
            key: key.to_owned(),
        }))
        .await
        .map(drop)
    }

    async fn range(
        &mut self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ChaincodeError> {
        let r = self
            .request(Content::GetRange(GetRange {
                start_key: start.to_owned(),
                end_key: end.to_owned(),
            }))
            .await?;
        Ok(r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect())
    }

    fn tx_id(&self) -> &str {
        &self.tx_id
    }

    fn creator_msp_id(&self) -> &str {
        &self.creator_msp_id
    }

    fn channel_id(&self) -> &str {
        &self.channel_id
    }
}
