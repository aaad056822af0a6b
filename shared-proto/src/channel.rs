//! A channel's configuration, decoded from its config block and checked once: organisations
//! (as MSPs), policies (parsed), batch settings, consenters, chaincode definitions.
//!
//! Policy scopes: implicit-meta policies at channel level (`Readers`, `Writers`, `Admins`)
//! range over every organisation; `BlockValidation` over the orderer organisations; chaincode
//! endorsement policies over the application organisations (as Fabric's
//! `/Channel/Application/Endorsement`).

use std::collections::BTreeMap;

use prost::Message as _;

use crate::hash;
use crate::msp::CertInfo;
use crate::msp::Msp;
use crate::msp::MspError;
use crate::msp::MspManager;
use crate::msp::SigningIdentity;
use crate::pb::common::Block;
use crate::pb::common::BlockData;
use crate::pb::common::BlockHeader;
use crate::pb::common::BlockMetadata;
use crate::pb::common::ChannelHeader;
use crate::pb::common::Envelope;
use crate::pb::common::Header;
use crate::pb::common::HeaderType;
use crate::pb::common::Payload;
use crate::pb::common::SignatureHeader;
use crate::pb::config::BatchSize;
use crate::pb::config::ChannelConfig;
use crate::pb::config::Consenter;
use crate::pb::config::Organization;
use crate::policy::Policy;
use crate::policy::PolicyContext;
use crate::policy::PolicyError;
use crate::policy::Signer;
use crate::signing::Domain;

/// Names of the channel-level policies every channel defines.
pub const READERS: &str = "Readers";
pub const WRITERS: &str = "Writers";
pub const ADMINS: &str = "Admins";

/// Ceiling on a channel's `bytes_absolute_max`. One envelope becomes at most one Raft entry, and
/// the orderers must move an entry between them within one heartbeat and under their transport
/// limit (64 MiB), so no channel may allow envelopes larger than this. Fabric's default is 10 MB.
pub const BYTES_ABSOLUTE_MAX_CEILING: u32 = 16 * 1024 * 1024;

/// Bytes a block adds around its envelopes: header, per-envelope framing, metadata and the
/// orderers' signatures.
pub const BLOCK_FRAMING_BYTES: usize = 1024 * 1024;

/// Retry window of a channel whose config leaves `retry_window_txs` at 0.
pub const RETRY_WINDOW_TXS_DEFAULT: u32 = 50_000;
pub const BLOCK_VALIDATION: &str = "BlockValidation";

