//! What the benchmarks read about the demo cluster's node processes from
//! /proc (CPU time, resident and peak memory) and about a directory's
//! disk use.

use anyhow::Context;
use anyhow::bail;

use crate::demo;

pub fn clock_ticks_per_s() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: i32) -> anyhow::Result<u64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("malformed stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

pub fn rss_bytes(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    let kb: u64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
    Ok(kb * 1024)
}

/// Resets the kernel's peak-RSS mark of the demo nodes (`clear_refs` 5) and
/// returns their pids.
pub fn reset_peak_rss(demo_dir: &std::path::Path) -> anyhow::Result<Vec<i32>> {
    let pids: Vec<i32> = demo::read_pids(demo_dir).into_iter().filter(|p| demo::alive(*p)).collect();
    if pids.is_empty() {
        bail!("no running demo cluster in {}", demo_dir.display());
    }
    for p in &pids {
        std::fs::write(format!("/proc/{p}/clear_refs"), "5").with_context(|| format!("resetting peak RSS of {p}"))?;
    }
    Ok(pids)
}

/// Peak RSS (VmHWM) of `pid` since start or the last reset.
pub fn peak_rss_bytes(pid: i32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).context("no VmHWM")?;
    let kb: u64 = line.split_whitespace().nth(1).context("VmHWM value")?.parse()?;
    Ok(kb * 1024)
}

pub fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    rd.filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                m.blocks() * 512
            }
            Err(_) => 0,
        })
        .sum()
}

pub fn total_rss(pids: &[i32]) -> anyhow::Result<u64> {
    pids.iter().map(|p| rss_bytes(*p)).sum()
}
