//! Test kit for validation: the sample network generated once, endorsed transactions built the
//! way clients and endorsers build them, blocks, and an in-memory committed state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use prost::Message as _;
use shared_proto::channel::Channel;
use shared_proto::envelope::create_signed_envelope;
use shared_proto::material::generate;
use shared_proto::material::Generated;
use shared_proto::material::NetworkSpec;
use shared_proto::msp::SigningIdentity;
use shared_proto::pb::common::Block;
use shared_proto::pb::common::Envelope;
use shared_proto::pb::common::HeaderType;
use shared_proto::pb::tx::ChaincodeAction;
use shared_proto::pb::tx::ChaincodeId;
use shared_proto::pb::tx::Endorsement;
use shared_proto::pb::tx::KvRead;
use shared_proto::pb::tx::KvWrite;
use shared_proto::pb::tx::NsReadWriteSet;
use shared_proto::pb::tx::ProposalResponsePayload;
use shared_proto::pb::tx::RangeQueryInfo;
use shared_proto::pb::tx::Response;
use shared_proto::pb::tx::Transaction;
use shared_proto::pb::tx::TxReadWriteSet;
use shared_proto::signing;
use shared_proto::signing::Domain;

use crate::ledger::LedgerError;
use crate::ledger::StateReader;
use crate::ledger::Version;
use crate::ledger::VersionedValue;

/// The time the material is generated at; certificates are valid for 365 days from it.
pub(crate) const NOW: i64 = 1_790_000_000;
pub(crate) const CHANNEL: &str = "mychannel";

const SAMPLE: &str = include_str!("../../../deploy/sample-network.toml");

/// The channel `mychannel` of the sample network and its members.
#[derive(Debug)]
pub(crate) struct Kit {
    pub(crate) channel: Channel,
    /// Org1MSP peer0, peer1 (role peer).
    pub(crate) org1_peers: [SigningIdentity; 2],
    /// Org2MSP peer0, peer1 (role peer).
    pub(crate) org2_peers: [SigningIdentity; 2],
    /// Org1MSP User1 (role client).
    pub(crate) client: SigningIdentity,
    /// Org2MSP User1 (role client).
    pub(crate) client2: SigningIdentity,
    /// Org2MSP Admin (role admin).
    pub(crate) admin2: SigningIdentity,
}

/// The shared network, generated on first use; everything is loaded into memory, so the
/// temporary directory is removed afterwards.
pub(crate) fn kit() -> &'static Kit {
    static KIT: OnceLock<Kit> = OnceLock::new();
    KIT.get_or_init(|| {
        let spec = NetworkSpec::from_toml(SAMPLE).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let generated = generate(&spec, &dir.path().join("net"), NOW).unwrap();
        let (_, genesis_path) = generated
            .channels
            .iter()
            .find(|(id, _)| id == CHANNEL)
            .unwrap();
        let genesis = Block::decode(std::fs::read(genesis_path).unwrap().as_slice()).unwrap();
        let channel = Channel::from_config_block(&genesis).unwrap();
        let peer = |msp_id: &str, name: &str| {
            let n = generated
                .peers
                .iter()
                .find(|p| p.msp_id == msp_id && p.name == name)
                .unwrap();
            SigningIdentity::from_pem_files(
                msp_id,
                &n.dir.join("msp/cert.pem"),
                &n.dir.join("msp/key.pem"),
            )
            .unwrap()
        };
        Kit {
            org1_peers: [peer("Org1MSP", "peer0"), peer("Org1MSP", "peer1")],
            org2_peers: [peer("Org2MSP", "peer0"), peer("Org2MSP", "peer1")],
            client: user(&generated, "Org1MSP", "User1"),
            client2: user(&generated, "Org2MSP", "User1"),
            admin2: user(&generated, "Org2MSP", "Admin"),
            channel,
        }
    })
}

fn user(generated: &Generated, msp_id: &str, name: &str) -> SigningIdentity {
    let u = generated.user(msp_id, name).unwrap();
    SigningIdentity::from_pem_files(msp_id, &u.cert, &u.key).unwrap()
}

/// A fresh nonce, distinct across the test run (so tx ids are too).
pub(crate) fn nonce() -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut nonce = b"validate-test-nonce-".to_vec();
    nonce.extend_from_slice(&n.to_be_bytes());
    nonce
}

pub(crate) fn v(block_num: u64, tx_num: u64) -> Version {
    Version { block_num, tx_num }
}

/// Builds one namespace's read/write set.
#[derive(Debug, Clone, Default)]
pub(crate) struct Rw {
    ns: NsReadWriteSet,
}

