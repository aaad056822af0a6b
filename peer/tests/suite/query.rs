//! The peer's Query service: who may read blocks and transactions, and how long CommitStatus
//! may hold a request. Real nodes over TLS; clients built by hand so each test controls the
//! client certificate and the signature.

use crate::common;

use std::time::Duration;

use common::workload::*;
use common::*;
use prost::Message as _;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::Payload;
use shared_proto::pb::peer::query_client::QueryClient;
use shared_proto::pb::peer::query_request::Query;
use shared_proto::pb::peer::query_server::QueryServer;
use shared_proto::pb::peer::BlockByNumberRequest;
use shared_proto::pb::peer::QueryRequest;
use shared_proto::pb::peer::TransactionByIdRequest;
use shared_proto::pb::tx::TxValidationCode;
use shared_proto::tls::TlsMaterial;
use tonic::transport::Certificate;
use tonic::transport::Channel;
use tonic::transport::ClientTlsConfig;
use tonic::transport::Endpoint;
use tonic::transport::Identity;
use tonic::Code;

use peer::query;
use peer::query::CommitWaits;
use peer::services::PeerService;

fn net_with_outsider() -> TestNet {
    TestNet::start_with(Topology {
        outsider_org: true,
        ..Default::default()
    })
    .unwrap()
}

/// A client of `addr` trusting every TLS CA of the network, presenting the TLS certificate of
/// `user` (msp, name), or none.
fn client_of(net: &TestNet, addr: &str, user: Option<(&str, &str)>) -> QueryClient<Channel> {
    let mut ca = Vec::new();
    for path in &net.generated.tls_ca_certs {
        ca.extend(std::fs::read(path).unwrap());
    }
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    if let Some((msp, name)) = user {
        let u = net.generated.user(msp, name).unwrap();
        tls = tls.identity(Identity::from_pem(
            std::fs::read(&u.tls_cert).unwrap(),
            std::fs::read(&u.tls_key).unwrap(),
        ));
    }
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .connect_lazy();
    QueryClient::new(channel)
}

fn client(net: &TestNet, user: Option<(&str, &str)>) -> QueryClient<Channel> {
    client_of(net, &net.peer(0).service_addr.to_string(), user)
}

fn identity(net: &TestNet, msp: &str, name: &str) -> SigningIdentity {
    let u = net.generated.user(msp, name).unwrap();
    SigningIdentity::from_pem_files(msp, &u.cert, &u.key).unwrap()
}

fn block_request(signer: Option<&SigningIdentity>, number: u64) -> BlockByNumberRequest {
    let mut request = BlockByNumberRequest {
        channel_id: CHANNEL.into(),
        number,
        signed: None,
    };
    request.signed = signer.map(|s| {
        query::sign(
            s,
            CHANNEL,
            query::block_by_number(&request),
            query::now_unix_ms(),
        )
    });
    request
}

fn tx_request(
    signer: &SigningIdentity,
    tx_id: &str,
    commit_status: bool,
) -> TransactionByIdRequest {
    let mut request = TransactionByIdRequest {
        channel_id: CHANNEL.into(),
        tx_id: tx_id.into(),
        signed: None,
    };
    let asked = if commit_status {
        query::commit_status(&request)
    } else {
        query::transaction_by_id(&request)
    };
    request.signed = Some(query::sign(signer, CHANNEL, asked, query::now_unix_ms()));
    request
}

async fn get_block(
    c: &mut QueryClient<Channel>,
    r: BlockByNumberRequest,
) -> Result<u64, tonic::Status> {
    c.get_block_by_number(r)
        .await
        .map(|b| b.into_inner().header.map_or(u64::MAX, |h| h.number))
}

