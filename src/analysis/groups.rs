//! Pruning groups from the graph alone, with no per-architecture code.
//!
//! Every (node output, channel) pair is an element. Each op says what it does to the channel axis
//! ([`Op::channel_map`]): a conv or linear layer creates fresh output channels and consumes its
//! input channels; BN, activations, pools and dropout pass channel i through to channel i;
//! Add and Mul tie channel i of every input to channel i of the output; Concat passes input k's
//! channel i to output channel offset_k + i; a depthwise conv ties input channel i to output
//! channel i; Flatten maps channel c of a [C, H, W] map to features c*H*W .. (c+1)*H*W; a channel
//! permutation ties output channel j to input channel order[j], a channel slice output channel i
//! to input channel start + i (the input's other channels go elsewhere or nowhere). Which
//! nodes are producers and consumers of a group follows from how their tensors are sliced
//! ([`Op::slicing`]).
//! Elements tied together form one *coupled channel*: removing it means removing every element
//! at once. Coupled channels that touch the same nodes in the same way form a *group* (e.g. the
//! stem and every block output of a ResNet stage joined by identity adds).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::ir::{ChannelMap, Graph, Op};

/// One coupled channel: the elements `(node index, channel index)` that must go together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coupled {
    pub elements: Vec<(usize, usize)>,
}

/// Where a group's channel sits in one tensor: `node` output channels `offset + k * width ..
/// offset + (k + 1) * width` hold the group's channel k (width is H*W for a flattened map,
/// else 1), when the group's channels are contiguous there; `indices` always lists them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Member {
    pub node: String,
    /// The op's name as graph files write it (for people and JSON; code matches on `kind`).
    pub op: String,
    /// The node's op.
    #[serde(skip)]
    pub kind: Op,
    /// For each channel of the group, the output indices of `node` it covers.
    pub indices: Vec<Vec<usize>>,
}

/// A group of coupled channels, ranked and pruned together.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Group {
    /// Stable name: the first node (in graph order) the group touches.
    pub name: String,
    /// Number of channels in the group.
    pub size: usize,
    /// Nodes whose parameters are sliced along their output axis (conv, depthwise conv, BN,
    /// linear), with the channel indices they own.
    pub producers: Vec<Member>,
    /// Nodes whose parameters are sliced along their input axis (conv, linear), with the input
    /// indices (in the space of their input tensor) the group's channels occupy.
    pub consumers: Vec<Member>,
    /// Every tensor the group runs through.
    pub tensors: Vec<Member>,
    /// Why the group may not be pruned; None if it may.
    pub frozen: Option<String>,
    /// Number of channel-tying joins (Add/Mul) the group crosses: > 0 marks a residual group.
    pub joins: usize,
    /// Number of equal blocks the channels fall in (1: none): a grouped conv reading or making
    /// them splits them into its groups, and a plan must remove as many from every block.
    pub blocks: usize,
    /// For each group channel, its block (all 0 when `blocks` is 1).
    #[serde(skip)]
    pub block_of: Vec<usize>,
    /// For each group channel, its coupled channel's elements.
    #[serde(skip)]
    pub channels: Vec<Coupled>,
}

impl Group {
    pub fn prunable(&self) -> bool {
        self.frozen.is_none()
    }
}

struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

/// Most channels, summed over every node's output, that [`groups`] analyses (the zoo's largest
/// network has a few tens of thousands).
pub const MAX_CHANNELS: usize = 1 << 24;

/// Computes the pruning groups of a graph.
pub fn groups(graph: &Graph) -> Result<Vec<Group>> {
    let shapes = graph.infer_shapes()?;
    let inputs = graph.input_indices()?;
    let mut els = Elements::of(graph, &shapes)?;
    for (i, node) in graph.nodes.iter().enumerate() {
        els.couple(i, &node.name, node.op.channel_map(), &inputs[i], &shapes);
    }
    let output = graph.output_index()?;
    for c in 0..els.width(output) {
        els.frozen.insert(els.el(output, c), format!("`{}` is the network output", graph.output));
    }

    // Gather the coupled channels, in order of their first element.
    let mut classes: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
    for n in 0..shapes.len() {
        for c in 0..els.width(n) {
            let r = els.uf.find(els.el(n, c));
            classes.entry(r).or_default().push((n, c));
        }
    }
    // Group coupled channels by signature: the nodes they touch and how many elements each.
    let mut by_sig: BTreeMap<Vec<(usize, usize)>, Vec<usize>> = BTreeMap::new();
    for (&r, class) in &classes {
        let mut sig: BTreeMap<usize, usize> = BTreeMap::new();
        for &(n, _) in class {
            *sig.entry(n).or_default() += 1;
        }
        by_sig.entry(sig.into_iter().collect()).or_default().push(r);
    }

    let consumers = graph.consumers()?;
    let mut out: Vec<Group> =
        by_sig.into_iter().map(|(sig, rs)| els.group(graph, &consumers, &classes, &sig, rs)).collect();
    let index = graph.index();
    out.sort_by_key(|g| index[g.name.as_str()]);
    // Names must be unique for plans; two groups starting at one node (a concat split) get a suffix.
    let mut seen: HashMap<String, usize> = HashMap::new();
    for g in &mut out {
        let k = seen.entry(g.name.clone()).or_default();
        *k += 1;
        if *k > 1 {
            g.name = format!("{}#{}", g.name, *k);
        }
    }
    Ok(out)
}

