"""`netdsl graph`: the .dot of a model with sharing, parsed back: the shared layers are drawn once and
every application points to them; shapes are on the edges; composites are clusters."""
import re
from pathlib import Path

import pytest

pytest.importorskip("graphviz")

from netdsl.cli import main
from netdsl.frontend import load

ROOT = Path(__file__).resolve().parent.parent


def parse_dot(text):
    """(nodes {id: label}, edges [(a, b, attrs)], clusters [(name, [member ids])]) of graphviz's own output."""
    nodes, edges, clusters, stack = {}, [], [], []
    for stmt in re.findall(r'(?:[^;\n"]|"(?:[^"\\]|\\.)*")+', text):
        s = stmt.strip()
        m = re.match(r"subgraph (cluster_\w+) \{", s)
        if m:
            stack.append((m.group(1), []))
            continue
        if s == "}" and stack:
            clusters.append(stack.pop())
            continue
        m = re.match(r'"?([\w:]+)"? -> "?([\w:]+)"?\s*(\[.*\])?$', s, re.DOTALL)
        if m:
            edges.append((m.group(1), m.group(2), m.group(3) or ""))
            continue
        m = re.match(r'"?([\w:]+)"? \[label="((?:[^"\\]|\\.)*)"', s, re.DOTALL)
        if m and m.group(1) not in ("graph", "node", "edge"):
            nodes[m.group(1)] = m.group(2)
            for _, members in stack:
                members.append(m.group(1))
    return nodes, edges, clusters


def test_dssm_dot_draws_each_shared_layer_once(tmp_path):
    out = tmp_path / "dssm.dot"
    assert main(["graph", str(ROOT / "models/dssm.net"), "-o", str(out)]) == 0
    nodes, edges, clusters = parse_dot(out.read_text())
    graph = load(str(ROOT / "models/dssm.net"))
    shared = {l.name for l in graph.layers if sum(n.layer == l.name for n in graph.nodes) == 2}
    assert len(shared) == 6
    for name in shared:
        box = f"layer__{name}"
        assert list(nodes).count(box) == 1
        pointing = [a for a, b, attrs in edges if b == box and "dashed" in attrs]
        apps = {f"app__{n.name}" for n in graph.nodes if n.layer == name}
        assert set(pointing) == apps and len(apps) == 2
    # the Sequential image_to_vec is a cluster holding the shared layers
    (members,) = [m for c, m in clusters if c == "cluster_image_to_vec"]
    assert set(members) == {f"layer__{n}" for n in shared}
    # data edges carry the value's shape
    labels = {(a, b): attrs for a, b, attrs in edges if "dashed" not in attrs and "invis" not in attrs}
    assert 'label="(32, 28, 28)"' in labels[("app__convolution_1", "app__max_pooling_1")]
    assert 'label="(1,)"' in labels[("app__sim", "out__sim")]


def test_svg_and_png_are_rendered(tmp_path):
    assert main(["graph", str(ROOT / "tests/traps/shared_weights.net"), "-o", str(tmp_path / "m.svg")]) == 0
    assert (tmp_path / "m.svg").read_text().lstrip().startswith(("<?xml", "<svg"))
    assert main(["graph", str(ROOT / "models/vgg9.net"), "-o", str(tmp_path / "m.png")]) == 0
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "m.svg"]


def test_unknown_format_is_a_usage_error(tmp_path, capsys):
    assert main(["graph", str(ROOT / "models/mlp_relu.net"), "-o", str(tmp_path / "m.gif")]) == 2
    assert ".svg, .png or .dot" in capsys.readouterr().err


def test_readme_shows_the_current_picture_of_a_model_and_names_netron(tmp_path):
    """The README embeds docs/dssm.svg, which is what `netdsl graph models/dssm.net` draws today (the same
    graphviz nodes, clusters and edges), and points to netron for ONNX files."""
    readme = (ROOT / "README.md").read_text()
    assert "![DSSM](docs/dssm.svg)" in readme and "netron" in readme
    assert main(["graph", str(ROOT / "models/dssm.net"), "-o", str(tmp_path / "dssm.svg")]) == 0

    def titles(path):
        return sorted(re.findall(r"<title>(.*?)</title>", path.read_text()))

    assert titles(ROOT / "docs/dssm.svg") == titles(tmp_path / "dssm.svg")
    assert len(titles(tmp_path / "dssm.svg")) > 40
