"""The explorers in a real browser (issue 6): JupyterLab on localhost, driven by Debian's
headless Chromium through Playwright (``executable_path``; ``playwright install`` is never
used).

The test copies ``notebooks/07_explore.ipynb`` into a temporary root folder (Lab autosaves
what it serves, so the repository's copy is never opened), starts JupyterLab there with a
token on a free port, opens the notebook, waits for the kernel, runs all cells from the Run
menu, waits for the inner-optimisation explorer (``.fa-explorer-inner``), moves its ``step``
slider by one with the keyboard, and checks that the displayed PNG and the status label
change. Screenshots go to the repository's ``runs/browser/`` (not to ``$FA_OUTPUT_ROOT``,
which conftest.py points at a temporary folder): ``explorer_before.png``,
``explorer_after.png`` and ``lab.png`` (the whole window), with Lab's log in ``lab.log``.

It skips, with the reason printed by ``make test`` (``-ra``), where Chromium, Playwright or
JupyterLab is missing. ``.ci/run`` installs Chromium with apt-get when it can.
Environment: ``FA_CHROMIUM`` names the browser binary; ``FA_BROWSER_NOTEBOOK`` another
notebook to drive (it must follow the same class names). The README's section "The
real-browser test" says how to install and run it.

Then, on the 2-D latent pad: a click moves the point; a drag (mouse down, moves in steps with
the button held, up) moves it along with every step before the button is released (a native
drag of the pad's <img> used to swallow the mouse events: ``pad_after_drag.png``). Last, no
control's description is cut off ("one-hot v...", "layers inv..." before).

Under load (parallel tests) every wait is on the page's state, not a fixed time (one grace
second after the drag's release, to see that the point stays); a key press that the slider
never took, or a press that never reached the pad's <img> (events counted in the page), is
tried again, up to three times.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = REPO / "notebooks" / "07_explore.ipynb"
SHOTS = REPO / "runs" / "browser"
WAIT_MS = 60_000           # every single wait
RENDER_WAIT_MS = 180_000   # Run All to the first explorer: the notebook trains smoke models first
TOKEN = "fa-browser-test"
INSTALL_HINT = ("install it with `apt-get install chromium` (Debian/Ubuntu; .ci/run does this "
                "as root) or set FA_CHROMIUM=/path/to/chromium; never `playwright install`")
STDERR = ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"  # tracebacks too
KEY_WAIT_MS = 5_000        # a key press moves a slider's handle in the page itself, no kernel


def find_chromium() -> tuple[str | None, list[str]]:
    """The first of ``$FA_CHROMIUM``, Debian's real binary, ``chromium`` and
    ``chromium-browser`` on PATH that runs (``--version`` answers within 30 s: Ubuntu's
    snap stub does not, in a container); and what was found but did not run."""
    broken = []
    for cand in (os.environ.get("FA_CHROMIUM"), "/usr/lib/chromium/chromium",
                 shutil.which("chromium"), shutil.which("chromium-browser")):
        if not (cand and os.path.isfile(cand) and os.access(cand, os.X_OK)):
            continue
        try:
            out = subprocess.run([cand, "--no-sandbox", "--version"], capture_output=True,
                                 text=True, timeout=30)
            if out.returncode == 0 and "chrom" in out.stdout.lower():
                return cand, broken
            broken.append(f"{cand} (exit {out.returncode}: {(out.stdout + out.stderr).strip()[:120]})")
        except (OSError, subprocess.TimeoutExpired) as exc:
            broken.append(f"{cand} ({type(exc).__name__})")
    return None, broken


def _stderr_text(page) -> str:
    return "\n".join(e.inner_text() for e in page.locator(STDERR).all())[-3000:]


def _became(page, sel: str, attr: str, old: str, ms: int) -> bool:
    """Whether ``sel``'s attribute ``attr`` differs from ``old`` within ``ms`` (queried afresh)."""
    try:
        page.wait_for_function("([sel, attr, old]) => { const e = document.querySelector(sel);"
                               " return e && e.getAttribute(attr) !== old; }", arg=[sel, attr, old], timeout=ms)
        return True
    except Exception as exc:  # playwright's TimeoutError
        if "Timeout" not in type(exc).__name__:
            raise
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lab_env(work: Path) -> dict:
    """A user's environment: widgets on (no FA_HEADLESS, no Agg backend), the smoke profile,
    outputs and all of Jupyter's state in ``work``, the venv's ``python`` first on PATH (the
    python3 kernelspec runs ``python``)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FA_HEADLESS", "MPLBACKEND", "PYTEST_CURRENT_TEST")
           and not k.startswith(("JUPYTER", "JPY_"))}
    cfg = work / "jcfg"
    env.update(
        FA_PROFILE="smoke", FA_OUTPUT_ROOT=str(work / "outputs"),
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
        JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_DATA_DIR=str(work / "jdata"),
        JUPYTER_RUNTIME_DIR=str(work / "jrun"),
        JUPYTERLAB_SETTINGS_DIR=str(cfg / "lab" / "user-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(cfg / "lab" / "workspaces"),
        IPYTHONDIR=str(work / "ipython"), MPLCONFIGDIR=str(work / "mpl"),
    )
    # Without this file a "get notified about Jupyter news?" toast covers the output area.
    note = cfg / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    note.mkdir(parents=True, exist_ok=True)
    (note / "notification.jupyterlab-settings").write_text(
        '{ "fetchNews": "false", "checkForUpdates": false }\n')
    return env


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM, wait (Lab shuts its kernels down first, about 2 s); then SIGKILL to its
    process group and to any child (a kernel runs in its own session) still alive."""
    try:
        import psutil
        children = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        children = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
    for child in children:
        try:
            child.wait(timeout=5)
        except Exception:
            try:
                child.kill()
            except Exception:
                pass