/// Every (node, channel) of a graph as one element, the union-find that couples them, and what
/// each element carries: why it may not be removed, how many inputs an Add/Mul joins at it.
struct Elements {
    /// The first element of each node; node n's channel c is element `base[n] + c`.
    base: Vec<usize>,
    widths: Vec<usize>,
    uf: UnionFind,
    frozen: HashMap<usize, String>,
    joins: HashMap<usize, usize>,
    /// Grouped convs' block structure: (node, blocks): that node's channels fall in `blocks`
    /// equal consecutive blocks, with the grouped conv that splits them.
    balance: Vec<(usize, usize, String)>,
}

impl Elements {
    fn of(graph: &Graph, shapes: &[Vec<usize>]) -> Result<Self> {
        let mut base = Vec::with_capacity(shapes.len());
        let mut total = 0usize;
        for (i, s) in shapes.iter().enumerate() {
            base.push(total);
            total += s[0];
            if total > MAX_CHANNELS {
                return Err(Error::node(
                    &graph.nodes[i].name,
                    format!(
                        "the graph has more than {MAX_CHANNELS} channels over all nodes up to here, too many to analyse"
                    ),
                ));
            }
        }
        Ok(Elements {
            base,
            widths: shapes.iter().map(|s| s[0]).collect(),
            uf: UnionFind { parent: (0..total).collect() },
            frozen: HashMap::new(),
            joins: HashMap::new(),
            balance: Vec::new(),
        })
    }

    fn el(&self, node: usize, ch: usize) -> usize {
        self.base[node] + ch
    }

    fn width(&self, node: usize) -> usize {
        self.widths[node]
    }

    fn freeze(&mut self, node: usize, why: &str) {
        for c in 0..self.width(node) {
            self.frozen.insert(self.el(node, c), why.to_string());
        }
    }

    /// Couples node `i`'s channels with its inputs' as its channel map says.
    fn couple(&mut self, i: usize, name: &str, map: ChannelMap, ins: &[usize], shapes: &[Vec<usize>]) {
        let w = self.width(i);
        match map {
            ChannelMap::Input => self.freeze(i, &format!("`{name}` is the network input")),
            ChannelMap::Frozen(why) => {
                let why = format!("`{name}` {why}");
                for &j in ins {
                    self.freeze(j, &why);
                }
                self.freeze(i, &why);
            }
            ChannelMap::Create => {} // fresh output channels
            ChannelMap::Grouped { groups } => {
                // Fresh output channels in blocks; the input is read block by block.
                self.balance.push((i, groups, name.to_string()));
                self.balance.push((ins[0], groups, name.to_string()));
            }
            ChannelMap::PassThrough | ChannelMap::Depthwise => {
                for c in 0..w {
                    self.uf.union(self.el(ins[0], c), self.el(i, c));
                }
            }
            ChannelMap::Tie => {
                for &j in ins {
                    for c in 0..w {
                        self.uf.union(self.el(j, c), self.el(i, c));
                    }
                }
                for c in 0..w {
                    *self.joins.entry(self.el(i, c)).or_default() += 1;
                }
            }
            ChannelMap::Concat => {
                let mut off = 0;
                for &j in ins {
                    for c in 0..self.width(j) {
                        self.uf.union(self.el(j, c), self.el(i, off + c));
                    }
                    off += self.width(j);
                }
            }
            ChannelMap::Permute(order) => {
                for (j, &c) in order.iter().enumerate() {
                    self.uf.union(self.el(ins[0], c), self.el(i, j));
                }
            }
            ChannelMap::Slice { start } => {
                for c in 0..w {
                    self.uf.union(self.el(ins[0], start + c), self.el(i, c));
                }
            }
            ChannelMap::Flatten => {
                let per: usize = shapes[ins[0]][1..].iter().product();
                for f in 0..w {
                    self.uf.union(self.el(ins[0], f / per), self.el(i, f));
                }
            }
        }
    }

