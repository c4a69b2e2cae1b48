"""benchmarks/ema_student_vs_teacher.py: the student checkpoint it predicts with holds the student's weights as
``network_weights`` and everything else of the final checkpoint; a trainer without a separate student is refused."""
import pytest
import torch

from conftest import load_benchmark_script


@pytest.fixture
def script():
    return load_benchmark_script("ema_student_vs_teacher")


def test_student_checkpoint_swaps_in_the_student_weights(script, tmp_path):
    teacher, student = {"w": torch.zeros(2)}, {"w": torch.ones(2)}
    torch.save({"network_weights": teacher, "init_args": {"plans": "p"}, "trainer_name": "T",
                "nnunetv2_scdl": {"training_network_weights": student}}, tmp_path / "checkpoint_final.pth")
    written = torch.load(script.write_student_checkpoint(tmp_path), weights_only=False)
    assert torch.equal(written["network_weights"]["w"], student["w"])
    assert written["trainer_name"] == "T" and written["init_args"] == {"plans": "p"}
    # the teacher's checkpoint is left as it was
    assert torch.equal(torch.load(tmp_path / "checkpoint_final.pth", weights_only=False)["network_weights"]["w"],
                       teacher["w"])


def test_a_trainer_without_student_is_refused(script, tmp_path):
    torch.save({"network_weights": {}, "nnunetv2_scdl": {}}, tmp_path / "checkpoint_final.pth")
    with pytest.raises(ValueError, match="keeps no separate student"):
        script.write_student_checkpoint(tmp_path)
