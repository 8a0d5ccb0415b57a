"""Stop and resume: Ctrl-C on the runner (a real SIGINT to its process group, in a
subprocess, as a terminal sends it), SIGINT inside ``train.fit`` (what JupyterLab's
*Interrupt* and the runner's forwarded Ctrl-C deliver to a kernel), time-based checkpoints,
and where executed notebooks and outputs go."""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
from torch.utils.data import TensorDataset

from fa_utils import fa, models, outputs, runner, train

REPO = outputs.repo_root()

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny networks (tests/conftest.py)

#: The training cell of the test notebook, also run in this process for the reference.
TRAIN = '''
import functools, pathlib, time
import torch
from torch.utils.data import TensorDataset
from fa_utils import models, train
from fa_utils.fa import fa_step

torch.set_num_threads(1)  # tiny network: one thread is faster and immune to a loaded CPU
torch.manual_seed(0)
enc = models.Encoder(models.Architecture(1, 8, (4,), 16), {"z": 4})
models.init_orthogonal_(enc)
opt = torch.optim.Adam(enc.parameters(), lr=1e-3, betas=(0.5, 0.999))
gen = train.seeded_generator(1)
data = TensorDataset(torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(9)))
fa = functools.partial(fa_step, enc, opt, generator=gen, r_init="uniform")
if pathlib.Path(ckpt).exists():
    delay = 0.0  # slow only until interrupted: the resumed run goes at full speed

def step_fn(x, y):
    out = fa(x)
    if marker:
        pathlib.Path(marker).touch()
    time.sleep(delay)
    return out

history = train.fit(step_fn, modules={"enc": enc}, optimizers={"opt": opt}, dataset=data,
                    batch_size=8, epochs=epochs, seed=0, config={"case": "interrupt"},
                    generator=gen, checkpoint=ckpt, ckpt_every=10**9, ckpt_every_s=None,
                    progress=False)
torch.save(dict(enc.state_dict()), ckpt + ".final")
'''


def write_notebook(path: Path, parameters: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    p = nbformat.v4.new_code_cell(parameters)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(nb, path)
    return path


def start_runner(args, cwd: Path, out_root: Path) -> subprocess.Popen:
    """``python -m fa_utils`` in its own session and process group, as a shell starts a
    foreground job (the terminal's Ctrl-C goes to that group)."""
    env = dict(os.environ, FA_OUTPUT_ROOT=str(out_root), PWD=str(cwd), FA_PROFILE="smoke")
    return subprocess.Popen([sys.executable, "-m", "fa_utils", *args], cwd=cwd, env=env,
                            start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"runner ended (rc {proc.returncode}) before {path} appeared:\n{out}\n{err}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"{path} did not appear within {timeout} s")
        time.sleep(0.1)


def ctrl_c(proc: subprocess.Popen) -> float:
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
    return time.monotonic()


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"runner did not exit within {timeout} s:\n{out}\n{err}")
    return proc.returncode, out, err


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped by its parent) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------------------
# Case 1 and 2: Ctrl-C on the runner
# --------------------------------------------------------------------------------------