def _run_all(page, pw, url: str, say):
    """Open the notebook at ``url``, wait for the kernel, Run All, wait until every cell has run;
    returns the inner-optimisation explorer (a locator)."""
    page.goto(url)
    page.locator(".jp-NotebookPanel .jp-Cell.jp-CodeCell").first.wait_for(state="visible")
    # The toolbar's execution indicator says "idle" before the kernel is up;
    # the status bar's text is the reliable signal.
    pw.expect(page.locator("#jp-main-statusbar")).to_contain_text(
        "Python 3 (ipykernel) | Idle")
    say("notebook open, kernel idle; Run > Run All Cells")
    page.locator("#jp-MainMenu .lm-MenuBar-item", has_text="Run").first.click()
    page.locator(".lm-Menu li.lm-Menu-item[data-command='runmenu:run-all']").click()

    clicked = page.evaluate("Date.now()")
    explorer = page.locator(".jp-OutputArea-output .fa-explorer-inner").first
    # Wait for the explorer, or for Run All to end without it (a cell raised:
    # Lab then clears the queue). Query the DOM afresh on every poll.
    outcome = page.wait_for_function(
        """t0 => {
            if (document.querySelector('.jp-OutputArea-output .fa-explorer-inner')) return 'explorer';
            const s = document.querySelector('#jp-main-statusbar');
            const busy = [...document.querySelectorAll('.jp-NotebookPanel .jp-InputPrompt')]
                .some(e => e.textContent.includes('*'));
            return (Date.now() - t0 > 3000 && s && s.textContent.includes('| Idle') && !busy)
                ? 'finished' : false;
        }""", arg=clicked, timeout=RENDER_WAIT_MS).json_value()
    if outcome != "explorer":
        pytest.fail("Run All ended without an .fa-explorer-inner; stderr outputs:\n"
                    + _stderr_text(page))
    image = explorer.locator("img.fa-explorer-image").first
    image.wait_for(state="visible")
    say("inner explorer rendered")
    # Slider events queue behind the cells still running: wait until Run All is done.
    page.wait_for_function(
        """() => {
            const s = document.querySelector('#jp-main-statusbar');
            const busy = [...document.querySelectorAll('.jp-NotebookPanel .jp-InputPrompt')]
                .some(e => e.textContent.includes('*'));
            return s && s.textContent.includes('| Idle') && !busy;
        }""", timeout=RENDER_WAIT_MS)
    if "Traceback" in _stderr_text(page):
        say("note: a cell raised (not this test's concern; nbval runs the notebook):\n"
            + _stderr_text(page)[-1500:])
    say("all cells done, kernel idle")

    for close in page.locator(".Toastify__toast .Toastify__close-button").all():
        say("closing a toast before the screenshots")
        close.click()
    explorer.scroll_into_view_if_needed()
    return explorer


