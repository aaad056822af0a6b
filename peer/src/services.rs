//! gRPC services of the peer: Endorser, Deliver (events) and Query. Handlers translate; the
//! work happens in endorser, events, query (authorisation) and ledger.

use std::sync::Arc;

use shared_proto::block;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::peer::deliver_server::Deliver;
use shared_proto::pb::peer::endorser_server::Endorser;
use shared_proto::pb::peer::query_server::Query;
use shared_proto::pb::peer::BlockByNumberRequest;
use shared_proto::pb::peer::CommitStatusResponse;
use shared_proto::pb::peer::ProcessedTransaction;
use shared_proto::pb::peer::TransactionByIdRequest;
use shared_proto::pb::tx::ProposalResponse;
use shared_proto::pb::tx::SignedProposal;
use tonic::Request;
use tonic::Response;
use tonic::Status;
use tonic::Streaming;

use crate::channels::Registry;
use crate::endorser;
use crate::events;
use crate::query;
use crate::query::CommitWaits;

/// Endorser, Deliver and Query over one registry.
#[derive(Debug, Clone)]
pub struct PeerService {
    pub registry: Arc<Registry>,
    commit_waits: CommitWaits,
}

impl PeerService {
    pub fn new(registry: Arc<Registry>) -> Self {
        Self::with_commit_waits(registry, CommitWaits::default())
    }

    /// With other CommitStatus bounds than [`query::COMMIT_WAITS_MAX`] /
    /// [`query::COMMIT_WAIT_MAX`] (tests).
    pub fn with_commit_waits(registry: Arc<Registry>, commit_waits: CommitWaits) -> Self {
        PeerService {
            registry,
            commit_waits,
        }
    }
}

#[tonic::async_trait]
impl Endorser for PeerService {
    async fn process_proposal(
        &self,
        request: Request<SignedProposal>,
    ) -> Result<Response<ProposalResponse>, Status> {
        endorser::process(&self.registry, request.into_inner(), true)
            .await
            .map(Response::new)
            .map_err(endorser::EndorseError::into_status)
    }
}

#[tonic::async_trait]
impl Deliver for PeerService {
    type DeliverStream = events::EventStream;

    async fn deliver(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        Ok(Response::new(events::serve_stream(
            self.registry.clone(),
            request.into_inner(),
            false,
        )))
    }

    type DeliverFilteredStream = events::EventStream;

    async fn deliver_filtered(
        &self,
        request: Request<Streaming<Envelope>>,
    ) -> Result<Response<Self::DeliverFilteredStream>, Status> {
        Ok(Response::new(events::serve_stream(
            self.registry.clone(),
            request.into_inner(),
            true,
        )))
    }
}

fn ledger_err(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("ledger: {e}"))
}

#[tonic::async_trait]
impl Query for PeerService {
    async fn evaluate(
        &self,
        request: Request<SignedProposal>,
    ) -> Result<Response<ProposalResponse>, Status> {
        endorser::process(&self.registry, request.into_inner(), false)
            .await
            .map(Response::new)
            .map_err(endorser::EndorseError::into_status)
    }

    async fn get_block_by_number(
        &self,
        request: Request<BlockByNumberRequest>,
    ) -> Result<Response<Block>, Status> {
        let req = request.into_inner();
        let channel = query::authorize(
            &self.registry,
            &req.channel_id,
            req.signed.as_ref(),
            &query::block_by_number(&req),
        )
        .map_err(query::QueryError::into_status)?;
        channel
            .ledger
            .block(req.number)
            .map_err(ledger_err)?
            .map(Response::new)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "block {} is not committed (height {})",
                    req.number,
                    channel.ledger.height()
                ))
            })
    }

    async fn get_transaction_by_id(
        &self,
        request: Request<TransactionByIdRequest>,
    ) -> Result<Response<ProcessedTransaction>, Status> {
        let req = request.into_inner();
        let channel = query::authorize(
            &self.registry,
            &req.channel_id,
            req.signed.as_ref(),
            &query::transaction_by_id(&req),
        )
        .map_err(query::QueryError::into_status)?;
        let record = channel
            .ledger
            .tx(&req.tx_id)
            .map_err(ledger_err)?
            .ok_or_else(|| Status::not_found(format!("tx {} is not committed", req.tx_id)))?;
        let block = channel
            .ledger
            .block(record.block_num)
            .map_err(ledger_err)?
            .ok_or_else(|| Status::internal("indexed block missing"))?;
        let envelope = block::tx_envelopes(&block)
            .get(record.tx_num as usize)
            .and_then(|bytes| prost::Message::decode(bytes.as_slice()).ok());
        Ok(Response::new(ProcessedTransaction {
            envelope,
            validation_code: record.code,
            block_number: record.block_num,
        }))
    }

    async fn commit_status(
        &self,
        request: Request<TransactionByIdRequest>,
    ) -> Result<Response<CommitStatusResponse>, Status> {
        let req = request.into_inner();
        let channel = query::authorize(
            &self.registry,
            &req.channel_id,
            req.signed.as_ref(),
            &query::commit_status(&req),
        )
        .map_err(query::QueryError::into_status)?;
        let _place = self
            .commit_waits
            .enter()
            .map_err(query::QueryError::into_status)?;
        let max_wait = self.commit_waits.max_wait;
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Registered before looking, so a commit between the look and the wait is not
            // missed; woken only by the commit of a block holding this tx id.
            let mut wait = channel.ledger.wait_tx(&req.tx_id);
            if let Some(r) = channel.ledger.tx(&req.tx_id).map_err(ledger_err)? {
                return Ok(Response::new(CommitStatusResponse {
                    validation_code: r.code,
                    block_number: r.block_num,
                }));
            }
            match tokio::time::timeout_at(deadline, wait.committed()).await {
                Ok(true) => {}
                Ok(false) => return Err(Status::unavailable("peer is shutting down")),
                Err(_) => {
                    return Err(Status::deadline_exceeded(format!(
                        "tx {} not committed within {max_wait:?}",
                        req.tx_id
                    )))
                }
            }
        }
    }
}
