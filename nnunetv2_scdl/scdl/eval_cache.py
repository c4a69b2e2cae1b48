"""Reuse of parameter-derived tensors across inference forwards.

In eval mode without autograd, quantities such as the normalised proxy means μ̂ or a projection folded into a
segmentation head depend only on the parameters. Recomputing them costs a handful of small GPU kernels per forward,
which is a measurable share of SCDL's inference overhead. ``ParameterDerivedCache`` keeps them until one of the
parameters they came from changes: an in-place update (optimiser step, EMA update, ``load_state_dict``) bumps the
tensor's version counter, and ``.to(device)`` gives it new storage; either invalidates the entry.
"""
from typing import Callable, Dict, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["ParameterDerivedCache"]


class ParameterDerivedCache:
    """A small dict of values computed from parameters, valid while those parameters are unchanged.

    It is not module state (not in the ``state_dict``, never moved by ``.to``): a deep copy of the owning module
    starts with entries whose keys can no longer match, since the copy's parameters have other storage.
    """

    def __init__(self):
        self._entries: Dict[str, Tuple[tuple, object]] = {}

    def get(self, name: str, sources: Sequence[Tensor], compute: Callable[[], object], enabled: bool):
        """``compute()``, or its cached value when ``enabled`` and ``sources`` are unchanged since it was stored.

        Pass ``enabled = not module.training and not torch.is_grad_enabled()``: with autograd on, a cached value
        would not carry a graph back to the parameters. Under ``torch.compile`` the cache is bypassed (the compiled
        graph fuses the recomputation anyway, and version counters would break the graph).
        """
        if not enabled or torch.compiler.is_compiling():
            return compute()
        key = tuple((t._version, t.data_ptr(), t.device, t.dtype) for t in sources)
        entry = self._entries.get(name)
        if entry is not None and entry[0] == key:
            return entry[1]
        value = compute()
        self._entries[name] = (key, value)
        return value

    def clear(self) -> None:
        self._entries.clear()
