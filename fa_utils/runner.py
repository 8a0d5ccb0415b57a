"""``python -m fa_utils``: execute the notebooks headlessly with papermill.

    python -m fa_utils reproduce [--profile quick]        # the main job: every notebook, in order
    python -m fa_utils run 01 -p seed 3 --profile smoke   # or notebooks/01_toy_sin.ipynb
    python -m fa_utils report [--profile quick]           # rebuild results/REPORT.md alone
    python -m fa_utils download cifar10 [--data-root DIR] # fetch a dataset (torchvision)

Before any kernel starts: the profile, each ``-p NAME VALUE`` (a parameter of each notebook,
its word read as the type of the config field it feeds, then checked by the config:
:mod:`fa_utils.notebooks`), and the work tree: the repository's figures/ and
results/ are written only from a clean commit (:func:`source_commit`). ``--out DIR`` writes
figures/, results/ and runs/ under DIR (as ``FA_OUTPUT_ROOT``). Each mistake: one message,
exit 2. A notebook (:mod:`fa_utils.execution`) runs into ``runs/notebooks/<profile>/NN_name.running.ipynb``, renamed to
``NN_name.ipynb``, or ``.failed`` / ``.interrupted``, so a failure never replaces a success;
the kernel's own messages go to ``NN_name.kernel.log``. A progress line per cell of 2 s or
more; at the end the times and REPORT.md's summary (:mod:`fa_utils.report`); a successful
``reproduce`` also writes ``results/run_times.md``. Ctrl-C interrupts the kernel (a training
loop checkpoints), names the command that resumes and exits 130; a second kills the kernel.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from . import outputs, report
from .config import PROFILES, ConfigError, resolve_profile
from .execution import Interrupts, NotebookStopped, execute
from .notebooks import RunnerError, all_notebooks, notebook_parameters, prepare  # noqa: F401

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130  # 130 = 128 + SIGINT, as a shell says
CODE_FOLDERS = ("fa_utils", "notebooks")  # their untracked files count as uncommitted
REFERENCE_STEPS = 20


def _git(root: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def uncommitted_changes(root: Path) -> Optional[list[str]]:
    """How the work tree at ``root`` differs from its commit, for the main job: tracked files
    changed outside the output folders (figures/, results/) and untracked files in
    :data:`CODE_FOLDERS`, as paths. None when ``root`` is not a git work tree."""
    status = _git(root, "status", "--porcelain", "--untracked-files=all")
    if status is None:
        return None
    changed = []
    for line in status.splitlines():
        path = line[3:].split(" -> ")[-1].strip('"')
        top, untracked = path.split("/")[0], line[:2] == "??"
        if top in CODE_FOLDERS if untracked else top not in ("figures", "results"):
            changed.append(path)
    return changed


def source_commit(profile: str, allow_dirty: bool, argv: Sequence[str]) -> str:
    """The commit the outputs come from, as markdown for REPORT.md's header.

    Raises:
        RunnerError: the run would write the repository's figures/ and results/ from
            uncommitted changes (:func:`uncommitted_changes`) without ``allow_dirty``; the
            message names them and the commands that go on.
    """
    root = outputs.repo_root()
    head, changed = (_git(root, "rev-parse", "--short", "HEAD") or "").strip(), uncommitted_changes(root)
    if not head or changed is None:
        return "unknown (not a git work tree)"
    listed = ", ".join(changed[:8]) + " ..." * (len(changed) > 8)
    if not changed:
        return f"`{head}`"
    if outputs.project_root() != root or profile in outputs.SCRATCH_PROFILES:
        return f"`{head}` with uncommitted changes"
    if allow_dirty:
        return (f"`{head}` **WITH UNCOMMITTED CHANGES** (`--allow-dirty`; {listed}): **these "
                f"results match no commit**")
    cmd = shlex.join([sys.executable, "-m", "fa_utils", *argv])
    raise RunnerError(f"the work tree has uncommitted changes ({listed}), and this run would "
                      f"write the committed figures/ and results/, whose REPORT.md must name a "
                      f"clean commit. Commit them (git add, git commit) or stash them (git stash; "
                      f"new files too: git stash -u) and "
                      f"rerun; or write elsewhere:\n  {cmd} --out runs/elsewhere\nor write "
                      f"here anyway, which REPORT.md's header then says loudly:\n  {cmd} --allow-dirty")


def reference_seconds(steps: int = REFERENCE_STEPS, batch: int = 128) -> float:
    """Seconds of a fixed computation that shows how fast the machine is today: ``steps``
    :func:`fa_utils.fa.fa_step` of the MNIST encoder (Table 7) at ``batch`` on fixed random
    data, on the CPU, after one untimed step. The global random state is left as it was."""
    import torch

    from . import fa, models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = models.make_encoder("mnist", {"z": 128})
        opt = torch.optim.Adam(enc.parameters(), lr=5e-4, betas=(0.5, 0.999))
        x = torch.rand(batch, 1, 28, 28)
        fa.fa_step(enc, opt, x)
        t0 = time.perf_counter()
        for _ in range(steps):
            fa.fa_step(enc, opt, x)
        return time.perf_counter() - t0


def _find(name: str) -> Path:
    """A notebook by path, stem or prefix (``01``, ``01_toy``); prepare() names a missing one."""
    path = Path(name)
    matches = [p for p in all_notebooks() if p.name.startswith(name) or p.stem == name]
    return path.resolve() if path.exists() else matches[0] if len(matches) == 1 else path


def _word_for(nb: Path) -> str:
    """How to name ``nb`` on the command line: ``02`` for the repository's notebooks."""
    return nb.name[:2] if nb in all_notebooks() and _find(nb.name[:2]) == nb else str(nb)


