//! Config updates for cluster tests: spare orderers set aside from the genesis consenters,
//! admin identities, and updates built from a node's config in force.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use prost::Message as _;
use shared_proto::channel::Channel;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::config::ChannelConfig;
use shared_proto::pb::config::Consenter;

use super::now_unix;
use super::TestCluster;
use super::CHANNEL;

/// Rewrites the genesis block so that only the first `keep` orderers are consenters, and
/// returns the consenter entries of the others.
pub fn set_aside_spares(generated: &Generated, keep: usize) -> anyhow::Result<Vec<Consenter>> {
    let path = &generated.channels[0].1;
    let genesis = Block::decode(std::fs::read(path)?.as_slice())?;
    let mut config = shared_proto::channel::config_from_block(&genesis)?;
    let consenters = &mut config.orderer.as_mut().unwrap().consenters;
    if consenters.len() <= keep {
        return Ok(Vec::new());
    }
    let spares = consenters.split_off(keep);
    let admin = admin(generated, "OrdererMSP");
    let block = shared_proto::channel::genesis_block(
        &config,
        &admin,
        &shared_proto::envelope::new_nonce(),
        now_unix() as u64 * 1000,
    );
    std::fs::write(path, block.encode_to_vec())?;
    Ok(spares)
}

/// The Admin user of org `msp_id`.
pub fn admin(generated: &Generated, msp_id: &str) -> SigningIdentity {
    let user = generated.user(msp_id, "Admin").unwrap();
    SigningIdentity::from_pem_files(msp_id, &user.cert, &user.key).unwrap()
}

impl TestCluster {
    /// Node `i`'s config in force.
    pub fn config_of(&self, i: usize) -> std::sync::Arc<Channel> {
        self.node(i).registry.get(CHANNEL).unwrap().config()
    }

    pub fn config_sequence(&self, i: usize) -> u64 {
        self.config_of(i).sequence()
    }

    /// Node `i`'s Raft voters for the channel.
    pub fn voters(&self, i: usize) -> BTreeSet<u64> {
        let ch = self.node(i).registry.get(CHANNEL).unwrap();
        let m = ch.raft.metrics().borrow().clone();
        m.membership_config.membership().voter_ids().collect()
    }

    /// A config update built on node `i`'s config in force (sequence + 1), edited by `edit`
    /// and approved by the Admins of `orgs`.
    pub fn config_update(
        &self,
        i: usize,
        orgs: &[&str],
        edit: impl FnOnce(&mut ChannelConfig),
    ) -> Envelope {
        let mut next = self.config_of(i).config().clone();
        next.sequence += 1;
        edit(&mut next);
        let admins: Vec<SigningIdentity> = orgs.iter().map(|m| admin(&self.generated, m)).collect();
        let refs: Vec<&SigningIdentity> = admins.iter().collect();
        shared_proto::config_update::build_update(
            &next,
            &refs,
            &refs[0].clone(),
            now_unix() as u64 * 1000,
        )
    }

    /// Waits until every node of `nodes` has Raft voters `voters` and config sequence
    /// `sequence`.
    pub async fn wait_membership(
        &self,
        nodes: &[usize],
        voters: &[u64],
        sequence: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let want: BTreeSet<u64> = voters.iter().copied().collect();
        let deadline = Instant::now() + timeout;
        loop {
            let seen: Vec<(BTreeSet<u64>, u64)> = nodes
                .iter()
                .map(|&i| (self.voters(i), self.config_sequence(i)))
                .collect();
            if seen.iter().all(|(v, s)| *v == want && *s == sequence) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let leaders: Vec<(Option<u64>, u64)> = nodes
                    .iter()
                    .map(|&i| {
                        let ch = self.node(i).registry.get(CHANNEL).unwrap();
                        let m = ch.raft.metrics().borrow().clone();
                        (m.current_leader, m.current_term)
                    })
                    .collect();
                anyhow::bail!(
                    "membership not reached: want voters {want:?} at sequence {sequence}, nodes \
                     {nodes:?} have {seen:?}, (leader, term) {leaders:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Envelopes submitted in a loop to the running members until stopped; the acknowledged tx ids.
pub fn start_load(
    cluster: &TestCluster,
    targets: Arc<Mutex<Vec<usize>>>,
) -> (
    Arc<AtomicBool>,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let clients: BTreeMap<usize, _> = (0..cluster.nodes.len())
        .map(|i| (i, cluster.client(i)))
        .collect();
    let envelopes: Vec<Envelope> = (0..100_000)
        .map(|k| cluster.envelope(format!("load {k}").as_bytes()))
        .take(2000)
        .collect();
    let task = {
        let (stop, acked) = (stop.clone(), acked.clone());
        tokio::spawn(async move {
            for (k, env) in envelopes.into_iter().enumerate() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let to = {
                    let t = targets.lock().unwrap();
                    t[k % t.len()]
                };
                let tx_id = orderer::block_store::tx_id_of(&env.encode_to_vec()).unwrap();
                let mut request = tonic::Request::new(env);
                request.set_timeout(Duration::from_secs(10));
                if clients[&to].clone().submit(request).await.is_ok() {
                    acked.lock().unwrap().push(tx_id);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    (stop, acked, task)
}
