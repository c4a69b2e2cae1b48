"""DHC's dynamic class weights (MICCAI'23): distribution-aware DistDW and difficulty-aware DiffDW.

DHC (MICCAI'23). Both produce a weight vector w ∈ R^C (background included) for the class-weighted CE +
soft Dice of ``weighted_dice_ce.py``. Both are small stateful objects that a trainer updates once per iteration and
saves in its checkpoint through ``state_dict()`` / ``load_state_dict()``, so that a resumed run continues with
exactly the same weights.

State is kept as float64 tensors on the CPU: the update inputs are C numbers per iteration, float64 keeps the log
ratios of tiny Dice values accurate, and the checkpoint round-trip is bit-exact. ``weights`` returns a float64 CPU
tensor; the losses in this package move and cast it themselves. Settings (momentum, exponent, epsilon) are not state:
``load_state_dict`` keeps the object's own, so a resumed run uses the hyperparameters it was started with.
"""
from typing import Callable, Dict, Optional

import torch

_COUNT_EPS = 1e-8  # the 1e-8 in DistDW's P_c = (max n + 1e-8) / (n_c + 1e-8)
_DICE_EPS = 1e-8  # DiffDW's hard-Dice smoothing, and the initial d_prev


def class_voxel_counts(labels: torch.Tensor, num_classes: int, ignore_index: Optional[int] = None) -> torch.Tensor:
    """Voxel count n_c per class of an integer label map of any shape, as a float64 CPU tensor [C].

    ``labels``: class indices in [0, C) (e.g. a GT patch batch or argmax of a prediction); values equal to
    ``ignore_index`` are not counted.
    """
    labels = _as_label_map(labels, "class_voxel_counts").reshape(-1)
    if ignore_index is not None:
        labels = labels[labels != ignore_index]
    _check_label_range(labels, num_classes, "class_voxel_counts")
    return torch.bincount(labels, minlength=num_classes).cpu().to(torch.float64)


def hard_dice_statistics(prediction_labels: torch.Tensor, target_labels: torch.Tensor, num_classes: int,
                         ignore_index: Optional[int] = None) -> torch.Tensor:
    """Per-class voxel counts of a batch, as float64 CPU tensor [3, C]: |P_c ∩ G_c|, |P_c| and |G_c| (the inputs of
    :func:`hard_dice_per_class`; sums over several batches or processes give the Dice of the union). Arguments as
    :func:`hard_dice_per_class`."""
    prediction_labels = _as_label_map(prediction_labels, "hard_dice_per_class").reshape(-1)
    target_labels = _as_label_map(target_labels, "hard_dice_per_class").reshape(-1)
    if prediction_labels.numel() != target_labels.numel():
        raise ValueError(f"hard_dice_per_class: prediction has {prediction_labels.numel()} voxels but target has "
                         f"{target_labels.numel()}.")
    if ignore_index is not None:
        keep = target_labels != ignore_index
        prediction_labels, target_labels = prediction_labels[keep], target_labels[keep]
    _check_label_range(prediction_labels, num_classes, "hard_dice_per_class (prediction)")
    _check_label_range(target_labels, num_classes, "hard_dice_per_class (target)")
    pred_count = torch.bincount(prediction_labels, minlength=num_classes)
    target_count = torch.bincount(target_labels, minlength=num_classes)
    hits = prediction_labels[prediction_labels == target_labels]
    intersection = torch.bincount(hits, minlength=num_classes)
    return torch.stack([intersection, pred_count, target_count]).cpu().to(torch.float64)


def hard_dice_from_statistics(statistics: torch.Tensor, epsilon: float = _DICE_EPS,
                              denominator_epsilon: Optional[float] = None) -> torch.Tensor:
    """d_c = (2|P_c ∩ G_c| + ε) / (|P_c| + |G_c| + ε_d) from :func:`hard_dice_statistics` [3, C] (float64 CPU [C])."""
    intersection, pred_count, target_count = torch.as_tensor(statistics, dtype=torch.float64).cpu()
    denominator_epsilon = epsilon if denominator_epsilon is None else denominator_epsilon
    return (2 * intersection + epsilon) / (pred_count + target_count + denominator_epsilon)


