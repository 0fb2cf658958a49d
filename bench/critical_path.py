"""The lower bound of a command's wall time under a fixed latency per API call.

A command is a sequence of stages (gathering facts, the plan's reads, the apply, the
verify's reads, the lock around them). In a stage, the calls made outside any resource
are serial; each resource's own calls are sequential; a resource starts only after the
resources it depends on are done. The critical path of a stage is its serial calls plus
the heaviest chain of dependent resources (weight = that resource's calls); the
command's is the sum over its stages. Under L seconds per call no run can be faster than
critical-path calls x L, however many workers it has; with P workers it also cannot beat
a stage's total resource calls / P (`bound_at`).

Plain data in, numbers out: tested as tables in tests/test_bench.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping


@dataclass
class Stage:
    """One stage of a command: `serial` calls, then per-resource `calls` that may run in
    parallel where `deps` allows (a dependency outside `calls` made no calls here)."""

    name: str
    serial: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    deps: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def resource_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def total(self) -> int:
        return self.serial + self.resource_calls

    def chain(self) -> tuple[int, list[str]]:
        return longest_chain(self.calls, self.deps)

    def critical(self) -> int:
        return self.serial + self.chain()[0]

    def critical_at(self, parallelism: int) -> int:
        """The stage's lower bound in calls with `parallelism` workers."""
        return self.serial + max(self.chain()[0], math.ceil(self.resource_calls / max(1, parallelism)))


def longest_chain(calls: Mapping[str, int], deps: Mapping[str, Iterable[str]]) -> tuple[int, list[str]]:
    """The heaviest chain of dependent resources: (sum of its calls, its keys in order).

    Dependencies on keys absent from `calls` are ignored (they made no calls in this
    stage); a cycle raises ValueError."""
    best: dict[str, tuple[int, list[str]]] = {}
    visiting: set[str] = set()

    def visit(key: str) -> tuple[int, list[str]]:
        if key in best:
            return best[key]
        if key in visiting:
            raise ValueError(f"dependency cycle through {key}")
        visiting.add(key)
        before = max((visit(d) for d in deps.get(key, ()) if d in calls), key=lambda x: x[0], default=(0, []))
        visiting.discard(key)
        best[key] = (before[0] + calls[key], [*before[1], key])
        return best[key]

    return max((visit(k) for k in calls), key=lambda x: x[0], default=(0, []))


def critical_path(stages: Iterable[Stage]) -> int:
    """The command's critical path in calls: its stages run one after another."""
    return sum(s.critical() for s in stages)


def bound_at(stages: Iterable[Stage], parallelism: int) -> int:
    """The command's lower bound in calls with `parallelism` workers per stage."""
    return sum(s.critical_at(parallelism) for s in stages)
