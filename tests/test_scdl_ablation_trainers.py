"""benchmarks/scdl_ablation: nnU-Net finds its trainers through nnUNet_extTrainer, and each changes exactly what its
name says."""
import os
from unittest.mock import patch

from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

from conftest import REPO_ROOT
from nnunetv2_scdl.training.scdl_mean_teacher import nnUNetTrainerSCDL_MT

ABLATION_FOLDER = REPO_ROOT / "benchmarks" / "scdl_ablation"


def find(name):
    with patch.dict(os.environ, {"nnUNet_extTrainer": str(ABLATION_FOLDER)}):
        return recursive_find_trainer_class_by_name(name)


def test_each_ablation_trainer_switches_off_one_part_of_scdl():
    full = nnUNetTrainerSCDL_MT.scdl_network_options()
    assert full["prior_mode"] == "decoder" and nnUNetTrainerSCDL_MT.scdl_weight_cdba > 0

    no_priors = find("nnUNetTrainerSCDL_MT_noPriors")
    assert issubclass(no_priors, nnUNetTrainerSCDL_MT)
    assert no_priors.scdl_network_options() == {**full, "prior_mode": "none"}
    assert (no_priors.scdl_weight_cdba, no_priors.scdl_weight_sac) == (nnUNetTrainerSCDL_MT.scdl_weight_cdba,
                                                                       nnUNetTrainerSCDL_MT.scdl_weight_sac)

    no_losses = find("nnUNetTrainerSCDL_MT_noLosses")
    assert issubclass(no_losses, nnUNetTrainerSCDL_MT)
    assert no_losses.scdl_network_options() == full
    assert no_losses.scdl_weight_cdba == no_losses.scdl_weight_sac == 0

    encoder_tokens = find("nnUNetTrainerSCDL_MT_encoderTokens")
    assert issubclass(encoder_tokens, nnUNetTrainerSCDL_MT)
    assert encoder_tokens.scdl_network_options() == {**full, "token_source": "encoder"}
    assert full["token_source"] == "decoder"

    for name, option in (("nnUNetTrainerSCDL_MT_tokensDetached", "cdba_grad_to_tokens"),
                         ("nnUNetTrainerSCDL_MT_proxiesDetachedInPriors", "prior_grad_to_proxies")):
        trainer = find(name)
        assert issubclass(trainer, nnUNetTrainerSCDL_MT)
        assert trainer.scdl_network_options() == {**full, option: False}

    soft_priors = find("nnUNetTrainerSCDL_MT_softPriors")
    assert issubclass(soft_priors, nnUNetTrainerSCDL_MT)
    assert soft_priors.scdl_network_options() == {**full, "prior_temperature": 1.0}


def test_replay_table_summarises_the_replayed_epochs(tmp_path, capsys):
    import json
    import sys

    import torch
    from conftest import load_benchmark_script

    module = load_benchmark_script("scdl_replay_table")
    fold = tmp_path / "replay_a" / "Dataset004_X" / "nnUNetTrainerSCDL_MT__nnUNetPlans__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    logging = {"supervised": [-0.9, -0.8, -0.6, -0.4], "scdl_cdba_labeled": [5.0, 0.4, 1.5, 0.9],
               "scdl_sac": [3.0, 0.0, 0.5, 0.1], "ema_fg_dice": [0.1, 0.8, 0.7, 0.6]}
    torch.save({"logging": logging}, fold / "checkpoint_latest.pth")
    exported = tmp_path / "replays.json"
    with patch.object(sys, "argv", ["x", str(fold), "--start", "1", "--export", str(exported)]):
        module.main()
    row = capsys.readouterr().out.splitlines()[-1]
    # epochs 1-3 only: epoch 0's large CDBA and SAC are before the replay
    assert row == "| replay_a | 3 | -0.600 | -0.40 | 1.50 | 0.50 | 0.700 |"
    assert json.loads(exported.read_text())["runs"]["replay_a"]["supervised"] == [-0.8, -0.6, -0.4]
    with patch.object(sys, "argv", ["x", str(exported)]):
        module.main()
    assert capsys.readouterr().out.splitlines()[-1] == row
