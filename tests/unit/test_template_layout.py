"""Templates (example_workflows/*.json): no node covers another on the canvas (issue 17.4)."""
from __future__ import annotations

import glob
import itertools
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEMPLATES = sorted(glob.glob(os.path.join(REPO, "example_workflows", "*.json")))
TITLE = 30  # LiteGraph's title bar, drawn above `pos`
GAP = 20    # clear space kept between nodes


def rect(node: dict) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of a node on the canvas, title bar included, widened by GAP / 2 each side."""
    (x, y), (w, h) = node["pos"], node["size"]
    return x - GAP / 2, y - TITLE - GAP / 2, x + w + GAP / 2, y + h + GAP / 2


def overlap(a: dict, b: dict) -> bool:
    (l1, t1, r1, b1), (l2, t2, r2, b2) = rect(a), rect(b)
    return l1 < r2 and l2 < r1 and t1 < b2 and t2 < b1


def test_templates_found():
    assert len(TEMPLATES) >= 5


@pytest.mark.parametrize("path", TEMPLATES, ids=os.path.basename)
def test_no_two_nodes_overlap(path):
    with open(path) as f:
        nodes = json.load(f)["nodes"]
    clashes = [(a.get("title") or a["type"], b.get("title") or b["type"])
               for a, b in itertools.combinations(nodes, 2) if overlap(a, b)]
    assert clashes == []
