"""What the three legacy targets (gluon, tf-estimator, cntk) share: the explicit emit context and the
structure of a graph as those targets write it (top-level groups applied as whole chains).

`Legacy` is the context object every layer function, check and context() of those targets receives:
dictionary lookups built once per emit (linear in the graph), and the one name allocator of the
target's generated module. Nothing here knows a framework.
"""
from __future__ import annotations

from .. import ir
from ..errors import Diagnostic
from .common import GraphIndex, Names, dataset_plan, layout, training_dict
from .names import template_names

# names the legacy templates use in lambdas and helpers next to user values (kept from the first
# version, so that its renames stay as they were)
LEGACY_RESERVED = frozenset({"F", "C", "tf", "np", "nd", "mx", "nn", "rnn", "gluon", "autograd", "self", "x", "xs",
                             "mode", "params", "features", "labels", "training", "model", "inputs", "outputs",
                             "argv", "args", "os", "sys", "math", "time", "gzip", "struct", "argparse",
                             "tempfile", "shutil", "json", "i", "net"})


class Legacy(GraphIndex):
    """The graph being emitted, with lookups, the group structure and the module's name allocator."""

    def __init__(self, graph: ir.Graph, template: str, scopes: tuple, attributes=()):
        built = GraphIndex.build(graph)
        self.__dict__.update(built.__dict__)
        # values, layers held in locals, and groups: one scope of Python names, the module's own reserved
        self.names = Names(template_names(template, scopes) | LEGACY_RESERVED)
        # attribute names of a block object (gluon's self.<name>): a namespace of their own
        self.attrs = Names(attributes)
        self.value_names = {n.name for n in graph.nodes} | set(self.inputs)
        self._flat: dict = {}
        self.top = {}  # layer name -> outermost group it was built in, or itself
        for layer in graph.layers:
            g = layer.group
            if g is None:
                self.top[layer.name] = layer.name
                continue
            while self.groups[g].parent is not None:
                g = self.groups[g].parent
            self.top[layer.name] = g
        # a group listing a layer twice (Sequential([l, l]), LayerStack(2, lambda: l)) is one layer applied
        # twice: a Sequential would build it twice, so such a group's layers are applied one node at a time
        self.dissolved = set()
        for name in set(self.top.values()):
            members = self.flat_members(name) if name in self.groups else [name]
            if len(set(members)) != len(members):
                self.dissolved.update(members)
        for name in self.dissolved:
            self.top[name] = name
        # every value's variable, inputs first then nodes in order: the same names whatever asks first
        for name in self.inputs:
            self.var(name)
        for n in graph.nodes:
            self.var(n.name)

    # ------------------------------------------------------------ names
    def var(self, value: str) -> str:
        """The Python variable of an IR value: never a name the module uses for itself, never another value's."""
        return self.names.of("value\0" + value, value)

    def local(self, key: str, base: str) -> str:
        """Another variable of the same scope as the values (an LSTM layer, a shared group)."""
        return self.names.of("local\0" + key, base)

    def attr(self, name: str) -> str:
        return self.attrs.of(name)

    # ------------------------------------------------------------ lookups
    def layer(self, name: str) -> ir.Layer:
        return self.layers[name]

    def value_type(self, name: str) -> ir.TensorType:
        return self.types[name]

    def nodes_of(self, layer: ir.Layer) -> list:
        return self.applications.get(layer.name, [])

    def in_type(self, layer: ir.Layer) -> ir.TensorType:
        return self.types[self.nodes_of(layer)[0].inputs[0]]

    def out_type(self, layer: ir.Layer) -> ir.TensorType:
        return self.nodes_of(layer)[0].type

    def flat_members(self, name: str) -> list:
        """The layers of a group, nested groups expanded, in order (a layer: itself)."""
        if name not in self.groups:
            return [name]
        if name not in self._flat:
            out = []
            for m in self.groups[name].members:
                out += self.flat_members(m)
            self._flat[name] = out
        return self._flat[name]


