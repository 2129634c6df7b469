//! A pruning plan: for each pruning group, the channels that stay. Written as JSON so that it can
//! be reviewed, edited and re-applied to the same model for the identical result.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub const PLAN_FORMAT: &str = "edgeprune-plan";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupPlan {
    /// The group's name as `edgeprune analyze` prints it.
    pub name: String,
    /// The group's channel count in the unpruned model.
    pub size: usize,
    /// Indices (0..size, increasing) of the channels kept.
    pub keep: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub format: String,
    pub version: u32,
    /// Name of the graph the plan was made for.
    pub model: String,
    /// How the plan was made (criterion, target, scope), for the record.
    #[serde(default)]
    pub made_by: serde_json::Value,
    /// Parameters and GOps before and after, as predicted when the plan was made.
    #[serde(default)]
    pub predicted: serde_json::Value,
    /// Groups not listed keep all their channels.
    pub groups: Vec<GroupPlan>,
}

impl Plan {
    pub fn new(model: &str, groups: Vec<GroupPlan>) -> Self {
        Plan {
            format: PLAN_FORMAT.into(),
            version: 1,
            model: model.into(),
            made_by: serde_json::Value::Null,
            predicted: serde_json::Value::Null,
            groups,
        }
    }

    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let p: Plan = serde_json::from_str(text).map_err(|e| Error::file(path, format!("invalid plan: {e}")))?;
        if p.format != PLAN_FORMAT || p.version != 1 {
            return Err(Error::file(path, format!("not an {PLAN_FORMAT} version 1 file")));
        }
        Ok(p)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = crate::formats::read_text(path)?;
        Self::from_json(&text, path)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plans serialise")
    }

    /// Channels removed in all.
    pub fn removed(&self) -> usize {
        self.groups.iter().map(|g| g.size - g.keep.len()).sum()
    }
}
