"""SCDL loss terms as pure functions (paper: CDBA and SAC).

Notation (per token n and class c):
- w[n, c] ∈ [0, 1], Σ_c w = 1: the token's class weights. Labeled tokens: the ground-truth class proportions inside
  the token (area-pooled one-hot). Unlabeled tokens: the detached joint assignment stopgrad(Q), or pseudo-label
  proportions.
- G[n, c] = ⟨ẑ_n, μ̂_c⟩: cosine similarity to the proxy mean.
- Ā[n, c] = (1/S) Σ_s ⟨ẑ_n, p̂_{c,s}⟩: mean cosine similarity to the S samples of proxy c.

CDBA (class distribution bidirectional alignment):
- E2P  L_E2P = mean_n Σ_c w[n,c]·(1 − G[n,c])                 pulls each embedding towards its classes' proxy means.
- P2E, class level (the paper's form, ``proxy_to_embedding_loss``):
       E_c⁺ = Σ_n w[n,c]·Ā[n,c] / Σ_n w[n,c],   E_c⁻ = Σ_n (1 − w[n,c])·Ā[n,c] / Σ_n (1 − w[n,c]),
       L_P2E = (1/|C_p|) Σ_{c ∈ C_p} exp(−(E_c⁺ − E_c⁻)),  C_p = the classes present in the tokens.
  Each proxy is drawn towards the tokens it owns and away from the others, and every present class counts equally,
  however few tokens it has: background tokens cannot outvote a small organ.
- P2E, token level (the released code's form, ``token_level_proxy_to_embedding_loss``):
       L = mean_n mean_c exp(−(2w[n,c] − 1)·Ā[n,c]), value in [e⁻¹, e]; dominated by the most frequent class.
- dist L_dist = mean_n Σ_c w[n,c]·(1 − Ā[n,c])                 the released code's sample-based distance term.
SAC (semantic anchor constraint): anchor_c = n(mean of the labeled embeddings of class c), **detached**;
L_SAC = mean_c (1 − ⟨anchor_c, μ̂_c⟩) over the classes present. Its gradient reaches μ only.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["embedding_to_proxy_loss", "proxy_to_embedding_loss", "token_level_proxy_to_embedding_loss",
           "proxy_distance_loss", "class_anchors", "semantic_anchor_loss"]


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
                            token_weights: Optional[Tensor] = None, present: Optional[Tensor] = None) -> Tensor:
    """Class-level L_P2E = (1/|C_p|) Σ_{c ∈ C_p} exp(−(E_c⁺ − E_c⁻)) (see the module docstring).

    Args:
        mean_sample_similarity: Ā, [N, C].
        class_weights: w, [N, C].
        token_weights: optional [N] weights of the tokens (e.g. a 0/1 validity mask); they scale w and 1 − w.
        present: optional [C] bool, the classes C_p to average over. None: the classes with Σ_n w[n,c] > 0.
    Returns a scalar; 0 (attached to the graph) when no class is present. A class that owns every token has no
    negatives; its E_c⁻ is then 0.
    """
    _check_pair(mean_sample_similarity, class_weights, token_weights, "proxy_to_embedding_loss")
    num_classes = class_weights.shape[1]
    if present is not None and present.shape != (num_classes,):
        raise ValueError(f"proxy_to_embedding_loss: present must be [C={num_classes}], got {tuple(present.shape)}.")
    positive_weights = class_weights
    negative_weights = 1.0 - class_weights
    if token_weights is not None:
        token_weights = token_weights.to(class_weights.dtype).unsqueeze(1)
        positive_weights = positive_weights * token_weights
        negative_weights = negative_weights * token_weights
    positive_mass = positive_weights.sum(dim=0)
    evidence_positive = (positive_weights * mean_sample_similarity).sum(dim=0) / positive_mass.clamp_min(1e-6)
    evidence_negative = ((negative_weights * mean_sample_similarity).sum(dim=0)
                         / negative_weights.sum(dim=0).clamp_min(1e-6))
    if present is None:
        present = positive_mass > 0
    present = present.to(mean_sample_similarity.dtype)
    per_class = torch.exp(-(evidence_positive - evidence_negative))
    # a masked mean, not boolean indexing: static shapes, no host synchronisation on GPUs
    return (per_class * present).sum() / present.sum().clamp_min(1.0)


def token_level_proxy_to_embedding_loss(mean_sample_similarity: Tensor, class_weights: Tensor,
                                        token_weights: Optional[Tensor] = None) -> Tensor:
    """The released code's per-token P2E: mean_{n,c} exp(−(E⁺ − E⁻)) with E⁺ = w·Ā and E⁻ = (1 − w)·Ā, where the
    "negative" is the same class weighted by 1 − w. Ā and w: [N, C] → scalar in [e⁻¹, e]."""
    _check_pair(mean_sample_similarity, class_weights, token_weights, "token_level_proxy_to_embedding_loss")
    positive = class_weights * mean_sample_similarity  # E⁺
    negative = (1.0 - class_weights) * mean_sample_similarity  # E⁻
    return _token_mean(torch.exp(-(positive - negative)).mean(dim=1), token_weights)


def proxy_distance_loss(mean_sample_similarity: Tensor, class_weights: Tensor,
                        token_weights: Optional[Tensor] = None) -> Tensor:
    """L_dist = mean_n Σ_c w[n,c]·(1 − Ā[n,c]). Ā and w: [N, C] → scalar."""
    _check_pair(mean_sample_similarity, class_weights, token_weights, "proxy_distance_loss")
    return _token_mean((class_weights * (1.0 - mean_sample_similarity)).sum(dim=1), token_weights)


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
