"""Tile scheduling and host-side size helpers shared by the Triton kernels (GEMMs and quantizers)."""
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


def next_pow2(n: int) -> int:
    """Smallest power of two >= n (n >= 1); plain Python: triton.next_power_of_2 costs microseconds a call."""
    return 1 << (n - 1).bit_length()


def m_bucket(m: int) -> int:
    """Autotune key for M: next power of two, 16..16384 (DiT token counts vary per video size)."""
    return min(max(next_pow2(m), 16), 16384)
