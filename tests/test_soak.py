"""The soak test (issue 23), its 60-second version: ``vecflow.ship.soak`` against a real ``vecflow serve`` process
on the tiny bundle, with an API key, 8 clients over every endpoint, 20 % malformed requests and a /health probe.

Only the correctness goals are asserted (0 x 5xx, 0 dropped connections, every malformed request refused with a
4xx, the server alive); the timing goals (/health p99, RSS growth) depend on the machine and are printed.
"""

from __future__ import annotations

import json

import pytest

from test_serve import bundle  # noqa: F401 (fixture)
from vecflow.ship import soak


@pytest.mark.slow
def test_a_60_second_soak_has_no_5xx_and_no_dropped_connection(bundle, tmp_path, capsys):  # noqa: F811
    report = soak.soak(bundle, seconds=60, out_dir=tmp_path / "soak", sample_s=10, log_path=tmp_path / "server.log")
    with capsys.disabled():
        print("\n" + (tmp_path / "soak" / "soak.md").read_text())
    goals = report["goals"]
    assert goals["server_errors"] == 0 and goals["dropped"] == 0, (report["windows"], (tmp_path / "server.log").read_text()[-3000:])
    assert goals["malformed_not_refused"] == 0 and goals["server_alive"] and goals["correct"]
    rows = report["windows"]
    assert len(rows) >= 5 and all(row["requests"] > 0 for row in rows)  # sampled all along, load all along
    paths = {path for row in rows for path in row["paths"]}
    assert paths == {"/encode", "/predict-next", "/chat", "/summarize", "/health", "/info"}
    codes = {code for row in rows for code in row["status"]}
    assert {"200", "401", "413", "415", "422"} <= codes  # served, and refused for each kind of malformed input
    malformed = sum(row["malformed"] for row in rows) / sum(row["requests"] for row in rows)
    assert 0.1 < malformed < 0.3
    assert all(row["rss_mib"] for row in rows)
    saved = json.loads((tmp_path / "soak" / "soak.json").read_text())
    assert saved["goals"] == goals and len(saved["windows"]) == len(rows)
    assert "| 0 x 5xx | 0 | yes |" in (tmp_path / "soak" / "soak.md").read_text()
