"""The agent's systemd unit, pure parts: the ExecStart line and the stop timeout."""

from __future__ import annotations

import pytest

from daprdockr.core.systemd_unit import exec_line, render_unit, stop_timeout


@pytest.mark.parametrize(("argv", "line"), [
    (["/usr/bin/daprdockr", "agent", "--config", "/etc/daprdockr/agent.toml"],
     "/usr/bin/daprdockr agent --config /etc/daprdockr/agent.toml"),
    (["/opt/my tools/daprdockr", "agent"], '"/opt/my tools/daprdockr" agent'),
    (["/x", "50%"], "/x 50%%"),  # (a specifier otherwise)
    (["/x", "$HOME"], "/x $$HOME"),  # (a variable otherwise)
    (["/x", 'a"b'], '/x "a\\"b"'),
    (["/x", "a\\b"], '/x "a\\\\b"'),
    (["/x", "a;b"], '/x "a;b"'),
])
def test_exec_line(argv: list[str], line: str) -> None:
    assert exec_line(argv) == line


@pytest.mark.parametrize("argv", [[], ["daprdockr", "agent"]])
def test_exec_line_needs_an_absolute_path(argv: list[str]) -> None:
    with pytest.raises(ValueError, match="absolute"):
        exec_line(argv)


@pytest.mark.parametrize(("drain", "release"), [(120.0, 20.0), (0.5, 20.0), (3600.0, 20.0), (86_400.0, 1.0)])
def test_stop_timeout_outlasts_the_agents_own_shutdown(drain: float, release: float) -> None:
    assert stop_timeout(drain_deadline=drain, release_timeout=release) > drain + release


def test_unit_lines() -> None:
    text = render_unit(argv=["/usr/bin/daprdockr", "agent", "--config", "/etc/a.toml"], drain_deadline=100,
                       release_timeout=20)
    lines = set(text.splitlines())
    assert {"Type=notify", "NotifyAccess=main", "ExecStart=/usr/bin/daprdockr agent --config /etc/a.toml",
            "Restart=on-failure", "KillSignal=SIGTERM", "LimitNOFILE=65536", "WatchdogSec=30",
            f"TimeoutStopSec={stop_timeout(drain_deadline=100, release_timeout=20)}"} <= lines
