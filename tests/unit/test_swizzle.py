"""Scale-layout helpers of quant/formats: cuBLAS' blocked (swizzled) scale tiles, nibble order, block counts."""
from __future__ import annotations

import math

import pytest
import torch

from quant.formats import swizzle

RAGGED = [(1, 1), (5, 3), (127, 4), (128, 4), (129, 5), (200, 16), (256, 8), (300, 13)]


@pytest.mark.parametrize("rows,cols", RAGGED)
def test_swizzle_round_trip(rows, cols):
    s = torch.randint(1, 255, (rows, cols), dtype=torch.uint8)
    b = swizzle.to_blocked(s)
    assert b.shape == (math.ceil(rows / 128) * 128, math.ceil(cols / 4) * 4)
    assert torch.equal(swizzle.from_blocked(b, rows, cols), s)
    # padding is zero, and every value appears once
    assert b.count_nonzero().item() == rows * cols


def test_swizzle_tile_layout_hand_checked():
    # cuBLAS: within a 128x4 tile, element (r, c) goes to offset (r % 32) * 16 + (r // 32) * 4 + c.
    s = torch.arange(128 * 4, dtype=torch.int32).reshape(128, 4)
    flat = swizzle.to_blocked(s).reshape(-1)
    for r, c in [(0, 0), (1, 0), (32, 0), (33, 2), (127, 3), (64, 1)]:
        assert flat[(r % 32) * 16 + (r // 32) * 4 + c].item() == s[r, c].item()


def test_from_blocked_wrong_size():
    with pytest.raises(ValueError, match="expected"):
        swizzle.from_blocked(torch.zeros(100), 128, 4)


def test_swap_nibbles():
    p = torch.tensor([0x21, 0xF0, 0x00, 0xAB], dtype=torch.uint8)
    assert swizzle.swap_nibbles(p).tolist() == [0x12, 0x0F, 0x00, 0xBA]
    assert torch.equal(swizzle.swap_nibbles(swizzle.swap_nibbles(p)), p)


@pytest.mark.parametrize("rows,cols", RAGGED)
def test_swizzle_matches_comfy_kitchen(rows, cols):
    fu = pytest.importorskip("comfy_kitchen.float_utils")
    s = torch.randn(rows, cols)
    assert torch.equal(swizzle.to_blocked(s), fu.to_blocked(s, flatten=False))
    assert torch.equal(swizzle.from_blocked(fu.to_blocked(s, flatten=False), rows, cols), s)


def test_block_count_and_round_up_helpers():
    from quant.formats.base import ceil_div, round_up

    assert [ceil_div(a, 128) for a in (0, 1, 128, 129, 5120)] == [0, 1, 1, 2, 40]
    assert [round_up(a, 4) for a in (0, 1, 4, 5, 257)] == [0, 4, 4, 8, 260]