def hard_dice_per_class(prediction_labels: torch.Tensor, target_labels: torch.Tensor, num_classes: int,
                        ignore_index: Optional[int] = None, epsilon: float = _DICE_EPS,
                        denominator_epsilon: Optional[float] = None) -> torch.Tensor:
    """Batch hard Dice per class (background included): d_c = (2|P_c ∩ G_c| + ε) / (|P_c| + |G_c| + ε_d).

    Counts run over the whole batch. ε_d = ``denominator_epsilon`` (default ε): then a class absent from both
    prediction and target gets d_c = 1. DHC's soft Dice adds its smooth ε and another 1e-8 to the denominator
    (ε_d = ε + 1e-8), which gives an absent class ε/(2ε) = 0.5 (DiffDW uses that). A missed class gets a tiny
    positive d_c ≈ ε/|G_c|, so DiffDW's log(d / d_prev) stays finite.

    Args:
        prediction_labels: predicted class indices (argmax over classes), any shape.
        target_labels: GT class indices; the same number of voxels as ``prediction_labels`` ([B,1,...] vs [B,...]
            layouts are both fine). Voxels equal to ``ignore_index`` are excluded from all counts.
    Returns:
        float64 CPU tensor [C].
    """
    return hard_dice_from_statistics(hard_dice_statistics(prediction_labels, target_labels, num_classes,
                                                          ignore_index), epsilon, denominator_epsilon)