def prod(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def is_image(t: ir.TensorType) -> bool:
    return len(t.shape) == 3 and not t.seq


def rescale_terms(layer: ir.Layer) -> dict:
    scale, mean, std = float(layer.attr("scale", 1.0)), float(layer.attr("mean", 0.0)), float(layer.attr("std", 1.0))
    return {"scale": scale, "mean": mean, "std": std,
            "has_scale": scale != 1.0, "has_mean": mean != 0.0, "has_std": std != 1.0}


def cannot(lg: Legacy, layer: ir.Layer, target: str, why: str) -> Diagnostic:
    return Diagnostic("E802", f"target '{target}' cannot express layer '{layer.name}' ({layer.kind}): {why}",
                      layer.span or lg.graph.span)


def _call_nodes(lg: Legacy) -> list:
    order, by_key = [], {}
    for node in lg.graph.nodes:
        key = node.call if node.call and node.layer not in lg.dissolved else "node:" + node.name
        if key not in by_key:
            by_key[key] = []
            order.append(key)
        by_key[key].append(node)
    return [by_key[k] for k in order]


def _call_problem(lg: Legacy, nodes: list):
    entity = lg.top[nodes[0].layer]
    if any(lg.top[n.layer] != entity for n in nodes):
        return entity, "one application mixes layers of different groups"
    if [n.layer for n in nodes] != lg.flat_members(entity):
        return entity, "it is applied on its own, apart from the group it was built in"
    for prev, node in zip(nodes, nodes[1:]):
        if tuple(node.inputs) != (prev.name,):
            return entity, "its group is not a plain chain"
    return entity, None


def calls(lg: Legacy) -> list:
    """The applications of top-level groups/layers in node order: entity(inputs) -> output."""
    out = []
    for nodes in _call_nodes(lg):
        entity, problem = _call_problem(lg, nodes)
        assert problem is None, problem
        out.append({"entity": entity, "attr": lg.attr(entity), "inputs": [lg.var(v) for v in nodes[0].inputs],
                    "output": lg.var(nodes[-1].name), "nodes": [n.name for n in nodes]})
    return out


def structure_diagnostics(lg: Legacy, target: str) -> list:
    diags = []
    for nodes in _call_nodes(lg):
        _, problem = _call_problem(lg, nodes)
        if problem:
            diags.append(cannot(lg, lg.layer(nodes[0].layer), target, problem))
    return diags


def block_tree(lg: Legacy, views: dict) -> list:
    """Top-level entities in order of first use: {'type': 'layer', 'view'} or {'type': 'group', ...}."""
    def build(name):
        if name in lg.groups:
            g = lg.groups[name]
            return {"type": "group", "name": name, "attr": lg.attr(name), "kind": g.kind, "repeat": g.repeat,
                    "members": [build(m) for m in g.members]}
        return {"type": "layer", "name": name, "attr": lg.attr(name), "view": views[name]}

    seen, out = set(), []
    for c in calls(lg):
        if c["entity"] not in seen:
            seen.add(c["entity"])
            out.append(build(c["entity"]))
    return out


def common_context(lg: Legacy) -> dict:
    """What every legacy template needs besides the layers: names, shapes, training, MNIST fit."""
    graph = lg.graph
    inputs = [{"name": i.name, "var": lg.var(i.name), "shape": i.type.batch_shape(None),
               "ids": i.type.vocab is not None, "vocab": i.type.vocab, "seq": i.type.seq,
               "sample": tuple(i.type.shape), "length": i.type.length}
              for i in graph.inputs]
    outputs = []
    for name in graph.outputs:
        t = lg.value_type(name)
        outputs.append({"name": name, "var": lg.var(name), "shape": t.batch_shape(None), "seq": t.seq,
                        "sample": tuple(t.shape), "image": is_image(t)})
    training = training_dict(graph)
    plan = dataset_plan(lg)  # shared with the PyTorch/Keras targets: how (or why not) main() reads MNIST
    mnist = tuple(plan["reshape"][1:]) if plan["ok"] else None
    return {"model_name": graph.name, "inputs": inputs, "outputs": outputs, "training": training,
            "input_shapes": {i["name"]: i["shape"] for i in inputs},
            "output_shapes": {o["name"]: o["shape"] for o in outputs},
            "loss": training["loss"], "optimizer": training["optimizer"],
            "mnist_shape": mnist, "main_ok": plan["ok"], "main_reason": plan["reason"],
            "trainable_total": sum(p.size for p in graph.params() if p.trainable),
            "layout": layout}  # statements as ruff format keeps them (emit/layout.py)

