//! `address_overrides`: dial one address instead of another (Fabric's orderer
//! `addressOverrides`).
//!
//! A node learns where the others are from what they advertise: consenter host:port and
//! `orderer_endpoints` in the channel config, gossip endpoints in alive messages and
//! `gossip.bootstrap`. An override makes this node dial `to` whenever it would dial `from`,
//! exactly as written there (no name resolution, no case folding): a TCP proxy per directed
//! link in a chaos test, an in-cluster service name under Kubernetes. TLS still verifies the
//! server's certificate for the host of `from` (see `crate::dial`).
//!
//! ```toml
//! [[address_overrides]]
//! from = "orderer2.example.com:7050"
//! to = "orderer2.orderers.svc.cluster.local:7050"
//! ```
//!
//! From the environment the whole list is one TOML value:
//! `WEFT_ORDERER_ADDRESS_OVERRIDES='[{from = "a:1", to = "b:2"}]'`.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use serde::Deserialize;
use serde::Serialize;

use super::invalid;
use super::ConfigError;

/// Dial `to` instead of `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressOverride {
    /// host:port as another node advertises it.
    pub from: String,
    /// host:port this node connects to instead.
    pub to: String,
}

/// Every entry's sides are host:port and no `from` appears twice.
pub(super) fn validate_overrides(overrides: &[AddressOverride]) -> Result<(), ConfigError> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, o) in overrides.iter().enumerate() {
        for (side, value) in [("from", &o.from), ("to", &o.to)] {
            host_port(value)
                .map_err(|why| invalid(&format!("address_overrides[{i}].{side}"), why))?;
        }
        if let Some(first) = seen.insert(o.from.as_str(), i) {
            return Err(invalid(
                &format!("address_overrides[{i}].from"),
                format!(
                    "{:?} is already overridden by address_overrides[{first}]",
                    o.from
                ),
            ));
        }
    }
    Ok(())
}

/// Accepts `name:port`, `ipv4:port` and `[ipv6]:port` with a port in 1..=65535.
fn host_port(value: &str) -> Result<(), String> {
    let bad = |why: &str| format!("{value:?} is not host:port ({why})");
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(bad("no port"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("port must be within 1..=65535")),
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']').map(str::parse::<Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(bad("bad IPv6 address")),
        };
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(bad("bad host name; an IPv6 address needs brackets"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::node_config::load_toml;

    fn o(from: &str, to: &str) -> AddressOverride {
        AddressOverride {
            from: from.into(),
            to: to.into(),
        }
    }

    #[test]
    fn address_overrides_errors_name_the_entry_and_side() {
        let ok = o("orderer1.example.com:7050", "127.0.0.1:17050");
        assert!(validate_overrides(&[
            ok.clone(),
            o("[::1]:7", "svc-a.ns.svc.cluster.local:7050"),
            o("10.0.0.1:1", "peer_0:65535"),
        ])
        .is_ok());
        let cases: Vec<(&str, Vec<AddressOverride>)> = vec![
            ("address_overrides[0].from", vec![o("nohost", "a:1")]),
            ("address_overrides[1].to", vec![ok.clone(), o("a:1", "b:0")]),
            ("address_overrides[1].to", vec![ok.clone(), o("a:1", "b:x")]),
            (
                "address_overrides[2].to",
                vec![ok.clone(), o("a:1", "b:2"), o("c:3", "::1:7050")],
            ),
            ("address_overrides[0].from", vec![o(":7050", "a:1")]),
            ("address_overrides[0].to", vec![o("a:1", "[::zz]:1")]),
            ("address_overrides[0].to", vec![o("a:1", "a b:1")]),
            ("address_overrides[0].to", vec![o("a:1", "a..b:1")]),
            (
                "address_overrides[2].from",
                vec![ok.clone(), o("a:1", "b:2"), o(&ok.from, "c:3")],
            ),
        ];
        for (field, list) in cases {
            let err = validate_overrides(&list).unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
        }
        let dup = validate_overrides(&[ok.clone(), ok.clone()]).unwrap_err();
        assert!(
            dup.to_string()
                .contains("already overridden by address_overrides[0]"),
            "{dup}"
        );
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        address_overrides: Vec<AddressOverride>,
    }

    #[test]
    fn address_overrides_read_as_an_array_of_tables_and_from_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(
            &p,
            "name = \"n\"\n\n[[address_overrides]]\nfrom = \"o2:7050\"\nto = \"127.0.0.1:1\"\n\n\
             [[address_overrides]]\nfrom = \"o3:7050\"\nto = \"127.0.0.1:2\"\n",
        )
        .unwrap();
        let s: Sample = load_toml(&p, "X_", std::iter::empty()).unwrap();
        assert_eq!(
            s.address_overrides,
            vec![o("o2:7050", "127.0.0.1:1"), o("o3:7050", "127.0.0.1:2")]
        );
        let vars = [(
            "X_ADDRESS_OVERRIDES".to_owned(),
            "[{from = \"o4:7050\", to = \"proxy:9\"}]".to_owned(),
        )];
        let s: Sample = load_toml(&p, "X_", vars.into_iter()).unwrap();
        assert_eq!(s.address_overrides, vec![o("o4:7050", "proxy:9")]);
        std::fs::write(&p, "name = \"n\"\n").unwrap();
        let s: Sample = load_toml(&p, "X_", std::iter::empty()).unwrap();
        assert_eq!((s.name.as_str(), s.address_overrides.len()), ("n", 0));
    }

    #[test]
    fn orderer_config_with_address_overrides_round_trips_through_toml() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("orderer.toml");
        std::fs::write(
            &p,
            r#"network = "n"
node_id = 1
msp_id = "OrdererMSP"
listen_address = "0.0.0.0:7050"
cluster_listen_address = "0.0.0.0:7051"
ops_listen_address = "0.0.0.0:7052"
data_dir = "data"
identity = { cert = "c.pem", key = "k.pem" }
tls = { cert = "c.pem", key = "k.pem", ca_roots = ["ca.pem"] }
channels = [{ genesis_block = "g.block" }]

[[address_overrides]]
from = "orderer2.example.com:7051"
to = "127.0.0.1:17051"
"#,
        )
        .unwrap();
        let cfg: crate::node_config::OrdererConfig =
            load_toml(&p, "X_", std::iter::empty()).unwrap();
        assert_eq!(
            cfg.address_overrides,
            vec![o("orderer2.example.com:7051", "127.0.0.1:17051")]
        );
        let written = toml::to_string(&cfg).unwrap();
        let back: crate::node_config::OrdererConfig = toml::from_str(&written).unwrap();
        assert_eq!(back, cfg, "{written}");
    }
}