def dist_dw_weights_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """DistDW's instantaneous weights from class voxel counts n_c (float64 CPU tensor [C]).

    P_c = (max_c n_c + 1e-8) / (n_c + 1e-8),  w_c = C · log P_c / max_c log P_c.
    The most frequent class (background in CT) gets exactly 0 and the rarest gets C. If every class is equally
    frequent, max log P_c = 0 and the formula is 0/0; we then return the neutral w_c = C for every class.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64).cpu()
    if counts.ndim != 1 or counts.numel() < 1:
        raise ValueError(f"dist_dw_weights_from_counts: counts must be a 1-d tensor [C], got shape "
                         f"{tuple(counts.shape)}.")
    if bool((counts < 0).any()) or not bool(torch.isfinite(counts).all()):
        raise ValueError(f"dist_dw_weights_from_counts: counts must be finite and >= 0, got {counts.tolist()}.")
    num_classes = counts.numel()
    log_p = torch.log((counts.max() + _COUNT_EPS) / (counts + _COUNT_EPS))
    max_log_p = log_p.max()
    if max_log_p <= 0:
        return torch.full_like(counts, float(num_classes))
    return num_classes * log_p / max_log_p


class DistDW:
    """Distribution-aware class weights (DHC's weights for net B).

    w is initialised from the labeled set's GT class counts (``init_from_counts`` / ``init_from_labels``) and then
    follows an EMA of the weights from each iteration's class histogram of argmax(B) on the unlabeled half:
        w ← m · w + (1 − m) · w_cur,   m = momentum = 0.99.
    With these counts the background, by far the most frequent class, has weight 0.

    Args:
        num_classes: C, background included.
        momentum: m of the EMA.
    """

    def __init__(self, num_classes: int, momentum: float = 0.99):
        _check_num_classes(num_classes, "DistDW")
        if not 0 <= momentum <= 1:
            raise ValueError(f"DistDW: momentum must lie in [0, 1], got {momentum}.")
        self.num_classes = num_classes
        self.momentum = momentum
        self._weights: Optional[torch.Tensor] = None

    @property
    def initialized(self) -> bool:
        return self._weights is not None

    @property
    def weights(self) -> torch.Tensor:
        """Current w [C] (float64, CPU, a copy)."""
        if self._weights is None:
            raise RuntimeError("DistDW: weights are not initialised; call init_from_counts()/init_from_labels() with "
                               "the labeled set's GT first (or load_state_dict()).")
        return self._weights.clone()

    def init_from_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """Set w from the labeled GT class voxel counts [C]; returns w."""
        self._weights = dist_dw_weights_from_counts(self._checked_counts(counts))
        return self.weights

    def init_from_labels(self, labels: torch.Tensor, ignore_index: Optional[int] = None) -> torch.Tensor:
        """Set w from a GT label map (or all labeled GT concatenated); returns w."""
        return self.init_from_counts(class_voxel_counts(labels, self.num_classes, ignore_index))

    def update_from_counts(self, counts: torch.Tensor) -> torch.Tensor:
        """EMA step with the weights of one iteration's class counts [C]; returns the new w."""
        current = dist_dw_weights_from_counts(self._checked_counts(counts))
        previous = self.weights
        self._weights = self.momentum * previous + (1 - self.momentum) * current
        return self.weights

    def update_from_labels(self, prediction_labels: torch.Tensor,
                           reduce_counts: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """EMA step from predicted labels (argmax of net B on the unlabeled half, any shape); returns the new w.
        ``reduce_counts`` (e.g. a sum over the processes of a multi-GPU run) is applied to the class counts first."""
        counts = class_voxel_counts(prediction_labels, self.num_classes)
        return self.update_from_counts(counts if reduce_counts is None else reduce_counts(counts))

    def state_dict(self) -> Dict[str, object]:
        """The weights (and C, checked on load); the momentum is a setting and stays out."""
        return {"num_classes": self.num_classes, "weights": None if self._weights is None else self._weights.clone()}

    def load_state_dict(self, state_dict: Dict[str, object]) -> None:
        _check_state_keys(state_dict, {"num_classes", "weights"}, "DistDW")
        if state_dict["num_classes"] != self.num_classes:
            raise ValueError(f"DistDW: state_dict is for {state_dict['num_classes']} classes, this object has "
                             f"{self.num_classes}.")
        weights = state_dict["weights"]
        if weights is not None:
            weights = torch.as_tensor(weights, dtype=torch.float64).cpu().clone()
            _check_vector(weights, self.num_classes, "DistDW", "weights")
        self._weights = weights

    def _checked_counts(self, counts: torch.Tensor) -> torch.Tensor:
        counts = torch.as_tensor(counts, dtype=torch.float64).cpu()
        _check_vector(counts, self.num_classes, "DistDW", "counts")
        return counts


class DiffDW:
    """Difficulty-aware class weights (DHC's weights for net A).

    Per iteration, from the batch hard Dice d_c of argmax(A on the labeled half) vs GT (background included; with
    DHC's smoothing, so a class absent from both prediction and GT gets d_c = 0.5, see :func:`hard_dice_per_class`):
        Δ_c = d_c − d_prev,c
        learn_c   ← m·learn_c   + (1−m)·(Δ_c·log(d_c/d_prev,c) if Δ_c > 0  else 0)
        unlearn_c ← m·unlearn_c + (1−m)·(Δ_c·log(d_c/d_prev,c) if Δ_c <= 0 else 0)
        diff_c = ((unlearn_c + 1e-8) / (learn_c + 1e-8))^(1/5)
        dw_c   ← m·dw_c + (1−m)·(1 − d_c)
        w_c    = C · diff_c·dw_c / max_c(diff_c·dw_c)     (``normalise_by_max=False``: w_c = C · diff_c·dw_c)
        d_prev ← d
    with m = momentum = 49/50. Both Δ·log factors are >= 0: a class whose Dice keeps dropping ("unlearned") or stays
    low gets a high weight. Initial state: w = C·1, d_prev = 1e-8, learn = unlearn = 0, dw = 1.

    Args:
        num_classes: C, background included.
        momentum: m of the learn/unlearn/dw EMAs (the reference's 49/50 for all three).
        exponent: the 1/5 of diff_c.
        epsilon: the 1e-8 in diff_c, in the hard Dice's smoothing (``update_from_labels``) and the initial d_prev.
        normalise_by_max: divide by max_c(diff_c·dw_c) (DHC). GenericSSL's "Difficulty" weights skip it.
            A setting, not state: ``state_dict`` does not carry it.
    """

    def __init__(self, num_classes: int, momentum: float = 49 / 50, exponent: float = 1 / 5,
                 epsilon: float = _DICE_EPS, normalise_by_max: bool = True):
        _check_num_classes(num_classes, "DiffDW")
        if not 0 <= momentum <= 1:
            raise ValueError(f"DiffDW: momentum must lie in [0, 1], got {momentum}.")
        if exponent <= 0:
            raise ValueError(f"DiffDW: exponent must be > 0, got {exponent}.")
        if epsilon <= 0:
            raise ValueError(f"DiffDW: epsilon must be > 0, got {epsilon}.")
        self.num_classes = num_classes
        self.momentum = momentum
        self.exponent = exponent
        self.epsilon = epsilon
        self.normalise_by_max = normalise_by_max
        c = num_classes
        self._previous_dice = torch.full((c,), epsilon, dtype=torch.float64)
        self._learn = torch.zeros(c, dtype=torch.float64)
        self._unlearn = torch.zeros(c, dtype=torch.float64)
        self._dice_weight = torch.ones(c, dtype=torch.float64)  # dw: EMA of 1 − d
        self._weights = torch.full((c,), float(c), dtype=torch.float64)

    @property
    def weights(self) -> torch.Tensor:
        """Current w [C] (float64, CPU, a copy)."""
        return self._weights.clone()

    def update_from_dice(self, dice: torch.Tensor) -> torch.Tensor:
        """One iteration's update from the batch hard Dice d [C] (values in (0, 1]); returns the new w."""
        dice = torch.as_tensor(dice, dtype=torch.float64).cpu()
        _check_vector(dice, self.num_classes, "DiffDW", "dice")
        if bool((dice <= 0).any()) or bool((dice > 1).any()):
            raise ValueError(f"DiffDW: dice values must lie in (0, 1] (use hard_dice_per_class, which smooths a "
                             f"missed class to a tiny positive value), got {dice.tolist()}.")
        m = self.momentum
        delta = dice - self._previous_dice
        log_ratio_term = delta * torch.log(dice / self._previous_dice)  # >= 0 whatever the sign of Δ
        current_learn = torch.where(delta > 0, log_ratio_term, torch.zeros_like(delta))
        current_unlearn = torch.where(delta <= 0, log_ratio_term, torch.zeros_like(delta))
        self._learn = m * self._learn + (1 - m) * current_learn
        self._unlearn = m * self._unlearn + (1 - m) * current_unlearn
        self._dice_weight = m * self._dice_weight + (1 - m) * (1 - dice)
        self._previous_dice = dice.clone()

        difficulty = ((self._unlearn + self.epsilon) / (self._learn + self.epsilon)) ** self.exponent
        raw = difficulty * self._dice_weight
        if not self.normalise_by_max:
            self._weights = self.num_classes * raw
            return self.weights
        max_raw = raw.max()
        # All dw_c = 0 only if every class stayed perfect (d = 1) from the first step: nothing is hard, keep uniform.
        self._weights = (self.num_classes * raw / max_raw) if max_raw > 0 else torch.full_like(raw, self.num_classes)
        return self.weights

    def update_from_labels(self, prediction_labels: torch.Tensor, target_labels: torch.Tensor,
                           ignore_index: Optional[int] = None,
                           reduce_counts: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """One iteration's update from argmax(A on the labeled half) and its GT; returns the new w. The hard Dice
        is DHC's: smooth ε in the numerator, ε + 1e-8 in the denominator (an absent class gets 0.5).
        ``reduce_counts`` (e.g. a sum over the processes of a multi-GPU run) is applied to the Dice's voxel counts
        (:func:`hard_dice_statistics`) first."""
        statistics = hard_dice_statistics(prediction_labels, target_labels, self.num_classes, ignore_index)
        if reduce_counts is not None:
            statistics = reduce_counts(statistics)
        return self.update_from_dice(hard_dice_from_statistics(statistics, self.epsilon,
                                                               denominator_epsilon=self.epsilon + _DICE_EPS))

    def state_dict(self) -> Dict[str, object]:
        """The statistics and weights (and C, checked on load); momentum, exponent and epsilon are settings and
        stay out."""
        return {"num_classes": self.num_classes, "previous_dice": self._previous_dice.clone(),
                "learn": self._learn.clone(), "unlearn": self._unlearn.clone(),
                "dice_weight": self._dice_weight.clone(), "weights": self._weights.clone()}

    def load_state_dict(self, state_dict: Dict[str, object]) -> None:
        tensors = ("previous_dice", "learn", "unlearn", "dice_weight", "weights")
        _check_state_keys(state_dict, {"num_classes", *tensors}, "DiffDW")
        if state_dict["num_classes"] != self.num_classes:
            raise ValueError(f"DiffDW: state_dict is for {state_dict['num_classes']} classes, this object has "
                             f"{self.num_classes}.")
        loaded = {}
        for name in tensors:
            loaded[name] = torch.as_tensor(state_dict[name], dtype=torch.float64).cpu().clone()
            _check_vector(loaded[name], self.num_classes, "DiffDW", name)
        self._previous_dice = loaded["previous_dice"]
        self._learn = loaded["learn"]
        self._unlearn = loaded["unlearn"]
        self._dice_weight = loaded["dice_weight"]
        self._weights = loaded["weights"]


def _as_label_map(labels: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{name}: labels must be a torch.Tensor, got {type(labels).__name__}.")
    if labels.is_floating_point():
        if bool((labels != labels.round()).any()):
            raise ValueError(f"{name}: labels hold non-integer values; pass class indices (e.g. argmax over C).")
    elif labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name}: labels must hold integer class indices, got dtype {labels.dtype}.")
    return labels.long()


def _check_label_range(labels: torch.Tensor, num_classes: int, name: str) -> None:
    if labels.numel() and (bool(labels.min() < 0) or bool(labels.max() >= num_classes)):
        raise ValueError(f"{name}: label values must lie in [0, {num_classes}); found min {int(labels.min())}, "
                         f"max {int(labels.max())}.")


def _check_num_classes(num_classes: int, name: str) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"{name}: num_classes must be an int >= 2 (background included), got {num_classes!r}.")


def _check_vector(vector: torch.Tensor, num_classes: int, name: str, what: str) -> None:
    if vector.shape != (num_classes,):
        raise ValueError(f"{name}: {what} must have shape [{num_classes}], got {tuple(vector.shape)}.")
    if not bool(torch.isfinite(vector).all()):
        raise ValueError(f"{name}: {what} must be finite, got {vector.tolist()}.")


def _check_state_keys(state_dict: Dict[str, object], expected: set, name: str) -> None:
    if not isinstance(state_dict, dict):
        raise ValueError(f"{name}: state_dict must be a dict, got {type(state_dict).__name__}.")
    missing, unexpected = expected - set(state_dict), set(state_dict) - expected
    if missing or unexpected:
        raise ValueError(f"{name}: state_dict keys do not match (missing {sorted(missing)}, unexpected "
                         f"{sorted(unexpected)}).")
