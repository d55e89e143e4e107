//! CPU and memory of a proxy from /proc, summed over its process tree (an
//! nginx master and its worker, a multi-threaded gateway). CPU time comes
//! from each thread's `schedstat` (nanoseconds on CPU); the user/system
//! split from `stat` (clock ticks, coarser). Memory is `VmRSS`.

use std::collections::HashMap;
use std::fs;

/// CPU counters of a process tree at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSample {
    /// Nanoseconds on CPU, all threads.
    pub(crate) cpu_ns: u64,
    /// User time, clock ticks.
    pub(crate) user_ticks: u64,
    /// System time, clock ticks.
    pub(crate) system_ticks: u64,
}

/// `pid` and all its descendants.
pub(crate) fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(parent) = stat_fields(child).and_then(|f| f.get(1).and_then(|p| p.parse::<u32>().ok())) {
                children.entry(parent).or_default().push(child);
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        if let Some(kids) = children.get(&out[i]) {
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// Fields of /proc/PID/stat after the command name: index 0 is the state,
/// 1 the parent pid, 11 utime, 12 stime.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU used so far by `pids`.
pub(crate) fn cpu(pids: &[u32]) -> CpuSample {
    let mut sample = CpuSample::default();
    for pid in pids {
        if let Some(fields) = stat_fields(*pid) {
            sample.user_ticks += fields.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            sample.system_ticks += fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let path = task.path().join("schedstat");
            if let Some(ns) = fs::read_to_string(path)
                .ok()
                .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()))
            {
                sample.cpu_ns += ns;
            }
        }
    }
    sample
}

/// Resident memory of `pids`, KiB.
pub(crate) fn rss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
        })
        .sum()
}

/// CPU between two samples, split into (total µs, user share 0..1).
pub(crate) fn delta(before: CpuSample, after: CpuSample) -> (f64, f64) {
    let user = after.user_ticks.saturating_sub(before.user_ticks) as f64;
    let system = after.system_ticks.saturating_sub(before.system_ticks) as f64;
    let mut total_us = after.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1000.0;
    if total_us == 0.0 {
        // No schedstat on this kernel: fall back to clock ticks (USER_HZ is
        // 100 on Linux), coarse but not zero.
        total_us = (user + system) * 10_000.0;
    }
    let user_share = if user + system > 0.0 {
        user / (user + system)
    } else {
        0.0
    };
    (total_us, user_share)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(tree(me).contains(&me));
        assert!(rss_kib(&[me]) > 0);
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu(&[me]).cpu_ns > 0);
    }
}