def _resume_command(args, words: Sequence[str], profile: str) -> str:
    cmd = [sys.executable, "-m", "fa_utils", "run", *words, "--profile", profile]
    for name, raw in args.parameter:
        cmd += ["-p", name, raw]
    if outputs.project_root() != outputs.repo_root():
        cmd += ["--out", str(outputs.project_root())]
    cmd += ["--timeout", str(args.timeout)] * bool(args.timeout) + ["--allow-dirty"] * args.allow_dirty
    return shlex.join(cmd)


def _stopped_message(exc: NotebookStopped, resume: str) -> str:
    if exc.state == "failed":
        return f"FAILED: {exc}"
    saved = exc.error or (f"the cell was not in a checkpointed training loop (train.fit), so it "
                          f"saved nothing and reruns from its start; the checkpoints written so "
                          f"far are in {outputs.runs_dir() / 'checkpoints'}")
    return "\n".join([f"INTERRUPTED: {exc}.", f"  {saved}", "  to resume (training continues "
                      "from the checkpoints):", f"    {resume}"]
                     + [f"  executed copy up to the interrupt: {exc.copy}"] * bool(exc.copy))


def _run_all(plans, args, profile: str, interrupts: Interrupts, runs: dict, times: list) -> int:
    """Run the plans in order (the reference computation first for ``reproduce``); fill
    ``runs`` (stem -> :class:`fa_utils.report.NotebookRun`) and ``times``; the exit status."""
    words, done = [_word_for(nb) for nb, _ in plans], 0
    not_run = lambda why: runs.update({nb.stem: report.NotebookRun("not run", why)  # noqa: E731
                                       for nb, _ in plans[done + 1:]})
    try:
        if args.command == "reproduce":
            print(f"reference computation ({REFERENCE_STEPS} FA steps, MNIST encoder) ...", flush=True)
            runs["reference_s"] = reference_seconds()
            print(f"  {runs['reference_s']:.1f} s", flush=True)
        for done, (nb, params) in enumerate(plans):
            if interrupts.count:  # a Ctrl-C that the previous notebook survived
                raise KeyboardInterrupt
            print(f"running {nb.name} with {params} ...", flush=True)
            t0 = time.perf_counter()
            try:
                out = execute(nb, params, outputs.runs_dir() / "notebooks" / profile, args.timeout,
                              interrupts)
            except NotebookStopped as exc:
                runs[nb.stem] = report.NotebookRun(exc.state, f"executed copy: {exc.copy}")
                not_run(f"notebook {words[done]} {exc.state} first")
                print(_stopped_message(exc, _resume_command(args, words[done:], profile)),
                      file=sys.stderr, flush=True)
                return EXIT_INTERRUPTED if exc.state == "interrupted" else EXIT_FAILED
            runs[nb.stem] = report.NotebookRun("ok", str(out))
            times.append((nb.name, time.perf_counter() - t0))
            print(f"  done in {times[-1][1]:.0f} s -> {out}", flush=True)
    except KeyboardInterrupt:  # between notebooks: nothing was running
        done = len(times) - 1
        not_run("the run was interrupted first")
        print(f"INTERRUPTED (Ctrl-C) between notebooks.\n  to run the rest: "
              f"{_resume_command(args, words[len(times):], profile)}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    return 0


@contextlib.contextmanager
def _environment(out: Optional[str]):
    """While the runner runs (restored after): ``FA_OUTPUT_ROOT`` absolute (``out``, else its
    value; relative to the launch folder, not the kernels' notebooks/), ``FA_HEADLESS=1``
    unless set, ``FA_UPDATE_COMMITTED=1`` (the kernels write the committed folders)."""
    keys = (outputs.OUTPUT_ROOT_ENV, "FA_HEADLESS", outputs.UPDATE_COMMITTED_ENV)
    saved = {k: os.environ.get(k) for k in keys}
    if out or saved[keys[0]]:
        os.environ[keys[0]] = str(outputs.resolve_output_root(out or saved[keys[0]]))
    os.environ.setdefault("FA_HEADLESS", "1")
    os.environ[keys[2]] = "1"
    try:
        yield
    finally:
        os.environ.update({k: v for k, v in saved.items() if v is not None})
        for k in (k for k, v in saved.items() if v is None):
            os.environ.pop(k, None)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fa_utils", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    dl = sub.add_parser("download", help="fetch a dataset's files with torchvision")
    dl.add_argument("dataset", help="mnist, cifar10, celeba or stl10")
    dl.add_argument("--data-root", default="data", help="as the notebooks' data_root (default data)")
    for name, what in (("reproduce", "run every notebook in order (the main job)"),
                       ("run", "run the given notebooks"),
                       ("report", "rebuild results/REPORT.md from results/claims/*.json")):
        p = sub.add_parser(name, help=what)
        if name == "run":
            p.add_argument("notebooks", nargs="+", help="notebook paths or names (01, 01_toy)")
        p.add_argument("--profile", help=f"one of {list(PROFILES)} (default: $FA_PROFILE or quick)")
        p.add_argument("--out", help="write figures/, results/ and runs/ under this folder")
        p.add_argument("--allow-dirty", action="store_true", help="write the committed figures/ "
                       "and results/ from uncommitted changes (REPORT.md's header says so)")
        if name != "report":
            p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                           metavar=("NAME", "VALUE"), help="set a notebook parameter")
            p.add_argument("--timeout", type=int, help="seconds per cell")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "download":
        return _download(args.dataset, args.data_root)
    try:
        profile = resolve_profile(args.profile)
        notebooks = (all_notebooks() if args.command == "reproduce" else
                     [_find(n) for n in getattr(args, "notebooks", [])])
        plans = prepare(notebooks, [tuple(p) for p in getattr(args, "parameter", [])], profile)
        with _environment(args.out):
            commit = source_commit(profile, args.allow_dirty, argv)
    except (RunnerError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runs, times = {}, []
    with _environment(args.out), Interrupts().installed() as interrupts:
        status = _run_all(plans, args, profile, interrupts, runs, times) if plans else 0
        reference = runs.pop("reference_s", None)
        lines = [f"  {n:40s} {t:7.0f} s" for n, t in times + [("total", sum(t for _, t in times))]]
        print("\n".join(["", "time per notebook:", *lines]) if times else "", flush=True)
        try:
            path, line = report.write_report(profile, runs, commit)
            print(f"claims: {line}\nreport: {path}", flush=True)
            if not status and args.command != "run" and report.update_readme(line, path):
                print("  (README.md's summary line updated)", flush=True)
            if not status and reference is not None:
                print(f"run times: {report.write_run_times(profile, times, reference, commit)}")
        except (ValueError, OSError) as exc:
            print(f"error: the report could not be written: {exc}", file=sys.stderr)
            return status or (EXIT_USAGE if args.command == "report" else EXIT_FAILED)
    return status


def _download(dataset: str, data_root: str) -> int:
    """Exit 0 with the files in place, 2 for an unknown dataset, 1 when they cannot be had."""
    from . import data, experiments

    try:
        paths = data.download(dataset, experiments.data_root(data_root))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except data.DatasetUnavailable as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"{dataset}: in place: {', '.join(paths)}")
    return 0
