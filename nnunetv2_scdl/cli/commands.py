"""Running nnU-Net's and this package's console commands as logged subprocesses (used by the demo and the benchmark).

Each command runs with this interpreter, its output goes to a log file, and chosen lines are echoed; a failure raises
:class:`StepError` with the end of the log.
"""
import ast
import os
import re
import subprocess
import sys
from collections import deque
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]  # the checkout root, when running from a source checkout

# nnU-Net training lines worth echoing while a trainer runs
TRAINING_PROGRESS = re.compile(r"(Epoch \d+$|_loss|Pseudo dice|Epoch time|ssl terms)")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d [\d:.]+: ")  # nnU-Net's print_to_log_file prefix
_LOG_TAIL_LINES = 40


class StepError(RuntimeError):
    """A command of a pipeline (demo, benchmark) failed; the message holds the tail of its log."""


def console_command(name: str) -> List[str]:
    """``[python, -c, ...]`` running the console script ``name`` with this interpreter.

    Resolved through the installed entry points (nnU-Net's, ours when installed), so the right Python runs even when
    several environments are on PATH; our own scripts also work from an uninstalled source checkout, through the
    ``console_scripts`` of its ``setup.py`` (:func:`source_checkout_console_scripts`).
    """
    found = entry_points(group="console_scripts", name=name)
    target = next(iter(found)).value if found else source_checkout_console_scripts().get(name)
    if target is None:
        raise StepError(f"Console script {name} not found. Is nnunetv2 installed in {sys.executable}?")
    module, function = target.split(":")
    code = f"import sys; from {module} import {function} as f; sys.argv[0] = {name!r}; sys.exit(f())"
    return [sys.executable, "-c", code]


def source_checkout_console_scripts() -> Dict[str, str]:
    """``{name: "module:function"}`` of the ``console_scripts`` in this source checkout's ``setup.py`` (read, not
    run); empty when the package is installed without its ``setup.py``."""
    setup_file = REPO_ROOT / "setup.py"
    if not setup_file.is_file():
        return {}
    for node in ast.walk(ast.parse(setup_file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            scripts = ast.literal_eval(node.value).get("console_scripts", [])
            return dict((part.strip() for part in line.split("=", 1)) for line in scripts)
    return {}


def display_command(command: Sequence[str]) -> str:
    """``command`` as a user would type it (the console script's name instead of ``python -c ...``)."""
    if len(command) >= 3 and command[1] == "-c":
        match = re.search(r"sys\.argv\[0\] = '([^']+)'", command[2])
        if match:
            return " ".join([match.group(1)] + list(command[3:]))
    return " ".join(command)


def source_checkout_pythonpath(environ: Dict[str, str]) -> Dict[str, str]:
    """Copy of ``environ`` whose PYTHONPATH also finds this package when it runs from a source checkout."""
    environ = dict(environ)
    if (REPO_ROOT / "setup.py").is_file():
        parts = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if str(REPO_ROOT) not in parts:
            environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT)] + parts)
    return environ


def tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file (progress-bar carriage returns folded)."""
    if not path.is_file():
        return "(no log written)"
    with open(path, encoding="utf-8", errors="replace") as f:
        last = deque((line.rstrip("\n").split("\r")[-1] for line in f), maxlen=lines)
    return "\n".join(last)


def run_logged(command: Sequence[str], env: Dict[str, str], log_file: Path, echo: Optional[re.Pattern] = None,
               verbose: bool = False, cwd: Optional[str] = None, printer: Callable[[str], None] = print,
               on_line: Optional[Callable[[str], None]] = None) -> None:
    """Run ``command``, writing stdout+stderr to ``log_file``; echo lines matching ``echo`` (all if ``verbose``)
    through ``printer`` (e.g. ``tqdm.write`` below a progress bar), and pass every non-empty line, without nnU-Net's
    time stamp, to ``on_line`` (e.g. an :class:`EpochProgress`).

    Raises :class:`StepError` with the tail of the log if the command fails.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w", encoding="utf-8", buffering=1) as log:  # line-buffered: follow it live
        log.write("$ " + display_command(command) + "\n")
        log.flush()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, errors="replace", bufsize=1)
        try:
            for line in process.stdout:
                log.write(line)
                text = _TIMESTAMP.sub("", line.rstrip("\n").split("\r")[-1].strip())
                if not text:
                    continue
                if verbose or (echo is not None and echo.search(text)):
                    printer("      " + text)
                if on_line is not None:
                    on_line(text)
            returncode = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
    if returncode != 0:
        raise StepError(f"Command failed (exit code {returncode}): {display_command(command)}\n"
                            f"Log: {log_file}\n--- last lines ---\n{tail(log_file)}")


