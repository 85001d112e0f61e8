//! `sim placement-eval` end to end on a short real trace slice: every
//! policy is scored at both warm-up lags, the oracle never violates the
//! SLO, the router never puts weight on a shadow that is not ready, plots
//! are written, and a bad trace is refused naming the file and line.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

#[test]
fn evaluates_every_policy_on_a_trace_slice() {
    let plots = tempfile::tempdir().expect("tempdir");
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["placement-eval", "--trace"])
        .arg(data("twitter_volume_AMZN_head.csv"))
        .args(["--output", "json", "--jobs", "1", "--frontier", "--plots"])
        .arg(plots.path())
        .output()
        .expect("run sim");
    assert!(output.status.success(), "stderr: {}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json report");
    let trace = &report["traces"][0];
    assert_eq!(trace["steps"], 1500);
    assert_eq!(trace["scored_from_step"], 900, "60% tuning, 40% scored");
    let coverage = trace["forecast"]["coverage_95"].as_f64().expect("coverage");
    assert!((0.85..=1.0).contains(&coverage), "95% interval covered {coverage}");
    let lags = trace["lags"].as_array().expect("lags");
    assert_eq!(lags.iter().map(|l| l["lag_min"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 10]);
    for lag in lags {
        let policies = lag["policies"].as_array().expect("policies");
        let names: Vec<&str> = policies.iter().map(|p| p["policy"]["policy"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["static-peak", "reactive", "predictive", "predictive-reactive", "oracle"]);
        let metric = |name: &str, key: &str| {
            let p = policies.iter().find(|p| p["policy"]["policy"] == name).expect("policy");
            p["scored"][key].as_f64().expect("metric")
        };
        assert_eq!(metric("oracle", "slo_violation_minutes"), 0.0, "perfect foresight violated the SLO");
        assert_eq!(metric("oracle", "shadows_never_needed"), 0.0);
        assert!(metric("static-peak", "replica_minutes") >= metric("oracle", "replica_minutes"));
        for p in policies {
            let m = &p["scored"];
            assert_eq!(m["weight_over_ready_events"], 0, "{p}");
            assert_eq!(m["minutes"], 600 * 5, "scored minutes of {p}");
            assert!(m["shadows_never_needed"].as_u64() <= m["shadows_added"].as_u64(), "{p}");
        }
        // The hindsight frontier scored every candidate, the tuned ones
        // among them, so no tuned policy has a lower never-needed share.
        let frontier = &lag["frontier"];
        assert_eq!(frontier["candidates"], 5 + 30 + 150, "{frontier}");
        let lowest = frontier["never_needed_share"].as_f64().expect("share");
        for name in ["reactive", "predictive", "predictive-reactive"] {
            let added = metric(name, "shadows_added");
            if added > 0.0 {
                assert!(lowest <= metric(name, "shadows_never_needed") / added + 1e-12, "{name}: {frontier}");
            }
        }
    }
    // The joint hindsight bound keeps within the replica-minute target.
    let joint = report["summary"]["joint_frontier"].as_array().expect("joint frontier");
    assert_eq!(joint.len(), 3, "one per lag: {joint:?}");
    for j in joint {
        assert!(j["replica_minutes_vs_oracle"].as_f64().expect("ratio") <= 1.3, "{j}");
    }
    let targets = report["summary"]["targets"].as_array().expect("targets");
    assert!(targets.iter().any(|t| t["name"] == "replica-minutes / oracle"));
    for lag in [1, 2, 10] {
        let svg = std::fs::read_to_string(plots.path().join(format!("twitter_volume_AMZN_head-lag{lag}.svg")))
            .expect("plot written");
        assert!(svg.starts_with("<svg") && svg.contains("oracle") && svg.trim_end().ends_with("</svg>"));
        for part in ["hours into the scored part", "requests/s (log scale)", "95% forecast band", "demand"] {
            assert!(svg.contains(part), "{part:?} missing from the plot");
        }
    }
}

#[test]
fn bad_traces_are_refused_with_the_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.csv");
    std::fs::write(&path, "timestamp,value\n2015-01-01 00:00:00,1\n2015-01-01 00:05:00,lots\n").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["placement-eval", "--trace"])
        .arg(&path)
        .output()
        .expect("run sim");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("broken.csv:3") && stderr.contains("lots"), "{stderr}");
    let output = Command::new(env!("CARGO_BIN_EXE_sim")).args(["placement-eval"]).output().expect("run sim");
    assert_eq!(output.status.code(), Some(2), "no trace given");
}