/// Why a channel configuration or config block was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot decode {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    #[error("block {number} is not a config block: {reason}")]
    NotConfigBlock { number: u64, reason: String },
    #[error("channel config field `{field}`: {message}")]
    Invalid { field: String, message: String },
    #[error("policy `{name}`: {source}")]
    Policy {
        name: String,
        #[source]
        source: PolicyError,
    },
    #[error("organisation {msp_id}: {source}")]
    Msp {
        msp_id: String,
        #[source]
        source: MspError,
    },
    #[error("channel has no policy named {0:?}")]
    UnknownPolicy(String),
    #[error("chaincode {0:?} is not defined on this channel")]
    UnknownChaincode(String),
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ChannelError {
    ChannelError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// A chaincode as the channel defines it.
#[derive(Debug, Clone)]
pub struct ChaincodeDef {
    pub version: String,
    pub endorsement_policy: Policy,
}

/// A checked channel configuration, ready to answer membership and policy questions.
#[derive(Debug)]
pub struct Channel {
    config: ChannelConfig,
    msps: MspManager,
    policies: BTreeMap<String, Policy>,
    org_policies: BTreeMap<String, BTreeMap<String, Policy>>,
    application_orgs: Vec<String>,
    orderer_orgs: Vec<String>,
    all_orgs: Vec<String>,
    chaincodes: BTreeMap<String, ChaincodeDef>,
}

impl Channel {
    /// Checks `config` and builds the channel's MSPs and parsed policies.
    pub fn from_config(config: ChannelConfig) -> Result<Self, ChannelError> {
        check_channel_id(&config.channel_id)?;
        if config.orderer_orgs.is_empty() {
            return Err(invalid(
                "orderer_orgs",
                "needs at least one orderer organisation",
            ));
        }
        let mut msps = Vec::new();
        let mut org_policies = BTreeMap::new();
        let mut all_orgs: Vec<String> = Vec::new();
        let orgs = config
            .application_orgs
            .iter()
            .map(|o| ("application_orgs", o))
            .chain(config.orderer_orgs.iter().map(|o| ("orderer_orgs", o)));
        for (list, org) in orgs {
            if org.msp_id.is_empty() {
                return Err(invalid(list, "an organisation has an empty msp_id"));
            }
            if all_orgs.contains(&org.msp_id) {
                return Err(invalid(
                    list,
                    format!("msp_id {:?} appears twice", org.msp_id),
                ));
            }
            all_orgs.push(org.msp_id.clone());
            msps.push(build_msp(org)?);
        }
        let known: Vec<&str> = all_orgs.iter().map(String::as_str).collect();
        for org in config.application_orgs.iter().chain(&config.orderer_orgs) {
            let mut parsed = BTreeMap::new();
            for p in &org.policies {
                let name = format!("{}/{}", org.msp_id, p.name);
                parsed.insert(
                    p.name.clone(),
                    parse_policy(&name, p.policy.as_ref(), &known)?,
                );
            }
            org_policies.insert(org.msp_id.clone(), parsed);
        }
        let mut policies = BTreeMap::new();
        for p in &config.policies {
            policies.insert(
                p.name.clone(),
                parse_policy(&p.name, p.policy.as_ref(), &known)?,
            );
        }
        for required in [READERS, WRITERS, ADMINS, BLOCK_VALIDATION] {
            if !policies.contains_key(required) {
                return Err(invalid(
                    "policies",
                    format!("missing required policy {required}"),
                ));
            }
        }
        let mut chaincodes = BTreeMap::new();
        for (i, cc) in config.chaincodes.iter().enumerate() {
            if cc.name.is_empty() {
                return Err(invalid(
                    format!("chaincodes[{i}].name"),
                    "must not be empty",
                ));
            }
            let name = format!("chaincode {}", cc.name);
            let endorsement_policy = parse_policy(&name, cc.endorsement_policy.as_ref(), &known)?;
            let def = ChaincodeDef {
                version: cc.version.clone(),
                endorsement_policy,
            };
            if chaincodes.insert(cc.name.clone(), def).is_some() {
                return Err(invalid(
                    "chaincodes",
                    format!("{:?} defined twice", cc.name),
                ));
            }
        }
        let orderer_orgs: Vec<String> = config
            .orderer_orgs
            .iter()
            .map(|o| o.msp_id.clone())
            .collect();
        check_orderer(&config, &orderer_orgs)?;
        Ok(Channel {
            application_orgs: config
                .application_orgs
                .iter()
                .map(|o| o.msp_id.clone())
                .collect(),
            orderer_orgs,
            all_orgs,
            msps: MspManager::new(msps),
            policies,
            org_policies,
            chaincodes,
            config,
        })
    }

    /// Reads and checks the configuration carried by a config (e.g. genesis) block.
    pub fn from_config_block(block: &Block) -> Result<Self, ChannelError> {
        Self::from_config(config_from_block(block)?)
    }

    pub fn id(&self) -> &str {
        &self.config.channel_id
    }

    pub fn config(&self) -> &ChannelConfig {
        &self.config
    }

    /// The config sequence: 0 at genesis, one more per config block.
    pub fn sequence(&self) -> u64 {
        self.config.sequence
    }

    pub fn msps(&self) -> &MspManager {
        &self.msps
    }

    pub fn batch_size(&self) -> BatchSize {
        self.config
            .orderer
            .as_ref()
            .and_then(|o| o.batch_size)
            .unwrap_or_default()
    }

    /// Largest encoded block of this channel: the cutter puts at most `bytes_preferred_max` of
    /// envelopes in a block, or one envelope of at most `bytes_absolute_max` alone, plus
    /// [`BLOCK_FRAMING_BYTES`]. Receivers size their decode limits from it.
    pub fn block_bytes_max(&self) -> usize {
        let batch = self.batch_size();
        batch.bytes_absolute_max.max(batch.bytes_preferred_max) as usize + BLOCK_FRAMING_BYTES
    }

    /// How many recently accepted tx ids the orderers remember to drop retried envelopes.
    pub fn retry_window_txs(&self) -> u32 {
        match self
            .config
            .orderer
            .as_ref()
            .map_or(0, |o| o.retry_window_txs)
        {
            0 => RETRY_WINDOW_TXS_DEFAULT,
            n => n,
        }
    }

    pub fn batch_timeout_ms(&self) -> u64 {
        self.config
            .orderer
            .as_ref()
            .map_or(0, |o| o.batch_timeout_ms)
    }

    pub fn consenters(&self) -> &[Consenter] {
        self.config
            .orderer
            .as_ref()
            .map_or(&[], |o| o.consenters.as_slice())
    }

    pub fn orderer_endpoints(&self) -> &[String] {
        self.config
            .orderer
            .as_ref()
            .map_or(&[], |o| o.orderer_endpoints.as_slice())
    }

    pub fn application_orgs(&self) -> &[String] {
        &self.application_orgs
    }

    pub fn orderer_orgs(&self) -> &[String] {
        &self.orderer_orgs
    }

    pub fn chaincode(&self, name: &str) -> Result<&ChaincodeDef, ChannelError> {
        self.chaincodes
            .get(name)
            .ok_or_else(|| ChannelError::UnknownChaincode(name.to_owned()))
    }

    /// Whether `signers` satisfy the channel-level policy `name`.
    pub fn evaluate(&self, name: &str, signers: &[Signer]) -> Result<bool, ChannelError> {
        let policy = self
            .policies
            .get(name)
            .ok_or_else(|| ChannelError::UnknownPolicy(name.to_owned()))?;
        let orgs = if name == BLOCK_VALIDATION {
            &self.orderer_orgs
        } else {
            &self.all_orgs
        };
        Ok(policy.evaluate(
            signers,
            &Scope {
                channel: self,
                orgs,
            },
        ))
    }

    /// Whether `signers` satisfy the endorsement policy of chaincode `name`.
    pub fn evaluate_endorsement(
        &self,
        name: &str,
        signers: &[Signer],
    ) -> Result<bool, ChannelError> {
        let def = self.chaincode(name)?;
        let scope = Scope {
            channel: self,
            orgs: &self.application_orgs,
        };
        Ok(def.endorsement_policy.evaluate(signers, &scope))
    }
}

/// The organisations an implicit-meta policy ranges over.
struct Scope<'a> {
    channel: &'a Channel,
    orgs: &'a [String],
}

