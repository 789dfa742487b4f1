"""A service's /metrics text (Prometheus' exposition format) read by the benchmarks: counters' totals
and histograms' counts, summed over the label values a benchmark asks for. The benchmarks read the
same families (WeChat's order/get calls among them) and parse them here, once."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = Mapping[str, str]
LabelTest = Callable[[Labels], bool]

WECHAT_API_CALLS = "lvyue_wechat_api_calls"
ORDER_GET = "/order/get"


def every_series(labels: Labels) -> bool:
    return True


@dataclass(frozen=True)
class MetricsText:
    """Per family: each series' labels and value, of counters (`<family>_total`) and of histograms'
    counts (`<family>_count`)."""

    totals: dict[str, list[tuple[Labels, float]]] = field(default_factory=dict)
    counts: dict[str, list[tuple[Labels, float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> MetricsText:
        parsed = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    parsed.totals.setdefault(family.name, []).append((sample.labels, sample.value))
                elif sample.name.endswith("_count"):
                    parsed.counts.setdefault(family.name, []).append((sample.labels, sample.value))
        return parsed

    def total(self, family: str, where: LabelTest = every_series) -> float:
        """A counter's total over the series whose labels pass `where` (0 for a family not exported)."""
        return sum(value for labels, value in self.totals.get(family, []) if where(labels))

    def count(self, family: str, where: LabelTest = every_series) -> float:
        """A histogram's observations over the series whose labels pass `where`."""
        return sum(value for labels, value in self.counts.get(family, []) if where(labels))


def order_gets(metrics: MetricsText) -> float:
    """WeChat's order/get calls a service made, whatever WeChat answered."""
    return metrics.total(WECHAT_API_CALLS, lambda labels: labels.get("endpoint", "").endswith(ORDER_GET))
