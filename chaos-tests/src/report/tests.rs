#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::*;

/// A JSON type test, as the issue states the shape.
type IsA = dyn Fn(&Value) -> bool;

fn sample_run(scenario: &str, seed: u64, checks: Checks) -> RunReport {
    RunReport {
        scenario: scenario.into(),
        seed,
        backend: Backend::Process,
        duration_s: 30.5,
        faults: vec![
            FaultWindow {
                kind: "kill".into(),
                target: "orderer1".into(),
                start_s: 5.0,
                end_s: 12.0,
            },
            FaultWindow {
                kind: "partition".into(),
                target: "orderer2<->orderer3".into(),
                start_s: 8.0,
                end_s: 20.0,
            },
        ],
        txs: TxCounts {
            submitted: 100,
            acked: 90,
            committed_valid: 88,
            committed_invalid: 1,
            lost_acked: 0,
            duplicates: 0,
            unknown: 10,
        },
        checks,
        liveness_after_heal_s: 2.25,
        passed: checks.all_hold(),
        rerun: format!("cargo run -p chaos-tests --bin chaos -- run {scenario} --seed {seed}"),
        check_details: BTreeMap::from([("no_fork".into(), "3 orderers agree to 41".into())]),
        final_heights: BTreeMap::from([("orderer1".into(), 41), ("peer0.org1".into(), 41)]),
        mutant: None,
    }
}

fn sample_timeline() -> Timeline {
    // 10 commits a second for 30 s, except none during seconds 6..9; latencies 60..150 ms
    // (p50 100 ms, p99 150 ms), all 2 s in second 10.
    let mut commits = Vec::new();
    for s in 0..30 {
        if (6..9).contains(&s) {
            continue;
        }
        for i in 0..10 {
            let latency = if s == 10 {
                2.0
            } else {
                f64::from(60 + 10 * i) / 1000.0
            };
            commits.push((s as f64 + i as f64 / 10.0, latency));
        }
    }
    Timeline {
        commits,
        faults: sample_run("x", 1, Checks::ALL_HOLD).faults,
        duration_s: 30.5,
    }
}