impl PolicyContext for Scope<'_> {
    fn org_ids(&self) -> Vec<String> {
        self.orgs.to_vec()
    }

    fn org_policy(&self, msp_id: &str, name: &str) -> Option<Policy> {
        self.channel.org_policies.get(msp_id)?.get(name).cloned()
    }
}

fn check_channel_id(id: &str) -> Result<(), ChannelError> {
    let ok_start = id.starts_with(|c: char| c.is_ascii_lowercase());
    let ok_chars = id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if !ok_start || !ok_chars || id.len() > 249 {
        return Err(invalid(
            "channel_id",
            format!("{id:?} must match [a-z][a-z0-9.-]* and be shorter than 250 characters"),
        ));
    }
    Ok(())
}

fn build_msp(org: &Organization) -> Result<Msp, ChannelError> {
    Msp::new(&org.msp_id, &org.root_certs, org.node_ous.as_ref()).map_err(|source| {
        ChannelError::Msp {
            msp_id: org.msp_id.clone(),
            source,
        }
    })
}

fn parse_policy(
    name: &str,
    policy: Option<&crate::pb::config::Policy>,
    known_orgs: &[&str],
) -> Result<Policy, ChannelError> {
    let err = |source| ChannelError::Policy {
        name: name.to_owned(),
        source,
    };
    let rule = policy.map(|p| p.rule.as_str()).unwrap_or_default();
    let parsed = Policy::parse(rule).map_err(err)?;
    parsed.validate_orgs(known_orgs).map_err(err)?;
    Ok(parsed)
}

fn check_orderer(config: &ChannelConfig, orderer_orgs: &[String]) -> Result<(), ChannelError> {
    let Some(orderer) = &config.orderer else {
        return Err(invalid("orderer", "missing"));
    };
    let Some(batch) = &orderer.batch_size else {
        return Err(invalid("orderer.batch_size", "missing"));
    };
    if batch.message_count_max == 0 {
        return Err(invalid(
            "orderer.batch_size.message_count_max",
            "must be positive",
        ));
    }
    if batch.bytes_preferred_max == 0 {
        return Err(invalid(
            "orderer.batch_size.bytes_preferred_max",
            "must be positive",
        ));
    }
    if batch.bytes_absolute_max < batch.bytes_preferred_max {
        return Err(invalid(
            "orderer.batch_size.bytes_absolute_max",
            format!(
                "({}) must be at least bytes_preferred_max ({})",
                batch.bytes_absolute_max, batch.bytes_preferred_max
            ),
        ));
    }
    if batch.bytes_absolute_max > BYTES_ABSOLUTE_MAX_CEILING {
        return Err(invalid(
            "orderer.batch_size.bytes_absolute_max",
            format!(
                "({}) is above the ceiling of {BYTES_ABSOLUTE_MAX_CEILING} bytes (16 MiB)",
                batch.bytes_absolute_max
            ),
        ));
    }
    if orderer.batch_timeout_ms == 0 {
        return Err(invalid("orderer.batch_timeout_ms", "must be positive"));
    }
    if orderer.consenters.is_empty() {
        return Err(invalid(
            "orderer.consenters",
            "needs at least one consenter",
        ));
    }
    if orderer.orderer_endpoints.is_empty() {
        return Err(invalid(
            "orderer.orderer_endpoints",
            "needs at least one endpoint",
        ));
    }
    let mut ids = Vec::new();
    for (i, c) in orderer.consenters.iter().enumerate() {
        let field = |f: &str| format!("orderer.consenters[{i}].{f}");
        if c.id == 0 || ids.contains(&c.id) {
            return Err(invalid(
                field("id"),
                format!("{} is zero or not unique", c.id),
            ));
        }
        ids.push(c.id);
        if !orderer_orgs.contains(&c.msp_id) {
            return Err(invalid(
                field("msp_id"),
                format!("{:?} is not an orderer organisation", c.msp_id),
            ));
        }
        if c.host.is_empty() || c.port == 0 || c.port > u32::from(u16::MAX) {
            return Err(invalid(field("port"), "host and port must be set"));
        }
        // TLS certificates may use any key type TLS speaks; the identity signs blocks (Ed25519).
        for (name, der) in [
            ("client_tls_cert", &c.client_tls_cert),
            ("server_tls_cert", &c.server_tls_cert),
        ] {
            crate::msp::check_tls_cert_der(der).map_err(|e| invalid(field(name), e.to_string()))?;
        }
        CertInfo::from_der(&c.identity).map_err(|e| invalid(field("identity"), e.to_string()))?;
    }
    Ok(())
}

