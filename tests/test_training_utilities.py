"""Unit tests of the small training pieces: hyperparameters, ramps, EMA teacher, consistency losses, logger."""
import math
import re

import pytest
import torch
from torch import nn

from nnunetv2_scdl.losses.consistency import confident_pseudo_label_loss, softmax_mse_loss
from nnunetv2_scdl.training.ema import EMATeacher, unwrap_network
from nnunetv2_scdl.training.hyperparameters import ConfigurableHyperparameters, env_name, parse_like
from nnunetv2_scdl.training.progress_logging import SSLLocalLogger
from nnunetv2_scdl.training.schedules import sigmoid_rampup


# ------------------------------------------------------------------------------------------------ hyperparameters
class _Logger:
    def __init__(self):
        self.config = {}

    def update_config(self, config):
        self.config.update(config)


class _Trainer(ConfigurableHyperparameters):
    hyperparameters = ConfigurableHyperparameters.hyperparameters + ("ratio", "use_noise", "mode")
    ratio = 1.0
    use_noise = False
    mode = "soft"

    def __init__(self):
        self.logger = _Logger()
        self.printed = []
        self.num_epochs = 1000  # what nnU-Net's __init__ assigns; the class attribute must win

    def print_to_log_file(self, *args, **kwargs):
        self.printed.append(" ".join(map(str, args)))


class _Trainer_5epochs(_Trainer):
    num_epochs = 5


def test_env_name():
    assert env_name("num_iterations_per_epoch") == "SCDL_NUM_ITERATIONS_PER_EPOCH"


def test_class_attributes_and_env_overrides(monkeypatch):
    monkeypatch.setenv("SCDL_RATIO", "0.5")
    monkeypatch.setenv("SCDL_USE_NOISE", "true")
    monkeypatch.setenv("SCDL_NUM_ITERATIONS_PER_EPOCH", "7")
    trainer = _Trainer_5epochs()
    resolved = trainer.apply_hyperparameters()
    assert trainer.num_epochs == 5 and resolved["num_epochs"] == (5, "class attribute")
    assert trainer.ratio == 0.5 and trainer.use_noise is True and trainer.num_iterations_per_epoch == 7
    assert resolved["ratio"][1] == "env SCDL_RATIO"
    assert trainer.mode == "soft"
    report = "\n".join(trainer.printed)
    assert "ratio" in report and "SCDL_RATIO" in report and re.search(r"num_epochs +\= 5 ", report)
    assert trainer.logger.config["nnunetv2_scdl_hyperparameters"]["num_iterations_per_epoch"] == 7


def test_seed_seeds_torch_numpy_and_python_only_when_set(monkeypatch):
    import random

    import numpy as np

    def draws():
        return torch.rand(3).tolist(), np.random.rand(), random.random()

    monkeypatch.setenv("SCDL_SEED", "3")
    _Trainer().apply_hyperparameters()
    first = draws()
    _Trainer().apply_hyperparameters()
    assert draws() == first
    monkeypatch.delenv("SCDL_SEED")
    torch.manual_seed(5)
    expected = torch.rand(3).tolist()
    torch.manual_seed(5)
    _Trainer().apply_hyperparameters()  # seed = -1 by default: the generators are left alone
    assert torch.rand(3).tolist() == expected


class _NnUNetStart:
    def on_train_start(self):  # nnU-Net's: loaders, network, logs
        pass


class _StartingTrainer(_Trainer, _NnUNetStart):
    current_epoch = 0


