"""Runs an edgeprune graph (graph.json) as a PyTorch nn.Module, with the same state_dict names.

This is the independent reference that edgeprune's engine is checked against: every op is
executed by PyTorch's own modules (nn.Conv2d, nn.BatchNorm2d, ...), and training uses PyTorch's
own loss and optimizer. Used by tests/reference/*.py and by benches/torch_bench.py.
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Linear(nn.Linear):
    """nn.Linear; on a feature map, over its channels at every position (ConvNeXt's use)."""

    def forward(self, x):
        if x.dim() == 4:
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


class _LayerNorm2d(nn.LayerNorm):
    """nn.LayerNorm over the channels of a feature map (torchvision's LayerNorm2d)."""

    def forward(self, x):
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _LayerScale(nn.Module):
    """ConvNeXt's layer scale: the parameter `layer_scale` [C, 1, 1] times the input."""

    def __init__(self, c):
        super().__init__()
        self.layer_scale = nn.Parameter(torch.ones(c, 1, 1))

    def forward(self, x):
        return self.layer_scale * x


def _module(node):
    op = node["op"]
    t = op["type"]
    if t == "conv2d":
        return nn.Conv2d(op["in_channels"], op["out_channels"], tuple(op["kernel_size"]),
                         stride=tuple(op.get("stride", [1, 1])), padding=tuple(op.get("padding", [0, 0])),
                         dilation=tuple(op.get("dilation", [1, 1])), groups=op.get("groups", 1),
                         bias=op.get("bias", True))
    if t == "batch_norm2d":
        return nn.BatchNorm2d(op["num_features"], eps=op.get("eps", 1e-5), momentum=op.get("momentum", 0.1))
    if t == "linear":
        return _Linear(op["in_features"], op["out_features"], bias=op.get("bias", True))
    if t == "layer_norm2d":
        return _LayerNorm2d(op["num_features"], eps=op.get("eps", 1e-6))
    if t == "layer_scale":
        return _LayerScale(op["num_features"])
    if t == "gelu":
        return nn.GELU()
    if t == "relu":
        return nn.ReLU()
    if t == "relu6":
        return nn.ReLU6()
    if t == "sigmoid":
        return nn.Sigmoid()
    if t == "hardswish":
        return nn.Hardswish()
    if t == "hardsigmoid":
        return nn.Hardsigmoid()
    if t == "max_pool2d":
        return nn.MaxPool2d(tuple(op["kernel_size"]), tuple(op["stride"]), tuple(op.get("padding", [0, 0])),
                            ceil_mode=op.get("ceil_mode", False))
    if t == "avg_pool2d":
        return nn.AvgPool2d(tuple(op["kernel_size"]), tuple(op["stride"]), tuple(op.get("padding", [0, 0])),
                            ceil_mode=op.get("ceil_mode", False),
                            count_include_pad=op.get("count_include_pad", True))
    if t == "global_avg_pool":
        return nn.AdaptiveAvgPool2d(1)
    if t == "flatten":
        return nn.Flatten()
    if t == "dropout":
        return nn.Dropout(op["p"])
    if t == "identity":
        return nn.Identity()
    if t in ("input", "add", "mul", "concat", "channel_permute", "channel_slice"):
        return None
    raise ValueError(f"node {node['name']}: unknown op {t}")


def _permute(x, order):
    """x[:, order], written as ShuffleNet's channel shuffle (view, transpose, reshape) when the
    order is one, as torchvision's models compute it."""
    n, c, h, w = x.shape
    for g in range(2, c):
        if c % g == 0 and order == [(j % g) * (c // g) + j // g for j in range(c)]:
            return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)
    return torch.index_select(x, 1, torch.tensor(order, dtype=torch.long))


class GraphModule(nn.Module):
    def __init__(self, graph):
        super().__init__()
        if isinstance(graph, str):
            with open(graph) as f:
                graph = json.load(f)
        self.graph = graph
        self.mods = {}
        for node in graph["nodes"]:
            m = _module(node)
            if m is None:
                continue
            # Register under the dotted path so state_dict keys are `<node name>.<tensor>`.
            parent = self
            *path, last = node["name"].split(".")
            for p in path:
                if not hasattr(parent, p):
                    parent.add_module(p, nn.Module())
                parent = getattr(parent, p)
            if hasattr(parent, last):
                # A module that also holds other nodes (ConvNeXt's block owns `layer_scale` and
                # has children): its tensors join that module, as a torch module's own do.
                holder = getattr(parent, last)
                for k, p in m.named_parameters(recurse=False):
                    holder.register_parameter(k, p)
            else:
                parent.add_module(last, m)
            self.mods[node["name"]] = m

    def forward(self, x):
        vals = {}
        for node in self.graph["nodes"]:
            t = node["op"]["type"]
            ins = [vals[i] for i in node.get("inputs", [])]
            if t == "input":
                y = x
            elif t == "add":
                y = ins[0]
                for other in ins[1:]:
                    y = y + other
            elif t == "mul":
                y = ins[0] * ins[1]
            elif t == "concat":
                y = torch.cat(ins, 1)
            elif t == "channel_permute":
                y = _permute(ins[0], node["op"]["order"])
            elif t == "channel_slice":
                y = ins[0][:, node["op"]["start"]:node["op"]["end"]]
            else:
                y = self.mods[node["name"]](ins[0])
            vals[node["name"]] = y
        return vals[self.graph["output"]]
