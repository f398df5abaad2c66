"""Per-call counters for the Sample report: which kernel ran how often (linears and attention alike)."""
from __future__ import annotations

import threading
from collections import Counter


class CallCounter(Counter):
    """label -> calls. add() holds a lock (MultiGPU CFG Split runs a model's clones in parallel threads, and
    `counter[label] += 1` is a read-modify-write that loses counts when two threads interleave).

    Callers count in eager code only, behind `if not torch.compiler.is_compiling():` so that compiled code
    never touches the counter: dynamo would guard on its values and recompile every call (even a method that
    returns early while compiling makes it guard on them). Calls inside a compiled graph are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def add(self, label: str) -> None:
        """One call of `label`."""
        with self._lock:
            self[label] += 1
