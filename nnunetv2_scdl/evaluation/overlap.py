"""Volume overlap between two binary masks."""
import numpy as np


def dice_coefficient(pred_mask: np.ndarray, ref_mask: np.ndarray) -> float:
    """Dice = 2|P∩R| / (|P| + |R|) for two binary masks of equal shape (unitless, in [0, 1]).

    Raises ValueError when both masks are empty (Dice is undefined; each protocol decides what to report then).
    """
    pred_mask = np.asarray(pred_mask).astype(bool, copy=False)
    ref_mask = np.asarray(ref_mask).astype(bool, copy=False)
    if pred_mask.shape != ref_mask.shape:
        raise ValueError(f"Prediction and reference masks differ in shape: {pred_mask.shape} vs {ref_mask.shape}.")
    size_sum = int(pred_mask.sum()) + int(ref_mask.sum())
    if size_sum == 0:
        raise ValueError("Dice is undefined when both masks are empty.")
    return 2.0 * int(np.logical_and(pred_mask, ref_mask).sum()) / size_sum
