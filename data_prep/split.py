"""Deterministic, stratified train/test split that needs 8 bytes per row.

Each kept row gets a 64-bit hash of ``(seed, normalized content)``: the same on every machine and independent
of row order. Pass one records the hashes per stratum (task type; one stratum for data without one). Then
the test count is shared out over strata in proportion (largest remainder, so the total is
``round(n * test_size)``), and in each stratum the rows with the smallest hashes go to test. Pass two asks
:meth:`Splitter.assign` for each row in the same order.
"""

from __future__ import annotations

import heapq
import math
from array import array
from dataclasses import dataclass, field

from data_prep.clean import digest64


def split_hash(seed: int, normalized: str) -> int:
    return digest64(f"{seed}\x00{normalized}", salt="split")


def allocate(counts: dict[str, int], test_size: float) -> dict[str, int]:
    """Test rows per stratum: proportional, largest remainder, ties by stratum name.

    With ``0 < test_size`` and at least 2 rows, test gets at least 1 row and train keeps at least 1;
    a single row stays in train.
    """
    n = sum(counts.values())
    if n == 0 or test_size <= 0:
        return dict.fromkeys(counts, 0)
    total = round(n * test_size)
    total = min(max(total, 1), n - 1) if n >= 2 else 0
    exact = {k: c * total / n for k, c in counts.items()}
    alloc = {k: math.floor(v) for k, v in exact.items()}
    left = total - sum(alloc.values())
    order = sorted(counts, key=lambda k: (-(exact[k] - alloc[k]), k))
    for k in order[:left]:
        alloc[k] += 1
    return alloc


@dataclass
class Splitter:
    seed: int = 42
    test_size: float = 0.1
    _hashes: dict[str, array] = field(default_factory=dict)
    _cut: dict[str, tuple[int, int]] = field(default_factory=dict)  # stratum -> (k-th smallest hash, ties in test)
    _ties_used: dict[str, int] = field(default_factory=dict)
    allocation: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.test_size < 1:
            raise ValueError(f"test_size must be in [0, 1), got {self.test_size}")

    def add(self, stratum: str, h: int) -> None:
        self._hashes.setdefault(stratum, array("Q")).append(h)

    def finalize(self) -> dict[str, int]:
        """Fix the per-stratum cut-offs; returns the test rows per stratum."""
        self.allocation = allocate({k: len(v) for k, v in self._hashes.items()}, self.test_size)
        for key, hashes in self._hashes.items():
            k = self.allocation[key]
            if k == 0:
                continue
            smallest = heapq.nsmallest(k, hashes)
            cut = smallest[-1]
            ties_in_test = k - sum(1 for h in smallest if h < cut)
            self._cut[key] = (cut, ties_in_test)
            self._ties_used[key] = 0
        self._hashes.clear()
        return self.allocation

    def assign(self, stratum: str, h: int) -> str:
        """``"test"`` or ``"train"``; call once per row, in the order rows were added."""
        cut = self._cut.get(stratum)
        if cut is None:
            return "train"
        if h < cut[0]:
            return "test"
        if h == cut[0] and self._ties_used[stratum] < cut[1]:
            self._ties_used[stratum] += 1
            return "test"
        return "train"
