"""Soft token↔class assignments of SCDL.

Notation: ẑ_{b,l} unit token embeddings [B, L, D]; μ̂_c = μ_c/‖μ_c‖; G[b,l,c] = ⟨ẑ_{b,l}, μ̂_c⟩ ∈ [−1, 1].

- E2P ("embedding to proxy"): P_e2p(c | z) = softmax_c(G / τ_e2p). Each token distributes over classes.
- P2E ("proxy to embedding"): P_p2e = softmax(G / τ_p2e) over
    * the tokens of each image (``over="tokens"``, default): each proxy distributes over the embeddings, the paper's
      meaning ("each proxy actively identifies its own embeddings");
    * the classes (``over="classes"``): the released code's behaviour. With τ_p2e = τ_e2p it equals
      P_e2p, so the symmetric KL is identically 0.
- Joint: Q ∝ P_e2p ⊙ P_p2e renormalised over classes. With the token softmax, Q[l, c] ∝ exp(2·G[l,c]/τ) / Z_c where
  Z_c = Σ_l exp(G[l,c]/τ): a proxy that claims many tokens (a head class) has each claim discounted.

All assignments are returned as log-probabilities (log_softmax), which is exact where probabilities underflow
(P_p2e over thousands of tokens is O(1/L)).
"""
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["P2E_SOFTMAX_CHOICES", "cosine_similarity_to", "e2p_log_assignment", "p2e_log_assignment",
           "joint_log_assignment", "as_class_distribution"]

P2E_SOFTMAX_CHOICES = ("tokens", "classes")


def cosine_similarity_to(unit_embeddings: Tensor, vectors: Tensor) -> Tensor:
    """⟨ẑ, n(v)⟩ for every token and every vector: ``unit_embeddings`` [..., D] (already unit), ``vectors`` [K, D]
    (normalised here) → [..., K]."""
    if unit_embeddings.shape[-1] != vectors.shape[-1]:
        raise ValueError(f"embedding dimension mismatch: {unit_embeddings.shape[-1]} vs {vectors.shape[-1]}.")
    return unit_embeddings @ F.normalize(vectors, dim=-1).transpose(0, 1)


def e2p_log_assignment(similarity: Tensor, tau: float) -> Tensor:
    """log P_e2p(c | z) = log_softmax_c(G / τ_e2p); ``similarity`` G: [B, L, C] → [B, L, C]."""
    if tau <= 0:
        raise ValueError(f"temperature τ must be positive, got {tau}.")
    return torch.log_softmax(similarity / tau, dim=-1)


def p2e_log_assignment(similarity: Tensor, tau: float, over: str = "tokens") -> Tensor:
    """log P_p2e; ``similarity`` G: [B, L, C] → [B, L, C], normalised over dim 1 (tokens of each image) or dim 2
    (classes), see the module docstring."""
    if tau <= 0:
        raise ValueError(f"temperature τ must be positive, got {tau}.")
    if over not in P2E_SOFTMAX_CHOICES:
        raise ValueError(f"over must be one of {P2E_SOFTMAX_CHOICES}, got {over!r}.")
    if similarity.dim() != 3:
        raise ValueError(f"similarity must be [B, L, C], got shape {tuple(similarity.shape)}.")
    return torch.log_softmax(similarity / tau, dim=1 if over == "tokens" else 2)


def joint_log_assignment(log_e2p: Tensor, log_p2e: Tensor) -> Tensor:
    """log Q with Q ∝ P_e2p ⊙ P_p2e, renormalised over classes: [B, L, C] → [B, L, C]."""
    return torch.log_softmax(log_e2p + log_p2e, dim=-1)


def as_class_distribution(log_assignment: Tensor) -> Tensor:
    """Renormalise a log-assignment over classes (the last dim). A no-op for E2P and the class-softmax P2E; for the
    token-softmax P2E it gives, per token, the class distribution the proxies' view implies."""
    return torch.log_softmax(log_assignment, dim=-1)
