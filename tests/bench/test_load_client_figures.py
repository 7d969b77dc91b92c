"""How the benchmarks read wrk's and hey's output (``bench/benchlib.py``).

The outputs below were printed by wrk 4.1 and hey on this project's test image (busybox httpd on
a published loopback port, 2026-12-01).  At 16 connections wrk printed an average latency of
105 ms with 2 601 requests/s: 16 connections can only sum to 16 x 3 s of latency, so the average
is at most 16 / 2 601 s = 6.2 ms.  hey, timing every request on the same server, gave p99 14 ms.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from benchlib import LATENCY_UNTRUSTED, parse_hey, parse_wrk, seconds_of

WRK_16 = """Running 3s test @ http://127.0.0.5:18080/id
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   105.67ms  241.87ms   1.02s    86.75%
    Req/Sec     1.31k   447.61     2.05k    76.67%
  Latency Distribution
     50%    3.72ms
     75%    6.62ms
     90%  512.71ms
     99%  967.89ms
  7809 requests in 3.00s, 1.38MB read
Requests/sec:   2601.39
Transfer/sec:    469.98KB
"""

WRK_4 = """Running 3s test @ http://127.0.0.5:18080/id
  2 threads and 4 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.09ms  608.91us  10.36ms   81.56%
    Req/Sec     1.80k   370.96     2.40k    48.39%
  Latency Distribution
     50%    0.96ms
     75%    1.33ms
     90%    1.73ms
     99%    3.14ms
  11094 requests in 3.10s, 1.96MB read
Requests/sec:   3578.88
Transfer/sec:    646.63KB
"""

HEY_16 = """
Summary:
  Total:\t3.6772 secs
  Slowest:\t1.0364 secs
  Fastest:\t0.0007 secs
  Average:\t0.0071 secs
  Requests/sec:\t1919.9272

Latency distribution:
  10% in 0.0027 secs
  50% in 0.0043 secs
  90% in 0.0068 secs
  99% in 0.0136 secs

Status code distribution:
  [200]\t7060 responses
"""


def test_wrk_latency_that_breaks_littles_law_is_not_reported() -> None:
    figures = parse_wrk(WRK_16, connections=16)
    assert figures["latency_p99"] == LATENCY_UNTRUSTED
    assert figures["latency_max"] == LATENCY_UNTRUSTED
    assert (figures["requests"], figures["rps"]) == (7809, 2601.39)  # throughput is kept


def test_wrk_latency_within_littles_law_is_reported() -> None:
    figures = parse_wrk(WRK_4, connections=4)
    assert (figures["latency_p99"], figures["latency_max"]) == ("3.14ms", "10.36ms")


def test_without_the_connection_count_wrk_figures_are_taken_as_printed() -> None:
    assert parse_wrk(WRK_16)["latency_p99"] == "967.89ms"


def test_hey_gives_its_p99_and_slowest_request() -> None:
    figures = parse_hey(HEY_16)
    assert (figures["latency_p99"], figures["latency_max"], figures["requests"]) == ("13.60ms", "1.04s", 7060)


@pytest.mark.parametrize(
    ("text", "secs"), [("850.00us", 850e-6), ("13.60ms", 0.0136), ("1.04s", 1.04), ("2.00m", 120.0)]
)
def test_latency_text_as_seconds(text: str, secs: float) -> None:
    assert seconds_of(text) == pytest.approx(secs)


def test_a_missing_latency_is_not_a_number() -> None:
    assert seconds_of("?") != seconds_of("?")
    assert seconds_of(LATENCY_UNTRUSTED) != seconds_of(LATENCY_UNTRUSTED)