/// Tags balance, entities are known, text has no raw `<`: enough to say a browser or an XML
/// parser reads the file the way it was meant (SVG is XML; the page is written as XHTML-clean).
fn assert_well_formed(text: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        let outside = &rest[..open];
        for (i, _) in outside.match_indices('&') {
            let ent = &outside[i..];
            assert!(
                ["&lt;", "&gt;", "&amp;", "&quot;", "&apos;", "&#"]
                    .iter()
                    .any(|e| ent.starts_with(e)),
                "bare & in text: {}",
                &ent[..ent.len().min(20)]
            );
        }
        let close = rest[open..].find('>').expect("unclosed tag") + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        rest = &rest[close + 1..];
        if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        let name: String = tag
            .trim_start_matches('/')
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        if tag.starts_with('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.as_str()),
                "mismatched </{name}>"
            );
        } else {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

#[test]
fn run_report_round_trips_with_every_issue_key_and_its_json_type() {
    let dir = tempfile::tempdir().unwrap();
    let mut checks = Checks::ALL_HOLD;
    checks.acked_not_lost = false;
    let run = sample_run("leader_killed", 7, checks);
    let path = run.write(dir.path()).unwrap();
    assert_eq!(path, dir.path().join("report.json"));

    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let is_str = |v: &Value| v.is_string();
    let is_int = |v: &Value| v.is_u64();
    // serde_json writes every f64 with a fraction or exponent (`5.0`), so floats read back as f64.
    let is_float = |v: &Value| v.is_f64();
    let is_bool = |v: &Value| v.is_boolean();
    let top: [(&str, &IsA); 11] = [
        ("scenario", &is_str),
        ("seed", &is_int),
        ("backend", &|v| v == "process" || v == "docker"),
        ("duration_s", &is_float),
        ("faults", &|v| v.is_array()),
        ("txs", &|v| v.is_object()),
        ("checks", &|v| v.is_object()),
        ("liveness_after_heal_s", &is_float),
        ("passed", &is_bool),
        ("rerun", &is_str),
        ("mutant", &|v| v.is_null() || v.is_string()),
    ];
    for (key, ok) in top {
        assert!(ok(&json[key]), "{key} missing or mistyped: {}", json[key]);
    }
    let mut keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected: Vec<&str> = top.iter().map(|(k, _)| *k).collect();
    expected.extend(["check_details", "final_heights"]);
    expected.sort_unstable();
    assert_eq!(
        keys, expected,
        "a key was renamed, dropped or added unnoticed"
    );
    for fault in json["faults"].as_array().unwrap() {
        for (key, ok) in [
            ("kind", &is_str as &IsA),
            ("target", &is_str),
            ("start_s", &is_float),
            ("end_s", &is_float),
        ] {
            assert!(ok(&fault[key]), "faults[].{key}: {}", fault[key]);
        }
    }
    for key in [
        "submitted",
        "acked",
        "committed_valid",
        "committed_invalid",
        "lost_acked",
        "duplicates",
        "unknown",
    ] {
        assert!(is_int(&json["txs"][key]), "txs.{key}: {}", json["txs"][key]);
    }
    for key in [
        "no_fork",
        "chain_valid",
        "acked_not_lost",
        "no_duplicates",
        "peers_agree",
        "config_agree",
        "live_after_heal",
        "balances_conserved",
        "forged_contained",
    ] {
        assert!(
            is_bool(&json["checks"][key]),
            "checks.{key}: {}",
            json["checks"][key]
        );
    }
    assert_eq!(json["checks"]["acked_not_lost"], false);
    assert_eq!(json["passed"], false);

    assert_eq!(RunReport::read(&path).unwrap(), run);
    assert_eq!(run.failed_checks(), vec!["acked_not_lost"]);
}

#[test]
fn run_report_of_only_the_issue_keys_still_reads() {
    let mut json = serde_json::to_value(sample_run("s", 1, Checks::ALL_HOLD)).unwrap();
    for added in ["check_details", "final_heights", "mutant"] {
        json.as_object_mut().unwrap().remove(added);
    }
    let run: RunReport = serde_json::from_value(json).unwrap();
    assert!(run.final_heights.is_empty() && run.mutant.is_none());
}

#[test]
fn run_report_with_infinite_liveness_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut run = sample_run("s", 1, Checks::ALL_HOLD);
    run.liveness_after_heal_s = f64::INFINITY;
    let err = run.write(dir.path()).unwrap_err().to_string();
    assert!(err.contains("liveness_after_heal_s"), "{err}");
    assert!(!dir.path().join(REPORT_JSON).exists());
}

#[test]
fn per_second_counts_commits_and_leaves_silent_seconds_without_latency() {
    let seconds = sample_timeline().per_second();
    assert_eq!(seconds.len(), 31, "30.5 s spans 31 one-second buckets");
    assert_eq!(seconds[0].commits, 10);
    assert_eq!(seconds[0].p50_ms, Some(100.0));
    assert_eq!((seconds[7].commits, seconds[7].p50_ms), (0, None));
    assert_eq!(seconds[10].p99_ms, Some(2000.0));
    assert_eq!(seconds[30].commits, 0);
    let total: u64 = seconds.iter().map(|s| s.commits).sum();
    assert_eq!(total, 270);
}

#[test]
fn per_second_widens_to_a_commit_after_the_stated_duration() {
    let t = Timeline {
        commits: vec![(4.5, 0.2)],
        faults: vec![],
        duration_s: 2.0,
    };
    let seconds = t.per_second();
    assert_eq!(seconds.len(), 5);
    assert_eq!(seconds[4].commits, 1);
}

#[test]
fn timeline_svg_is_well_formed_and_labels_every_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TIMELINE_SVG);
    sample_timeline()
        .write_svg(&path, "leader_killed, seed 7: PASS")
        .unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.len() > 1000, "{} bytes", svg.len());
    assert!(svg.trim_start().starts_with("<svg"));
    assert!(svg.trim_end().ends_with("</svg>"));
    assert_well_formed(&svg);
    assert!(svg.contains("kill orderer1"), "kill label missing");
    assert!(
        svg.contains("partition orderer2&lt;-&gt;orderer3"),
        "partition label missing"
    );
    assert!(svg.contains("tx/s"));
    assert!(svg.contains("p99"));
}