def test_a_continued_run_does_not_draw_its_first_epochs_again(monkeypatch):
    import numpy as np

    def draws_after_start(epochs_done):
        trainer = _StartingTrainer()
        trainer.apply_hyperparameters()  # seeds as nnUNetv2_train ... --c does, before the checkpoint is loaded
        trainer.current_epoch = epochs_done
        trainer.on_train_start()
        return torch.rand(2).tolist(), np.random.rand()

    monkeypatch.setenv("SCDL_SEED", "3")
    fresh, continued = draws_after_start(0), draws_after_start(40)
    assert continued != fresh  # without the new seed, epoch 40 would replay epoch 0's draws
    assert draws_after_start(40) == continued and draws_after_start(41) != continued
    monkeypatch.delenv("SCDL_SEED")  # unseeded runs are left alone
    torch.manual_seed(5)
    expected = torch.rand(2).tolist()
    torch.manual_seed(5)
    assert draws_after_start(40)[0] == expected


def test_explicit_omp_num_threads_sets_torch_threads_on_the_cpu(monkeypatch):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)  # what nnUNetv2_train -device cpu sets on a 2-core machine
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        trainer = _Trainer()
        trainer.device = torch.device("cpu")
        trainer.apply_hyperparameters()
        assert torch.get_num_threads() == 1 and "CPU threads: 1 (OMP_NUM_THREADS)" in trainer.printed[-1]
        torch.set_num_threads(2)
        trainer.device = torch.device("cuda")  # never touched for GPU training
        trainer.apply_hyperparameters()
        assert torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")  # unset: nnU-Net's choice stands
        trainer.device = torch.device("cpu")
        trainer.apply_hyperparameters()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


class _Validating:
    def __init__(self):
        self.validated = []

    def perform_actual_validation(self, save_probabilities=False):
        self.validated.append(save_probabilities)


class _ValidatingTrainer(_Trainer, _Validating):
    def __init__(self):
        _Trainer.__init__(self)
        _Validating.__init__(self)


def test_final_validation_can_be_switched_off(monkeypatch):
    trainer = _ValidatingTrainer()
    trainer.apply_hyperparameters()
    trainer.perform_actual_validation(True)
    assert trainer.validated == [True]  # default: nnU-Net's validation runs
    monkeypatch.setenv("SCDL_FINAL_VALIDATION", "0")
    trainer = _ValidatingTrainer()
    trainer.apply_hyperparameters()
    trainer.perform_actual_validation(True)
    assert trainer.validated == [] and "Final validation skipped" in trainer.printed[-1]


@pytest.mark.parametrize("default,text,expected", [(1, "3", 3), (0.1, "2e-3", 2e-3), (True, "0", False),
                                                   ("a", "b", "b"), (None, "4", 4.0)])
def test_parse_like(default, text, expected):
    assert parse_like(default, text, "X") == expected


@pytest.mark.parametrize("default,text", [(1, "1.5"), (True, "maybe"), (0.1, "fast")])
def test_parse_like_rejects_bad_values_and_names_the_variable(default, text):
    with pytest.raises(ValueError, match="SCDL_FOO"):
        parse_like(default, text, "SCDL_FOO")


# ------------------------------------------------------------------------------------------------ ramp
def test_sigmoid_rampup_values():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5 * 0.25))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(500, 100) == 1.0
    assert sigmoid_rampup(-3, 100) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(3, 0) == 1.0


# ------------------------------------------------------------------------------------------------ EMA teacher
def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 2, 3), nn.BatchNorm3d(2))


