//! The scenario workload: SDK clients (endorse → order → wait for the commit), half writing
//! keys of their own with the `kv` chaincode and half transferring between a few `token`
//! accounts (concurrent transfers read the same balances, so some fail the MVCC check and
//! the sum of the balances must stay what was minted), and one raw Broadcast client sending
//! signed envelopes straight to the orderers (peers mark them invalid: they carry no
//! endorsement), every fourth to two orderers at once as a hedging client does. Every
//! transaction goes into the [`History`]: submitted, acked (which orderer), committed (block,
//! code) or failed. Paced to a total rate so a 2-core box running the whole cluster keeps
//! headroom for the faults' recovery.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use peer::sdk::ClientTls;
use peer::sdk::Gateway;
use peer::sdk::Observe;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::material::Generated;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::orderer::atomic_broadcast_client::AtomicBroadcastClient;
use tokio::task::JoinHandle;

use crate::history::History;
use crate::topology::CHANNEL;

/// How hard the workload pushes.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub sdk_clients: usize,
    /// Total SDK transactions per second (all clients).
    pub sdk_rate: f64,
    /// Raw Broadcast envelopes per second.
    pub raw_rate: f64,
}

impl Default for Load {
    fn default() -> Self {
        Load {
            sdk_clients: 4,
            sdk_rate: 40.0,
            raw_rate: 10.0,
        }
    }
}

/// The running workload; [`Running::stop`] ends it and waits for every client.
#[derive(Debug)]
pub struct Running {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Records what the SDK reports for one transaction.
struct Recorder<'a> {
    history: &'a History,
    client: usize,
    t0: Instant,
    /// The last transaction it broadcast (an endorsement retry makes a new one).
    last: std::sync::Mutex<Option<String>>,
}

impl Observe for Recorder<'_> {
    fn ordering(&self, tx_id: &str) {
        self.history
            .submitted(tx_id, self.client, self.t0.elapsed().as_secs_f64());
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tx_id.to_owned());
    }

    fn acked(&self, tx_id: &str, orderer: &str) {
        self.history
            .acked(tx_id, orderer, self.t0.elapsed().as_secs_f64());
    }
}

/// Waits until a transaction commits end to end (peers pull blocks once their gossip leader is
/// elected, some seconds after they start): faults start on a cluster that works.
pub async fn warm_up(g: &Generated, deadline: Duration) -> anyhow::Result<()> {
    let org = &g.spec.peer_orgs[0].msp_id;
    let gw = Gateway::from_network(g, org, "User1", CHANNEL)?;
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let tried = tokio::time::timeout(
            left,
            gw.submit("kv", "put", &[b"warm-up".to_vec(), b"1".to_vec()]),
        )
        .await;
        match tried {
            Ok(Ok(_)) => return mint_accounts(&gw).await,
            Ok(Err(_)) if Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(Err(e)) => anyhow::bail!("no transaction committed within {deadline:?}: {e}"),
            Err(_) => anyhow::bail!("no transaction committed within {deadline:?}"),
        }
    }
}

/// The token accounts the transfer clients move funds between (few, and every transfer
/// touches the first, so that concurrent transfers read the same keys and some must fail the
/// MVCC check).
pub const ACCOUNTS: [&str; 4] = ["acct0", "acct1", "acct2", "acct3"];
/// What each account is minted before the faults; transfers conserve the sum.
pub const MINT_EACH: u64 = 1_000_000;

/// Mints every account of [`ACCOUNTS`] once, before the faults (each must commit VALID: the
/// conservation check counts on knowing the total).
async fn mint_accounts(gw: &Gateway) -> anyhow::Result<()> {
    for account in ACCOUNTS {
        let minted = tokio::time::timeout(
            Duration::from_secs(60),
            gw.submit(
                "token",
                "mint",
                &[
                    account.as_bytes().to_vec(),
                    MINT_EACH.to_string().into_bytes(),
                ],
            ),
        )
        .await
        .map_err(|_| anyhow::anyhow!("minting {account}: no answer within 60 s"))??;
        anyhow::ensure!(
            minted.code == shared_proto::pb::tx::TxValidationCode::Valid,
            "minting {account}: committed as {:?}",
            minted.code
        );
    }
    Ok(())
}

