"""A tiny writer for the Prometheus text exposition format (0.0.4).  Pure: returns a string."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

MetricType = Literal["counter", "gauge", "histogram"]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items())) + "}"


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) and not value.is_integer() else str(int(value))


@dataclass(slots=True)
class Histogram:
    """Cumulative histogram with fixed upper bounds (seconds)."""

    bounds: tuple[float, ...] = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        if not self.counts:
            self.counts = [0] * len(self.bounds)
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
        self.total += value
        self.n += 1


class MetricsWriter:
    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(
        self, name: str, kind: MetricType, help_text: str,
        samples: Iterable[tuple[Mapping[str, str], float]] = (),
    ) -> None:
        self._lines.append(f"# HELP {name} {_escape(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self._lines.append(f"{name}{_labels(labels)} {_num(value)}")

    def histogram(self, name: str, help_text: str, hist: Histogram) -> None:
        self.family(name, "histogram", help_text)
        counts = hist.counts or [0] * len(hist.bounds)
        for bound, count in zip(hist.bounds, counts, strict=True):
            self._lines.append(f'{name}_bucket{{le="{bound}"}} {count}')
        self._lines.append(f'{name}_bucket{{le="+Inf"}} {hist.n}')
        self._lines.append(f"{name}_sum {_num(hist.total)}")
        self._lines.append(f"{name}_count {hist.n}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"
