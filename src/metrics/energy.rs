//! Energy used between two points, from the counters the machine exposes: Linux powercap (Intel
//! and AMD RAPL package domains: `/sys/class/powercap/*-rapl:N/energy_uj`), or the INA3221 power
//! rails of NVIDIA Jetson boards (`/sys/bus/i2c/drivers/ina3221*/.../in_power*_input`, in mW,
//! sampled at 10 Hz and integrated). Where neither exists the result is None ("unavailable"),
//! never an estimate.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

fn read_u64(p: &PathBuf) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Package-level RAPL domains (e.g. intel-rapl:0, not its sub-domains intel-rapl:0:0).
fn rapl_domains() -> Vec<(PathBuf, u64)> {
    let Ok(dir) = std::fs::read_dir("/sys/class/powercap") else { return vec![] };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.contains("rapl:") && name.matches(':').count() == 1 {
            let p = e.path();
            if let (Some(_), Some(max)) = (read_u64(&p.join("energy_uj")), read_u64(&p.join("max_energy_range_uj"))) {
                out.push((p.join("energy_uj"), max));
            }
        }
    }
    out
}

fn jetson_rails() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(drivers) = std::fs::read_dir("/sys/bus/i2c/drivers") else { return out };
    for d in drivers.flatten().filter(|d| d.file_name().to_string_lossy().starts_with("ina3221")) {
        let mut stack = vec![d.path()];
        while let Some(p) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&p) else { continue };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                let path = e.path();
                if name.starts_with("in_power") && name.ends_with("_input") {
                    out.push(path);
                } else if path.is_dir() && !path.is_symlink() && stack.len() < 64 {
                    stack.push(path);
                }
            }
        }
    }
    out
}

pub enum Meter {
    Rapl { start: Vec<(PathBuf, u64, u64)> },
    Sampled { stop: Arc<AtomicBool>, handle: JoinHandle<f64> },
    Unavailable,
}

impl Meter {
    pub fn start() -> Meter {
        let rapl = rapl_domains();
        if !rapl.is_empty() {
            return Meter::Rapl {
                start: rapl.into_iter().filter_map(|(p, max)| Some((p.clone(), max, read_u64(&p)?))).collect(),
            };
        }
        let rails = jetson_rails();
        if rails.is_empty() {
            return Meter::Unavailable;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut joules = 0.0;
            let mut last = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                let watts: f64 = rails.iter().filter_map(read_u64).map(|mw| mw as f64 / 1e3).sum();
                let now = Instant::now();
                joules += watts * now.duration_since(last).as_secs_f64();
                last = now;
            }
            joules
        });
        Meter::Sampled { stop, handle }
    }

    /// Joules used since `start`, or None where the machine has no counter.
    pub fn joules(self) -> Option<f64> {
        match self {
            Meter::Rapl { start } => {
                let mut total = 0.0;
                for (p, max, e0) in start {
                    let e1 = read_u64(&p)?;
                    let d = if e1 >= e0 { e1 - e0 } else { max - e0 + e1 };
                    total += d as f64 / 1e6;
                }
                Some(total)
            }
            Meter::Sampled { stop, handle } => {
                stop.store(true, Ordering::Relaxed);
                handle.join().ok()
            }
            Meter::Unavailable => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn meter_reports_a_counter_or_nothing() {
        let m = super::Meter::start();
        std::thread::sleep(std::time::Duration::from_millis(20));
        if let Some(j) = m.joules() {
            assert!(j >= 0.0 && j.is_finite());
        }
    }
}