/// What SDK client `c` submits as its transaction number `i`: odd clients transfer between
/// [`ACCOUNTS`] (token), even ones write keys of their own (kv).
fn sdk_call(c: usize, i: u64) -> (&'static str, &'static str, Vec<Vec<u8>>) {
    if c % 2 == 1 {
        // Every transfer touches the first account: any two in flight at once conflict.
        let n = ACCOUNTS.len() as u64;
        let other = 1 + (i + c as u64) % (n - 1);
        let (from, to) = if i.is_multiple_of(2) {
            (0, other)
        } else {
            (other, 0)
        };
        let args = vec![
            ACCOUNTS[from as usize].as_bytes().to_vec(),
            ACCOUNTS[to as usize].as_bytes().to_vec(),
            (1 + i % 9).to_string().into_bytes(),
        ];
        ("token", "transfer", args)
    } else {
        let key = format!("sdk{c}-{i}").into_bytes();
        ("kv", "put", vec![key, b"v".to_vec()])
    }
}

/// Starts the workload against `g`'s network; times are seconds since `t0`.
pub fn start(g: &Generated, load: Load, history: &History, t0: Instant) -> anyhow::Result<Running> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let orgs: Vec<String> = g.spec.peer_orgs.iter().map(|o| o.msp_id.clone()).collect();
    let clients = load.sdk_clients.max(1);
    let every = Duration::from_secs_f64(clients as f64 / load.sdk_rate.max(0.1));
    for c in 0..clients {
        let org = &orgs[c % orgs.len()];
        let gw = Gateway::from_network(g, org, "User1", CHANNEL)?;
        let (stop, history) = (stop.clone(), history.clone());
        tasks.push(tokio::spawn(async move {
            let mut next = Instant::now();
            for i in 0u64.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let (chaincode, function, args) = sdk_call(c, i);
                let recorder = Recorder {
                    history: &history,
                    client: c,
                    t0,
                    last: std::sync::Mutex::new(None),
                };
                let answer = gw
                    .submit_observed(chaincode, function, &args, &recorder)
                    .await;
                let t = t0.elapsed().as_secs_f64();
                match answer {
                    Ok(s) => history.committed(&s.tx_id, s.block_number, s.code as i32, t),
                    Err(e) => {
                        // Failed before anything was broadcast: nothing to record.
                        let last = recorder
                            .last
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .take();
                        // Refused by an orderer: a definite answer. Anything else (no
                        // orderer answered in time, the commit wait ended) leaves the
                        // transaction's fate unknown: it may still be in the chain.
                        if let Some(tx_id) = last {
                            if matches!(e, peer::sdk::SdkError::Refused(_)) {
                                history.failed(&tx_id, &e.to_string(), t);
                            } else {
                                history.timed_out(&tx_id, &e.to_string(), t);
                            }
                        }
                    }
                }
                pace(&mut next, every).await;
            }
        }));
    }
    if load.raw_rate > 0.0 {
        tasks.push(raw_client(g, load.raw_rate, clients, &stop, history, t0)?);
    }
    Ok(Running { stop, tasks })
}

