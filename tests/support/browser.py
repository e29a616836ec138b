"""Open a report in headless Chromium: a screenshot, and what the page actually rendered.

`python -m tests.support.browser REPORT.html SHOT.png` prints the check as JSON and exits
non-zero when the page shows no table or an image that did not decode.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from neggen_core.errors import NeggenError

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# Appended to a copy of the page: after load, writes what rendered into the DOM as JSON.
PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0,
    width: i.naturalWidth, height: i.naturalHeight}));
  const tables = [...document.querySelectorAll("table")].map(t => t.rows.length);
  const out = document.createElement("pre");
  out.id = "neggen-probe";
  out.textContent = JSON.stringify({tables, images, title: document.title,
    headings: [...document.querySelectorAll("h2")].map(h => h.textContent)});
  document.body.appendChild(out);
});
</script>"""


@dataclass(frozen=True)
class PageCheck:
    """What Chromium rendered: rows per table, each image's decoded size, the section titles."""

    title: str
    table_rows: list[int]
    images: list[dict[str, int | bool]]
    headings: list[str]
    screenshot: str

    @property
    def ok(self) -> bool:
        return (
            bool(self.table_rows)
            and all(r > 1 for r in self.table_rows)
            and bool(self.images)
            and all(bool(i["ok"]) for i in self.images)
        )


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise NeggenError(
        "no Chromium found; install Debian's package (apt-get install chromium) to check reports"
    )


def _chromium(args: list[str], profile: str, timeout: float) -> str:
    command = [find_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise NeggenError(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def check_page(
    page: Path, screenshot: Path, width: int = 1280, height: int = 4800, timeout: float = 120
) -> PageCheck:
    """Screenshot `page` and read back, from a probed copy, what it rendered."""
    page = page.resolve()
    with tempfile.TemporaryDirectory(prefix="neggen-chromium-") as tmp:
        _chromium(
            [
                f"--screenshot={screenshot.resolve()}",
                f"--window-size={width},{height}",
                page.as_uri(),
            ],
            str(Path(tmp) / "profile-shot"),
            timeout,
        )
        probed = Path(tmp) / page.name
        probed.write_text(
            page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), "utf-8"
        )
        dom = _chromium(
            ["--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
            str(Path(tmp) / "profile-dom"),
            timeout,
        )
    start = dom.find('<pre id="neggen-probe">')
    if start < 0 or not screenshot.exists():
        raise NeggenError(f"{page}: the page did not finish loading in Chromium")
    raw = dom[start + len('<pre id="neggen-probe">') : dom.index("</pre>", start)]
    probe = json.loads(raw.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<"))
    return PageCheck(
        title=probe["title"],
        table_rows=probe["tables"],
        images=probe["images"],
        headings=probe["headings"],
        screenshot=str(screenshot),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("page", type=Path, help="report.html")
    parser.add_argument("screenshot", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    check = check_page(args.page, args.screenshot)
    print(json.dumps({**asdict(check), "ok": check.ok}, indent=2))
    return 0 if check.ok else 1


if __name__ == "__main__":
    sys.exit(main())
