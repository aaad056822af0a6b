//! An Admin service for transport tests: `ClusterStatus` answers with the number of client
//! certificates the TLS session presented (in `node_id`); every other call is unimplemented.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::pb::common::Envelope;
use crate::pb::orderer::admin_server::Admin;
use crate::pb::orderer::ChannelInfo;
use crate::pb::orderer::ChannelList;
use crate::pb::orderer::ClusterStatusResponse;

#[derive(Debug)]
pub(crate) struct Answer;

type Answered<T> = Result<tonic::Response<T>, tonic::Status>;

#[tonic::async_trait]
impl Admin for Answer {
    async fn cluster_status(
        &self,
        request: tonic::Request<Envelope>,
    ) -> Answered<ClusterStatusResponse> {
        // Mutual TLS: the client's certificate must have reached the service.
        let client_certs = request.peer_certs().map_or(0, |c| c.len());
        Ok(tonic::Response::new(ClusterStatusResponse {
            node_id: client_certs as u64,
            ..Default::default()
        }))
    }

    async fn list_channels(&self, _: tonic::Request<Envelope>) -> Answered<ChannelList> {
        Err(tonic::Status::unimplemented("test"))
    }

    async fn join_channel(&self, _: tonic::Request<Envelope>) -> Answered<ChannelInfo> {
        Err(tonic::Status::unimplemented("test"))
    }

    async fn remove_channel(&self, _: tonic::Request<Envelope>) -> Answered<ChannelInfo> {
        Err(tonic::Status::unimplemented("test"))
    }
}