#[test]
fn query_without_client_certificate_is_refused_at_the_tls_handshake() {
    let net = net_with_outsider();
    let rt = runtime();
    rt.block_on(async {
        let member = identity(&net, "Org1MSP", "User1");
        // Even a request signed by a member: the service port requires a client certificate,
        // so the server ends the handshake and the call fails before anything is decoded.
        let err = get_block(&mut client(&net, None), block_request(Some(&member), 0))
            .await
            .unwrap_err();
        // What happens: with TLS 1.3 the client finishes its side of the handshake, the server
        // refuses it for the missing certificate and closes the connection, and the client's
        // first write or read fails. tonic reports a transport error (seen: UNKNOWN "transport
        // error" with a broken pipe, or CANCELLED "connection closed", depending on which side
        // of the connection notices first), never a status sent by the Query service.
        assert!(
            matches!(
                err.code(),
                Code::Unknown | Code::Unavailable | Code::Cancelled
            ),
            "{err}"
        );
        let source = std::error::Error::source(&err).expect("a transport error");
        assert!(
            source.downcast_ref::<tonic::transport::Error>().is_some(),
            "refused below gRPC: {err:?}"
        );
        // The node keeps serving clients that present one.
        let ok = get_block(
            &mut client(&net, Some(("Org1MSP", "User1"))),
            block_request(Some(&member), 0),
        )
        .await
        .unwrap();
        assert_eq!(ok, 0);
    });
}

#[test]
fn query_from_org_outside_the_channel_is_permission_denied() {
    let net = net_with_outsider();
    let rt = runtime();
    rt.block_on(async {
        let outsider = identity(&net, OUTSIDER_MSP, "User1");
        let mut c = client(&net, Some((OUTSIDER_MSP, "User1")));
        let err = get_block(&mut c, block_request(Some(&outsider), 0))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        assert!(err.message().contains(OUTSIDER_MSP), "{err}");
        let err = c
            .get_transaction_by_id(tx_request(&outsider, "abc", false))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        let err = c
            .commit_status(tx_request(&outsider, "abc", true))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
    });
}

#[test]
fn unsigned_or_tampered_query_is_refused_with_a_typed_status() {
    let net = net_with_outsider();
    let rt = runtime();
    rt.block_on(async {
        let member = identity(&net, "Org1MSP", "User1");
        let mut c = client(&net, Some(("Org1MSP", "User1")));
        // Unsigned, from a client with a good TLS certificate.
        let err = get_block(&mut c, block_request(None, 0)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        // The unsigned fields changed after signing.
        let mut moved = block_request(Some(&member), 0);
        moved.number = 1;
        let err = get_block(&mut c, moved).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("differ"), "{err}");
        // A signature for one call used for another.
        let mut other_call = tx_request(&member, "abc", true);
        let err = c
            .get_transaction_by_id(other_call.clone())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("CommitStatus"), "{err}");
        // The signed payload rewritten (block 1 instead of 0), signature kept.
        let mut tampered = block_request(Some(&member), 1);
        let env = tampered.signed.as_mut().unwrap();
        let mut payload = Payload::decode(env.payload.as_slice()).unwrap();
        let mut data = QueryRequest::decode(payload.data.as_slice()).unwrap();
        let mut signed_for_0 = block_request(Some(&member), 0);
        if let Some(Query::BlockByNumber(b)) = data.query.as_mut() {
            b.number = 1;
        }
        payload.data = data.encode_to_vec();
        let resigned = Envelope {
            payload: payload.encode_to_vec(),
            signature: signed_for_0.signed.take().unwrap().signature,
        };
        *env = resigned;
        let err = get_block(&mut c, tampered).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err}");
        assert!(err.message().contains("signature"), "{err}");
        // A signed request from long ago (a replay).
        let mut old = BlockByNumberRequest {
            channel_id: CHANNEL.into(),
            number: 0,
            signed: None,
        };
        let an_hour_ago = query::now_unix_ms() - 3_600_000;
        old.signed = Some(query::sign(
            &member,
            CHANNEL,
            query::block_by_number(&old),
            an_hour_ago,
        ));
        let err = get_block(&mut c, old).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err}");
        assert!(err.message().contains("timestamp"), "{err}");
        // A channel this peer does not have.
        other_call.channel_id = "nochannel".into();
        let err = c.commit_status(other_call).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err}");
        // After all that, a proper request is served.
        assert_eq!(
            get_block(&mut c, block_request(Some(&member), 0))
                .await
                .unwrap(),
            0
        );
    });
}

