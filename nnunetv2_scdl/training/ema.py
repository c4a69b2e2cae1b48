"""Exponential-moving-average teacher (mean teacher, Tarvainen & Valpola 2017)."""
import copy

import torch
from torch import nn


def unwrap_network(network: nn.Module) -> nn.Module:
    """The plain module behind DDP (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    if isinstance(network, nn.parallel.DistributedDataParallel):
        network = network.module
    return getattr(network, "_orig_mod", network)


class EMATeacher:
    """A frozen copy of the student whose weights follow θ_T ← α·θ_T + (1 − α)·θ_S after each optimiser step.

    α = min(1 − 1/(step + 1), ``decay``): early on the teacher tracks the student closely (α small), later it
    averages over roughly 1/(1 − decay) steps. Buffers (e.g. norm statistics) are copied, not averaged. The teacher
    stays in eval mode so that its targets are deterministic.
    """

    def __init__(self, student: nn.Module, decay: float = 0.99):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(unwrap_network(student))
        self.module.requires_grad_(False)
        self.module.eval()

    def alpha(self, step: int) -> float:
        return min(1.0 - 1.0 / (step + 1), self.decay)

    @torch.no_grad()
    def update(self, student: nn.Module, step: int) -> None:
        alpha = self.alpha(step)
        student_state = unwrap_network(student).state_dict()
        averaged, targets = [], []
        for name, teacher_value in self.module.state_dict().items():
            if teacher_value.dtype.is_floating_point:
                averaged.append(teacher_value)
                targets.append(student_state[name])
            else:
                teacher_value.copy_(student_state[name])
        if averaged:
            # θ_T + (1 − α)(θ_S − θ_T) = α·θ_T + (1 − α)·θ_S, one fused kernel for all tensors
            torch._foreach_lerp_(averaged, targets, 1.0 - alpha)

    def __call__(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def state_dict(self) -> dict:
        return self.module.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state)


class EMATeacherMixin:
    """An EMA teacher for a trainer derived from ``nnUNetTrainerSSL`` (mean teacher, GA-MagicNet); put it before
    ``nnUNetTrainerSSL`` in the bases.

    The teacher is built from the training network in ``initialize``, updated after every optimiser step and is the
    inference network: online validation, ``checkpoint['network_weights']`` and ``nnUNetv2_predict`` use it.
    Hyperparameters (add :data:`TEACHER_HYPERPARAMETERS` to the trainer's): ``ema_decay`` (0.99), the EMA decay
    α_max, and ``teacher_input_noise`` (0.0), the std of Gaussian noise, clipped to ±2 std, on the teacher's view.
    """

    ema_decay = 0.99
    teacher_input_noise = 0.0
    teacher = None
    #: validation evaluates the teacher, which lags the student by about 1 / (1 − ema_decay) steps; log both
    monitored_networks = ("student",)

    def initialize(self):
        super().initialize()
        self.teacher = EMATeacher(self.network, self.ema_decay)

    def inference_network(self):
        return self.teacher.module

    def monitored_network(self, name: str):
        return unwrap_network(self.network)

    def after_optimizer_step(self) -> None:
        super().after_optimizer_step()
        self.teacher.update(self.network, self.global_iteration)

    def teacher_view(self, teacher_data: torch.Tensor) -> torch.Tensor:
        """The teacher's input: the clean view, plus clipped Gaussian noise when ``teacher_input_noise`` > 0."""
        if self.teacher_input_noise <= 0:
            return teacher_data
        noise = torch.randn_like(teacher_data) * self.teacher_input_noise
        return teacher_data + noise.clamp(-2 * self.teacher_input_noise, 2 * self.teacher_input_noise)


#: the hyperparameters of :class:`EMATeacherMixin`
TEACHER_HYPERPARAMETERS = ("ema_decay", "teacher_input_noise")
