//! Learning-rate schedules in the protocol's syntax: "epoch lr epoch lr ...", piecewise constant.
//! "0 1e-3 5 1e-2 15 1e-3 25 1e-4" means 1e-3 from epoch 0, 1e-2 from epoch 5, and so on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// (first epoch, learning rate), strictly increasing epochs, the first at 0.
    pub steps: Vec<(usize, f64)>,
}

impl Schedule {
    pub fn constant(lr: f64) -> Self {
        Schedule { steps: vec![(0, lr)] }
    }

    /// The learning rate in force during `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize) -> f64 {
        self.steps.iter().rev().find(|(e, _)| *e <= epoch).map(|s| s.1).unwrap_or(self.steps[0].1)
    }
}

impl FromStr for Schedule {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let err = |msg: String| Error::config("lr_schedule", format!("`{s}`: {msg}"));
        let toks: Vec<&str> = s.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()).collect();
        if toks.is_empty() || !toks.len().is_multiple_of(2) {
            return Err(err("expected pairs of `epoch lr`".into()));
        }
        let mut steps = Vec::new();
        for pair in toks.chunks(2) {
            let e: usize = pair[0].parse().map_err(|_| err(format!("`{}` is not an epoch number", pair[0])))?;
            let lr: f64 = pair[1].parse().map_err(|_| err(format!("`{}` is not a learning rate", pair[1])))?;
            if !(lr >= 0.0 && lr.is_finite()) {
                return Err(err(format!("learning rate {lr} must be finite and non-negative")));
            }
            if let Some(&(prev, _)) = steps.last()
                && e <= prev
            {
                return Err(err(format!("epochs must increase ({e} after {prev})")));
            }
            steps.push((e, lr));
        }
        if steps[0].0 != 0 {
            return Err(err("the first step must start at epoch 0".into()));
        }
        Ok(Schedule { steps })
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.steps.iter().map(|(e, lr)| format!("{e} {lr}")).collect();
        write!(f, "{}", parts.join(" "))
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piecewise_constant() {
        let s: Schedule = "0 1e-3 5 1e-2 15 1e-3 25 1e-4".parse().unwrap();
        assert_eq!(s.lr_at(0), 1e-3);
        assert_eq!(s.lr_at(4), 1e-3);
        assert_eq!(s.lr_at(5), 1e-2);
        assert_eq!(s.lr_at(24), 1e-3);
        assert_eq!(s.lr_at(99), 1e-4);
        assert_eq!(s.to_string().parse::<Schedule>().unwrap(), s);
    }

    #[test]
    fn rejects_bad_schedules() {
        for bad in ["", "0", "1 0.1", "0 0.1 0 0.2", "0 x", "0 -1", "0 0.1 5 inf"] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
    }
}
