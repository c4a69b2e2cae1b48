"""SCDL loss terms as pure functions (spec §1.2 steps 6, 10-12; paper "CDBA" and "SAC").

Notation (per token n and class c):
- w[n, c] ∈ [0, 1], Σ_c w = 1: the token's class weights. Labeled tokens: the ground-truth class proportions inside
  the token (area-pooled one-hot). Unlabeled tokens: the detached joint assignment stopgrad(Q), or pseudo-label
  proportions.
- G[n, c] = ⟨ẑ_n, μ̂_c⟩: cosine similarity to the proxy mean.
- Ā[n, c] = (1/S) Σ_s ⟨ẑ_n, p̂_{c,s}⟩: mean cosine similarity to the S samples of proxy c.

CDBA (class distribution bidirectional alignment):
- E2P  L_E2P  = mean_n Σ_c w[n,c] · (1 − G[n,c])                  pulls each embedding towards its classes' proxy means.
- P2E  L_P2E  = mean_c mean_n exp(−(E⁺[n,c] − E⁻[n,c])),
       E⁺ = w·Ā,  E⁻ = (1 − w)·Ā  (so E⁺ − E⁻ = (2w − 1)·Ā)       each proxy attracts the tokens it owns (w > ½) and
                                                                   repels the others (w < ½); value in [e⁻¹, e].
- dist L_dist = mean_n Σ_c w[n,c] · (1 − Ā[n,c])                  the sample-based distance term of the released code.
Symmetric KL: KL(P_p2e ‖ P_e2p) + KL(P_e2p ‖ P_p2e), both as class distributions per token.
SAC (semantic anchor constraint): anchor_c = n(mean of the labeled embeddings of class c), **detached**;
L_SAC = mean_c (1 − ⟨anchor_c, μ̂_c⟩) over the classes present. Its gradient reaches μ only.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["KL_REDUCTIONS", "embedding_to_proxy_loss", "proxy_to_embedding_loss", "proxy_distance_loss",
           "symmetric_kl_loss", "class_anchors", "semantic_anchor_loss"]

KL_REDUCTIONS = ("mean", "batchmean")


def _check_pair(similarity: Tensor, class_weights: Tensor, token_weights: Optional[Tensor], name: str) -> None:
    if similarity.dim() != 2 or similarity.shape != class_weights.shape:
        raise ValueError(f"{name}: similarity and class_weights must both be [N, C] with equal shapes, got "
                         f"{tuple(similarity.shape)} and {tuple(class_weights.shape)}.")
    if token_weights is not None and token_weights.shape != similarity.shape[:1]:
        raise ValueError(f"{name}: token_weights must be [N={similarity.shape[0]}], got {tuple(token_weights.shape)}.")


def _token_mean(per_token: Tensor, token_weights: Optional[Tensor]) -> Tensor:
    """Mean over tokens, optionally weighted (e.g. a 0/1 validity mask); 0 when there is no (weighted) token.
    Weighting instead of boolean indexing keeps shapes static (no host synchronisation on GPUs)."""
    if token_weights is None:
        return per_token.mean() if per_token.numel() else per_token.sum() * 0.0
    token_weights = token_weights.to(per_token.dtype)
    return (per_token * token_weights).sum() / token_weights.sum().clamp_min(1e-6)


def embedding_to_proxy_loss(mean_similarity: Tensor, class_weights: Tensor,
                            token_weights: Optional[Tensor] = None) -> Tensor:
    """L_E2P = mean_n Σ_c w[n,c]·(1 − G[n,c]). ``mean_similarity`` G and ``class_weights`` w: [N, C];
    ``token_weights``: optional [N] weights of the mean over tokens. Returns a scalar (0 when N = 0)."""
    _check_pair(mean_similarity, class_weights, token_weights, "embedding_to_proxy_loss")
    return _token_mean((class_weights * (1.0 - mean_similarity)).sum(dim=1), token_weights)


def proxy_to_embedding_loss(mean_sample_similarity: Tensor, class_weights: Tensor,
                            token_weights: Optional[Tensor] = None) -> Tensor:
    """L_P2E = mean_{n,c} exp(−(E⁺ − E⁻)) with E⁺ = w·Ā and E⁻ = (1 − w)·Ā. Ā and w: [N, C] → scalar."""
    _check_pair(mean_sample_similarity, class_weights, token_weights, "proxy_to_embedding_loss")
    positive = class_weights * mean_sample_similarity  # E⁺
    negative = (1.0 - class_weights) * mean_sample_similarity  # E⁻: the same class, weighted by 1 − w (spec §1.6.3)
    return _token_mean(torch.exp(-(positive - negative)).mean(dim=1), token_weights)


def proxy_distance_loss(mean_sample_similarity: Tensor, class_weights: Tensor,
                        token_weights: Optional[Tensor] = None) -> Tensor:
    """L_dist = mean_n Σ_c w[n,c]·(1 − Ā[n,c]). Ā and w: [N, C] → scalar."""
    _check_pair(mean_sample_similarity, class_weights, token_weights, "proxy_distance_loss")
    return _token_mean((class_weights * (1.0 - mean_sample_similarity)).sum(dim=1), token_weights)


def symmetric_kl_loss(log_p: Tensor, log_q: Tensor, reduction: str = "mean") -> Tensor:
    """KL(p ‖ q) + KL(q ‖ p) between two class distributions per token.

    Args:
        log_p, log_q: [B, L, C] log-probabilities, each normalised over C.
        reduction: ``"mean"`` (default): sum over C, mean over the B·L tokens, so the scale does not grow with L.
            ``"batchmean"``: sum over L and C, divided by B (the released code's ``F.kl_div(..., 'batchmean')``).
    """
    if log_p.shape != log_q.shape or log_p.dim() != 3:
        raise ValueError(f"log_p and log_q must both be [B, L, C], got {tuple(log_p.shape)} and {tuple(log_q.shape)}.")
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"reduction must be one of {KL_REDUCTIONS}, got {reduction!r}.")
    # KL(p‖q) + KL(q‖p) = Σ_c (p − q)(log p − log q): one pass, exact with log-probabilities.
    per_token = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1)
    if reduction == "mean":
        return per_token.mean()
    return per_token.sum() / log_p.shape[0]


def class_anchors(anchor_embeddings: Tensor, anchor_classes: Tensor, num_classes: int,
                  anchor_weights: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
    """Semantic anchors anchor_c = n(mean_{i: y_i = c} u_i), computed without gradient.

    Args:
        anchor_embeddings: u_i, [N, D] embeddings of labeled class regions.
        anchor_classes: y_i, [N] integer class of each row, in [0, C).
        num_classes: C.
        anchor_weights: optional [N] row weights (0 drops a row, e.g. a class absent from an image).
    Returns:
        anchors [C, D] (rows of absent classes are 0) and present [C] bool.
    """
    if anchor_embeddings.dim() != 2 or anchor_classes.shape != (anchor_embeddings.shape[0],):
        raise ValueError(f"anchor_embeddings must be [N, D] and anchor_classes [N], got "
                         f"{tuple(anchor_embeddings.shape)} and {tuple(anchor_classes.shape)}.")
    if anchor_weights is not None and anchor_weights.shape != anchor_classes.shape:
        raise ValueError(f"anchor_weights must be [N={anchor_classes.shape[0]}], got {tuple(anchor_weights.shape)}.")
    if not anchor_classes.is_cuda and anchor_classes.numel() and (
            int(anchor_classes.min()) < 0 or int(anchor_classes.max()) >= num_classes):  # no sync check on GPUs
        raise ValueError(f"anchor_classes must lie in [0, {num_classes}).")
    with torch.no_grad():
        embeddings = anchor_embeddings.detach().float()
        weights = (torch.ones_like(embeddings[:, 0]) if anchor_weights is None
                   else anchor_weights.detach().to(embeddings.dtype))
        sums = torch.zeros(num_classes, embeddings.shape[1], device=embeddings.device, dtype=embeddings.dtype)
        sums.index_add_(0, anchor_classes.long(), embeddings * weights.unsqueeze(1))
        counts = torch.zeros(num_classes, device=embeddings.device, dtype=embeddings.dtype)
        counts.index_add_(0, anchor_classes.long(), weights)
        present = counts > 0
        anchors = F.normalize(sums / counts.clamp_min(1e-12).unsqueeze(1), dim=1)
    return anchors, present


def semantic_anchor_loss(proxy_means: Tensor, anchor_embeddings: Tensor, anchor_classes: Tensor,
                         anchor_weights: Optional[Tensor] = None) -> Tensor:
    """L_SAC = mean_{c present} (1 − ⟨anchor_c, μ̂_c⟩). The anchors are detached, so only μ gets a gradient.

    Args:
        proxy_means: μ, [C, D].
        anchor_embeddings: u_i, [N, D] (embeddings of labeled class regions; any gradient they carry is dropped).
        anchor_classes: y_i, [N].
        anchor_weights: optional [N] row weights (0 = ignore the row).
    Returns a scalar; 0 (attached to μ) when no class is present.
    """
    if proxy_means.dim() != 2 or anchor_embeddings.dim() != 2 or proxy_means.shape[1] != anchor_embeddings.shape[1]:
        raise ValueError(f"proxy_means must be [C, D] and anchor_embeddings [N, D] with equal D, got "
                         f"{tuple(proxy_means.shape)} and {tuple(anchor_embeddings.shape)}.")
    anchors, present = class_anchors(anchor_embeddings, anchor_classes, proxy_means.shape[0], anchor_weights)
    cosine = (F.normalize(proxy_means, dim=1) * anchors.to(proxy_means.dtype)).sum(dim=1)
    present = present.to(proxy_means.dtype)
    # masked mean without branching on the data (no host synchronisation)
    return ((1.0 - cosine) * present).sum() / present.sum().clamp_min(1.0)
