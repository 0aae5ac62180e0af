"""A small seeded sample of bench/hostile.py, the adversarial campaign of issue 17: every class.

Two trials of each class (parser, injection, weights, checkpoints, datasets, cli, compile-o, run-paths)
and one of training (kill -9 then resume, the slow one); none may crash, lose data or leave a trial
directory behind.
The full campaign and its figures: docs/security.md.
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import hostile  # noqa: E402

ASSERTED = hostile.CLASSES


def test_hostile_sample_of_every_class(tmp_path):
    mix = {c: 1 if c == "training" else 2 for c in ASSERTED}
    result = hostile.campaign(n=sum(mix.values()), seed="test-1", time_limit=300.0, classes=list(ASSERTED),
                              workdir=tmp_path, log=lambda s: None, mix=mix)
    totals = result["totals"]
    assert all(totals[c]["tried"] == mix[c] for c in ASSERTED), totals
    assert result["findings"] == [], "\n".join(map(str, result["findings"]))
    assert [p.name for p in tmp_path.iterdir()] == ["base"]  # every trial directory was removed


def test_schedule_weights_classes_and_covers_each_early():
    cycle = hostile.schedule(["parser", "training"], {"parser": 3})
    assert cycle == ["parser", "training", "parser", "parser"]
    assert hostile.schedule(list(hostile.CLASSES)) == list(hostile.CLASSES)
