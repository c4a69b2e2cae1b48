"""``stop_after_epochs``: an invocation ends after that many epochs of the run, with ``checkpoint_latest.pth`` written
and the learning rates of the whole run's schedule; ``--c`` continues it to the end on that schedule."""
import os
from pathlib import Path

import numpy as np
from conftest import load_checkpoint, make_trainer

from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher

BUDGET = {"SCDL_NUM_EPOCHS": "3", "SCDL_NUM_ITERATIONS_PER_EPOCH": "1", "SCDL_NUM_VAL_ITERATIONS_PER_EPOCH": "1",
          "SCDL_SEED": "0", "nnUNet_n_proc_DA": "0"}


def poly(initial_lr, epoch, epochs=3):
    return initial_lr * (1 - epoch / epochs) ** 0.9


def test_a_stopped_run_continues_on_the_same_schedule(phantom_with_unlabeled, monkeypatch):
    """On the mean teacher, whose unlabeled loader is shut down too (the supervised path: the runner's test)."""
    for name, value in {**BUDGET, "SCDL_STOP_AFTER_EPOCHS": "2"}.items():
        monkeypatch.setenv(name, value)
    trainer = make_trainer(phantom_with_unlabeled, nnUNetTrainerMeanTeacher)
    trainer.run_training()
    trainer.perform_actual_validation()  # what nnUNetv2_train calls next: nothing to validate
    folder = trainer.output_folder
    assert sorted(f for f in os.listdir(folder) if f.startswith("checkpoint")) == ["checkpoint_best.pth",
                                                                                  "checkpoint_latest.pth"]
    stopped = load_checkpoint(Path(folder), "checkpoint_latest.pth")
    assert stopped["current_epoch"] == 2
    np.testing.assert_allclose(stopped["logging"]["lrs"], [poly(trainer.initial_lr, e) for e in (0, 1)])
    log = "".join(open(os.path.join(folder, f)).read() for f in os.listdir(folder) if f.startswith("training_log"))
    assert "Stopped after 2 of 3 epochs" in log and "SCDL_STOP_AFTER_EPOCHS=0 (or a larger value)" in log
    assert not os.path.isdir(os.path.join(folder, "validation"))

    # --c with the same setting trains nothing; without it the run goes on to its end
    latest = os.path.getmtime(os.path.join(folder, "checkpoint_latest.pth"))
    again = make_trainer(phantom_with_unlabeled, nnUNetTrainerMeanTeacher)
    again.load_checkpoint(os.path.join(folder, "checkpoint_latest.pth"))
    again.run_training()
    assert again.stopped_early and os.path.getmtime(os.path.join(folder, "checkpoint_latest.pth")) == latest
    monkeypatch.setenv("SCDL_STOP_AFTER_EPOCHS", "0")
    resumed = make_trainer(phantom_with_unlabeled, nnUNetTrainerMeanTeacher)
    resumed.load_checkpoint(os.path.join(folder, "checkpoint_latest.pth"))
    resumed.run_training()
    final = load_checkpoint(Path(folder))
    assert final["current_epoch"] == 3 and not os.path.isfile(os.path.join(folder, "checkpoint_latest.pth"))
    np.testing.assert_allclose(final["logging"]["lrs"], [poly(trainer.initial_lr, e) for e in (0, 1, 2)])
    assert len(final["logging"]["epoch_end_timestamps"]) == 3
