"""Interrupted writers (issue 11 item 15): a SIGKILL during a save leaves its temporary behind (no ``finally``
runs); the next writer of the same target removes it, and never touches a live writer's temporary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from vecflow.core.io import atomic_dir, atomic_path, clean_stale_temps

REPO = Path(__file__).resolve().parents[1]

# writes 4 MB into the temporary of TARGET, says so, then hangs mid-save until killed
WRITER = """
import sys, time
from pathlib import Path
from vecflow.core.io import atomic_{kind}
with atomic_{kind}(sys.argv[1]) as tmp:
    if "{kind}" == "dir":
        (tmp / "model.safetensors").write_bytes(b"w" * 4_000_000)
    else:
        tmp.write_bytes(b"w" * 4_000_000)
    print("saving", flush=True)
    time.sleep(600)
"""


def start_writer(target: Path, kind: str = "path") -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER.format(kind=kind), str(target)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO / "scripts")})
    assert proc.stdout.readline().strip() == "saving"
    return proc


def temporaries(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*"))


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_a_sigkill_during_a_save_leaves_a_temporary_that_the_next_save_removes(tmp_path, capsys):
    target = tmp_path / "state.pt"
    writer = start_writer(target)
    kill(writer)
    left = temporaries(target)
    assert len(left) == 1 and left[0].stat().st_size == 4_000_000  # the orphan the issue describes
    assert not target.exists()
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"resumed")
    assert target.read_bytes() == b"resumed"
    assert temporaries(target) == []
    assert "a temporary left by an interrupted job" in capsys.readouterr().out


def test_a_killed_folder_save_is_cleaned_too(tmp_path):
    target = tmp_path / "model"
    kill(start_writer(target, kind="dir"))
    assert len(temporaries(target)) == 1
    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
    assert temporaries(target) == [] and (target / "config.json").exists()


def test_a_live_writers_temporary_is_never_removed(tmp_path):
    target = tmp_path / "state.pt"
    writer = start_writer(target)
    try:
        live = temporaries(target)
        assert clean_stale_temps(target) == []
        assert temporaries(target) == live
    finally:
        kill(writer)
    assert clean_stale_temps(target) == live


def test_other_names_and_recent_untagged_temporaries_are_left_alone(tmp_path):
    target = tmp_path / "state"
    other = tmp_path / ".state.pt.abcdefgh.tmp"  # another target's temporary (state.pt)
    other.write_bytes(b"x")
    recent = tmp_path / ".state.abc12345.tmp"  # untagged (an older vecflow), written just now
    recent.write_bytes(b"x")
    assert clean_stale_temps(target) == []
    old = time.time() - 2 * 3600
    os.utime(recent, (old, old))
    assert clean_stale_temps(target) == [recent] and other.exists()
