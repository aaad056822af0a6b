//! What `orderer admin` prints: text for people, one JSON document for scripts.

use serde::Serialize;
use serde_json::json;
use shared_proto::pb::orderer::ChannelInfo;

use crate::admin_client::config_view::CertView;
use crate::admin_client::config_view::ConfigView;
use crate::admin_client::Applied;
use crate::admin_client::ConsenterOp;
use crate::admin_client::CurrentConfig;
use crate::admin_client::OrdererNode;
use crate::admin_client::StatusView;

fn print_json<T: Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        // Only maps with non-string keys fail, and none are printed.
        Err(e) => eprintln!("error: cannot encode the answer as JSON: {e}"),
    }
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "(none)".into()
    } else {
        list.join(", ")
    }
}

/// The first 16 hex digits of a fingerprint.
fn short(sha256: &str) -> &str {
    sha256.get(..16).unwrap_or(sha256)
}

pub fn status(asked: &str, role: &str, s: &StatusView, json: bool) {
    if json {
        return print_json(s);
    }
    println!("channel          {}", s.channel);
    println!("asked            {asked} (role {role})");
    println!(
        "leader           {}",
        s.leader.as_deref().unwrap_or("(none)")
    );
    println!("voters           {}", names(&s.voters));
    println!("learners         {}", names(&s.learners));
    println!("height           {}", s.height);
    println!("config sequence  {}", s.config_sequence);
}

fn info_json(node: &str, c: &ChannelInfo) -> serde_json::Value {
    json!({
        "node": node,
        "channel": c.channel_id,
        "height": c.height,
        "role": c.role,
        "status": c.status,
        "config_sequence": c.config_sequence,
    })
}

pub fn channel_list(node: &str, channels: &[ChannelInfo], json: bool) {
    if json {
        let list: Vec<serde_json::Value> = channels
            .iter()
            .map(|c| {
                let mut v = info_json(node, c);
                if let Some(m) = v.as_object_mut() {
                    m.remove("node");
                }
                v
            })
            .collect();
        return print_json(&json!({ "node": node, "channels": list }));
    }
    println!(
        "{:<24} {:>8}  {:<11} {:<11} {:>15}",
        "CHANNEL", "HEIGHT", "ROLE", "STATUS", "CONFIG SEQUENCE"
    );
    for c in channels {
        println!(
            "{:<24} {:>8}  {:<11} {:<11} {:>15}",
            c.channel_id, c.height, c.role, c.status, c.config_sequence
        );
    }
}

pub fn channel_info(what: &str, node: &str, c: &ChannelInfo, json: bool) {
    if json {
        return print_json(&info_json(node, c));
    }
    println!(
        "{node} {what} channel {}: height {}, role {}, status {}, config sequence {}",
        c.channel_id, c.height, c.role, c.status, c.config_sequence
    );
}

#[derive(Serialize)]
struct ConsenterChange<'a> {
    change: &'static str,
    node: &'a str,
    node_id: u64,
    #[serde(flatten)]
    applied: &'a Applied,
}

pub fn consenter(op: ConsenterOp, node: &OrdererNode, a: &Applied, json: bool) {
    if json {
        return print_json(&ConsenterChange {
            change: op.as_str(),
            node: &node.name,
            node_id: node.node_id,
            applied: a,
        });
    }
    println!(
        "consenter {} {} (node id {}) on channel {}",
        op.as_str(),
        node.name,
        node.node_id,
        a.channel
    );
    applied(a);
    match op {
        ConsenterOp::Add => {}
        ConsenterOp::Remove => println!(
            "  {} stops its Raft for the channel and keeps its blocks",
            node.name
        ),
        ConsenterOp::Replace => println!(
            "  restart {} if it does not yet present the certificate its files now hold",
            node.name
        ),
    }
}

fn applied(a: &Applied) {
    println!(
        "  config sequence {} -> {}, ordered by {} (tx {})",
        a.previous_sequence,
        a.config_sequence,
        a.submitted_to,
        short(&a.tx_id)
    );
    let s = &a.status;
    println!(
        "  carried out in {:.1} s: leader {}; voters {}; learners {}; height {}",
        a.elapsed_ms as f64 / 1000.0,
        s.leader.as_deref().unwrap_or("(none)"),
        names(&s.voters),
        names(&s.learners),
        s.height
    );
}

pub fn config_update(changes: &[String], a: &Applied, json: bool) {
    if json {
        return print_json(&json!({ "changes": changes, "applied": a }));
    }
    println!(
        "config update of channel {}: {} change(s)",
        a.channel,
        changes.len()
    );
    for c in changes {
        println!("  {c}");
    }
    applied(a);
}

fn cert(c: &CertView) -> String {
    format!("{} (sha256 {})", c.subject, short(&c.sha256))
}

pub fn config(current: &CurrentConfig, name_of: impl Fn(u64) -> String, json: bool) {
    let view = ConfigView::of(current.channel.config());
    if json {
        return print_json(&view);
    }
    println!(
        "channel {}: config sequence {} (set by block {}; height {} at {})",
        view.channel_id, view.sequence, current.block_number, current.height, current.node
    );
    if let Some(o) = &view.orderer {
        if let Some(b) = &o.batch_size {
            println!(
                "batch: message_count_max {}, bytes_absolute_max {}, bytes_preferred_max {}, \
                 timeout {} ms, retry window {} txs",
                b.message_count_max,
                b.bytes_absolute_max,
                b.bytes_preferred_max,
                o.batch_timeout_ms,
                o.retry_window_txs
            );
        }
        println!("consenters:");
        for c in &o.consenters {
            println!(
                "  {:>3}  {:<10} {}:{}  {}  tls sha256 {}",
                c.id,
                name_of(c.id),
                c.host,
                c.port,
                c.msp_id,
                short(&c.client_tls_cert.sha256)
            );
        }
        println!("orderer endpoints: {}", names(&o.orderer_endpoints));
    }
    println!("organisations:");
    let orgs = view
        .orderer_orgs
        .iter()
        .map(|o| ("orderer", o))
        .chain(view.application_orgs.iter().map(|o| ("application", o)));
    for (kind, o) in orgs {
        println!("  {} ({kind})", o.msp_id);
        for c in &o.root_certs {
            println!("    ca      {}", cert(c));
        }
        for c in &o.tls_root_certs {
            println!("    tls ca  {}", cert(c));
        }
    }
    println!("policies:");
    for p in &view.policies {
        println!(
            "  {:<16} {}",
            p.name,
            p.rule.as_deref().unwrap_or("(unset)")
        );
    }
    println!("chaincodes:");
    if view.chaincodes.is_empty() {
        println!("  (none)");
    }
    for c in &view.chaincodes {
        println!(
            "  {} {}  endorsement {}",
            c.name,
            c.version,
            c.endorsement_policy.as_deref().unwrap_or("(unset)")
        );
    }
}
