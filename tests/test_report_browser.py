"""Render the report in headless Chromium (Debian's /usr/bin/chromium); skipped when it is not installed.

Install it with: apt-get update && apt-get install -y chromium
The page itself has no JavaScript; for the check only, a copy gets a small inline script that marks <body>
once every image has loaded (and with where the summary's first table starts, in a 1280 x 1000 window), and
the DOM Chromium dumps is inspected. Console messages are read from
Chromium's stderr log (``--enable-logging=stderr --v=0``).
"""

import json
import re
import subprocess
from pathlib import Path

import pytest

from test_report import make_artifacts, render

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium not installed")

QUIET_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
IMAGE_CHECK = """<script>
window.addEventListener('load', function () {
  var images = Array.from(document.images);
  var loaded = images.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute('data-images', loaded ? 'loaded' : 'broken');
  document.body.setAttribute('data-image-count', String(images.length));
  var first = document.querySelector('#summary table');
  document.body.setAttribute('data-summary-table-top',
                             first ? String(Math.round(first.getBoundingClientRect().top + window.scrollY)) : 'none');
  var open = Array.from(document.querySelectorAll('details.section')).filter(function (d) { return d.open; });
  document.body.setAttribute('data-open-sections', String(open.length));
});
</script>"""


def chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    command = [str(CHROMIUM), *QUIET_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def check_in_browser(page: Path, tmp_path: Path) -> dict:
    """Screenshot the page, then dump the DOM of an instrumented copy: image status and console messages."""
    screenshot = tmp_path / "page.png"
    shot = chromium([f"--screenshot={screenshot}", "--window-size=1280,2000", page.as_uri()], tmp_path / "p1")
    checked = tmp_path / "checked.html"
    checked.write_text(page.read_text().replace("</body>", IMAGE_CHECK + "</body>"))
    dump = chromium(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1280,1000",
                     "--dump-dom", checked.as_uri()], tmp_path / "p2")
    body = re.search(r"<body([^>]*)>", dump.stdout)
    return {
        "screenshot_rc": shot.returncode,
        "screenshot_bytes": screenshot.stat().st_size if screenshot.exists() else 0,
        "dump_rc": dump.returncode,
        "body": body.group(1) if body else "",
        "console": [line for line in dump.stderr.splitlines() if ":CONSOLE" in line],
        "network": [line for line in dump.stderr.splitlines() if "net::ERR" in line],
    }


def body_attribute(result: dict, name: str) -> str:
    match = re.search(rf'{name}="([^"]*)"', result["body"])
    return match.group(1) if match else ""


def test_report_renders_in_chromium_with_all_images(tmp_path):
    html_text = render(tmp_path, make_artifacts(tmp_path / "artifacts"))
    page = tmp_path / "out" / "report.html"
    assert page.read_text() == html_text
    result = check_in_browser(page, tmp_path)
    assert result["screenshot_rc"] == 0 and result["screenshot_bytes"] > 10_000
    assert result["dump_rc"] == 0
    assert 'data-images="loaded"' in result["body"], json.dumps(result, indent=1)
    assert 'data-image-count="5"' in result["body"]
    assert result["console"] == [] and result["network"] == []
    top = body_attribute(result, "data-summary-table-top")
    assert top.isdigit() and 0 < int(top) < 1000, result["body"]  # the answer is above the fold
    assert body_attribute(result, "data-open-sections") == "0"  # the details are folded


def test_browser_check_catches_a_summary_below_the_fold(tmp_path):
    page = tmp_path / "low.html"
    page.write_text('<!DOCTYPE html><html><body><div style="height:1500px">intro</div>'
                    '<section id="summary"><table><tr><td>1</td></tr></table></section></body></html>')
    top = body_attribute(check_in_browser(page, tmp_path), "data-summary-table-top")
    assert top.isdigit() and int(top) >= 1500


def test_browser_check_catches_a_broken_image(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA" alt="x"></body></html>')
    result = check_in_browser(page, tmp_path)
    assert 'data-images="broken"' in result["body"]