fn raw_client(
    g: &Generated,
    rate: f64,
    client: usize,
    stop: &Arc<AtomicBool>,
    history: &History,
    t0: Instant,
) -> anyhow::Result<JoinHandle<()>> {
    let org = &g.spec.peer_orgs[0].msp_id;
    let user = g
        .user(org, "User1")
        .ok_or_else(|| anyhow::anyhow!("no User1 in {org}"))?;
    let identity = SigningIdentity::from_pem_files(org, &user.cert, &user.key)?;
    let tls = ClientTls::from_network(g, org, "User1")?;
    let orderers: Vec<(String, AtomicBroadcastClient<tonic::transport::Channel>)> = g
        .spec
        .orderer_orgs
        .iter()
        .flat_map(|o| &o.orderers)
        .map(|o| {
            let addr = format!("{}:{}", o.host, o.port);
            let channel = peer::sdk::channel_to(&addr, &tls)?;
            Ok((addr, AtomicBroadcastClient::new(channel)))
        })
        .collect::<anyhow::Result<_>>()?;
    let (stop, history) = (stop.clone(), history.clone());
    let every = Duration::from_secs_f64(1.0 / rate);
    Ok(tokio::spawn(async move {
        let mut next = Instant::now();
        for i in 0u64.. {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let env = create_signed_envelope(
                &identity,
                HeaderType::EndorserTransaction,
                CHANNEL,
                format!("raw {i}").into_bytes(),
                shared_proto::envelope::new_nonce(),
                now_ms(),
            );
            use prost::Message as _;
            let tx_id = peer::commit::tx_id_of(&env.encode_to_vec()).unwrap_or_default();
            history.submitted(&tx_id, client, t0.elapsed().as_secs_f64());
            let first = usize::try_from(i).unwrap_or(0) % orderers.len();
            // Every HEDGE_EVERY-th envelope also goes to the next orderer at once, as a client
            // that retries on a slow answer does: the chain must hold it once.
            let hedged = i.is_multiple_of(HEDGE_EVERY) && orderers.len() > 1;
            let targets: Vec<_> = if hedged {
                vec![&orderers[first], &orderers[(first + 1) % orderers.len()]]
            } else {
                vec![&orderers[first]]
            };
            let answers = futures::future::join_all(targets.iter().map(|(addr, client)| {
                let mut request = tonic::Request::new(env.clone());
                request.set_timeout(Duration::from_secs(5));
                let mut client = client.clone();
                async move { (addr, client.submit(request).await) }
            }))
            .await;
            record_raw(&history, &tx_id, &answers, t0);
            pace(&mut next, every).await;
        }
    }))
}

/// Every how many raw envelopes one is sent to two orderers at once.
const HEDGE_EVERY: u64 = 4;

/// Records the answers to one raw envelope (one per orderer it went to): acked when one
/// orderer ordered it (a copy refused as already in a block is ordered too); else failed on a
/// definite refusal, unknown when no orderer answered.
fn record_raw<T>(
    history: &History,
    tx_id: &str,
    answers: &[(&String, Result<T, tonic::Status>)],
    t0: Instant,
) {
    let t = t0.elapsed().as_secs_f64();
    if let Some((addr, _)) = answers.iter().find(|(_, r)| r.is_ok()) {
        history.acked(tx_id, addr, t);
        return;
    }
    let errors: Vec<(&String, &tonic::Status)> = answers
        .iter()
        .filter_map(|(a, r)| r.as_ref().err().map(|s| (*a, s)))
        .collect();
    let why = errors
        .iter()
        .map(|(a, s)| format!("{a}: {s}"))
        .collect::<Vec<_>>()
        .join("; ");
    let unknown = errors.iter().any(|(_, s)| {
        matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
                | tonic::Code::AlreadyExists
        )
    });
    if unknown {
        history.timed_out(tx_id, &why, t);
    } else {
        history.failed(tx_id, &why, t);
    }
}

impl Running {
    /// Stops every client and waits (bounded) for those in a call to finish it.
    pub async fn stop(self, deadline: Duration) {
        self.stop.store(true, Ordering::SeqCst);
        let end = tokio::time::Instant::now() + deadline;
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout_at(end, t).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Waits until the next send is due (`every` after the last one's slot); a client that fell
/// behind starts afresh instead of bursting to catch up.
async fn pace(next: &mut Instant, every: Duration) {
    *next += every;
    let now = Instant::now();
    if *next > now {
        tokio::time::sleep(*next - now).await;
    } else {
        *next = now;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
