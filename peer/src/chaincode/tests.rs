//! Tests of the sample contracts, panic/timeout isolation, the registry, and external
//! chaincode (shim server + gRPC client) against in-process execution.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::external::ExternalChaincode;
use super::kv::KvChaincode;
use super::mem_state::MemState;
use super::token::{balance_key, TokenChaincode};
use super::*;

fn sim_over(state: &Arc<MemState>, ns: &str) -> TxSimulator {
    TxSimulator::new(state.clone(), "ch", ns, "tx1", "Org1MSP")
}

fn args(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|s| s.as_bytes().to_vec()).collect()
}

/// Runs one call in a fresh simulation and returns its result and rwset.
async fn call(
    cc: &dyn Chaincode,
    state: &Arc<MemState>,
    function: &str,
    a: &[&str],
) -> (
    Result<Vec<u8>, ChaincodeError>,
    shared_proto::pb::tx::TxReadWriteSet,
) {
    let mut sim = sim_over(state, "cc");
    let result = execute(cc, &mut sim, function, &args(a)).await;
    (result, sim.into_rwset())
}

/// Applies a successful call's writes to the state at version (block, 0).
fn commit(state: &MemState, rwset: &shared_proto::pb::tx::TxReadWriteSet, block: u64) {
    for w in &rwset.ns_rwset[0].writes {
        assert!(!w.is_delete, "tests commit no deletes");
        state.set("cc", &w.key, &w.value, block, 0);
    }
}

#[tokio::test]
async fn kv_put_get_delete_range() {
    let state = Arc::new(MemState::new());
    let (r, rw) = call(&KvChaincode, &state, "put", &["k1", "v1"]).await;
    assert_eq!(r.unwrap(), b"");
    assert_eq!(rw.ns_rwset[0].writes[0].key, "k1");
    commit(&state, &rw, 1);
    state.set("cc", "k2", b"\xffv2", 2, 0);

    let (r, _) = call(&KvChaincode, &state, "get", &["k1"]).await;
    assert_eq!(r.unwrap(), b"v1");
    let (r, _) = call(&KvChaincode, &state, "get", &["nope"]).await;
    let err = r.unwrap_err();
    assert_eq!(
        (err.status(), err.to_string()),
        (400, "not found: nope".to_owned())
    );

    let (r, rw) = call(&KvChaincode, &state, "range", &["", ""]).await;
    let pairs: Vec<(String, String)> = serde_json::from_slice(&r.unwrap()).unwrap();
    assert_eq!(
        pairs,
        vec![
            ("k1".into(), "v1".into()),
            ("k2".into(), "\u{fffd}v2".into())
        ]
    );
    assert_eq!(rw.ns_rwset[0].range_queries_info[0].raw_reads.len(), 2);
    let (r, _) = call(&KvChaincode, &state, "range", &["k2", ""]).await;
    assert_eq!(r.unwrap(), "[[\"k2\",\"\u{fffd}v2\"]]".as_bytes());

    let (r, rw) = call(&KvChaincode, &state, "delete", &["k1"]).await;
    assert_eq!(r.unwrap(), b"");
    assert!(rw.ns_rwset[0].writes[0].is_delete);

    let (r, _) = call(&KvChaincode, &state, "get", &[]).await;
    assert_eq!(r.unwrap_err().status(), 400);
    let (r, _) = call(&KvChaincode, &state, "frobnicate", &[]).await;
    assert_eq!(
        r.unwrap_err(),
        ChaincodeError::UnknownFunction("frobnicate".into())
    );
}

#[tokio::test]
async fn token_mint_transfer_balance() {
    let state = Arc::new(MemState::new());
    let (r, rw) = call(&TokenChaincode, &state, "mint", &["alice", "100"]).await;
    assert_eq!(r.unwrap(), b"100");
    commit(&state, &rw, 1);
    let (r, rw) = call(&TokenChaincode, &state, "transfer", &["alice", "bob", "30"]).await;
    assert_eq!(r.unwrap(), b"");
    let ns = &rw.ns_rwset[0];
    let reads: Vec<_> = ns
        .reads
        .iter()
        .map(|r| (r.key.as_str(), r.version.is_some()))
        .collect();
    assert_eq!(reads, [("balance/alice", true), ("balance/bob", false)]);
    let writes: Vec<_> = ns
        .writes
        .iter()
        .map(|w| (w.key.as_str(), w.value.as_slice()))
        .collect();
    assert_eq!(
        writes,
        [("balance/alice", &b"70"[..]), ("balance/bob", &b"30"[..])]
    );
    commit(&state, &rw, 2);
    for (account, expect) in [("alice", "70"), ("bob", "30"), ("carol", "0")] {
        let (r, _) = call(&TokenChaincode, &state, "balance", &[account]).await;
        assert_eq!(r.unwrap(), expect.as_bytes(), "{account}");
    }
}

