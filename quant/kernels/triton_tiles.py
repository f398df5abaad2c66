"""Tile scheduling shared by the Triton GEMMs (kernels.triton_gemm, kernels.triton_gemm_tma)."""
import triton
import triton.language as tl


@triton.jit
def tile_coords(tile, num_m, num_n, GROUP_M: tl.constexpr):
    """Output tile number -> (row tile, column tile) in grouped order: GROUP_M row tiles share each
    weight column tile while it sits in L2."""
    per_group = GROUP_M * num_n
    first_m = (tile // per_group) * GROUP_M
    size_m = min(num_m - first_m, GROUP_M)
    return first_m + (tile % per_group) % size_m, (tile % per_group) // size_m


def m_bucket(m: int) -> int:
    """Autotune key for M: next power of two, 16..16384 (DiT token counts vary per video size)."""
    return min(max(triton.next_power_of_2(m), 16), 16384)
