"""Smaller plans for CPU runs, derived from nnU-Net's own plans.

:func:`derive_cpu_plans` copies ``<source_plans>.json`` to ``<target_plans>.json`` with fewer features per stage and a
smaller batch. By default each configuration keeps its ``data_identifier``, so training with ``-p <target_plans>``
reads the data (and the unlabeled data) already preprocessed for the source plans: spacing, patch size and
normalisation are unchanged.

With a ``spacing_factor`` other than 1 the target spacing gets coarser: spacing × factor, median image size and patch
size ÷ factor (the patch rounded to a multiple of the network's total stride on each axis, so the planned U-Net
topology still fits). Such a configuration gets nnU-Net's own data identifier ``<target_plans>_<configuration>`` and
must be preprocessed once with ``nnUNetv2_preprocess -d ID -plans_name <target_plans> -c <configuration>``.
"""
import os
from copy import deepcopy
from typing import List, Optional, Sequence, Union

from batchgenerators.utilities.file_and_folder_operations import load_json, save_json

from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

MIN_FEATURES = 4


def total_strides(strides: Sequence, n_axes: int) -> List[int]:
    """Per-axis product of a plan's ``strides`` (entries are ints or per-axis lists)."""
    product = [1] * n_axes
    for stride in strides:
        per_axis = [stride] * n_axes if isinstance(stride, int) else list(stride)
        product = [p * int(s) for p, s in zip(product, per_axis)]
    return product


def coarser_patch_size(patch_size: Sequence[int], factors: Sequence[float], strides: Sequence[int]) -> List[int]:
    """``patch_size / factors``, rounded to the nearest multiple of ``strides`` on each axis (at least one)."""
    return [max(1, round(p / f / s)) * s for p, f, s in zip(patch_size, factors, strides)]


def _per_axis(spacing_factor: Union[float, Sequence[float]], n_axes: int, configuration: str) -> List[float]:
    factors = [float(spacing_factor)] * n_axes if isinstance(spacing_factor, (int, float)) else \
        [float(f) for f in spacing_factor]
    if len(factors) != n_axes:
        raise ValueError(f"spacing_factor has {len(factors)} values but configuration {configuration} has {n_axes} "
                         f"axes; give one value or one per axis.")
    if min(factors) <= 0:
        raise ValueError(f"spacing_factor must be > 0, got {factors}.")
    return factors


def _coarsen(configuration: dict, resolved: dict, factors: Sequence[float], data_identifier: str) -> None:
    """Spacing × factors, median size and patch ÷ factors, new data identifier (in place on ``configuration``)."""
    configuration["spacing"] = [s * f for s, f in zip(resolved["spacing"], factors)]
    configuration["median_image_size_in_voxels"] = [m / f for m, f in
                                                    zip(resolved["median_image_size_in_voxels"], factors)]
    strides = total_strides(resolved["architecture"]["arch_kwargs"]["strides"], len(factors))
    configuration["patch_size"] = coarser_patch_size(resolved["patch_size"], factors, strides)
    configuration["data_identifier"] = data_identifier


def derive_cpu_plans(preprocessed_dataset_folder: str, source_plans: str = "nnUNetPlans",
                     target_plans: str = "nnUNetPlans_cpu", feature_divisor: int = 4, batch_size: int = 2,
                     configurations: Optional[Sequence[str]] = None,
                     spacing_factor: Union[float, Sequence[float]] = 1.0) -> str:
    """Write ``<preprocessed_dataset_folder>/<target_plans>.json`` and return its path.

    For each selected configuration (default: all): ``features_per_stage`` divided by ``feature_divisor`` (at least
    ``MIN_FEATURES``) and ``batch_size`` set. ``plans_name`` becomes ``target_plans``. A configuration that inherits
    its architecture (``inherits_from``) gets its own, reduced copy of it.

    ``spacing_factor`` (one value, or one per axis in nnU-Net's array order, e.g. ``(1.5, 3, 3)`` for z, y, x): 1 keeps
    spacing, patch and ``data_identifier``; anything else coarsens them as the module docstring says.
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
        if spacing_factor != 1:
            factors = _per_axis(spacing_factor, len(resolved["spacing"]), name)
            if any(f != 1 for f in factors):
                _coarsen(configuration, resolved, factors, f"{target_plans}_{name}")

    plans["plans_name"] = target_plans
    plans["derived_from"] = {"plans": source_plans, "by": "nnunetv2_scdl.data.cpu_plans.derive_cpu_plans",
                             "feature_divisor": feature_divisor, "batch_size": batch_size,
                             "spacing_factor": spacing_factor if isinstance(spacing_factor, (int, float))
                             else list(spacing_factor), "configurations": selected}
    target_file = os.path.join(preprocessed_dataset_folder, target_plans + ".json")
    save_json(plans, target_file, sort_keys=False)
    return target_file