/// Decodes the `ChannelConfig` carried by a config block, checking the block's own data hash.
pub fn config_from_block(block: &Block) -> Result<ChannelConfig, ChannelError> {
    let number = block.header.as_ref().map_or(0, |h| h.number);
    let not_config = |reason: &str| ChannelError::NotConfigBlock {
        number,
        reason: reason.to_owned(),
    };
    let header = block
        .header
        .as_ref()
        .ok_or_else(|| not_config("no header"))?;
    let data = block
        .data
        .as_ref()
        .map(|d| d.data.as_slice())
        .unwrap_or_default();
    if hash::block_data_hash(data).as_slice() != header.data_hash.as_slice() {
        return Err(not_config("data hash does not match the block data"));
    }
    let [envelope_bytes] = data else {
        return Err(not_config("a config block holds exactly one envelope"));
    };
    let envelope =
        Envelope::decode(envelope_bytes.as_slice()).map_err(|e| ChannelError::Decode {
            what: "config envelope",
            reason: e.to_string(),
        })?;
    let payload =
        Payload::decode(envelope.payload.as_slice()).map_err(|e| ChannelError::Decode {
            what: "config payload",
            reason: e.to_string(),
        })?;
    let channel_header = payload
        .header
        .and_then(|h| h.channel_header)
        .ok_or_else(|| not_config("envelope has no channel header"))?;
    // A genesis block carries the config itself (CONFIG); later config blocks carry the
    // config update that made them (CONFIG_UPDATE, see crate::config_update).
    let config_bytes = if channel_header.r#type == HeaderType::Config as i32 {
        payload.data
    } else if channel_header.r#type == HeaderType::ConfigUpdate as i32 {
        crate::pb::config::ConfigUpdate::decode(payload.data.as_slice())
            .map_err(|e| ChannelError::Decode {
                what: "config update",
                reason: e.to_string(),
            })?
            .config
    } else {
        return Err(not_config(
            "envelope type is neither CONFIG nor CONFIG_UPDATE",
        ));
    };
    let config =
        ChannelConfig::decode(config_bytes.as_slice()).map_err(|e| ChannelError::Decode {
            what: "channel config",
            reason: e.to_string(),
        })?;
    if config.channel_id != channel_header.channel_id {
        return Err(not_config("config and envelope name different channels"));
    }
    Ok(config)
}

/// Builds block 0 of a channel: one CONFIG envelope signed by `creator` (an orderer-org admin).
pub fn genesis_block(
    config: &ChannelConfig,
    creator: &SigningIdentity,
    nonce: &[u8],
    timestamp_unix_ms: u64,
) -> Block {
    let channel_header = ChannelHeader {
        r#type: HeaderType::Config as i32,
        channel_id: config.channel_id.clone(),
        tx_id: hash::tx_id(nonce, creator.serialized()),
        timestamp_unix_ms,
    };
    let payload = Payload {
        header: Some(Header {
            channel_header: Some(channel_header),
            signature_header: Some(SignatureHeader {
                creator: creator.serialized().to_vec(),
                nonce: nonce.to_vec(),
            }),
        }),
        data: config.encode_to_vec(),
    }
    .encode_to_vec();
    let signature = creator.sign(Domain::Envelope, &[&payload]);
    let envelope = Envelope { payload, signature }.encode_to_vec();
    let data = vec![envelope];
    Block {
        header: Some(BlockHeader {
            number: 0,
            previous_hash: Vec::new(),
            data_hash: hash::block_data_hash(&data).to_vec(),
        }),
        data: Some(BlockData { data }),
        metadata: Some(BlockMetadata::default()),
    }
}