class EpochProgress:
    """A progress bar over the epochs of one ``nnUNetv2_train`` run, moved by its log lines (``on_line`` of
    :func:`run_logged`): "Epoch N" starts epoch N, "Epoch time" ends it. The bar appears at the first epoch, starting
    there, so a resumed run shows the epochs already done and a time left measured on this run's epochs only.

    ``total``: the epochs the run will reach; ``bar_options``: passed to ``tqdm`` (e.g. ``file``).
    """

    _EPOCH_START = re.compile(r"^Epoch (\d+)$")

    def __init__(self, description: str, total: int, **bar_options) -> None:
        self.description, self.total, self.bar_options = description, total, bar_options
        self.bar = None
        self.epoch: Optional[int] = None

    def __call__(self, text: str) -> None:
        started = self._EPOCH_START.match(text)
        if started:
            self.epoch = int(started.group(1))
            if self.bar is None:
                from tqdm import tqdm

                self.bar = tqdm(total=self.total, initial=self.epoch, desc=self.description, unit="epoch",
                                leave=False, dynamic_ncols=True, **self.bar_options)
        elif text.startswith("Epoch time") and self.bar is not None:
            self.bar.update(max(0, self.epoch + 1 - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "EpochProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def code_provenance(env: Optional[Dict[str, str]] = None) -> Dict[str, Optional[str]]:
    """What a training runs with: this package's git commit when it runs from a checkout (with ``+dirty`` when
    tracked files differ from it; else its installed version), the torch and nnU-Net versions, and the CPU threads
    (``OMP_NUM_THREADS`` of ``env``, default ``os.environ``; None where unset)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> Optional[str]:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    code = None
    if (REPO_ROOT / ".git").exists():
        def git(*arguments: str) -> Optional[str]:
            try:
                return subprocess.run(["git", "-C", str(REPO_ROOT), *arguments], capture_output=True, text=True,
                                      check=True).stdout.strip()
            except (OSError, subprocess.CalledProcessError):
                return None

        commit = git("rev-parse", "--short=12", "HEAD")
        if commit:
            changed = git("status", "--porcelain", "--untracked-files=no")
            code = commit + ("+dirty" if changed else "")
    environ = os.environ if env is None else env
    return {"nnunetv2_scdl": code or installed("nnunetv2_scdl"), "torch": installed("torch"),
            "nnunetv2": installed("nnunetv2"), "OMP_NUM_THREADS": environ.get("OMP_NUM_THREADS")}


def external_trainer_path(extra_dirs: Sequence[str] = ()) -> str:
    """Value for ``nnUNet_extTrainer``: this package's trainers folder, then ``extra_dirs``."""
    from nnunetv2_scdl.cli.trainers_path import trainers_dir

    folders = []
    try:
        folders.append(str(trainers_dir()))
    except FileNotFoundError as e:  # only stock nnU-Net trainers can be used then
        print(f"warning: {e}", file=sys.stderr)
    return os.pathsep.join(folders + [str(Path(d).resolve()) for d in extra_dirs])


def dataset_id_of(dataset_name: str) -> str:
    """``Dataset011_BTCV`` → ``11`` (``nnUNetv2_preprocess -d`` takes IDs only)."""
    return str(int(dataset_name[len("Dataset"):len("Dataset") + 3]))


def exit_code_of(program: str, function: Callable[[], object], expected_errors: tuple,
                 interrupted_hint: str = "") -> int:
    """Run ``function``; return 0, or print ``program: error: ...`` and return 1 for ``expected_errors`` (130 when
    interrupted), the way a console command should end."""
    try:
        function()
    except expected_errors as e:
        print(f"\n{program}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{program}: interrupted{interrupted_hint}", file=sys.stderr)
        return 130
    return 0
