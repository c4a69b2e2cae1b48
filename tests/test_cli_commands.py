"""The logged subprocess runner of the demo and the benchmark, and its epoch progress bar."""
import io
import subprocess
import sys
from importlib.metadata import version

import pytest
import torch

from nnunetv2_scdl.cli import commands
from nnunetv2_scdl.cli.commands import TRAINING_PROGRESS, EpochProgress, StepError, run_logged

# the lines nnU-Net's print_to_log_file writes at the start and end of an epoch
EPOCH_LINES = ["2026-12-02 12:58:44.080270: Epoch {epoch}", "2026-12-02 12:58:44.1: Current learning rate: 0.009",
               "2026-12-02 12:59:04.9: train_loss 3.4309", "2026-12-02 12:59:04.9: Epoch time: 20.32 s"]


def epoch_lines(first: int, last: int):
    return [line.format(epoch=e) for e in range(first, last + 1) for line in EPOCH_LINES]


def printing(lines):
    """A command that prints ``lines`` and exits 0."""
    return [sys.executable, "-c", f"print({chr(10).join(lines)!r})"]


def test_run_logged_logs_everything_echoes_the_progress_and_passes_stamp_free_lines(tmp_path):
    log, echoed, seen = tmp_path / "train.log", [], []
    lines = epoch_lines(0, 1) + ["", "some other output"]
    run_logged(printing(lines), {}, log, echo=TRAINING_PROGRESS, printer=echoed.append, on_line=seen.append)

    assert log.read_text().splitlines()[1:] == lines  # the first line is the command
    assert seen == ["Epoch 0", "Current learning rate: 0.009", "train_loss 3.4309", "Epoch time: 20.32 s",
                    "Epoch 1", "Current learning rate: 0.009", "train_loss 3.4309", "Epoch time: 20.32 s",
                    "some other output"]
    assert [e.strip() for e in echoed] == [s for s in seen if TRAINING_PROGRESS.search(s)]
    assert "Current learning rate: 0.009" not in [e.strip() for e in echoed]


def test_run_logged_raises_with_the_log_tail_on_failure(tmp_path):
    command = [sys.executable, "-c", "print('loading'); raise SystemExit(3)"]
    with pytest.raises(StepError, match=r"exit code 3(.|\n)*loading"):
        run_logged(command, {}, tmp_path / "failing.log")


def feed(progress, lines):
    for line in lines:
        progress(line.split(": ", 1)[1])


def test_epoch_progress_counts_finished_epochs_of_a_fresh_run():
    out = io.StringIO()
    with EpochProgress("T: epochs", 4, file=out, mininterval=0) as progress:
        feed(progress, ["x: Using device cpu"])
        assert progress.bar is None  # no bar before the first epoch starts
        feed(progress, epoch_lines(0, 1) + epoch_lines(2, 2)[:2])  # epoch 2 started, not finished
        assert progress.bar.n == 2
        feed(progress, epoch_lines(2, 3)[2:])
        assert progress.bar.n == 4 and progress.bar.total == 4
    assert "T: epochs" in out.getvalue() and "4/4" in out.getvalue()


def test_epoch_progress_of_a_resumed_run_starts_at_its_first_epoch():
    out = io.StringIO()
    with EpochProgress("T: epochs", 320, file=out, mininterval=0) as progress:
        feed(progress, epoch_lines(37, 39))
        assert progress.bar.initial == 37 and progress.bar.n == 40
    assert "37/320" in out.getvalue() and "40/320" in out.getvalue()


def git(folder, *arguments):
    return subprocess.run(["git", "-C", str(folder), *arguments], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_code_provenance_names_the_commit_and_whether_tracked_files_changed(tmp_path, monkeypatch):
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    git(checkout, "init", "-q")
    (checkout / "setup.py").write_text("# v1\n")
    git(checkout, "add", "setup.py")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1")
    commit = git(checkout, "rev-parse", "--short=12", "HEAD")
    monkeypatch.setattr(commands, "REPO_ROOT", checkout)

    record = commands.code_provenance({"OMP_NUM_THREADS": "2"})
    assert record["nnunetv2_scdl"] == commit and record["OMP_NUM_THREADS"] == "2"
    assert record["torch"] and torch.__version__.startswith(record["torch"].split("+")[0])
    assert record["nnunetv2"] == version("nnunetv2")
    (checkout / "notes.txt").write_text("untracked files do not train anything\n")
    assert commands.code_provenance({})["nnunetv2_scdl"] == commit
    (checkout / "setup.py").write_text("# v2, not committed\n")
    assert commands.code_provenance({})["nnunetv2_scdl"] == commit + "+dirty"
    assert commands.code_provenance({})["OMP_NUM_THREADS"] is None

    monkeypatch.setattr(commands, "REPO_ROOT", tmp_path / "installed")  # no checkout: the installed version
    assert commands.code_provenance({})["nnunetv2_scdl"] == version("nnunetv2_scdl")
