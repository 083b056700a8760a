"""JupyterLab as a researcher uses it (`make lab`): in a real browser, a .py notebook opens as a notebook, runs
top to bottom on the committed study, shows its figures, and writes nothing under notebooks/.

Playwright drives the system's Chromium (Debian's ``chromium``; `.ci/run` installs it): Playwright's own browser
download needs a host these machines do not reach. Without a Chromium the test skips, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = "01_main_results.py"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install -y chromium)"),
    pytest.mark.skipif(
        not (ROOT / "results" / "cpu" / "results.parquet").is_file(), reason="no committed cpu study to show"
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab started as `make lab` does (the project's .jupyter settings, this environment's kernel), on a
    free loopback port, with its user settings and workspaces in a temporary folder (autosave off, so the
    test never writes the notebook back)."""
    port, token = _free_port(), "diffseg-browser-test"
    settings = tmp_path / "user-settings" / "@jupyterlab" / "docmanager-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(json.dumps({"autosave": False}))
    env = {
        **os.environ,
        "JUPYTER_CONFIG_PATH": str(ROOT / ".jupyter"),
        "JUPYTER_PATH": str(Path(sys.prefix) / "share" / "jupyter"),
    }
    env.pop("JPY_SESSION_NAME", None)
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
        "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--notebook-dir={ROOT / 'notebooks'}",
        f"--LabApp.user_settings_dir={tmp_path / 'user-settings'}",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
    ]  # fmt: skip
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"JupyterLab exited: {(tmp_path / 'lab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"{url}/lab?token={token}", tmp_path / "lab.log"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_lab_opens_a_py_notebook_as_a_notebook_and_runs_it_in_place(lab) -> None:
    from playwright.sync_api import sync_playwright

    url, log = lab
    before = _listing(ROOT / "notebooks")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(url)
            item = page.locator(".jp-DirListing-item", has_text=NOTEBOOK)
            item.wait_for(timeout=90_000)
            item.dblclick()
            # jupytext's notebook view, not the text editor: a notebook panel with cells
            panel = page.locator(".jp-NotebookPanel").first
            panel.wait_for(timeout=60_000)
            assert page.locator(".jp-FileEditor").count() == 0, "the .py file opened in the text editor"
            page.get_by_text("| Idle").first.wait_for(timeout=90_000)  # the kernel is up (status bar)
            panel.locator(".jp-Cell").first.click()  # the notebook has the focus: Run All applies to it
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            # done when the last code cell has its execution count and no cell waits ("[*]"); cells scrolled
            # out of view are not rendered (JupyterLab's windowing), so only the last prompt is read
            last = page.locator(".jp-CodeCell .jp-InputPrompt").last
            deadline, text = time.time() + 240, ""
            while time.time() < deadline:
                text = last.inner_text().strip()
                busy = page.locator(".jp-InputPrompt", has_text="[*]").count()
                if text[1:-2].isdigit() and not busy:
                    break
                time.sleep(1)
            else:
                pytest.fail(
                    f"cells did not all run in 240 s (last prompt {text!r}); lab log: {log.read_text()[-1500:]}"
                )
            page.screenshot(path=str(log.parent / "lab.png"), full_page=False)
            errors = page.locator("[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
            assert not errors, f"a cell wrote to stderr or raised: {errors[0][:500]}"
            images = page.locator(".jp-OutputArea-output img").count()
            assert images >= 1, "no figure in the notebook's outputs"
        finally:
            browser.close()
    assert _listing(ROOT / "notebooks") == before, "running the notebook wrote files under notebooks/"