#[tokio::test]
async fn token_refuses_overdraft_bad_amounts_and_overflow() {
    let state = Arc::new(MemState::new());
    state.set("cc", &balance_key("alice"), b"10", 1, 0);
    state.set(
        "cc",
        &balance_key("max"),
        u64::MAX.to_string().as_bytes(),
        1,
        1,
    );

    let (r, _) = call(&TokenChaincode, &state, "transfer", &["alice", "bob", "11"]).await;
    let err = r.unwrap_err();
    assert_eq!(err.status(), 400);
    assert!(err.to_string().contains("insufficient funds"), "{err}");

    for bad in [
        "0",
        "-5",
        "abc",
        "",
        "+5",
        " 5",
        "1.5",
        "99999999999999999999999",
    ] {
        for (function, a) in [
            ("mint", vec!["alice", bad]),
            ("transfer", vec!["alice", "bob", bad]),
        ] {
            let (r, _) = call(&TokenChaincode, &state, function, &a).await;
            let err = r.unwrap_err();
            assert_eq!(err.status(), 400, "{function} {bad:?}");
            assert!(
                err.to_string().contains("argument amount"),
                "{function} {bad:?}: {err}"
            );
        }
    }
    let (r, _) = call(&TokenChaincode, &state, "mint", &["max", "1"]).await;
    let err = r.unwrap_err();
    assert!(
        err.to_string().contains("overflow") && err.status() == 400,
        "{err}"
    );
    let (r, _) = call(&TokenChaincode, &state, "transfer", &["alice", "max", "1"]).await;
    assert!(r.unwrap_err().to_string().contains("overflow"));

    let (r, _) = call(
        &TokenChaincode,
        &state,
        "transfer",
        &["alice", "alice", "1"],
    )
    .await;
    assert!(r.unwrap_err().to_string().contains("argument to"));
    let (r, _) = call(&TokenChaincode, &state, "mint", &["", "1"]).await;
    assert!(r.unwrap_err().to_string().contains("argument account"));
    let mut sim = sim_over(&state, "cc");
    let bad_utf8 = vec![b"alice".to_vec(), vec![0xff]];
    let err = execute(&TokenChaincode, &mut sim, "mint", &bad_utf8)
        .await
        .unwrap_err();
    assert!(err
        .to_string()
        .contains("argument amount is not valid UTF-8"));
    let (r, _) = call(&TokenChaincode, &state, "mint", &["alice"]).await;
    assert_eq!(r.unwrap_err().status(), 400);

    state.set("cc", &balance_key("bad"), b"lots", 1, 2);
    let (r, _) = call(&TokenChaincode, &state, "balance", &["bad"]).await;
    assert_eq!(r.unwrap_err().status(), 500);
}

struct Panicky;

#[tonic::async_trait]
impl Chaincode for Panicky {
    async fn invoke(
        &self,
        stub: &mut dyn Stub,
        function: &str,
        _args: &[Vec<u8>],
    ) -> Result<Vec<u8>, ChaincodeError> {
        stub.put("k", b"v".to_vec()).await?;
        match function {
            "panic" => panic!("boom"),
            "sleep" => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(Vec::new())
            }
            _ => Ok(b"fine".to_vec()),
        }
    }
}

