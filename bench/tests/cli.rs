//! The real binary, end to end: `upstream` on an ephemeral port, `load
//! --json` against it (the JSON on stdout parses and has the documented
//! fields), and `compare` with a gateway binary that does not exist (it is
//! reported and the other targets still run).

// Test helpers outside #[test] functions are not covered by clippy's
// allow-unwrap-in-tests; a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_agentmux-bench");

struct Upstream(Child, String);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn upstream(extra: &[&str]) -> Upstream {
    let mut child = Command::new(BIN)
        .args(["upstream", "--listen", "127.0.0.1:0", "--threads", "1"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    // "upstream simulator listening on 127.0.0.1:PORT (http/ws)"
    let addr = line.split_whitespace().nth(4).unwrap().to_string();
    Upstream(child, addr)
}

fn load_json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("load")
        .args(args)
        .args(["--json", "--quiet", "--threads", "1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn load_json_on_stdout_is_the_documented_schema() {
    let up = upstream(&[]);
    let v = load_json(&[
        &format!("ws://{}/ws", up.1),
        "-s",
        "2",
        "--messages",
        "50",
        "--rate",
        "1000",
    ]);
    assert_eq!(v["schema"], "agentmux-bench.load.v1");
    assert_eq!(v["protocol"], "ws");
    assert_eq!(v["messages"]["sent"], 100);
    assert_eq!(v["messages"]["received"], 100);
    assert_eq!(v["messages"]["mismatched"], 0);
    assert_eq!(v["latency_us"]["count"], 100);
    assert!(v["throughput"]["messages_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["errors_total"], 0);
    assert!(v["sse"].is_null());
}

#[test]
fn corruption_injected_by_the_simulator_process_is_counted() {
    let up = upstream(&["--corrupt-rate", "0.1"]);
    let v = load_json(&[&format!("ws://{}/ws", up.1), "-s", "2", "--messages", "300"]);
    assert!(v["messages"]["mismatched"].as_u64().unwrap() > 0);
}

#[test]
fn sse_report_has_token_figures() {
    let up = upstream(&[]);
    let v = load_json(&[
        &format!("http://{}/sse?tokens=5&delay_ms=1", up.1),
        "--protocol",
        "sse",
        "-s",
        "2",
        "--messages",
        "3",
    ]);
    assert_eq!(v["protocol"], "sse");
    assert_eq!(v["sse"]["streams_completed"], 6);
    assert_eq!(v["messages"]["received"], 30);
    assert!(v["sse"]["inter_token_us"]["count"].as_u64().unwrap() > 0);
}

#[test]
fn compare_reports_a_missing_gateway_and_runs_the_rest() {
    let out_dir = std::env::temp_dir().join(format!("agentmux-bench-compare-{}", std::process::id()));
    // Below the ephemeral range (32768+), where outgoing sockets could hold the port.
    let base_port = 20000 + (std::process::id() % 1000) as u16 * 12;
    let out = Command::new(BIN)
        .args([
            "compare",
            "--targets",
            "direct,echo,agentmux",
            "--rates",
            "400",
            "--duration",
            "300ms",
        ])
        .args([
            "--sessions",
            "4",
            "--idle-sessions",
            "20",
            "--setup-sessions",
            "8",
            "--quiet",
        ])
        .args([
            "--agentmux",
            "/nonexistent/agentmux",
            "--base-port",
            &base_port.to_string(),
        ])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("compare.json")).unwrap()).unwrap();
    assert_eq!(json["schema"], "agentmux-bench.compare.v1");
    let targets = json["targets"].as_array().unwrap();
    assert_eq!(targets[0]["name"], "direct");
    assert_eq!(targets[0]["status"], "ok");
    assert_eq!(targets[0]["points"][0]["errors_total"], 0);
    assert_eq!(targets[0]["idle"]["open"], 20);
    assert!(targets[0]["points"][0]["cpu_us_per_msg"].is_null());
    // The echo floor is a process of its own, measured like a proxy.
    assert_eq!(targets[1]["name"], "echo");
    assert_eq!(targets[1]["status"], "ok", "{}", targets[1]);
    assert_eq!(targets[1]["points"][0]["errors_total"], 0);
    assert_eq!(targets[1]["points"][0]["mismatched"], 0);
    assert!(targets[1]["points"][0]["cpu_us_per_msg"].as_f64().unwrap() > 0.0);
    assert_eq!(targets[2]["name"], "agentmux");
    assert!(targets[2]["status"].as_str().unwrap().contains("not found"));
    let markdown = std::fs::read_to_string(out_dir.join("compare.md")).unwrap();
    assert!(markdown.contains("| direct |"));
    assert!(markdown.contains("| echo |"));
    assert!(out_dir.join("latency-vs-load.svg").is_file());
    let _ = std::fs::remove_dir_all(&out_dir);
}

/// Capacity above `--sessions-per-process` is held by several `hold`
/// processes at once, and their counts add up.
#[test]
fn capacity_is_split_over_generator_processes() {
    let out_dir = std::env::temp_dir().join(format!("agentmux-bench-capacity-{}", std::process::id()));
    // Below the ephemeral range, and apart from the other compare test's ports.
    let base_port = 21000 + (std::process::id() % 1000) as u16 * 12;
    let out = Command::new(BIN)
        .args(["compare", "--targets", "direct", "--rates", "0", "--idle-sessions", "0"])
        .args([
            "--setup-sessions",
            "0",
            "--max-sessions",
            "300",
            "--sessions-per-process",
            "100",
        ])
        .args(["--quiet", "--base-port", &base_port.to_string()])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("compare.json")).unwrap()).unwrap();
    let capacity = &json["targets"][0]["capacity"];
    assert_eq!(capacity["requested"], 300);
    assert_eq!(capacity["held"], 300, "{capacity}");
    assert_eq!(capacity["generator_processes"], 3);
    assert!(capacity["first_error"].is_null(), "{capacity}");
    let _ = std::fs::remove_dir_all(&out_dir);
}
