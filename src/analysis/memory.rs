//! How much memory a run will need, estimated from the graph before anything is allocated, so
//! that `--max-memory` can refuse a batch size or a model that would not fit.
//!
//! The estimate is runtime + weights + activations + data, where
//! - runtime is the resident size of the process with the engine loaded and nothing run;
//! - weights count every parameter and buffer `WEIGHT_COPIES` times in training (the weights,
//!   their gradients, the momentum, and the host copies of a checkpoint) and twice in inference;
//! - activations are the per-image outputs of every node times the batch, times
//!   `TRAIN_ACTIVATION_FACTOR` in training (saved for the backward pass, their gradients, and the
//!   layout copies of the convolution library); in inference, where each output is freed after
//!   its last use, the largest per-image output times the batch times `INFER_ACTIVATION_FACTOR`;
//! - data is what the caller holds in memory (decoded images) plus the prefetched batches.
//!
//! The constants were calibrated against the peak resident size measured with
//! `edgeprune bench train-step` / `bench infer` on this project's CPU engine (see
//! `benches/memory_estimate.sh` and results/memory_estimate.md); they err on the high side.

use crate::error::{Error, Result};
use crate::ir::Graph;

/// Resident bytes of the process with the engine loaded (libraries, allocator pools).
const RUNTIME_BYTES: u64 = 170 << 20;
const WEIGHT_COPIES: u64 = 6;
const TRAIN_ACTIVATION_FACTOR: f64 = 1.5;
/// In inference every output is freed after its last use, so the peak follows the largest one.
const INFER_ACTIVATION_FACTOR: f64 = 6.0;
/// Batches prepared ahead by the loader, plus the one in use and its copy on the device.
const BATCHES_IN_FLIGHT: u64 = 5;

/// An estimate of the peak resident memory of a run, by part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub runtime: u64,
    pub weights: u64,
    pub activations: u64,
    /// Data the caller holds in memory (decoded images).
    pub data: u64,
    /// Batches in flight (prefetched, in use, on the device).
    pub batches: u64,
    pub batch: usize,
}

impl Estimate {
    pub fn total(&self) -> u64 {
        self.runtime + self.weights + self.activations + self.data + self.batches
    }

    pub fn breakdown(&self) -> String {
        format!(
            "runtime {}, weights {}, activations {}, data {}, batches {}",
            human(self.runtime),
            human(self.weights),
            human(self.activations),
            human(self.data),
            human(self.batches)
        )
    }

    /// Refuses, before anything runs, a run whose estimate exceeds `limit`. `what` names the
    /// run ("training resnet20"); the error gives the breakdown and the largest batch that fits.
    /// [`Estimate::check`] against `limit`, or, when none is given, against the memory this
    /// machine has available now (a run that would exhaust it is refused before it starts).
    pub fn check_or_available(&self, limit: Option<u64>, what: &str) -> Result<()> {
        if let Some(l) = limit {
            return self.check(l, what);
        }
        let Some(avail) = available_bytes() else { return Ok(()) };
        self.check(avail, what).map_err(|e| {
            Error::config(
                "max_memory",
                format!(
                    "{} (the limit is the memory this machine has available now; to run anyway, set a \
                     limit yourself with --max-memory, or max_memory in a recipe)",
                    e.to_string().trim_start_matches("max_memory: ")
                ),
            )
        })
    }

    pub fn check(&self, limit: u64, what: &str) -> Result<()> {
        if self.total() <= limit {
            return Ok(());
        }
        let hint = match self.largest_batch_within(limit) {
            Some(b) => format!("lower the batch size (at most {b} fits) or raise the limit"),
            None => "not even a batch of 1 fits: raise the limit".to_string(),
        };
        Err(Error::config(
            "max_memory",
            format!(
                "{what} at batch size {} needs about {} ({}), more than the limit of {}; {hint}",
                self.batch,
                human(self.total()),
                self.breakdown(),
                human(limit),
            ),
        ))
    }