    /// The group of the coupled channels `rs` (roots of `classes`) touching the nodes of `sig`.
    fn group(
        &self,
        graph: &Graph,
        consumers: &[Vec<usize>],
        classes: &BTreeMap<usize, Vec<(usize, usize)>>,
        sig: &[(usize, usize)],
        mut rs: Vec<usize>,
    ) -> Group {
        let nodes: Vec<usize> = sig.iter().map(|&(n, _)| n).collect();
        let first = nodes[0];
        // Order the group's channels by their index in the first node.
        rs.sort_by_key(|r| classes[r].iter().filter(|(n, _)| *n == first).map(|&(_, c)| c).min());
        let channels: Vec<Coupled> = rs.iter().map(|r| Coupled { elements: classes[r].clone() }).collect();
        let member = |n: usize| Member {
            node: graph.nodes[n].name.clone(),
            op: graph.nodes[n].op.type_name().to_string(),
            kind: graph.nodes[n].op.clone(),
            indices: channels
                .iter()
                .map(|ch| ch.elements.iter().filter(|(m, _)| *m == n).map(|&(_, c)| c).collect())
                .collect(),
        };
        let tensors: Vec<Member> = nodes.iter().map(|&n| member(n)).collect();
        let producers: Vec<Member> =
            nodes.iter().filter(|&&n| graph.nodes[n].op.slices_output()).map(|&n| member(n)).collect();
        // Consumers read an element of the group through one of their inputs.
        let mut cons: Vec<Member> = Vec::new();
        for &n in &nodes {
            for &m in &consumers[n] {
                // A depthwise conv's weight has no input axis to slice: its input is tied to its output.
                if graph.nodes[m].op.slices_input() && !cons.iter().any(|c| c.node == graph.nodes[m].name) {
                    let op = &graph.nodes[m].op;
                    cons.push(Member { op: op.type_name().to_string(), kind: op.clone(), ..member(n) });
                    cons.last_mut().expect("just pushed").node = graph.nodes[m].name.clone();
                }
            }
        }
        let elements = || channels.iter().flat_map(|ch| ch.elements.iter());
        let why = elements().find_map(|&(n, c)| self.frozen.get(&self.el(n, c)).cloned());
        let creates = nodes.iter().any(|&n| {
            matches!(
                graph.nodes[n].op.channel_map(),
                ChannelMap::Create | ChannelMap::Depthwise | ChannelMap::Grouped { .. }
            )
        });
        let why = why.or_else(|| (!creates).then(|| "no conv or linear layer creates these channels".to_string()));
        let (blocks, block_of, unequal) = self.blocks(&nodes, &channels);
        let why = why.or(unequal);
        let joins =
            channels[0].elements.iter().map(|&(n, c)| self.joins.get(&self.el(n, c)).copied().unwrap_or(0)).sum();
        Group {
            name: graph.nodes[first].name.clone(),
            size: channels.len(),
            producers,
            consumers: cons,
            tensors,
            frozen: why,
            joins,
            blocks,
            block_of,
            channels,
        }
    }

    /// The blocks the grouped convs touching `nodes` split the channels into: for each channel,
    /// the combination of its block under every such conv, numbered; with the reason the group
    /// is frozen if the blocks are not all of one size (no balanced removal exists then).
    fn blocks(&self, nodes: &[usize], channels: &[Coupled]) -> (usize, Vec<usize>, Option<String>) {
        let rules: Vec<&(usize, usize, String)> = self.balance.iter().filter(|(n, _, _)| nodes.contains(n)).collect();
        if rules.is_empty() {
            return (1, vec![0; channels.len()], None);
        }
        let mut ids: BTreeMap<Vec<usize>, usize> = BTreeMap::new();
        let mut block_of = Vec::with_capacity(channels.len());
        for ch in channels {
            let label: Vec<usize> = rules
                .iter()
                .map(|&&(n, blocks, _)| {
                    let c = ch.elements.iter().find(|(m, _)| *m == n).map_or(0, |&(_, c)| c);
                    c / (self.width(n) / blocks).max(1)
                })
                .collect();
            let next = ids.len();
            block_of.push(*ids.entry(label).or_insert(next));
        }
        let blocks = ids.len();
        let mut sizes = vec![0usize; blocks];
        for &b in &block_of {
            sizes[b] += 1;
        }
        let convs: Vec<&str> = rules.iter().map(|(_, _, c)| c.as_str()).collect();
        let unequal = (sizes.iter().any(|&s| s != sizes[0])).then(|| {
            format!("the grouped conv(s) {convs:?} split these channels into blocks of unequal sizes {sizes:?}")
        });
        (blocks, block_of, unequal)
    }
}