impl Rw {
    pub(crate) fn new(namespace: &str) -> Self {
        Rw {
            ns: NsReadWriteSet {
                namespace: namespace.to_owned(),
                ..Default::default()
            },
        }
    }

    /// A read of `key` at `version` (`None`: the key did not exist).
    pub(crate) fn read(mut self, key: &str, version: Option<Version>) -> Self {
        self.ns.reads.push(KvRead {
            key: key.to_owned(),
            version: version.map(Version::to_pb),
        });
        self
    }

    pub(crate) fn write(mut self, key: &str, value: &[u8]) -> Self {
        self.ns.writes.push(KvWrite {
            key: key.to_owned(),
            is_delete: false,
            value: value.to_vec(),
        });
        self
    }

    pub(crate) fn delete(mut self, key: &str) -> Self {
        self.ns.writes.push(KvWrite {
            key: key.to_owned(),
            is_delete: true,
            value: Vec::new(),
        });
        self
    }

    /// A range query over `[start, end)` that returned `results` (iterator exhausted if
    /// `exhausted`).
    pub(crate) fn range(
        mut self,
        start: &str,
        end: &str,
        exhausted: bool,
        results: &[(&str, Version)],
    ) -> Self {
        self.ns.range_queries_info.push(RangeQueryInfo {
            start_key: start.to_owned(),
            end_key: end.to_owned(),
            itr_exhausted: exhausted,
            raw_reads: results
                .iter()
                .map(|(k, ver)| KvRead {
                    key: (*k).to_owned(),
                    version: Some(ver.to_pb()),
                })
                .collect(),
        });
        self
    }

    pub(crate) fn set(self) -> TxReadWriteSet {
        TxReadWriteSet {
            ns_rwset: vec![self.ns],
        }
    }
}

/// Builds an endorsed ENDORSER_TRANSACTION envelope.
#[derive(Debug, Clone)]
pub(crate) struct TxBuilder {
    pub(crate) chaincode: String,
    pub(crate) version: String,
    pub(crate) status: i32,
    pub(crate) rwset: TxReadWriteSet,
    pub(crate) endorsers: Vec<&'static SigningIdentity>,
    pub(crate) creator: &'static SigningIdentity,
    pub(crate) nonce: Vec<u8>,
}

impl TxBuilder {
    /// A transaction of `chaincode` (version "1.0", status 200) with `rwset`, created by
    /// Org1's client, endorsed by nobody yet.
    pub(crate) fn new(chaincode: &str, rwset: TxReadWriteSet) -> Self {
        TxBuilder {
            chaincode: chaincode.to_owned(),
            version: "1.0".to_owned(),
            status: 200,
            rwset,
            endorsers: Vec::new(),
            creator: &kit().client,
            nonce: nonce(),
        }
    }

    /// A `token` transaction endorsed by a peer of each org (satisfies its policy).
    pub(crate) fn token(rwset: TxReadWriteSet) -> Self {
        let k = kit();
        Self::new("token", rwset).endorsed_by(&[&k.org1_peers[0], &k.org2_peers[0]])
    }