    /// The largest batch size whose estimate stays within `limit` (activations and batches
    /// scale with the batch; the rest does not).
    pub fn largest_batch_within(&self, limit: u64) -> Option<usize> {
        let per_image = (self.activations + self.batches) as f64 / self.batch.max(1) as f64;
        let room = limit.checked_sub(self.runtime + self.weights + self.data)? as f64;
        let b = (room / per_image.max(1.0)).floor() as usize;
        (b >= 1).then_some(b)
    }
}

/// Peak memory of training `graph` at `batch`, with `data_bytes` of data held in memory.
pub fn training(graph: &Graph, batch: usize, data_bytes: u64) -> Result<Estimate> {
    estimate(graph, batch, data_bytes, WEIGHT_COPIES, TRAIN_ACTIVATION_FACTOR, false)
}

/// Peak memory of inference with `graph` at `batch`, with `data_bytes` of data held in memory.
pub fn inference(graph: &Graph, batch: usize, data_bytes: u64) -> Result<Estimate> {
    estimate(graph, batch, data_bytes, 2, INFER_ACTIVATION_FACTOR, true)
}

fn estimate(graph: &Graph, batch: usize, data_bytes: u64, copies: u64, factor: f64, largest: bool) -> Result<Estimate> {
    let cost = super::cost(graph)?;
    let per_image = if largest {
        cost.nodes.iter().map(|n| n.output_shape.iter().product::<usize>() * 4).max().unwrap_or(0)
    } else {
        cost.activation_bytes
    };
    let input: usize = graph.input_shape()?.iter().product();
    let activations = (per_image as f64 * batch as f64 * factor) as u64;
    let batches = BATCHES_IN_FLIGHT * batch as u64 * input as u64 * 4;
    Ok(Estimate {
        runtime: RUNTIME_BYTES,
        weights: copies * cost.weight_bytes as u64,
        activations,
        data: data_bytes,
        batches,
        batch,
    })
}

/// Bytes in binary units, e.g. "1.50 GiB".
/// The memory the machine has available for a new process (Linux: MemAvailable of
/// /proc/meminfo); None where it cannot be read.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.2} {}", UNITS[u]) }
}

/// Parses a byte count: a plain number, or one with a K, M, G or T suffix (powers of 1024,
/// optionally followed by "i" and/or "B"), e.g. "2G", "512MiB", "1073741824".
pub fn parse_bytes(text: &str) -> Result<u64> {
    let t = text.trim();
    let bad = || Error::config("max_memory", format!("`{text}` is not a byte count (e.g. 2G, 512M, 1073741824)"));
    let digits = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let num: f64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().trim_end_matches(['B', 'b']).trim_end_matches('i');
    let scale: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    let v = num * scale as f64;
    if !(v >= 1.0 && v < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_the_batch_and_finds_the_largest_that_fits() {
        let g = crate::zoo::build("resnet20", 10).unwrap();
        let a = training(&g, 64, 0).unwrap();
        let b = training(&g, 128, 0).unwrap();
        assert!(b.total() > a.total() && b.activations == 2 * a.activations);
        assert!(inference(&g, 64, 0).unwrap().total() < a.total());
        let fit = a.largest_batch_within(a.total()).unwrap();
        assert!((63..=64).contains(&fit), "{fit}");
        assert!(training(&g, fit, 0).unwrap().total() <= a.total());
        assert_eq!(a.largest_batch_within(a.runtime), None);
    }

    #[test]
    fn check_passes_at_the_estimate_and_refuses_below_it() {
        let g = crate::zoo::build("resnet20", 10).unwrap();
        let e = training(&g, 64, 0).unwrap();
        e.check(e.total(), "training resnet20").unwrap();
        let msg = e.check(e.total() - 1, "training resnet20").unwrap_err().to_string();
        assert!(msg.contains("max_memory") && msg.contains("training resnet20 at batch size 64"), "{msg}");
        assert!(msg.contains("at most 63 fits") || msg.contains("at most 64 fits"), "{msg}");
        assert!(e.check(e.runtime, "x").unwrap_err().to_string().contains("not even a batch of 1 fits"));
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1073741824").unwrap(), 1 << 30);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5k").unwrap(), 1536);
        for bad in ["", "G", "-1", "12X", "0", "1e400"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(human(1536), "1.50 KiB");
    }
}
