"""``nnUNetTrainerSSL.save_checkpoint`` writes a temporary file and renames it: a crash while writing (in nnU-Net's
write or in ours) leaves the previous checkpoint intact and loadable."""
import pytest
import torch
from conftest import make_trainer

from nnunetv2_scdl.training.mean_teacher import nnUNetTrainerMeanTeacher


class SimulatedCrash(Exception):
    pass


@pytest.mark.parametrize("crashing_write", [1, 2], ids=["in nnU-Net's write", "in the write of our state"])
def test_a_crash_while_saving_leaves_the_previous_checkpoint_loadable(planned_phantom, monkeypatch, tmp_path,
                                                                      crashing_write):
    trainer = make_trainer(planned_phantom, nnUNetTrainerMeanTeacher)
    trainer.initialize()
    checkpoint = tmp_path / "checkpoint_latest.pth"
    trainer.global_iteration = 1
    trainer.save_checkpoint(str(checkpoint))
    previous = checkpoint.read_bytes()

    real_save, writes = torch.save, []

    def save_then_crash(obj, path, *args, **kwargs):
        writes.append(path)
        if len(writes) < crashing_write:
            return real_save(obj, path, *args, **kwargs)
        with open(path, "wb") as handle:  # the file is half written when the process goes down
            handle.write(b"\x80\x02partial")
        raise SimulatedCrash

    trainer.global_iteration = 2
    monkeypatch.setattr(torch, "save", save_then_crash)
    with pytest.raises(SimulatedCrash):
        trainer.save_checkpoint(str(checkpoint))
    monkeypatch.undo()
    assert len(writes) == crashing_write
    assert checkpoint.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.name]  # the temporary file is gone
    resumed = make_trainer(planned_phantom, nnUNetTrainerMeanTeacher)
    resumed.load_checkpoint(str(checkpoint))
    assert resumed.global_iteration == 1

    trainer.save_checkpoint(str(checkpoint))  # without a crash the new state replaces the old
    assert sorted(p.name for p in tmp_path.iterdir()) == [checkpoint.name]
    resumed.load_checkpoint(str(checkpoint))
    assert resumed.global_iteration == 2
