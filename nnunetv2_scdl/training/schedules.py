"""Weight schedules shared by the semi-supervised trainers."""
import math


def sigmoid_rampup(current: float, rampup_length: float) -> float:
    """The sigmoid-shaped ramp of Laine & Aila (2017): exp(−5·(1 − t/T)²) for t in [0, T], then 1.

    It is 0.0067 at t=0, 0.29 at t=T/2 and 1 from t=T on. ``rampup_length`` ≤ 0 means no ramp (always 1).
    """
    if rampup_length <= 0:
        return 1.0
    phase = 1.0 - min(max(current, 0.0), rampup_length) / rampup_length
    return math.exp(-5.0 * phase * phase)