def test_ema_update_follows_formula_and_copies_integer_buffers():
    student = _net()
    teacher = EMATeacher(student, decay=0.9)
    before = teacher.module[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
        student[1].num_batches_tracked.fill_(7)
    teacher.update(student, step=100)  # alpha = min(1 - 1/101, 0.9) = 0.9
    expected = 0.9 * before + 0.1 * student[0].weight
    assert torch.allclose(teacher.module[0].weight, expected)
    assert int(teacher.module[1].num_batches_tracked) == 7
    assert not any(p.requires_grad for p in teacher.module.parameters())
    assert not teacher.module.training


def test_ema_alpha_warm_start():
    teacher = EMATeacher(_net(), decay=0.99)
    assert teacher.alpha(0) == 0.0  # first update copies the student
    assert teacher.alpha(1) == 0.5
    assert teacher.alpha(10_000) == 0.99


def test_ema_rejects_bad_decay_and_unwraps_compiled_modules():
    with pytest.raises(ValueError):
        EMATeacher(_net(), decay=1.0)
    net = _net()
    wrapper = nn.Module()
    wrapper._orig_mod = net
    assert unwrap_network(wrapper) is net


# ------------------------------------------------------------------------------------------------ consistency losses
def test_confident_pseudo_label_loss_by_hand():
    # two voxels, two classes; the teacher is confident (p=0.9) on voxel 0 only
    teacher = torch.log(torch.tensor([[0.9, 0.6], [0.1, 0.4]]))[None]  # [1, C=2, 2 voxels]
    student = torch.zeros(1, 2, 2, requires_grad=True)  # uniform: CE = log 2 everywhere
    loss, coverage = confident_pseudo_label_loss(student, teacher, threshold=0.8)
    assert coverage.item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(math.log(2) / 2)  # summed over confident voxels, divided by all voxels
    loss.backward()
    assert student.grad[0, :, 1].abs().sum() == 0  # the unconfident voxel sends no gradient


def test_softmax_mse_by_hand():
    student = torch.zeros(1, 2, 1)
    teacher = torch.log(torch.tensor([[[0.75], [0.25]]]))
    assert softmax_mse_loss(student, teacher).item() == pytest.approx(((0.5 - 0.75) ** 2 + (0.5 - 0.25) ** 2) / 2)


def test_consistency_losses_validate_shapes():
    with pytest.raises(ValueError, match="same shape"):
        softmax_mse_loss(torch.zeros(1, 2, 3), torch.zeros(1, 3, 3))
    with pytest.raises(ValueError, match="threshold"):
        confident_pseudo_label_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), 1.5)


# ------------------------------------------------------------------------------------------------ logger
def test_ssl_logger_plots_extra_terms(tmp_path):
    logger = SSLLocalLogger()
    logger.register(["consistency"])
    for epoch in range(3):
        for key, value in [("mean_fg_dice", 0.5), ("dice_per_class_or_region", [0.5]), ("train_losses", 1.0),
                           ("val_losses", 1.0), ("lrs", 0.01), ("epoch_start_timestamps", 0.0),
                           ("epoch_end_timestamps", 1.0), ("consistency", 0.1 * epoch)]:
            logger.log(key, value, epoch)
        logger.log("ema_fg_dice", 0.5, epoch)
    logger.plot_progress_png(str(tmp_path))
    assert (tmp_path / "progress.png").stat().st_size > 10_000
    assert logger.extra_keys == ["consistency"]
    # a key that is new to a resumed run is padded so all curves stay aligned per epoch
    logger.register(["kl"])
    assert len(logger.get_value("kl", None)) == 3 and math.isnan(logger.get_value("kl", 0))


def test_training_pass_runs_inside_forward_and_outside_torch_compile():
    """``network(*args, training_pass=f)`` is ``f(network, *args)`` (what DDP's forward then wraps); inside a
    torch.compile'd network the pass still runs eagerly; without ``training_pass`` the forward is unchanged."""
    from nnunetv2_scdl.networks.training_pass import accepts_training_pass

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 2)

        @accepts_training_pass
        def forward(self, x):
            return self.linear(x)

    compiling = []

    def step(network, x, scale):
        compiling.append(torch.compiler.is_compiling())
        return network.linear(x).sum() * scale

    net, x = Net(), torch.randn(4, 3)
    assert torch.equal(net(x, 2.0, training_pass=step), net.linear(x).sum() * 2.0)
    compiled = torch.compile(net, backend="eager")
    assert torch.allclose(compiled(x, 2.0, training_pass=step), net.linear(x).sum() * 2.0)
    assert compiling == [False, False]
    assert torch.equal(compiled(x), net(x))
