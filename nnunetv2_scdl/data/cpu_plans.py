"""Smaller plans for CPU runs, derived from nnU-Net's own plans without re-preprocessing.

:func:`derive_cpu_plans` copies ``<source_plans>.json`` to ``<target_plans>.json`` with fewer features per stage and a
smaller batch. Each configuration keeps its ``data_identifier``, so training with ``-p <target_plans>`` reads the
data (and the unlabeled data) already preprocessed for the source plans: spacing, patch size and normalisation are
unchanged.
"""
import os
from copy import deepcopy
from typing import Optional, Sequence

from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

MIN_FEATURES = 4


def derive_cpu_plans(preprocessed_dataset_folder: str, source_plans: str = "nnUNetPlans",
                     target_plans: str = "nnUNetPlans_cpu", feature_divisor: int = 4, batch_size: int = 2,
                     configurations: Optional[Sequence[str]] = None) -> str:
    """Write ``<preprocessed_dataset_folder>/<target_plans>.json`` and return its path.

    For each selected configuration (default: all): ``features_per_stage`` divided by ``feature_divisor`` (at least
    ``MIN_FEATURES``) and ``batch_size`` set. ``plans_name`` becomes ``target_plans``; ``data_identifier`` is kept.
    A configuration that inherits its architecture (``inherits_from``) gets its own, reduced copy of it.
    """
    if feature_divisor < 1 or batch_size < 1:
        raise ValueError(f"feature_divisor and batch_size must be >= 1 (got {feature_divisor}, {batch_size}).")
    if source_plans == target_plans:
        raise ValueError(f"The derived plans need a new name; target_plans equals source_plans ({source_plans}).")
    source_file = os.path.join(preprocessed_dataset_folder, source_plans + ".json")
    if not os.path.isfile(source_file):
        raise FileNotFoundError(f"Plans file {source_file} not found. Run nnUNetv2_plan_and_preprocess for this "
                                f"dataset first.")
    plans = load_json(source_file)
    manager = PlansManager(deepcopy(plans))
    selected = list(plans["configurations"]) if configurations is None else list(configurations)
    unknown = [c for c in selected if c not in plans["configurations"]]
    if unknown:
        raise ValueError(f"Configuration(s) {unknown} not in {source_file}; it has {list(plans['configurations'])}.")

    for name in selected:
        configuration = plans["configurations"][name]
        resolved = manager.get_configuration(name).configuration  # inheritance resolved, from the source plans
        if "architecture" in resolved:
            architecture = deepcopy(resolved["architecture"])
            kwargs = architecture["arch_kwargs"]
            if "features_per_stage" in kwargs:
                kwargs["features_per_stage"] = [max(MIN_FEATURES, int(f) // feature_divisor)
                                                for f in kwargs["features_per_stage"]]
            configuration["architecture"] = architecture
        configuration["batch_size"] = int(batch_size)

    plans["plans_name"] = target_plans
    plans["derived_from"] = {"plans": source_plans, "by": "nnunetv2_scdl.data.cpu_plans.derive_cpu_plans",
                             "feature_divisor": feature_divisor, "batch_size": batch_size,
                             "configurations": selected}
    target_file = os.path.join(preprocessed_dataset_folder, target_plans + ".json")
    save_json(plans, target_file, sort_keys=False)
    return target_file
