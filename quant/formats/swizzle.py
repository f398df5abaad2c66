"""Layout converters for block scales and packed nibbles used by other tools' files and by cuBLAS.

cuBLAS / ComfyUI "blocked" scale layout (mxfp8, nvfp4): a [rows, cols] scale matrix padded to
[ceil(rows/128)*128, ceil(cols/4)*4], cut into 128x4 tiles (row-block major), each tile's 512 values stored as [32, 4, 4] with the
row index split 4x32 (see NVIDIA's cuBLAS docs, "1D block scaling factors layout").
Nibble order: this pack stores element 2i in the low nibble; ComfyUI stores it in the high one.
"""
import torch

from .base import ceil_div


def to_blocked(scale: torch.Tensor) -> torch.Tensor:
    """Row-major [rows, cols] -> blocked, shaped like the padded matrix [ceil(rows/128)*128, ceil(cols/4)*4]."""
    rows, cols = scale.shape
    rb, cb = ceil_div(rows, 128), ceil_div(cols, 4)
    padded = scale.new_zeros(rb * 128, cb * 4)
    padded[:rows, :cols] = scale
    tiles = padded.reshape(rb, 4, 32, cb, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(rb * 128, cb * 4)


def from_blocked(blocked: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """Inverse of to_blocked: blocked scales -> row-major [rows, cols]."""
    rb, cb = ceil_div(rows, 128), ceil_div(cols, 4)
    if blocked.numel() != rb * cb * 512:
        raise ValueError(f"blocked scale has {blocked.numel()} elements, expected {rb * cb * 512} for [{rows}, {cols}]")
    tiles = blocked.reshape(rb, cb, 32, 4, 4).permute(0, 3, 2, 1, 4)
    return tiles.reshape(rb * 128, cb * 4)[:rows, :cols]


def swap_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Exchange the high and low nibble of every byte (ComfyUI <-> this pack's nvfp4 packing)."""
    return (packed << 4) | (packed >> 4)
