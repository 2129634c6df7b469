//! Pruning a model: find its groups, score their channels, plan what to remove, remove it.

use std::time::Instant;

use crate::analysis;
use crate::criteria::{self, Criterion, DataPass};
use crate::engine::Device;
use crate::error::{Error, Result};
use crate::ir::Model;
use crate::surgery::planner::{self, Limits, Scope, Target};
use crate::surgery::{self, Plan};
use crate::train::{self, RunData};

/// How to prune: what to rank channels by, how to choose them, how much to remove.
#[derive(Debug, Clone)]
pub struct PruneRequest {
    pub criterion: Criterion,
    pub scope: Scope,
    pub target: Target,
    pub limits: Limits,
    /// Batch size and number of batches of local data a data-driven criterion looks at.
    pub batch_size: usize,
    pub max_batches: usize,
    /// Drives `random` and the choice of images a data-driven criterion sees.
    pub seed: u64,
    pub device: Device,
}

/// A pruned model, the plan that made it from the original, and how long each step took.
#[derive(Debug, Clone)]
pub struct Pruned {
    pub model: Model,
    pub plan: Plan,
    /// Groups the plan leaves at the least the limits allow, "name (kept of size)" (see
    /// [`planner::at_minimum`]): where the ranking wanted more, worth a warning.
    pub at_minimum: Vec<String>,
    pub planning_seconds: f64,
    pub surgery_seconds: f64,
}

impl Pruned {
    /// Seconds of the whole step (planning and surgery).
    pub fn seconds(&self) -> f64 {
        self.planning_seconds + self.surgery_seconds
    }
}

impl PruneRequest {
    /// Refuses a request that could never succeed, before any costly work (loading data).
    pub fn check(&self) -> Result<()> {
        self.target.check_level()?;
        self.limits.check()
    }

    /// The plan for `model`. `data` is the local data: required by a data-driven criterion, and
    /// where given, the model's normalisation is recorded from it if the model has none.
    pub fn plan(&self, model: &mut Model, data: Option<&RunData>) -> Result<Plan> {
        Ok(self.plan_and_groups(model, data)?.0)
    }

    /// [`PruneRequest::plan`], with the model's pruning groups it was made from.
    fn plan_and_groups(&self, model: &mut Model, data: Option<&RunData>) -> Result<(Plan, Vec<analysis::Group>)> {
        self.plan_with(model, data, |graph, groups, scores| {
            planner::make_plan(graph, groups, scores, &self.target, self.scope, &self.limits)
        })
    }

    /// Scores the channels, then plans with `make`.
    fn plan_with(
        &self,
        model: &mut Model,
        data: Option<&RunData>,
        make: impl FnOnce(&crate::ir::Graph, &[analysis::Group], &[Vec<f64>]) -> Result<Plan>,
    ) -> Result<(Plan, Vec<analysis::Group>)> {
        self.check()?;
        let groups = analysis::groups(&model.graph)?;
        let pass = match data {
            Some(d) => Some(DataPass {
                dataset: &d.train,
                norm: train::model_normalize(model, &d.stats)?,
                batch_size: self.batch_size,
                max_batches: Some(self.max_batches),
                device: self.device,
            }),
            None if self.criterion.needs_data() => {
                return Err(Error::config(
                    "criterion",
                    format!("`{}` ranks channels on local data: give the data", self.criterion),
                ));
            }
            None => None,
        };
        let pass = pass.as_ref().filter(|_| self.criterion.needs_data());
        let scores = criteria::score(self.criterion, model, &groups, pass, self.seed)?;
        let mut plan = make(&model.graph, &groups, &scores)?;
        plan.made_by["criterion"] = self.criterion.to_string().into();
        plan.made_by["seed"] = self.seed.into();
        Ok((plan, groups))
    }

    /// Plans and removes the channels: the pruned model and its plan.
    pub fn run(&self, model: &mut Model, data: Option<&RunData>) -> Result<Pruned> {
        let t = Instant::now();
        let planned = self.plan_and_groups(model, data)?;
        self.remove(model, planned, t)
    }

    /// Removes what a plan (made from `groups`, planning since `t`) says.
    fn remove(&self, model: &Model, (plan, groups): (Plan, Vec<analysis::Group>), t: Instant) -> Result<Pruned> {
        let planning_seconds = t.elapsed().as_secs_f64();
        let at_minimum = planner::at_minimum(&groups, &plan, &self.limits);
        let mut pruned = apply_plan(model, plan)?;
        pruned.planning_seconds = planning_seconds;
        pruned.at_minimum = at_minimum;
        Ok(pruned)
    }
}

/// Applies a plan made earlier (a replay): the pruned model, with no planning time.
pub fn apply_plan(model: &Model, plan: Plan) -> Result<Pruned> {
    let t = Instant::now();
    let pruned = surgery::apply(model, &plan)?;
    Ok(Pruned {
        model: pruned,
        plan,
        at_minimum: Vec::new(),
        planning_seconds: 0.0,
        surgery_seconds: t.elapsed().as_secs_f64(),
    })
}