def test_ctrl_c_stops_the_runner_saves_a_checkpoint_and_the_rerun_resumes_bit_identical(tmp_path):
    nb = write_notebook(tmp_path / "91_train.ipynb",
                        'epochs = 40\ndelay = 0.05\nmarker = ""\nckpt = "ck.pt"', TRAIN)
    ckpt, marker, out_root = tmp_path / "ck.pt", tmp_path / "started", tmp_path / "out"
    args = ["run", str(nb), "-p", "marker", str(marker), "-p", "ckpt", str(ckpt)]
    proc = start_runner(args, tmp_path, out_root)
    wait_for(marker, proc)
    time.sleep(0.5)
    t0 = ctrl_c(proc)
    code, out, err = finish(proc)
    waited = time.monotonic() - t0
    assert code == runner.EXIT_INTERRUPTED == 130, err
    assert waited < 30, f"took {waited:.1f} s to stop"
    assert "INTERRUPTED: notebook 91_train.ipynb stopped" in err and "by Ctrl-C" in err
    assert "TrainingInterrupted" not in out
    assert "to resume" in err and f"run {nb}" in err
    saved = train.load_checkpoint(ckpt)
    total = 40 * 5
    assert 1 <= saved["step"] < total  # the step reached, not a periodic one (there are none)
    assert len(saved["history"]["train"]["loss"]) == saved["step"]
    executed = out_root / "runs" / "notebooks" / "smoke" / "91_train.ipynb"
    assert str(executed) in err and executed.exists()  # executed up to the interrupt

    # the printed command, run as written by a shell, resumes and finishes the training
    command = err.split("to resume (training continues from the checkpoints):\n")[1].splitlines()[0]
    done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, FA_PROFILE="smoke"))
    assert done.returncode == 0, done.stderr
    assert train.load_checkpoint(ckpt)["step"] == total
    assert (out_root / "runs" / "notebooks" / "smoke" / "91_train.ipynb").exists()

    # uninterrupted reference in this process: bit-identical weights
    ref = tmp_path / "ref.pt"
    exec(TRAIN, {"epochs": 40, "delay": 0.0, "marker": "", "ckpt": str(ref)})
    a, b = torch.load(str(ckpt) + ".final"), torch.load(str(ref) + ".final")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_interrupts_a_sleeping_cell_and_kills_a_kernel_that_ignores_it(tmp_path):
    marker = tmp_path / "pid"
    sleeper = write_notebook(tmp_path / "92_sleep.ipynb", f'marker = "{marker}"',
                             "import os, pathlib, time\n"
                             "pathlib.Path(marker).write_text(str(os.getpid()))\n"
                             "time.sleep(300)")
    proc = start_runner(["run", str(sleeper)], tmp_path, tmp_path / "out")
    wait_for(marker, proc)
    t0 = ctrl_c(proc)
    code, _, err = finish(proc)
    assert code == 130 and time.monotonic() - t0 < 30
    assert "92_sleep.ipynb stopped" in err and "by Ctrl-C" in err

    marker.unlink()
    stubborn = write_notebook(tmp_path / "93_stubborn.ipynb", f'marker = "{marker}"',
                              "import os, pathlib, signal, time\n"
                              "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                              "pathlib.Path(marker).write_text(str(os.getpid()))\n"
                              "time.sleep(300)")
    proc = start_runner(["run", str(stubborn)], tmp_path, tmp_path / "out")
    wait_for(marker, proc)
    kernel = int(marker.read_text())
    t0 = ctrl_c(proc)  # the cell ignores the interrupt: the kernel is killed
    code, _, err = finish(proc)
    assert code == 130 and time.monotonic() - t0 < 30
    assert "93_stubborn.ipynb stopped" in err
    deadline = time.monotonic() + 10
    while pid_alive(kernel) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(kernel)


# --------------------------------------------------------------------------------------
# Case 2: SIGINT inside fit (a kernel's interrupt), time-based checkpoints
# --------------------------------------------------------------------------------------


def setup_fa(seed=0):
    torch.manual_seed(seed)
    enc = models.Encoder(models.Architecture(1, 8, (4,), 16), {"z": 4})
    models.init_orthogonal_(enc)
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    gen = train.seeded_generator(seed + 1)
    return enc, opt, gen, functools.partial(fa.fa_step, enc, opt, generator=gen,
                                            r_init="uniform")


DATA = TensorDataset(torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(9)))


def fit(path, step_fn, enc, opt, gen, **kw):
    return train.fit(train.images_only(step_fn), modules={"enc": enc}, optimizers={"opt": opt},
                     dataset=DATA, batch_size=8, epochs=3, seed=0, config={"c": 1}, generator=gen,
                     checkpoint=path, progress=False,
                     eval_fn=lambda: {"w": float(sum(p.detach().norm() for p in enc.parameters()))},
                     eval_every=5, **kw)


