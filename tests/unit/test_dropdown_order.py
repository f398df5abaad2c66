"""Dropdown order (issue 17.3): auto, Default, the pack's own kernels, the plain format names, then libraries."""
from __future__ import annotations

import pytest

from quant import schemes

OWN = {"triton", "torch"}


@pytest.mark.parametrize("table", ["mm_type", "quant_scheme"])
def test_own_kernels_before_libraries(table):
    names = schemes.names(table)
    assert names[:2] == ["auto", "Default"]
    kinds = ["own" if schemes.get_scheme(n, table).kernel in OWN else
             "format" if schemes.get_scheme(n, table).kernel is None else "library" for n in names[2:]]
    last_own, first_library = max(i for i, k in enumerate(kinds) if k == "own"), kinds.index("library")
    assert last_own < first_library, list(zip(names[2:], kinds))


def test_dit_dropdown_starts_with_the_fastest_native_names():
    assert schemes.names("mm_type")[2:6] == ["int8-triton", "fp8-triton", "int8-torch", "fp8-torch"]
    assert schemes.names("quant_scheme")[2:4] == ["int8", "fp8"]
