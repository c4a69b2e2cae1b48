"""Averaging per-case, per-class metrics into per-class, overall, head and tail numbers.

Input: a list over cases of {label: {metric_name: value}}. NaN marks an undefined value (e.g. a class absent from
both prediction and reference in the original-spacing metrics); every mean skips NaNs and is NaN only when all of
its inputs are.
- per class: mean over cases of that class's values;
- mean / head / tail: mean over the (head / tail) classes of the per-class means;
- case_mean_std: standard deviation over cases of each case's mean over classes (population std, ddof=0).
With no NaNs, "mean" equals the papers' order (mean over classes per case, then over cases).
"""
import math
from typing import Dict, Iterable, List, Sequence

import numpy as np

from nnunetv2_scdl.evaluation.class_groups import ClassGroups

CaseMetrics = Dict[int, Dict[str, float]]


def mean_ignoring_nan(values: Iterable[float]) -> float:
    finite = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def summarize(per_case: List[CaseMetrics], class_labels: Sequence[int], groups: ClassGroups,
              metric_names: Sequence[str]) -> Dict[str, dict]:
    """{'per_class': {label: {metric: mean}}, 'mean'|'head'|'tail'|'case_mean_std': {metric: value}}."""
    if not per_case:
        raise ValueError("Nothing to summarize: no cases.")
    per_class = {label: {metric: mean_ignoring_nan(case[label][metric] for case in per_case)
                         for metric in metric_names} for label in class_labels}

    def mean_over(labels: Sequence[int]) -> Dict[str, float]:
        return {metric: mean_ignoring_nan(per_class[label][metric] for label in labels) for metric in metric_names}

    case_means = {metric: [mean_ignoring_nan(case[label][metric] for label in class_labels) for case in per_case]
                  for metric in metric_names}
    case_mean_std = {metric: (float(np.std([v for v in values if not math.isnan(v)]))
                              if any(not math.isnan(v) for v in values) else float("nan"))
                     for metric, values in case_means.items()}
    return {"per_class": per_class, "mean": mean_over(class_labels), "head": mean_over(groups.head),
            "tail": mean_over(groups.tail), "case_mean_std": case_mean_std}
