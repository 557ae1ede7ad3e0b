"""The repository stands alone (issue 24 item 4): no file sends the reader to design notes outside it, the docs'
links resolve inside the checkout, and the workflow catalog's usage file says what the workflow really does."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CATALOG = REPO / ".snakemake-workflow-catalog.yml"
# the project's own text: what a user who clones the repository reads
TEXT_FILES = ("README.md", "BENCHMARKS.md", "pyproject.toml", "Snakefile", "docs/*.md", "config/*.md",
              "scripts/**/*.py", "tests/*.py", "workflow/**/*.smk", "workflow/**/*.yaml")
OUTSIDE_NOTES = re.compile(r"DESIGN\.md|DESIGN §|\.\./shared/(?!data\b)")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def project_files():
    for pattern in TEXT_FILES:
        yield from (p for p in sorted(REPO.glob(pattern)) if p.is_file() and "egg-info" not in str(p))


def outside_references(paths, root: Path = REPO) -> list[str]:
    """``file:line: text`` for each line that points at design notes outside the repository (``../shared/data``,
    the optional real data sets, is a data location, not reading matter)."""
    found = []
    for path in paths:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE_NOTES.search(line):
                found.append(f"{path.relative_to(root)}:{lineno}: {line.strip()}")
    return found


def broken_links(paths, root: Path = REPO) -> list[str]:
    """Relative Markdown links that do not name a file or folder of the checkout."""
    broken = []
    for path in paths:
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if "://" not in target and not target.startswith("mailto:") and not (path.parent / target).exists():
                broken.append(f"{path.relative_to(root)} -> {target}")
    return broken


def test_no_file_sends_the_reader_outside_the_repository():
    this_file = Path(__file__).resolve()  # its patterns name what it looks for
    files = [p for p in project_files() if p != this_file]
    assert len(files) > 50 and REPO / "docs" / "contracts.md" in files
    assert outside_references(files) == []


def test_the_check_sees_a_reference_to_outside_notes(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Intro.\nRead `../shared/DESIGN.md` first.\nData: ../shared/data/dialogsum\n", encoding="utf-8")
    assert outside_references([page], root=tmp_path) == ["page.md:2: Read `../shared/DESIGN.md` first."]


def test_the_docs_links_resolve_inside_the_checkout():
    docs = [REPO / "README.md", REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    assert broken_links(docs) == []
    assert (REPO / "docs" / "design.md").is_file()
    assert "(design.md)" in (REPO / "docs" / "contracts.md").read_text(encoding="utf-8")


def test_a_broken_link_is_found(tmp_path):
    (tmp_path / "there.md").write_text("x", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [anchor](there.md#part) [web](https://example.org) [gone](missing.md)\n",
                    encoding="utf-8")
    assert broken_links([page], root=tmp_path) == ["page.md -> missing.md"]


# ------------------------------------------------------------------------------- workflow catalog
def _rule_blocks(text: str) -> dict[str, str]:
    """Rule name -> its text, for each ``rule NAME:`` of a Snakemake file."""
    starts = list(re.finditer(r"^(\s*)rule (\w+):", text, re.M))
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return {m.group(2): text[m.start():end] for m, end in zip(starts, ends)}


def test_the_catalog_file_has_the_standardized_usage_keys():
    usage = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["usage"]
    assert set(usage) == {"mandatory-flags", "software-stack-deployment", "report"}
    assert set(usage["mandatory-flags"]) == {"desc", "flags"} and usage["mandatory-flags"]["desc"].strip()
    stack = usage["software-stack-deployment"]
    assert set(stack) == {"conda", "apptainer", "apptainer+conda"} and any(stack.values())


def test_the_catalog_file_claims_only_what_the_workflow_does():
    from snakemake.cli import get_argument_parser

    usage = yaml.safe_load(CATALOG.read_text(encoding="utf-8"))["usage"]
    options = get_argument_parser().format_help()
    for flag in str(usage["mandatory-flags"]["flags"]).split():
        assert not flag.startswith("--") or flag in options, f"{flag}: not a snakemake option"
    if usage["software-stack-deployment"]["conda"]:
        rules = {name: block for smk in sorted((REPO / "workflow" / "rules").glob("*.smk"))
                 for name, block in _rule_blocks(smk.read_text(encoding="utf-8")).items()}
        assert rules and all("conda:" in block for block in rules.values()), \
            [name for name, block in rules.items() if "conda:" not in block]
        assert (REPO / "envs" / "vecflow.yaml").is_file()
    if usage["software-stack-deployment"]["apptainer"]:
        assert "container:" in (REPO / "Snakefile").read_text(encoding="utf-8")
    if usage["report"]:  # a test builds `snakemake --report report.zip` from a finished run
        assert '"--report"' in (REPO / "tests" / "test_pipeline_e2e.py").read_text(encoding="utf-8")
