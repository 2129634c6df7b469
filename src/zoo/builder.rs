//! A small helper to write graphs in code, naming nodes like PyTorch module paths.

use crate::ir::{Graph, Node, Op};

pub struct Builder {
    nodes: Vec<Node>,
    shapes: Vec<Vec<usize>>,
}

impl Builder {
    /// Starts a graph whose input node is named `input`, with images of `shape` = [C, H, W].
    pub fn new(shape: [usize; 3]) -> Self {
        Builder {
            nodes: vec![Node { name: "input".into(), op: Op::Input { shape: shape.to_vec() }, inputs: vec![] }],
            shapes: vec![shape.to_vec()],
        }
    }

    /// Adds a node and returns its name. Panics on an inconsistent graph: the zoo is code, and
    /// a wrong zoo network is a programming error caught by the tests.
    pub fn add(&mut self, name: impl Into<String>, op: Op, inputs: &[&str]) -> String {
        let name = name.into();
        self.nodes.push(Node { name: name.clone(), op, inputs: inputs.iter().map(|s| s.to_string()).collect() });
        let g = Graph { name: String::new(), nodes: self.nodes.clone(), output: name.clone(), normalize: None };
        let shapes = g.infer_shapes().unwrap_or_else(|e| panic!("zoo graph is inconsistent: {e}"));
        self.shapes = shapes;
        name
    }

    pub fn channels(&self, name: &str) -> usize {
        let i = self.nodes.iter().position(|n| n.name == name).expect("known node");
        self.shapes[i][0]
    }

    pub fn spatial(&self, name: &str) -> usize {
        let i = self.nodes.iter().position(|n| n.name == name).expect("known node");
        self.shapes[i][1]
    }

    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        x: &str,
        out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
        bias: bool,
    ) -> String {
        let in_channels = self.channels(x);
        self.add(
            name,
            Op::Conv2d {
                in_channels,
                out_channels: out,
                kernel_size: [k, k],
                stride: [stride, stride],
                padding: [pad, pad],
                dilation: [1, 1],
                groups,
                bias,
            },
            &[x],
        )
    }

    pub fn bn(&mut self, name: &str, x: &str) -> String {
        let c = self.channels(x);
        self.add(name, Op::BatchNorm2d { num_features: c, eps: 1e-5, momentum: 0.1 }, &[x])
    }

    pub fn relu(&mut self, name: &str, x: &str) -> String {
        self.add(name, Op::ReLU, &[x])
    }

    pub fn max_pool(&mut self, name: &str, x: &str, k: usize, s: usize) -> String {
        self.add(name, Op::MaxPool2d { kernel_size: [k, k], stride: [s, s], padding: [0, 0], ceil_mode: false }, &[x])
    }

    pub fn avg_pool(&mut self, name: &str, x: &str, k: usize) -> String {
        self.add(
            name,
            Op::AvgPool2d {
                kernel_size: [k, k],
                stride: [k, k],
                padding: [0, 0],
                ceil_mode: false,
                count_include_pad: true,
            },
            &[x],
        )
    }

    pub fn linear(&mut self, name: &str, x: &str, out: usize) -> String {
        let f =
            self.nodes.iter().position(|n| n.name == x).map(|i| self.shapes[i].iter().product()).expect("known node");
        self.add(name, Op::Linear { in_features: f, out_features: out, bias: true }, &[x])
    }

    pub fn finish(self, name: &str) -> Graph {
        let output = self.nodes.last().expect("non-empty").name.clone();
        Graph { name: name.into(), nodes: self.nodes, output, normalize: None }
    }
}
