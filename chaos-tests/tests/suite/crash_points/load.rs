//! The loads the crash-point tests run while they inject faults, each recording what the
//! network acknowledged: envelopes the orderers answered SUCCESS ([`Load`]), token mints
//! committed VALID ([`MintLoad`]). What is acknowledged must survive every fault.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use chaos_tests::topology::CHANNEL;
use peer::sdk::Gateway;
use prost::Message as _;
use shared_proto::envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::common::Status as BlockStatus;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use shared_proto::pb::tx::TxValidationCode;
use tonic::transport::Channel;

use super::net::now_unix;
use super::net::Net;

/// Clients submitting envelopes to the orderers (any that answers) until stopped, recording
/// every tx id answered SUCCESS.
pub struct Load {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(net: &Net, clients: usize, envelope_bytes: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let orderers: Vec<Channel> = net.orderers().iter().map(|i| net.endpoint(*i)).collect();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (stop, acked, orderers) = (stop.clone(), acked.clone(), orderers.clone());
            let client = net.client.clone();
            tasks.push(tokio::spawn(async move {
                let mut k = c;
                while !stop.load(Ordering::SeqCst) {
                    let mut data = format!("crash point load {c} {k} ").into_bytes();
                    data.resize(envelope_bytes.max(data.len()), b'x');
                    let env = envelope::create_signed_envelope(
                        &client,
                        HeaderType::EndorserTransaction,
                        CHANNEL,
                        data,
                        envelope::new_nonce(),
                        now_unix() as u64 * 1000,
                    );
                    let tx_id = orderer::block_store::tx_id_of(&env.encode_to_vec());
                    let to = orderers[k % orderers.len()].clone();
                    k += 1;
                    match AtomicBroadcastClient::new(to).submit(env).await {
                        Ok(r) if r.get_ref().status == BlockStatus::Success as i32 => {
                            acked.lock().unwrap().extend(tx_id);
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        Load { stop, acked, tasks }
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` more envelopes than now are acked.
    pub async fn wait_more(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let target = self.acked_count() + n;
        let deadline = Instant::now() + within;
        while self.acked_count() < target {
            anyhow::ensure!(
                Instant::now() < deadline,
                "load stuck at {} acked (wanted {target})",
                self.acked_count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    pub async fn stop(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

/// Clients minting token accounts through the SDK (endorsed by peer0 of Org1, committed as
/// peer0 reports) until stopped, recording every tx committed VALID.
pub struct MintLoad {
    stop: Arc<AtomicBool>,
    pub acked: Arc<Mutex<BTreeSet<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MintLoad {
    pub fn start(net: &Net, clients: usize) -> MintLoad {
        let gw =
            Arc::new(Gateway::from_network(&net.generated, "Org1MSP", "User1", CHANNEL).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(BTreeSet::new()));
        let mut tasks = Vec::new();
        for c in 0..clients {
            let (gw, stop, acked) = (gw.clone(), stop.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                let mut k = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let account = format!("acct-{c}-{k}").into_bytes();
                    k += 1;
                    match gw.submit("token", "mint", &[account, b"1".to_vec()]).await {
                        Ok(s) if s.code == TxValidationCode::Valid => {
                            acked.lock().unwrap().insert(s.tx_id);
                        }
                        _ => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }));
        }
        MintLoad { stop, acked, tasks }
    }

    pub async fn wait_more(&self, n: usize, within: Duration) -> anyhow::Result<()> {
        let count = || self.acked.lock().unwrap().len();
        let target = count() + n;
        let deadline = Instant::now() + within;
        while count() < target {
            anyhow::ensure!(
                Instant::now() < deadline,
                "load stuck at {} committed",
                count()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    pub async fn stop(self) -> BTreeSet<String> {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}
