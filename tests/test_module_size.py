"""No module of the package is over 600 lines (issue 24: modules a newcomer can read in one sitting).

A module that grows past the limit is split by what its code does (as ``ship/report.py`` became
``report_artifacts``, ``report_summary``, ``report_lvm``, ``report_sections`` and ``report_plots``), not by
moving lines to an arbitrary second file.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "scripts" / "vecflow"
MAX_LINES = 600


def line_count(path: Path) -> int:
    """Lines as an editor numbers them (``wc -l``, plus a last line without a newline)."""
    return len(path.read_text(encoding="utf-8").splitlines())


def oversized(root: Path = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    """``path: N lines`` for every .py file under ``root`` over ``limit`` lines, longest first."""
    sizes = [(line_count(path), path) for path in root.rglob("*.py")]
    return [f"{path.relative_to(root.parent)}: {lines} lines"
            for lines, path in sorted(sizes, key=lambda item: (-item[0], str(item[1]))) if lines > limit]


def test_no_module_is_over_600_lines():
    over = oversized()
    assert not over, f"modules over {MAX_LINES} lines (split them by what the code does):\n  " + "\n  ".join(over)


def test_the_check_sees_the_package_and_can_fail(tmp_path):
    assert len(list(PACKAGE.rglob("*.py"))) > 50 and (PACKAGE / "cli.py").is_file()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "small.py").write_text("x = 1\n" * 600)
    (tmp_path / "pkg" / "big.py").write_text("x = 1\n" * 601)
    assert oversized(tmp_path / "pkg") == ["pkg/big.py: 601 lines"]