def _check_step_slider(page, explorer, say) -> None:
    """One key press on the inner explorer's ``step`` slider changes its PNG and status."""
    image = explorer.locator("img.fa-explorer-image").first
    status = explorer.locator(".fa-explorer-status")
    old_status = status.text_content()
    old_src = image.get_attribute("src")
    fetch_b64 = """async el => {
        const b = new Uint8Array(await (await fetch(el.src)).arrayBuffer());
        let s = ''; for (const x of b) s += String.fromCharCode(x); return btoa(s);
    }"""
    old_png = base64.b64decode(image.evaluate(fetch_b64))
    assert old_png[:8] == b"\x89PNG\r\n\x1a\n", "the explorer's image is not a PNG"
    explorer.screenshot(path=SHOTS / "explorer_before.png")

    handle = explorer.locator(".fa-control-step .noUi-handle").first
    now_attr = handle.get_attribute("aria-valuenow")
    now = float(now_attr)
    top = float(handle.get_attribute("aria-valuemax"))
    key = "ArrowRight" if now < top else "ArrowLeft"
    for attempt in range(1, 4):
        handle.focus()
        page.keyboard.press(key)
        say(f"step slider {now:g} of {top:g}: pressed {key} (try {attempt}); status was "
            f"{old_status!r}")
        # The page moves the handle at once (no kernel): only a press that it never
        # took (the focus went elsewhere, e.g. to the notebook) is tried again.
        if _became(page, ".jp-OutputArea-output .fa-explorer-inner .fa-control-step .noUi-handle",
                   "aria-valuenow", now_attr, KEY_WAIT_MS):
            break
    else:
        pytest.fail(f"the step slider ignored {key} three times (focus lost?)")

    # Query the DOM afresh on every poll: an element taken earlier may be replaced.
    sel = ".jp-OutputArea-output .fa-explorer-inner img.fa-explorer-image"
    page.wait_for_function(
        "([sel, old]) => { const e = document.querySelector(sel); return e && e.src && e.src !== old; }",
        arg=[sel, old_src])
    page.wait_for_function(
        "([sel, old]) => { const e = document.querySelector(sel); return e && e.textContent !== old; }",
        arg=[".jp-OutputArea-output .fa-explorer-inner .fa-explorer-status", old_status])
    new_status = status.text_content()
    new_png = base64.b64decode(image.evaluate(fetch_b64))
    new_now = float(handle.get_attribute("aria-valuenow"))
    say(f"image changed ({len(old_png)} -> {len(new_png)} bytes); "
        f"step {new_now:g}; status {new_status!r}")
    assert new_now != now
    assert new_png[:8] == b"\x89PNG\r\n\x1a\n"
    assert new_png != old_png, "the slider moved but the PNG bytes are the same"
    assert new_status != old_status

    explorer.screenshot(path=SHOTS / "explorer_after.png")


def _check_pad(page, say) -> None:
    """A click on the 2-D latent pad moves the point (status, z_1 slider); then a drag."""
    # The 2-D latent pad: a mouse click on the scatter (ipyevents) moves the
    # point; the pad (crosshair), the z_1 slider and the status follow.
    root = ".jp-OutputArea-output .fa-explorer-latent-pad"
    pad_explorer = page.locator(root).first
    pad_explorer.scroll_into_view_if_needed()
    pad = pad_explorer.locator("img.fa-explorer-pad").first
    pad.wait_for(state="visible")
    old_pad = pad.get_attribute("src")
    old_pad_status = pad_explorer.locator(".fa-explorer-status").text_content()
    old_z1 = pad_explorer.locator(".fa-control-x .widget-readout").text_content()
    box = pad.bounding_box()  # the pad: the picture's left square, as tall as the picture
    pad.click(position={"x": 0.2 * box["height"], "y": 0.8 * box["height"]})
    page.wait_for_function(
        "([sel, old]) => { const e = document.querySelector(sel); return e && e.src !== old; }",
        arg=[root + " img.fa-explorer-pad", old_pad])
    page.wait_for_function(
        "([sel, old]) => { const e = document.querySelector(sel); return e && e.textContent !== old; }",
        arg=[root + " .fa-explorer-status", old_pad_status])
    new_z1 = pad_explorer.locator(".fa-control-x .widget-readout").text_content()
    say(f"pad clicked: z_1 {old_z1.strip()} -> {new_z1.strip()}; status "
        f"{pad_explorer.locator('.fa-explorer-status').text_content()!r}")
    assert new_z1 != old_z1
    pad_explorer.screenshot(path=SHOTS / "pad_after_click.png")
    _check_pad_drag(page, root, pad_explorer, pad, say)


