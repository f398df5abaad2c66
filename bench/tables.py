"""The markdown tables every bench mode prints (and bench/results/ keeps)."""
from __future__ import annotations

from typing import Iterable, Optional, Sequence


def markdown(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table: one header line, its rule, one line per row of already formatted cells."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in cells) + " |" for cells in rows]
    return "\n".join(lines)


def cell(v: Optional[float], spec: str, none: str = "—") -> str:
    """A number formatted with `spec`, or `none` for a missing value."""
    return none if v is None else format(v, spec)