#[tokio::test]
async fn invoke_isolated_turns_panics_and_timeouts_into_errors() {
    let state = Arc::new(MemState::new());
    let cc: Arc<dyn Chaincode> = Arc::new(Panicky);
    let short = Duration::from_millis(200);
    // Answers get a deadline a loaded box always meets; only the timeout case uses `short`.
    let patient = Duration::from_secs(30);

    let (sim, r) = invoke_isolated(
        cc.clone(),
        sim_over(&state, "cc"),
        "panic".into(),
        vec![],
        patient,
    )
    .await;
    let err = r.unwrap_err();
    assert_eq!(err.status(), 500);
    assert!(
        err.to_string().contains("chaincode panicked: boom"),
        "{err}"
    );
    assert_eq!(sim.tx_id(), "tx1");
    assert!(
        sim.into_rwset().ns_rwset[0].writes.is_empty(),
        "fresh simulator"
    );

    let (sim, r) = invoke_isolated(
        cc.clone(),
        sim_over(&state, "cc"),
        "sleep".into(),
        vec![],
        short,
    )
    .await;
    assert_eq!(r.unwrap_err(), ChaincodeError::Timeout(short));
    assert!(sim.into_rwset().ns_rwset[0].writes.is_empty());

    let (sim, r) = invoke_isolated(cc, sim_over(&state, "cc"), "ok".into(), vec![], patient).await;
    assert_eq!(r.unwrap(), b"fine");
    assert_eq!(
        sim.into_rwset().ns_rwset[0].writes.len(),
        1,
        "kept what it recorded"
    );
}

#[test]
fn registry_keeps_name_version_and_contract() {
    let registry = ChaincodeRegistry::new();
    assert!(registry.get("token").is_none());
    assert_eq!(
        registry.register("token", "1.0", Arc::new(TokenChaincode)),
        None
    );
    assert_eq!(registry.register("kv", "2", Arc::new(KvChaincode)), None);
    assert_eq!(
        registry.register("token", "1.1", Arc::new(TokenChaincode)),
        Some("1.0".to_owned())
    );
    let (version, _cc) = registry.get("token").unwrap();
    assert_eq!(version, "1.1");
    assert_eq!(registry.names(), ["kv", "token"]);
    assert!(format!("{registry:?}").contains("1.1"));
    let samples = ChaincodeRegistry::with_samples();
    assert_eq!(samples.names(), ["kv", "token"]);
    assert_eq!(samples.get("token").unwrap().0, SAMPLE_VERSION);
}

#[tokio::test]
async fn registry_installs_external_chaincodes_from_config() {
    let (endpoint, stop) = start_shim(Arc::new(TokenChaincode)).await;
    let registry = ChaincodeRegistry::with_samples();
    let config = shared_proto::node_config::ExternalChaincode {
        name: "token".into(),
        version: "2.0".into(),
        address: endpoint.trim_start_matches("http://").to_owned(),
    };
    registry
        .register_external(&[config], Duration::from_secs(10))
        .unwrap();
    let (version, cc) = registry.get("token").unwrap();
    assert_eq!(version, "2.0");
    let state = Arc::new(MemState::new());
    let (r, _) = call(cc.as_ref(), &state, "mint", &["alice", "5"]).await;
    assert_eq!(r.unwrap(), b"5");
    let _ = stop.send(());
}

#[test]
fn error_statuses() {
    assert_eq!(ChaincodeError::bad_request("x").status(), 400);
    assert_eq!(ChaincodeError::UnknownFunction("f".into()).status(), 400);
    assert_eq!(ChaincodeError::failed("x").status(), 500);
    assert_eq!(ChaincodeError::State("x".into()).status(), 500);
    assert_eq!(
        ChaincodeError::Timeout(Duration::from_secs(1)).status(),
        500
    );
    assert_eq!(ChaincodeError::Unavailable("x".into()).status(), 503);
    let e = ChaincodeError::from_status(404, "gone".into());
    assert_eq!((e.status(), e.to_string()), (400, "gone".to_owned()));
    assert_eq!(
        ChaincodeError::from_status(500, String::new()).to_string(),
        "chaincode returned status 500"
    );
}

/// Serves `cc` on an ephemeral port; returns its endpoint and a shutdown trigger.
async fn start_shim(cc: Arc<dyn Chaincode>) -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(shim::serve(listener, cc, async {
        let _ = stopped.await;
    }));
    (format!("http://{addr}"), stop)
}