def _check_pad_drag(page, root: str, pad_explorer, pad, say) -> None:
    """A drag on the pad moves the point along with every step, before the release."""
    # A drag: press, move in 8 steps with the button held, release. Each step must
    # move the point (status "z = (z_1, z_2)") before the release: a click alone
    # moves it only on release, and a native drag of the <img> sends no moves. Each
    # step is awaited (its point on the status line) before the next; no fixed sleeps.
    status_sel = root + " .fa-explorer-status"

    def pad_z(text: str) -> tuple[float, float]:
        m = re.search(r"z = \((-?[\d.]+), (-?[\d.]+)\)", text)
        assert m, f"no point in the pad's status {text!r}"
        return float(m.group(1)), float(m.group(2))

    def wait_status_change(old: str) -> str:
        """The status once its point differs from the one in ``old``."""
        page.wait_for_function(
            """([sel, old]) => { const e = document.querySelector(sel);
                const z = t => (t.match(/z = \\([^)]*\\)/) || [''])[0];
                return e && z(e.textContent) && z(e.textContent) !== z(old); }""",
            arg=[status_sel, old])
        return pad_explorer.locator(".fa-explorer-status").text_content()

    # The mouse events that reach the pad's <img> are counted in the page: a press
    # that never arrived there (the page moved under the mouse) provably did not
    # reach the widget, and only then is the drag started again.
    pad.evaluate("""el => { window.faPad = {mousedown: 0, mousemove: 0, click: 0};
        for (const k of Object.keys(window.faPad)) el.addEventListener(k, e => {
            if (k !== 'mousemove' || e.buttons & 1) window.faPad[k]++; }, true); }""")
    n_steps, start, end = 8, (0.3, 0.3), (0.8, 0.6)
    text = pad_explorer.locator(".fa-explorer-status").text_content()
    for attempt in range(1, 4):
        pad.scroll_into_view_if_needed()
        box = pad.bounding_box()
        at = lambda f: (box["x"] + f[0] * box["height"], box["y"] + f[1] * box["height"])
        page.evaluate("() => { for (const k in window.faPad) window.faPad[k] = 0; }")
        page.mouse.move(*at(start))
        page.mouse.down()
        if page.evaluate("() => window.faPad.mousedown") > 0:
            break
        page.mouse.up()
        say(f"drag try {attempt}: the press did not reach the pad; pressing again")
    else:
        pytest.fail("three presses on the pad never reached its <img>")
    text = wait_status_change(text)  # the press moves the point
    seen = [pad_z(text)]
    for i in range(1, n_steps + 1):
        page.mouse.move(*at((start[0] + (end[0] - start[0]) * i / n_steps,
                             start[1] + (end[1] - start[1]) * i / n_steps)))
        text = wait_status_change(text)
        seen.append(pad_z(text))
    reached = page.evaluate("() => ({...window.faPad})")
    page.mouse.up()
    say(f"pad dragged in {n_steps} steps (try {attempt}): z went {seen[0]} -> {seen[-1]} "
        f"through {len(set(seen))} points; events on the pad {reached}")
    assert reached["mousemove"] >= n_steps, f"moves that reached the pad: {reached}"
    z1s, z2s = zip(*seen)
    assert all(a < b for a, b in zip(z1s, z1s[1:])), f"z_1 did not follow the drag: {z1s}"
    assert all(a > b for a, b in zip(z2s, z2s[1:])), f"z_2 did not follow the drag: {z2s}"
    # The click that ends the drag reaches the pad and leaves the point where it is
    # (a second to let the kernel act on it: a wrong move would show by then).
    page.wait_for_function("() => window.faPad.click > 0")
    page.wait_for_timeout(1000)
    assert pad_z(pad_explorer.locator(".fa-explorer-status").text_content()) == seen[-1]
    readout = pad_explorer.locator(".fa-control-x .widget-readout").text_content().strip()
    decimals = len(readout.partition(".")[2])
    # the slider holds the point on its grid (LatentPad.snap: 200 steps over its range):
    # within half a step of where the drag ended, plus the readout's rounding
    x_handle = pad_explorer.locator(".fa-control-x .noUi-handle").first
    half_step = (float(x_handle.get_attribute("aria-valuemax"))
                 - float(x_handle.get_attribute("aria-valuemin"))) / 200 / 2
    assert float(readout) == pytest.approx(seen[-1][0], abs=half_step + 1.01 * 10 ** -decimals), \
        f"the z_1 slider ({readout}) is not where the drag ended ({seen[-1][0]})"
    pad_explorer.screenshot(path=SHOTS / "pad_after_drag.png")