    pub(crate) fn endorsed_by(mut self, endorsers: &[&'static SigningIdentity]) -> Self {
        self.endorsers = endorsers.to_vec();
        self
    }

    pub(crate) fn tx_id(&self) -> String {
        shared_proto::hash::tx_id(&self.nonce, self.creator.serialized())
    }

    /// The encoded proposal the endorsers answered (same nonce and creator as the envelope).
    pub(crate) fn proposal(&self) -> Vec<u8> {
        shared_proto::pb::tx::Proposal {
            header: Some(shared_proto::pb::common::Header {
                channel_header: Some(shared_proto::pb::common::ChannelHeader {
                    r#type: HeaderType::EndorserTransaction as i32,
                    channel_id: CHANNEL.to_owned(),
                    tx_id: self.tx_id(),
                    timestamp_unix_ms: (NOW as u64) * 1000,
                }),
                signature_header: Some(shared_proto::pb::common::SignatureHeader {
                    creator: self.creator.serialized().to_vec(),
                    nonce: self.nonce.clone(),
                }),
            }),
            invocation: None,
        }
        .encode_to_vec()
    }

    /// The encoded `ProposalResponsePayload` every endorser signs.
    pub(crate) fn payload(&self) -> Vec<u8> {
        ProposalResponsePayload {
            proposal_hash: shared_proto::hash::proposal_hash(&self.proposal()).to_vec(),
            action: Some(ChaincodeAction {
                chaincode_id: Some(ChaincodeId {
                    name: self.chaincode.clone(),
                    version: self.version.clone(),
                }),
                results: Some(self.rwset.clone()),
                response: Some(Response {
                    status: self.status,
                    message: String::new(),
                    payload: Vec::new(),
                }),
                events: Vec::new(),
            }),
        }
        .encode_to_vec()
    }

    /// The transaction with each endorser's signature over `payload ‖ endorser`.
    pub(crate) fn transaction(&self) -> Transaction {
        let payload = self.payload();
        let endorsements = self
            .endorsers
            .iter()
            .map(|e| endorse(e, &payload))
            .collect();
        Transaction {
            proposal_response_payload: payload,
            endorsements,
            proposal: self.proposal(),
        }
    }

    /// `tx` as the data of an envelope signed by the creator.
    pub(crate) fn envelope_of(&self, tx: &Transaction) -> Envelope {
        create_signed_envelope(
            self.creator,
            HeaderType::EndorserTransaction,
            CHANNEL,
            tx.encode_to_vec(),
            self.nonce.clone(),
            (NOW as u64) * 1000,
        )
    }

    pub(crate) fn envelope(&self) -> Envelope {
        self.envelope_of(&self.transaction())
    }

    /// The encoded envelope (a block data item).
    pub(crate) fn build(&self) -> Vec<u8> {
        self.envelope().encode_to_vec()
    }
}

/// `endorser`'s endorsement of `payload`.
pub(crate) fn endorse(endorser: &SigningIdentity, payload: &[u8]) -> Endorsement {
    let serialized = endorser.serialized().to_vec();
    let signature = signing::sign(
        endorser.signing_key(),
        Domain::Endorsement,
        &[payload, &serialized],
    );
    Endorsement {
        endorser: serialized,
        signature,
    }
}

/// An unsigned block `number` holding `data` (signatures are checked before validation).
pub(crate) fn block(number: u64, data: Vec<Vec<u8>>) -> Block {
    shared_proto::block::new_block(number, vec![0xAB; 32], data, 0)
}

/// Committed state in memory.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemState {
    pub(crate) keys: BTreeMap<(String, String), VersionedValue>,
    pub(crate) txs: BTreeSet<String>,
}

impl MemState {
    pub(crate) fn with(mut self, namespace: &str, key: &str, version: Version) -> Self {
        self.put(namespace, key, version);
        self
    }

    pub(crate) fn put(&mut self, namespace: &str, key: &str, version: Version) {
        self.keys.insert(
            (namespace.to_owned(), key.to_owned()),
            VersionedValue {
                value: format!("{key}@{version:?}").into_bytes(),
                version,
            },
        );
    }

    /// Commits a validated block's writes and tx ids (what the ledger does).
    pub(crate) fn commit(&mut self, validated: &super::ValidatedBlock) {
        for w in &validated.writes {
            let key = (w.namespace.clone(), w.key.clone());
            match &w.value {
                Some(value) => {
                    self.keys.insert(
                        key,
                        VersionedValue {
                            value: value.clone(),
                            version: w.version,
                        },
                    );
                }
                None => {
                    self.keys.remove(&key);
                }
            }
        }
        self.txs
            .extend(validated.tx_ids.iter().flatten().map(String::clone));
    }
}

impl StateReader for MemState {
    fn get(&self, namespace: &str, key: &str) -> Result<Option<VersionedValue>, LedgerError> {
        Ok(self
            .keys
            .get(&(namespace.to_owned(), key.to_owned()))
            .cloned())
    }

    fn range(
        &self,
        namespace: &str,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<Vec<(String, VersionedValue)>, LedgerError> {
        Ok(self
            .keys
            .range((namespace.to_owned(), start.to_owned())..)
            .take_while(|((ns, k), _)| ns == namespace && (end.is_empty() || k.as_str() < end))
            .take(limit)
            .map(|((_, k), value)| (k.clone(), value.clone()))
            .collect())
    }

    fn has_tx(&self, tx_id: &str) -> Result<bool, LedgerError> {
        Ok(self.txs.contains(tx_id))
    }
}

/// A state whose every read fails, as a broken disk would.
#[derive(Debug)]
pub(crate) struct FailingState;

impl StateReader for FailingState {
    fn get(&self, _: &str, _: &str) -> Result<Option<VersionedValue>, LedgerError> {
        Err(broken())
    }

    fn range(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: usize,
    ) -> Result<Vec<(String, VersionedValue)>, LedgerError> {
        Err(broken())
    }

    fn has_tx(&self, _: &str) -> Result<bool, LedgerError> {
        Err(broken())
    }
}

fn broken() -> LedgerError {
    LedgerError::Corrupt {
        what: "test state".to_owned(),
        reason: "disk on fire".to_owned(),
    }
}
