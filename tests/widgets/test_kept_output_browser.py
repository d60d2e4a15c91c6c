"""Kept output in a real browser (issue 19): a view shows a CLI worker's task output, and again after a reload.

JupyterLab on loopback and headless chromium through Playwright, as in ``test_browser``. The
kernel starts no pool, so only the CLI worker runs the task; the view reads the task's output
from the store. The notebook is saved and the page reloaded: the view is drawn again from the
live kernel's widget state, output included. Every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from processes import Child
from test_browser import VIEW_TIMEOUT, _require_browser, browser_page, run_all_cells, running_lab

CELLS = [
    "%load_ext omniq_nb\nimport time\nimport omniq_nb as omniq",
    "@omniq.task\ndef chatty(n):\n    for i in range(n):\n        print(f'kept line {i}')\n        time.sleep(0.01)\n"
    "    return n",
    "h = chatty.submit(200)\nh",
]


def test_view_shows_kept_output_and_again_after_a_reload(tmp_path: Path, cli_worker: Callable[..., Child]) -> None:
    sync_api = _require_browser()
    with (
        running_lab(tmp_path, {"kept.ipynb": CELLS}, OMNIQ_AUTOSTART="0") as lab,
        browser_page(tmp_path, sync_api) as page,
    ):
        worker = cli_worker(lab.root)
        run_all_cells(page, lab, "kept.ipynb")
        view = page.locator(".jp-OutputArea-output .widget-vbox").filter(has_text="succeeded").first
        view.wait_for(timeout=VIEW_TIMEOUT * 1000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.widget-vbox')].some(e => e.textContent.includes('kept line 199'))",
            timeout=VIEW_TIMEOUT * 1000,
        )
        before = view.text_content() or ""
        assert "kept line 0\n" in before and "kept line 199" in before
        assert before.count("kept line 7\n") == 1, "a line shown twice"

        page.keyboard.press("Control+s")
        page.wait_for_timeout(1000)  # the save request goes out; the reload below waits for the page
        page.reload()
        page.locator(".jp-Notebook .jp-Cell").first.wait_for()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.widget-vbox')].some(e => e.textContent.includes('kept line 199'))",
            timeout=VIEW_TIMEOUT * 1000,
        )
        again = page.locator(".jp-OutputArea-output .widget-vbox").filter(has_text="succeeded").first
        after = again.text_content() or ""
        assert "kept line 0\n" in after and after.count("kept line 7\n") == 1
        assert worker.alive(), worker.text()