@pytest.fixture
def sigint_delivered():
    """SIGINT raises KeyboardInterrupt in this process during the test, however the suite was
    started (``nohup``, ``trap '' INT`` and a non-interactive shell's background job start it
    with SIGINT ignored, and :func:`fit` rightly keeps an ignored SIGINT ignored). The
    previous handler is restored after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_delivered")
@pytest.mark.parametrize("at", [5, 7])  # at an eval step, and mid-epoch
def test_sigint_in_fit_checkpoints_the_step_reached_and_resume_is_bit_identical(tmp_path, at):
    enc_a, opt_a, gen_a, step_a = setup_fa()
    hist_a = fit(tmp_path / "a.pt", step_a, enc_a, opt_a, gen_a)

    enc, opt, gen, step = setup_fa()
    calls = {"n": 0}

    def interrupted_step(x):
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), signal.SIGINT)  # arrives inside the step, as a Ctrl-C would
        return step(x)

    path = tmp_path / "b.pt"
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(train.TrainingInterrupted, match=f"interrupted at step {at} of 15.*"
                       f"checkpoint written to {path}.*resume from step {at}") as info:
        fit(path, interrupted_step, enc, opt, gen, ckpt_every=10**9, ckpt_every_s=None)
    assert isinstance(info.value, KeyboardInterrupt) and info.value.checkpoint == path
    assert train.load_checkpoint(path)["step"] == at  # the finished step, not a later one
    assert signal.getsignal(signal.SIGINT) is before  # fit's handler is gone

    enc_b, opt_b, gen_b, step_b = setup_fa()
    hist_b = fit(path, step_b, enc_b, opt_b, gen_b)
    for (name, pa), (_, pb) in zip(enc_a.state_dict().items(), enc_b.state_dict().items()):
        assert torch.equal(pa, pb), name
    assert hist_a == hist_b


@pytest.mark.usefixtures("sigint_delivered")
def test_a_second_sigint_in_fit_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    enc, opt, gen, step = setup_fa()
    calls = {"n": 0}

    def step_twice_interrupted(x):
        calls["n"] += 1
        out = step(x)
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return out

    path = tmp_path / "c.pt"
    with pytest.raises(KeyboardInterrupt) as info:
        fit(path, step_twice_interrupted, enc, opt, gen, ckpt_every=2, ckpt_every_s=None)
    assert not isinstance(info.value, train.TrainingInterrupted)
    assert train.load_checkpoint(path)["step"] == 2  # the periodic one, intact


def test_an_ignored_sigint_stays_ignored_in_fit(tmp_path):
    """A process started with SIGINT ignored (``nohup``) trains to the end through one."""
    enc, opt, gen, step = setup_fa()
    calls = {"n": 0}

    def step_with_sigint(x):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return step(x)

    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        history = fit(tmp_path / "i.pt", step_with_sigint, enc, opt, gen, ckpt_every=10**9,
                      ckpt_every_s=None)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(history.train["loss"]) == 15 and train.load_checkpoint(tmp_path / "i.pt")["step"] == 15


def test_checkpoints_are_also_written_by_time(tmp_path, monkeypatch):
    clock = {"t": 1000.0}
    monkeypatch.setattr(train, "monotonic", lambda: clock["t"])
    saved_steps = []
    real_save = train.save_checkpoint
    monkeypatch.setattr(train, "save_checkpoint",
                        lambda p, payload: (saved_steps.append(payload["step"]), real_save(p, payload))[1])
    enc, opt, gen, step = setup_fa()

    def slow_step(x):
        clock["t"] += 25.0  # each step "takes" 25 s of training
        return step(x)

    fit(tmp_path / "t.pt", slow_step, enc, opt, gen, ckpt_every=10**9, ckpt_every_s=60.0)
    assert saved_steps == [3, 6, 9, 12, 15]  # every 60 s (3 steps of 25 s), and at the end


# --------------------------------------------------------------------------------------
# Case 4 and 5: where the runner's outputs go
# --------------------------------------------------------------------------------------


def test_relative_output_root_is_taken_from_the_folder_the_command_started_in(tmp_path):
    """The kernel runs in the notebook's folder; a relative FA_OUTPUT_ROOT used to resolve
    there for figures, results and checkpoints, and in the launch folder for the executed
    notebook."""
    elsewhere, nbdir = tmp_path / "elsewhere", tmp_path / "nbdir"
    elsewhere.mkdir()
    nbdir.mkdir()
    nb = write_notebook(nbdir / "95_outputs.ipynb", "profile = None",
                        "from matplotlib.figure import Figure\n"
                        "from fa_utils import outputs\n"
                        "fig = Figure()\nfig.add_subplot().plot([0, 1])\n"
                        "outputs.save_figure(fig, 'f', caption='c', profile=profile)\n"
                        "outputs.write_table('t', 'T', ['a'], [[1]], profile=profile)\n"
                        "outputs.checkpoint_path('c', profile).write_text('x')")
    env = {k: v for k, v in os.environ.items() if k != "FA_OUTPUT_ROOT"}
    env.update(FA_OUTPUT_ROOT="relout", PWD=str(elsewhere))
    done = subprocess.run([sys.executable, "-m", "fa_utils", "run", str(nb), "--profile", "smoke"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    root = elsewhere / "relout"
    assert (root / "runs" / "notebooks" / "smoke" / "95_outputs.ipynb").is_file()
    assert (root / "figures" / "f.png").is_file() and (root / "results" / "t.md").is_file()
    assert (root / "runs" / "checkpoints" / "c-smoke.pt").is_file()
    assert not (nbdir / "relout").exists() and not (REPO / "notebooks" / "relout").exists()


def test_the_kernel_resolves_a_relative_root_against_the_launch_folder(tmp_path, monkeypatch):
    launch, kernel_cwd = tmp_path / "launch", tmp_path / "notebooks"
    launch.mkdir()
    kernel_cwd.mkdir()
    monkeypatch.setenv("FA_OUTPUT_ROOT", "relout")
    monkeypatch.setenv("PWD", str(launch))
    monkeypatch.chdir(kernel_cwd)  # a kernel runs in notebooks/ with the launcher's $PWD
    assert outputs.project_root() == (launch / "relout").resolve()
    monkeypatch.delenv("PWD")
    assert outputs.project_root() == (kernel_cwd / "relout").resolve()


def test_executed_notebooks_are_kept_per_profile_and_a_failure_names_its_notebook(
        tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FA_OUTPUT_ROOT", str(tmp_path / "out"))
    nb = write_notebook(tmp_path / "94_boom.ipynb", "fail = False\nprofile = None",
                        "y = 2", "if fail:\n    raise ValueError(f'boom {y}')", "z = 3")
    folder = tmp_path / "out" / "runs" / "notebooks"
    assert runner.main(["run", str(nb), "--profile", "quick"]) == 0
    assert runner.main(["run", str(nb), "--profile", "smoke", "-p", "fail", "True"]) == 1
    err = capsys.readouterr().err
    assert "94_boom.ipynb" in err and "cell 3" in err and "ValueError: boom 2" in err
    assert str(folder / "smoke" / "94_boom.ipynb") in err  # the executed notebook, traceback in it
    assert "boom 2" in (folder / "smoke" / "94_boom.ipynb").read_text()
    assert (folder / "quick" / "94_boom.ipynb").is_file()


def test_a_cell_timeout_names_the_cell_and_no_kernel_traceback_reaches_the_user(tmp_path):
    # the sleep is cell 3 once papermill has injected its parameters cell
    nb = write_notebook(tmp_path / "93_sleep.ipynb", "profile = None", "y = 2",
                        "import time\ntime.sleep(60)", "z = 3")
    env = dict(os.environ, FA_OUTPUT_ROOT=str(tmp_path / "out"))
    out = subprocess.run([sys.executable, "-m", "fa_utils", "run", str(nb), "--profile", "smoke",
                          "--timeout", "3"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == runner.EXIT_FAILED
    assert "failed in cell 3, which begins `import time`: CellTimeoutError" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and "ZMQError" not in out.stdout + out.stderr
