"""nodes/ops.py inside this process against the found ComfyUI (no server): storage, forward, LoRA hooks."""
from __future__ import annotations

import ops_checks
import pytest


@pytest.mark.parametrize("check", ops_checks.CHECKS, ids=lambda c: c.__name__)
def test_ops(comfy_in_process, check):
    check(comfy_in_process)


def test_make_ops_is_cached(comfy_in_process):
    ops = comfy_in_process.nodes.ops
    schemes = ops_checks._quant(comfy_in_process, "schemes")
    fam = ops_checks._quant(comfy_in_process, "families").FAMILIES["wan_dit"]
    a = ops.make_ops(schemes.resolve("int8-torch", "mm_type", "cpu"), fam)
    assert a is ops.make_ops(schemes.resolve("int8-torch", "mm_type", "cpu"), fam)
    assert a is not ops.make_ops(schemes.resolve("fp8-torch", "mm_type", "cpu"), fam)
    import comfy.ops
    assert issubclass(a, comfy.ops.manual_cast) and a.Linear.comfy_cast_weights
