"""``nnUNetTrainerMeanTeacher``: mean-teacher semi-supervised training on nnU-Net's plan-generated U-Net.

The teacher is an exponential moving average of the student (Tarvainen & Valpola, 2017). On each unlabeled patch
the student sees nnU-Net's full augmentation, the teacher the same spatial augmentation without the photometric
part (optionally plus Gaussian noise), and the student is trained towards the teacher's prediction.

Inference uses the **teacher**: ``checkpoint_*.pth['network_weights']`` holds the EMA weights, and online
validation, ``checkpoint_best`` selection and nnU-Net's final validation evaluate the teacher too. An average of
student weights over the last ~1/(1 − ema_decay) steps is smoother and usually at least as accurate as the last
student, and it is what the pseudo-labels came from. The student's weights are kept in
``checkpoint['nnunetv2_scdl']['training_network_weights']`` for ``--c``.
"""
import torch

from nnunetv2_scdl.losses.consistency import confident_pseudo_label_loss, softmax_mse_loss
from nnunetv2_scdl.training.ema import TEACHER_HYPERPARAMETERS, EMATeacherMixin
from nnunetv2_scdl.training.schedules import sigmoid_rampup
from nnunetv2_scdl.training.ssl_base import full_resolution, nnUNetTrainerSSL, split_batch


class nnUNetTrainerMeanTeacher(EMATeacherMixin, nnUNetTrainerSSL):
    """Loss = nnU-Net's Dice+CE on labeled patches + w(t)·consistency on unlabeled patches (full resolution).

    Hyperparameters (class attributes, env ``SCDL_<NAME>``):

    - ``ema_decay`` (0.99) and ``teacher_input_noise`` (0.0): the EMA teacher (``EMATeacherMixin``).
    - ``consistency`` ("pseudo_label"): "pseudo_label" = CE against the teacher's argmax where its confidence is at
      least ``confidence_threshold`` (0.8); "soft" = MSE between softmax outputs.
    - ``consistency_weight`` (1.0) and ``consistency_rampup_fraction`` (0.2): w(t) = weight·sigmoid_rampup(t, T)
      with T = fraction × total iterations, so the teacher is trusted only once it has learned something.
    - ``consistency_gate_dice`` (0.0): when > 0, the ramp's clock t starts (w = 0 before) at the end of the first
      epoch whose online-validation pseudo Dice of the teacher (nnU-Net's mean over foreground classes) reaches
      this value, so a teacher that still predicts background everywhere does not pin the student there; 0 starts
      the ramp at step 0.
    """

    hyperparameters = nnUNetTrainerSSL.hyperparameters + TEACHER_HYPERPARAMETERS + (
        "consistency", "confidence_threshold", "consistency_weight", "consistency_rampup_fraction",
        "consistency_gate_dice")
    consistency = "pseudo_label"
    confidence_threshold = 0.8
    consistency_weight = 1.0
    consistency_rampup_fraction = 0.2
    consistency_gate_dice = 0.0
    #: global iteration at which the ramp's clock started; None while the gate is closed
    consistency_start_iteration = None
    logged_terms = ("supervised", "consistency", "consistency_weight", "pseudo_label_coverage")

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.consistency not in ("pseudo_label", "soft"):
            raise ValueError(f"consistency must be 'pseudo_label' or 'soft', got {self.consistency!r}")
        if not 0.0 <= self.consistency_gate_dice <= 1.0:
            raise ValueError(f"consistency_gate_dice must be in [0, 1], got {self.consistency_gate_dice}")
        self.consistency_start_iteration = 0 if self.consistency_gate_dice <= 0 else None

    def rampup(self) -> float:
        """sigmoid_rampup(t − t₀, T) in [0, 1]: t₀ = ``consistency_start_iteration`` (0 without the gate; the ramp is
        0 while the gate is closed), T = consistency_rampup_fraction × all iterations of the run."""
        if self.consistency_start_iteration is None:
            return 0.0
        total_iterations = self.num_epochs * self.num_iterations_per_epoch
        return sigmoid_rampup(self.global_iteration - self.consistency_start_iteration,
                              self.consistency_rampup_fraction * total_iterations)

    def on_validation_epoch_end(self, val_outputs):
        super().on_validation_epoch_end(val_outputs)
        if self.consistency_start_iteration is None:
            self.open_consistency_gate(self.logger.get_value("mean_fg_dice", step=None)[-1])

    def open_consistency_gate(self, teacher_pseudo_dice: float) -> None:
        """Start the ramp's clock now if the teacher's pseudo Dice reached ``consistency_gate_dice`` (NaN: no)."""
        if teacher_pseudo_dice >= self.consistency_gate_dice:
            self.consistency_start_iteration = self.global_iteration
            self.print_to_log_file(f"Consistency gate open: teacher pseudo Dice {teacher_pseudo_dice:.4f} >= "
                                   f"consistency_gate_dice {self.consistency_gate_dice}; the consistency ramp starts "
                                   f"at iteration {self.global_iteration}.")

    def extra_checkpoint_state(self) -> dict:
        return dict(super().extra_checkpoint_state(), consistency_start_iteration=self.consistency_start_iteration)

    def load_extra_checkpoint_state(self, state: dict) -> None:
        super().load_extra_checkpoint_state(state)
        if self.consistency_gate_dice <= 0:
            self.consistency_start_iteration = 0
        elif state.get("consistency_start_iteration") is not None:
            self.consistency_start_iteration = state["consistency_start_iteration"]
        else:  # the gate was closed, or the run started without a gate: apply it to the logged epochs
            self.consistency_start_iteration = None
            for epoch, dice in enumerate(self.logger.get_value("mean_fg_dice", step=None)):
                if dice >= self.consistency_gate_dice:
                    self.consistency_start_iteration = (epoch + 1) * self.num_iterations_per_epoch
                    break

    def compute_loss(self, data, target, unlabeled):
        n_labeled = data.shape[0]
        # one student pass over labeled + unlabeled patches (instance norm: samples do not interact)
        outputs, aux = self.forward_student(torch.cat((data, unlabeled["data"])))
        labeled_output, unlabeled_output = split_batch(outputs, n_labeled)
        supervised = self.loss(labeled_output, target)
        with torch.no_grad():
            teacher_logits = full_resolution(self.teacher(self.teacher_view(unlabeled["teacher_data"])))
        student_logits = full_resolution(unlabeled_output)
        if self.consistency == "pseudo_label":
            consistency, coverage = confident_pseudo_label_loss(student_logits, teacher_logits,
                                                                self.confidence_threshold)
        else:
            consistency, coverage = softmax_mse_loss(student_logits, teacher_logits), torch.ones(())
        weight = self.consistency_weight * self.rampup()
        auxiliary, auxiliary_terms = self.auxiliary_loss(aux, target, n_labeled)
        terms = {"supervised": supervised.detach(), "consistency": consistency.detach(), "consistency_weight": weight,
                 "pseudo_label_coverage": coverage, **auxiliary_terms}
        return supervised + weight * consistency + auxiliary, terms
