"""The geometry of SCDL's class proxies in trained checkpoints (``nnUNetv2_scdl_proxies``).

For every SCDL module of a checkpoint (two for a co-training pair), the cosines between the class proxy means μ_c,
their norms and σ_c = softplus(ρ_c). Proxies of two classes whose means point the same way give both classes the same
priors and the same proxy similarities, so SCDL cannot separate them.

An EMA host (mean teacher, GA-MagicNet) saves the teacher as ``network_weights`` (what inference uses) and the
student it trains as the trainer state's ``training_network_weights``; both are read, labelled "inference" and
"training".
"""
import json
import pickle
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch

from nnunetv2_scdl.evaluation.plateau import CHECKPOINTS
from nnunetv2_scdl.scdl.proxies import proxy_mean_cosines, proxy_separation
from nnunetv2_scdl.training.ssl_base import CHECKPOINT_KEY

MU_SUFFIX = "class_proxies.mu"


def checkpoint_file(path: Path) -> Path:
    """``path`` itself if it is a file, else the ``checkpoint_final.pth`` or else ``checkpoint_latest.pth`` in it."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist.")
    found = next((path / name for name in CHECKPOINTS if (path / name).is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{path} holds neither {' nor '.join(CHECKPOINTS)}.")
    return found


def proxy_states(checkpoint: dict) -> List[Tuple[str, str, torch.Tensor, torch.Tensor]]:
    """``(weights, module, μ, ρ)`` for every SCDL module of the checkpoint's inference weights and, where the trainer
    saved them separately, its training weights. ``module`` is the prefix before ``class_proxies.mu``."""
    weights = {"inference": checkpoint.get("network_weights", {})}
    training = checkpoint.get(CHECKPOINT_KEY, {}).get("training_network_weights")
    if training is not None:
        weights["training"] = training
    states = []
    for label, state in weights.items():
        for key in sorted(k for k in state if k.endswith(MU_SUFFIX)):
            prefix = key[:-len(MU_SUFFIX)]
            states.append((label, prefix.rstrip(".") or "(root)", state[key], state[prefix + "class_proxies.rho"]))
    return states


def _class_names(checkpoint_path: Path, num_classes: int) -> Dict[int, str]:
    """Label names from the model folder's dataset.json (next to ``fold_<f>``), else the label values."""
    dataset_json = checkpoint_path.parent.parent / "dataset.json"
    names = {c: str(c) for c in range(num_classes)}
    if dataset_json.is_file():
        labels = json.loads(dataset_json.read_text(encoding="utf-8")).get("labels", {})
        names.update({value: name for name, value in labels.items() if isinstance(value, int) and value in names})
    return names


def proxy_table(paths: Sequence[Path], all_pairs: bool = False) -> str:
    """A markdown table with one row per SCDL module of each checkpoint: the closest pair of classes and its cosine,
    the mean ‖μ_c‖ and σ (mean, min–max); ``all_pairs`` adds a column per pair of classes."""
    rows, pair_names = [], None
    for path in paths:
        file = checkpoint_file(path)
        try:
            checkpoint = torch.load(file, map_location="cpu", weights_only=False)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
            raise ValueError(f"{file} cannot be read as a checkpoint ({e}).") from e
        states = proxy_states(checkpoint)
        if not states:
            raise ValueError(f"{file} has no SCDL class proxies ('*{MU_SUFFIX}'): it was not trained by an SCDL "
                             f"trainer.")
        epoch = checkpoint.get("current_epoch", "?")
        names = _class_names(file, len(states[0][2]))  # every SCDL module of a checkpoint has the same classes
        for label, module, mu, rho in states:
            separation = proxy_separation(mu, rho)
            a, b = separation["max_pair"]
            cells = [str(file), str(epoch), label, module, f"{names[a]}–{names[b]}", f"{separation['max_cosine']:+.3f}",
                     f"{separation['norm_mean']:.2f}",
                     f"{separation['sigma_mean']:.4f} ({separation['sigma_min']:.4f}–{separation['sigma_max']:.4f})"]
            if all_pairs:
                cosines = proxy_mean_cosines(mu)
                pairs = [(i, j) for i in range(len(mu)) for j in range(i + 1, len(mu))]
                names_here = [f"cos {names[i]}–{names[j]}" for i, j in pairs]
                if pair_names is not None and names_here != pair_names:
                    raise ValueError(f"--all-pairs needs checkpoints with the same classes; {file} has "
                                     f"{len(mu)} ({', '.join(names.values())}), unlike the ones before it.")
                pair_names = names_here
                cells += [f"{float(cosines[i, j]):+.3f}" for i, j in pairs]
            rows.append(cells)
    header = ["checkpoint", "epoch", "weights", "module", "closest classes", "max cos(μ_a, μ_b)", "mean ‖μ‖",
              "σ mean (min–max)"] + (pair_names or [])
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