def _check_descriptions(page, explorer, say) -> None:
    """No control's description is cut off; ``lab.png`` of the whole window."""
    # Every control's description is shown in full (no "one-hot v..." any more).
    cut = []
    for one in page.locator(".jp-OutputArea-output .fa-explorer").all():
        one.scroll_into_view_if_needed()
        cut += one.evaluate("""el => [...el.querySelectorAll('.widget-label')]
            .filter(l => l.textContent.trim() && l.scrollWidth > l.clientWidth + 1)
            .map(l => l.textContent.trim())""")
    n_labels = page.locator(".jp-OutputArea-output .fa-explorer .widget-label").count()
    say(f"{n_labels} control descriptions checked; cut off: {cut or 'none'}")
    assert n_labels >= 10 and not cut, f"descriptions cut off: {cut}"
    explorer.scroll_into_view_if_needed()
    page.screenshot(path=SHOTS / "lab.png", full_page=True)


@pytest.mark.timeout(300)
def test_explorer_slider_changes_image_in_jupyterlab(capsys):
    chromium, broken = find_chromium()
    if chromium is None:
        pytest.skip("real-browser test: no working Chromium ($FA_CHROMIUM, "
                    "/usr/lib/chromium/chromium, `chromium` on PATH"
                    + (f"; found but not runnable: {'; '.join(broken)}" if broken else "")
                    + "); " + INSTALL_HINT)
    pw = pytest.importorskip("playwright.sync_api",
                             reason="real-browser test: playwright missing; `pip install "
                                    "playwright` (it is in requirements.txt)")
    pytest.importorskip("jupyterlab", reason="real-browser test: jupyterlab missing; "
                                             "`pip install jupyterlab` (in requirements.txt)")
    notebook = Path(os.environ.get("FA_BROWSER_NOTEBOOK", NOTEBOOK))
    if not notebook.exists():
        pytest.skip(f"real-browser test: {notebook} does not exist")

    t0 = time.monotonic()
    log_lines: list[str] = []

    def say(msg: str) -> None:
        line = f"[browser {time.monotonic() - t0:6.1f} s] {msg}"
        log_lines.append(line)
        with capsys.disabled():
            print(line, flush=True)

    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "lab_failure.png").unlink(missing_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fa_browser_"))
    root = work / "root"
    root.mkdir()
    shutil.copy(notebook, root / notebook.name)
    env = _lab_env(work)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    lab_log = open(SHOTS / "lab.log", "w")
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
           "--ip=127.0.0.1", f"--port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
           "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    lab = subprocess.Popen(cmd, env=env, cwd=root, stdout=lab_log, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, start_new_session=True)

    def lab_tail() -> str:
        lab_log.flush()
        return "\n--- lab.log (tail) ---\n" + "\n".join(
            (SHOTS / "lab.log").read_text(errors="replace").splitlines()[-40:])

    try:
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:
            if lab.poll() is not None:
                pytest.fail(f"JupyterLab exited with {lab.returncode}" + lab_tail())
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not answer /api/status within 60 s" + lab_tail())
                time.sleep(0.2)
        say(f"JupyterLab up on {base}, serving a copy of {notebook.name} from {root}")

        with pw.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                      "--disable-background-networking", "--disable-component-update",
                      "--no-first-run", "--no-default-browser-check"])
            say(f"browser {chromium}, version {browser.version}")
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1200})
                page.set_default_timeout(WAIT_MS)
                pw.expect.set_options(timeout=WAIT_MS)
                explorer = _run_all(page, pw, f"{base}/lab/tree/{notebook.name}?reset&token={TOKEN}", say)
                _check_step_slider(page, explorer, say)
                _check_pad(page, say)
                _check_descriptions(page, explorer, say)
                say(f"screenshots in {SHOTS}: explorer_before.png, explorer_after.png, "
                    f"pad_after_click.png, pad_after_drag.png, lab.png")
            except Exception:
                try:
                    page.screenshot(path=SHOTS / "lab_failure.png", full_page=True)
                    say(f"failure screenshot: {SHOTS / 'lab_failure.png'}")
                except Exception:
                    pass
                raise
            finally:
                browser.close()
    except BaseException as exc:
        if not isinstance(exc, pytest.skip.Exception):
            with capsys.disabled():
                print(lab_tail(), flush=True)
        raise
    finally:
        _stop(lab)
        lab_log.close()
        shutil.rmtree(work, ignore_errors=True)
        say(f"JupyterLab stopped; total {time.monotonic() - t0:.1f} s")