#[test]
fn member_gets_its_block_and_transaction_through_the_sdk() {
    let net = net_with_outsider();
    let rt = runtime();
    rt.block_on(async {
        let gw = net.gateway("Org1MSP");
        let r = gw.submit("kv", "put", &[arg("k"), arg("v")]).await.unwrap();
        assert_eq!(r.code, TxValidationCode::Valid);
        let block = gw.block_by_number(r.block_number).await.unwrap();
        assert_eq!(block.header.unwrap().number, r.block_number);
        let tx = gw.transaction_by_id(&r.tx_id).await.unwrap();
        assert_eq!(tx.block_number, r.block_number);
        assert_eq!(tx.validation_code, TxValidationCode::Valid as i32);
        let missing = gw.block_by_number(1_000_000).await.unwrap_err();
        assert!(
            matches!(&missing, peer::sdk::SdkError::Query(s) if s.code() == Code::NotFound),
            "{missing}"
        );
    });
}

#[test]
fn commit_status_waits_are_bounded_in_number_and_time() {
    let net = net_with_outsider();
    let rt = runtime();
    rt.block_on(async {
        let gw = net.gateway("Org1MSP");
        let committed = gw.submit("kv", "put", &[arg("k"), arg("v")]).await.unwrap();
        // The node's Query service with 2 places and a 2 s wait, on a server of its own.
        let waits = CommitWaits::new(2, Duration::from_secs(2));
        let service = PeerService::with_commit_waits(net.peer(0).registry.clone(), waits.clone());
        let tls = TlsMaterial::load(&net.peer_configs[0].tls).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(QueryServer::new(service))
                .serve_with_incoming_shutdown(
                    shared_proto::tls_server::incoming_with_own_roots(listener, &tls, true)
                        .unwrap(),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        let member = identity(&net, "Org1MSP", "User1");
        let c = client_of(&net, &addr, Some(("Org1MSP", "User1")));
        let waiting: Vec<_> = ["never1", "never2"]
            .iter()
            .map(|id| {
                let (mut c, r) = (c.clone(), tx_request(&member, id, true));
                tokio::spawn(async move { c.commit_status(r).await.map(|_| ()) })
            })
            .collect();
        wait_until("two waits held", WAIT, || waits.waiting() == 2).await;
        let err = c
            .clone()
            .commit_status(tx_request(&member, "never3", true))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        // The server ends the waits at its own deadline (the client's is 60 s).
        for w in waiting {
            let err = w.await.unwrap().unwrap_err();
            assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        }
        assert_eq!(waits.waiting(), 0, "a place leaked");
        let r = c
            .clone()
            .commit_status(tx_request(&member, &committed.tx_id, true))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.block_number, committed.block_number);
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    });
}

/// The service port decodes at most the largest block of the peer's channels (10 MiB of
/// envelopes + framing here), not a fixed 128 MiB: a larger request is refused by the
/// transport before its signature is even looked at, and the peer keeps serving.
#[test]
fn request_larger_than_the_channels_block_limit_is_out_of_range_and_the_peer_keeps_serving() {
    let net = net_with_outsider();
    let rt = runtime();
    rt.block_on(async {
        let member = identity(&net, "Org1MSP", "User1");
        let mut c = client(&net, Some(("Org1MSP", "User1")));
        let mut huge = block_request(Some(&member), 0);
        if let Some(signed) = huge.signed.as_mut() {
            signed.payload = vec![0u8; 20 * 1024 * 1024];
        }
        let err = get_block(&mut c, huge).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{:?}: {}",
            err.code(),
            err.message()
        );
        assert_eq!(
            get_block(&mut c, block_request(Some(&member), 0))
                .await
                .unwrap(),
            0
        );
    });
}
