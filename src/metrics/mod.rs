//! Measurements of the machine running edgeprune: wall time statistics and peak resident memory.

pub mod bench;
pub mod energy;
pub mod latency;
pub mod train_cost;

use serde::Serialize;

/// A `/proc/self/status` field in bytes (Linux; kB there), if the OS tells.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if the OS tells.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM")
}

/// This process's resident memory now, in bytes: (anonymous, file-backed) (Linux `RssAnon`,
/// `RssFile`). Memory-mapped dataset pages count as file-backed: the OS may drop them.
pub fn resident_bytes() -> Option<(u64, u64)> {
    Some((status_bytes("RssAnon")?, status_bytes("RssFile")?))
}

/// Summary of repeated timings, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct TimeStats {
    pub count: usize,
    pub median: f64,
    pub min: f64,
    pub mean: f64,
    pub p90: f64,
}

impl TimeStats {
    pub fn from_samples(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let median = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        Some(TimeStats {
            count: n,
            median,
            min: s[0],
            mean: s.iter().sum::<f64>() / n as f64,
            p90: s[((n as f64 * 0.9).ceil() as usize).clamp(1, n) - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats() {
        let t = TimeStats::from_samples(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(t.median, 2.5);
        assert_eq!(t.min, 1.0);
        assert_eq!(t.p90, 10.0);
        assert!(TimeStats::from_samples(&[]).is_none());
        assert!(peak_rss_bytes().unwrap() > 0);
    }
}
