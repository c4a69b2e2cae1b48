"""Run a trainer's multi-path training step as one forward of the network.

GA-MagicNet and GenericSSL call several pieces of their network per step (encoder on cubes, decoders, heads).
Calling those pieces on the unwrapped module would bypass ``DistributedDataParallel``: DDP all-reduces gradients only
for a backward that follows a call of its own ``forward``. With :func:`accepts_training_pass` on the network's
``forward``, the trainer calls ``self.network(*inputs, training_pass=f)`` and ``f(network, *inputs)`` runs inside
that forward, on the plain module.
"""
import functools
from typing import Callable

import torch

__all__ = ["accepts_training_pass"]


def accepts_training_pass(forward: Callable) -> Callable:
    """Decorator for ``nn.Module.forward``: ``module(*args, training_pass=f, **kwargs)`` returns
    ``f(module, *args, **kwargs)``; without ``training_pass`` the forward is unchanged. ``f`` runs outside
    ``torch.compile`` (as it would on the unwrapped module): it is trainer code with data-dependent Python."""

    @functools.wraps(forward)
    def dispatch(self, *args, training_pass: Callable = None, **kwargs):
        if training_pass is None:
            return forward(self, *args, **kwargs)
        if torch.compiler.is_compiling():  # inside a torch.compile'd network: leave the pass to eager mode
            training_pass = torch.compiler.disable(training_pass)
        return training_pass(self, *args, **kwargs)

    return dispatch