#[test]
fn timeline_svg_of_a_run_with_no_commit_still_draws() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(TIMELINE_SVG);
    let t = Timeline {
        commits: vec![],
        faults: vec![FaultWindow {
            kind: "pause".into(),
            target: "orderer0".into(),
            start_s: 0.0,
            end_s: 0.0,
        }],
        duration_s: 0.0,
    };
    t.write_svg(&path, "outage").unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert_well_formed(&svg);
    assert!(svg.contains("pause orderer0"));
    assert!(svg.contains("nothing committed"));
}

/// A suite of three runs: `a/` passed with a plot, `b/` failed with a plot, `c/d/` failed
/// without one.
fn sample_suite(dir: &Path) {
    let mut broken = Checks::ALL_HOLD;
    broken.no_fork = false;
    broken.live_after_heal = false;
    let runs = [
        ("a", sample_run("leader_killed", 1, Checks::ALL_HOLD), true),
        ("b", sample_run("partition_minority", 2, broken), true),
        ("c/d", sample_run("pause_all & resume", 3, broken), false),
    ];
    for (sub, run, plot) in runs {
        let run_dir = dir.join(sub);
        if plot {
            write_run(&run_dir, &run, &sample_timeline()).unwrap();
        } else {
            std::fs::create_dir_all(&run_dir).unwrap();
            run.write(&run_dir).unwrap();
        }
    }
}

#[test]
fn suite_summary_lists_every_run_with_failed_checks_and_totals() {
    let dir = tempfile::tempdir().unwrap();
    sample_suite(dir.path());
    let summary = write_suite(dir.path()).unwrap();
    let back = SuiteSummary::read(&dir.path().join(SUMMARY_JSON)).unwrap();
    assert_eq!(back, summary);
    let reports: Vec<&str> = summary.runs.iter().map(|r| r.report.as_str()).collect();
    assert_eq!(
        reports,
        ["a/report.json", "b/report.json", "c/d/report.json"]
    );
    assert_eq!(
        summary.runs[1].failed_checks,
        ["no_fork", "live_after_heal"]
    );
    assert!(summary.runs[1].rerun.contains("--seed 2"));
    assert_eq!(
        (
            summary.totals.runs,
            summary.totals.passed,
            summary.totals.failed
        ),
        (3, 1, 2)
    );
    assert_eq!(summary.totals.txs.submitted, 300);
}

#[test]
fn index_lists_every_run_and_links_only_the_plots_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    sample_suite(dir.path());
    MutantsReport {
        mutants: vec![MutantOutcome {
            name: "skip_fsync".into(),
            caught: true,
            by: "acked_not_lost".into(),
            seconds: 12.5,
        }],
    }
    .write(dir.path())
    .unwrap();
    write_suite(dir.path()).unwrap();
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert_well_formed(&html);
    for needle in [
        "leader_killed",
        "partition_minority",
        "pause_all &amp; resume",
        "href=\"a/report.json\"",
        "href=\"b/report.json\"",
        "href=\"c/d/report.json\"",
        "src=\"a/timeline.svg\"",
        "src=\"b/timeline.svg\"",
        "no_fork",
        "live_after_heal",
        "--seed 3",
        "skip_fsync",
    ] {
        assert!(html.contains(needle), "index.html lacks {needle}");
    }
    assert!(
        !html.contains("c/d/timeline.svg"),
        "links a plot that does not exist"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "not self-contained"
    );
}

#[test]
fn mutants_round_trip_with_the_issue_keys() {
    let dir = tempfile::tempdir().unwrap();
    let report = MutantsReport {
        mutants: vec![MutantOutcome {
            name: "drop_ack".into(),
            caught: false,
            by: String::new(),
            seconds: 60.0,
        }],
    };
    let path = report.write(dir.path()).unwrap();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let m = &json["mutants"][0];
    assert!(m["name"].is_string() && m["caught"].is_boolean());
    assert!(m["by"].is_string() && m["seconds"].is_f64());
    assert_eq!(MutantsReport::read(&path).unwrap(), report);
}

#[test]
fn a_report_that_does_not_parse_fails_the_suite_naming_its_file() {
    let dir = tempfile::tempdir().unwrap();
    sample_suite(dir.path());
    std::fs::write(dir.path().join("b").join(REPORT_JSON), "{\"scenario\": 1").unwrap();
    let err = format!("{:#}", collect_runs(dir.path()).unwrap_err());
    assert!(err.contains("b/report.json"), "{err}");
}