#[tokio::test]
async fn external_token_matches_in_process() {
    let (endpoint, stop) = start_shim(Arc::new(TokenChaincode)).await;
    let external = ExternalChaincode::connect_lazy(&endpoint, Duration::from_secs(10)).unwrap();
    let state = Arc::new(MemState::new());
    state.set("cc", &balance_key("alice"), b"100", 3, 1);
    state.set("cc", &balance_key("bob"), b"5", 4, 0);
    let cases: &[(&str, &[&str])] = &[
        ("transfer", &["alice", "bob", "30"]),
        ("mint", &["carol", "7"]),
        ("balance", &["alice"]),
        ("transfer", &["alice", "bob", "101"]),
        ("transfer", &["alice", "bob", "zero"]),
        ("nope", &[]),
    ];
    for (function, a) in cases {
        let (local, local_rw) = call(&TokenChaincode, &state, function, a).await;
        let (remote, remote_rw) = call(&external, &state, function, a).await;
        match (&local, &remote) {
            (Ok(l), Ok(r)) => assert_eq!(l, r, "{function}"),
            (Err(l), Err(r)) => {
                assert_eq!(l.status(), r.status(), "{function}");
                assert_eq!(l.to_string(), r.to_string(), "{function}");
            }
            _ => panic!("{function}: local {local:?} remote {remote:?}"),
        }
        assert_eq!(local_rw, remote_rw, "{function}");
    }
    // A transfer's rwset is the real thing: two reads with versions, two writes.
    let (_, rw) = call(&external, &state, "transfer", &["alice", "bob", "1"]).await;
    assert_eq!(rw.ns_rwset[0].reads.len(), 2);
    assert_eq!(rw.ns_rwset[0].writes.len(), 2);

    // Range goes through the stream too.
    let (endpoint_kv, stop_kv) = start_shim(Arc::new(KvChaincode)).await;
    let kv = ExternalChaincode::connect_lazy(&endpoint_kv, Duration::from_secs(10)).unwrap();
    let (local, local_rw) = call(&KvChaincode, &state, "range", &["balance/", ""]).await;
    let (remote, remote_rw) = call(&kv, &state, "range", &["balance/", ""]).await;
    assert_eq!(local.unwrap(), remote.unwrap());
    assert_eq!(local_rw, remote_rw);
    assert_eq!(
        remote_rw.ns_rwset[0].range_queries_info[0].raw_reads.len(),
        2
    );
    let _ = stop.send(());
    let _ = stop_kv.send(());
}

#[tokio::test]
async fn external_panic_and_timeout() {
    let (endpoint, stop) = start_shim(Arc::new(Panicky)).await;
    let state = Arc::new(MemState::new());
    // A patient client for the answers (a loaded box may take longer than 500 ms to connect
    // and answer: CI saw "timed out" for the panic), an impatient one for the timeout.
    let external = ExternalChaincode::connect_lazy(&endpoint, Duration::from_secs(30)).unwrap();
    let impatient = ExternalChaincode::connect_lazy(&endpoint, Duration::from_millis(500)).unwrap();
    let (r, _) = call(&external, &state, "panic", &[]).await;
    let err = r.unwrap_err();
    assert_eq!(
        (err.status(), err.to_string()),
        (500, "chaincode panicked".to_owned())
    );
    let (r, _) = call(&impatient, &state, "sleep", &[]).await;
    assert_eq!(
        r.unwrap_err(),
        ChaincodeError::Timeout(Duration::from_millis(500))
    );
    let (r, rw) = call(&external, &state, "ok", &[]).await;
    assert_eq!(r.unwrap(), b"fine");
    assert_eq!(rw.ns_rwset[0].writes.len(), 1);
    let _ = stop.send(());
}

#[tokio::test]
async fn unreachable_external_chaincode_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let external =
        ExternalChaincode::connect_lazy(&format!("http://{addr}"), Duration::from_secs(10))
            .unwrap();
    let state = Arc::new(MemState::new());
    let (r, _) = call(&external, &state, "balance", &["alice"]).await;
    let err = r.unwrap_err();
    assert!(matches!(err, ChaincodeError::Unavailable(_)), "{err:?}");
    assert_eq!(err.status(), 503);
    assert!(ExternalChaincode::connect_lazy("bad host:port", Duration::from_secs(1)).is_err());
}
