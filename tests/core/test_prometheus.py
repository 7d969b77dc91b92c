"""The Prometheus text writer, checked with the reference parser (prometheus_client)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from daprdockr.core.prometheus import Histogram, MetricsWriter


def test_families_labels_escaping_and_histograms_parse_back() -> None:
    w = MetricsWriter()
    w.family("dd_total", "counter", "A help with a\nnewline.", [({"svc": 'we"b\\x'}, 3), ({}, 1.5)])
    h = Histogram(bounds=(0.1, 1.0))
    for v in (0.05, 0.5, 2.0):
        h.observe(v)
    w.histogram("dd_seconds", "Durations.", h)
    families = {f.name: f for f in text_string_to_metric_families(w.text())}
    samples = families["dd"].samples
    assert [(s.labels, s.value) for s in samples] == [({"svc": 'we"b\\x'}, 3.0), ({}, 1.5)]
    assert families["dd"].documentation == "A help with a\nnewline."
    buckets = {s.labels.get("le"): s.value for s in families["dd_seconds"].samples if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}
    count = next(s.value for s in families["dd_seconds"].samples if s.name.endswith("_count"))
    assert count == 3.0


def test_an_empty_histogram_is_all_zero() -> None:
    w = MetricsWriter()
    w.histogram("dd_empty", "Nothing yet.", Histogram(bounds=(1.0,)))
    family = next(text_string_to_metric_families(w.text()))
    assert {s.name: s.value for s in family.samples if "le" not in s.labels} == {"dd_empty_sum": 0.0,
                                                                                  "dd_empty_count": 0.0}
