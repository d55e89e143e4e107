//! HTTP/2 load points for `compare --h2`, driven by nghttp2's `h2load`
//! (apt `nghttp2-client`): `--sessions` connections, `--h2-streams`
//! concurrent streams on each, GET requests at a fixed total rate over TLS
//! (ALPN `h2`). This tool's own client speaks HTTP/1.1 only; h2load is the
//! HTTP/2 client the peers are usually measured with. Latencies come from
//! h2load's per-request log, so the table has the same percentiles as the
//! other protocols.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hdrhistogram::Histogram;

use super::process::Running;
use super::procstat;
use super::table::LoadPoint;
use crate::cli::CompareArgs;
use crate::report::Percentiles;

/// Whether `h2load` can be run.
pub(crate) async fn available() -> bool {
    tokio::process::Command::new("h2load")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// One fixed-rate run of `rate` requests/s against `url`.
pub(crate) async fn point(
    args: &CompareArgs,
    url: &str,
    rate: f64,
    dir: &Path,
    proxy: Option<&Running>,
) -> Option<LoadPoint> {
    let clients = args.sessions.max(1);
    // h2load paces each client: the total rate is shared among them.
    let per_client = (rate / clients as f64).max(1.0);
    let log = dir.join(format!("h2load-{rate:.0}.log"));
    let _ = std::fs::remove_file(&log);
    let pids = proxy.map(Running::pids).unwrap_or_default();
    let before = procstat::cpu(&pids);
    let out = tokio::process::Command::new("h2load")
        .args(["-c", &clients.to_string()])
        .args(["-m", &args.h2_streams.max(1).to_string()])
        .args(["--rps", &format!("{per_client:.0}")])
        .args(["-D", &args.duration.as_secs().max(1).to_string()])
        .args(["-T", "5"])
        .arg(format!("--log-file={}", log.display()))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .await
        .ok()?;
    let after = procstat::cpu(&pids);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = Summary::parse(&stdout);
    let read = read_log(&log);
    // A line per request: summarised here, not kept in the results.
    let _ = std::fs::remove_file(&log);
    let (latency, ok, bad) = read?;
    if summary.is_none_or(|s| s.succeeded == 0) && ok == 0 {
        eprintln!(
            "   h2load produced no result: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return None;
    }
    let failed = summary.map_or(0, |s| s.failed + s.errored + s.timeout);
    let elapsed = args.duration.max(Duration::from_secs(1)).as_secs_f64();
    // Counted as the other protocols count an exchange: two relayed messages.
    let relayed = (2 * ok) as f64;
    let (cpu_us, user_share) = procstat::delta(before, after);
    let point = LoadPoint {
        offered_per_s: rate,
        achieved_per_s: (ok as f64 / elapsed).round(),
        latency_us: latency,
        errors_total: bad + failed,
        mismatched: 0,
        cpu_us_per_msg: (proxy.is_some() && relayed > 0.0).then(|| (cpu_us / relayed * 100.0).round() / 100.0),
        user_share: proxy.is_some().then_some((user_share * 100.0).round() / 100.0),
    };
    let cpu = point.cpu_us_per_msg.map_or("—".into(), |c| format!("{c:.2}"));
    eprintln!(
        "   {rate:.0} req/s offered (h2load): {:.0} achieved, p50 {} µs p99 {} µs, cpu {cpu} µs/msg, {} errors",
        point.achieved_per_s, point.latency_us.p50, point.latency_us.p99, point.errors_total
    );
    Some(point)
}

/// h2load's request counts ("requests: N total, N started, N done, N
/// succeeded, N failed, N errored, N timeout").
#[derive(Debug, Clone, Copy, PartialEq)]
struct Summary {
    succeeded: u64,
    failed: u64,
    errored: u64,
    timeout: u64,
}

impl Summary {
    fn parse(stdout: &str) -> Option<Self> {
        let line = stdout.lines().find(|l| l.starts_with("requests:"))?;
        let count = |what: &str| {
            line.split(',')
                .find(|part| part.trim().ends_with(what))
                .and_then(|part| part.split_whitespace().rev().nth(1))
                .and_then(|n| n.parse().ok())
        };
        Some(Self {
            succeeded: count("succeeded")?,
            failed: count("failed")?,
            errored: count("errored")?,
            timeout: count("timeout")?,
        })
    }
}

/// The log's latencies (µs), and the 2xx and other answers. Each line:
/// start (µs since the epoch), status, µs to the end of the response.
fn read_log(path: &Path) -> Option<(Percentiles, u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).ok()?;
    let (mut ok, mut bad) = (0, 0);
    for line in text.lines() {
        let mut cols = line.split('\t');
        let (Some(_start), Some(status), Some(us)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        match (status.trim().parse::<u16>(), us.trim().parse::<u64>()) {
            (Ok(s), Ok(us)) if (200..300).contains(&s) => {
                ok += 1;
                let _ = hist.record(us.max(1));
            }
            _ => bad += 1,
        }
    }
    Some((Percentiles::of(&hist), ok, bad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_is_read() {
        let out = "finished in 3.00s, 2000.00 req/s, 600KB/s\nrequests: 6000 total, 6016 started, 6000 done, 5990 succeeded, 10 failed, 0 errored, 0 timeout\n";
        assert_eq!(
            Summary::parse(out),
            Some(Summary {
                succeeded: 5990,
                failed: 10,
                errored: 0,
                timeout: 0
            })
        );
        assert_eq!(Summary::parse("nothing here"), None);
    }

    #[test]
    fn the_log_gives_percentiles_and_counts() {
        let dir = std::env::temp_dir().join(format!("h2load-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let mut text = String::new();
        for i in 1..=100u64 {
            text.push_str(&format!("1700000000000000\t200\t{}\n", i * 10));
        }
        text.push_str("1700000000000000\t503\t50\ngarbage\n");
        std::fs::write(&path, text).unwrap();
        let (p, ok, bad) = read_log(&path).unwrap();
        assert_eq!((ok, bad), (100, 1));
        assert_eq!(p.count, 100);
        assert!((495..=505).contains(&p.p50), "{p:?}");
        assert!((985..=995).contains(&p.p99), "{p:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
