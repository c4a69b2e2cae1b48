"""SCDL: Semantic Class Distribution Learning (arXiv 2603.05202), as a pure-PyTorch module on token sequences.

The module knows nothing about images or nnU-Net: it maps token features x [B, L, D_x] to embeddings, soft
assignments and priors, and computes the loss terms from per-token class weights that the caller provides
(``nnunetv2_scdl.networks.scdl_unet`` does the spatial part for nnU-Net's U-Nets).

Forward (paper symbols):
  z = MLP(x), ẑ = z/‖z‖                                                   [B, L, D]
  p_{c,s} = μ_c + σ_c ⊙ ε_{c,s}, σ_c = softplus(ρ_c), p̂ = p/‖p‖           [C, S, D]
  G[b,l,c] = ⟨ẑ, μ̂_c⟩,  Ā[b,l,c] = mean_s ⟨ẑ, p̂_{c,s}⟩                    [B, L, C]
  P_e2p = softmax_c(G/τ_e2p); P_p2e = softmax_{tokens|classes}(G/τ_p2e); Q ∝ P_e2p ⊙ P_p2e (over c)
  priors = [r^dist; r^center; r^tok]                                      [B, L, 3D]
Losses (``loss_terms``): CDBA (E2P and P2E, see ``scdl.losses``) on labeled tokens (w = GT proportions) and on
unlabeled tokens (w = stopgrad(Q) or pseudo-label proportions), and SAC on per-class anchors of the labeled images.
``variant`` ("paper", default, or "released", see ``scdl.variants``) selects the CDBA form, the P2E assignment and
the proxy initialisation. All of it runs in fp32 with autocast disabled (optionally the projection MLP alone follows
the caller's autocast, see ``projection_in_autocast``). The loss path makes no host synchronisation on GPUs: masks
are applied as weights, never by boolean indexing.

Minimal use::

    scdl = SCDL(in_channels=32, num_classes=14)
    out = scdl(tokens)                                    # tokens [B, L, 32]
    terms, breakdown = scdl.loss_terms(out, n_labeled=2, labeled_weights=w_l, labeled_valid=v_l,
                                       anchor_features=f, anchor_classes=y)
    loss = sum(lam[k] * terms[k] for k in terms)
"""
from dataclasses import dataclass, fields
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nnunetv2_scdl.scdl.assignments import (P2E_SOFTMAX_CHOICES, e2p_log_assignment, joint_log_assignment,
                                            p2e_log_assignment)
from nnunetv2_scdl.scdl.losses import (embedding_to_proxy_loss, proxy_distance_loss, proxy_to_embedding_loss,
                                       semantic_anchor_loss, token_level_proxy_to_embedding_loss)
from nnunetv2_scdl.scdl.eval_cache import ParameterDerivedCache
from nnunetv2_scdl.scdl.priors import (PriorProjections, centre_similarity_prior, distribution_weighted_prior,
                                       token_sampled_prior)
from nnunetv2_scdl.scdl.projection import ProjectionMLP
from nnunetv2_scdl.scdl.proxies import ClassProxies
from nnunetv2_scdl.scdl.variants import get_variant

__all__ = ["SCDL", "SCDLOutput", "LOSS_TERM_NAMES", "concatenate_outputs", "no_weight_decay_parameters"]

LOSS_TERM_NAMES = ("cdba_labeled", "cdba_unlabeled", "sac")


@dataclass
class SCDLOutput:
    """What one SCDL forward produces (all fp32; B images, L tokens, C classes, D embedding dims)."""

    embeddings: Tensor  # z, [B, L, D]
    unit_embeddings: Tensor  # ẑ, [B, L, D]
    mean_similarity: Tensor  # G, [B, L, C]
    mean_sample_similarity: Optional[Tensor]  # Ā, [B, L, C]; None when the forward skipped the losses' inputs
    log_e2p: Tensor  # log P_e2p, [B, L, C], normalised over C
    log_p2e: Tensor  # log P_p2e, [B, L, C], normalised over tokens (default) or over C
    log_joint: Tensor  # log Q, [B, L, C], normalised over C
    priors: Optional[Tensor]  # [r^dist; r^center; r^tok], [B, L, 3D]; None when not requested


def concatenate_outputs(outputs: Sequence[SCDLOutput]) -> SCDLOutput:
    """Several SCDL forwards' outputs as one batch, images in the given order (e.g. labeled tokens from one decoder
    and unlabeled tokens from another, through the same SCDL). A field is None if it is None in any output."""
    if not outputs:
        raise ValueError("concatenate_outputs needs at least one SCDLOutput.")

    def joined(name: str) -> Optional[Tensor]:
        tensors = [getattr(output, name) for output in outputs]
        return None if any(t is None for t in tensors) else torch.cat(tensors)

    return SCDLOutput(**{field.name: joined(field.name) for field in fields(SCDLOutput)})


class SCDL(nn.Module):
    """Class distribution bidirectional alignment (CDBA), semantic anchor constraint (SAC) and proxy priors.

    Args (the released code's values unless noted):
        in_channels: D_x, channels of the token features.
        num_classes: C, background included (at least 2).
        embed_dim: D = 256.
        num_samples: S = 50 proxy samples per class for Ā (the CDBA losses; cheap at any S, see ``forward``).
        num_prior_samples: S_prior, how many of those samples r^dist uses; None = min(16, S) (its cost is
            O(L·C·S_prior·D); our choice, for the cost bound).
        num_embedding_samples: E = 2 perturbed samples per token for r^tok (train mode only).
        tau_e2p: τ_e2p = 0.2 (also the temperature of r^dist's sample weights).
        tau_p2e: τ_p2e = 0.2.
        variant: "paper" (default) or "released": the CDBA form, the P2E assignment and the proxy initialisation
            (``scdl.variants``). The four arguments below override single details of it (for experiments).
        p2e_softmax: "tokens" or "classes" (``scdl.assignments``); None = the variant's.
        e2p_weight: weight of L_E2P inside CDBA; None = the variant's (paper 1, released 0).
        dist_weight: weight of L_dist inside CDBA; None = the variant's (paper 0, released 0.1).
        initial_sigma: σ_c at initialisation (≤ 0: released Xavier-uniform ρ); None = the variant's.
        projection_hidden_dim: hidden width of the projection MLP; None = the variant's (paper D, released 2·D).
        dropout: MLP dropout = 0.2.
        sigma_emb_init: initial σ_emb = 0.05 of the token-sampled prior.
        projection_in_autocast: run the projection MLP under the caller's autocast (fp16/bf16 matmuls) instead of
            fp32. Default False: all of SCDL is fp32. The distribution math (normalisation, softmax, exp) is fp32
            either way.
        prior_channels: output channels of each prior projection (one per injection site); empty = no projections.
        eval_noise_seed: seed of the fixed proxy noise used in eval mode.
        cdba_grad_to_tokens: whether the CDBA losses' gradient reaches the token features (and through them the host
            network). False: the losses see a second projection of the detached tokens, so CDBA trains the MLP and
            the proxies only. Default True (the paper and the released code).
        prior_grad_to_proxies: whether the priors pass the host loss's gradient on to μ and ρ. False: the priors
            read detached proxies, so only CDBA and SAC move them. Default True (the paper and the released code).
        prior_temperature: τ_prior, the temperature of the priors' class weighting: r^dist's sample weights and the
            Q that weights r^center (P_e2p and P_p2e both at τ_prior). A larger τ_prior spreads a token's prior
            weight over more classes instead of saturating on one. None (default): the losses' temperatures, i.e.
            r^dist at τ_e2p and r^center with the losses' Q (the paper and the released code).
    """

    def __init__(self, in_channels: int, num_classes: int, embed_dim: int = 256, num_samples: int = 50,
                 num_prior_samples: Optional[int] = None, num_embedding_samples: int = 2, tau_e2p: float = 0.2,
                 tau_p2e: float = 0.2, variant: str = "paper", p2e_softmax: Optional[str] = None,
                 e2p_weight: Optional[float] = None, dist_weight: Optional[float] = None,
                 initial_sigma: Optional[float] = None, projection_hidden_dim: Optional[int] = None,
                 dropout: float = 0.2, sigma_emb_init: float = 0.05,
                 projection_in_autocast: bool = False, prior_channels: Sequence[int] = (), eval_noise_seed: int = 0,
                 cdba_grad_to_tokens: bool = True, prior_grad_to_proxies: bool = True,
                 prior_temperature: Optional[float] = None):
        super().__init__()
        if num_samples < 1 or num_embedding_samples < 0:
            raise ValueError(f"num_samples must be >= 1 and num_embedding_samples >= 0, got {num_samples} and "
                             f"{num_embedding_samples}.")
        if num_prior_samples is None:
            num_prior_samples = min(16, num_samples)
        if not 1 <= num_prior_samples <= num_samples:
            raise ValueError(f"num_prior_samples must lie in [1, num_samples={num_samples}], got {num_prior_samples}.")
        if tau_e2p <= 0 or tau_p2e <= 0 or (prior_temperature is not None and prior_temperature <= 0):
            raise ValueError(f"temperatures must be positive, got τ_e2p={tau_e2p}, τ_p2e={tau_p2e}, "
                             f"τ_prior={prior_temperature}.")
        settings = get_variant(variant)
        p2e_softmax = settings.p2e_softmax if p2e_softmax is None else p2e_softmax
        if p2e_softmax not in P2E_SOFTMAX_CHOICES:
            raise ValueError(f"p2e_softmax must be one of {P2E_SOFTMAX_CHOICES}, got {p2e_softmax!r}.")
        self.variant = variant
        self.p2e_level = settings.p2e_level
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.num_samples = num_samples
        self.num_prior_samples = num_prior_samples
        self.projection_in_autocast = projection_in_autocast
        self.num_embedding_samples = num_embedding_samples
        self.tau_e2p = float(tau_e2p)
        self.tau_p2e = float(tau_p2e)
        self.e2p_weight = float(settings.e2p_weight if e2p_weight is None else e2p_weight)
        self.dist_weight = float(settings.dist_weight if dist_weight is None else dist_weight)
        self.p2e_softmax = p2e_softmax
        self.cdba_grad_to_tokens = bool(cdba_grad_to_tokens)
        self.prior_grad_to_proxies = bool(prior_grad_to_proxies)
        self.prior_temperature = None if prior_temperature is None else float(prior_temperature)

        if projection_hidden_dim is None:
            projection_hidden_dim = settings.projection_hidden_factor * embed_dim
        self.projection = ProjectionMLP(in_channels, embed_dim, hidden_dim=projection_hidden_dim, dropout=dropout)
        self.class_proxies = ClassProxies(num_classes, embed_dim, eval_samples=num_samples,
                                          eval_noise_seed=eval_noise_seed,
                                          initial_sigma=settings.initial_sigma if initial_sigma is None
                                          else initial_sigma)
        self.sigma_emb = nn.Parameter(torch.full((embed_dim,), float(sigma_emb_init)))
        self.prior_projections = PriorProjections(3 * embed_dim, prior_channels)
        self.eval_cache = ParameterDerivedCache()

    # ------------------------------------------------------------------------------------------------- forward
    def proxy_geometry(self, with_mean_sample: bool = True) -> Tuple[Tensor, Optional[Tensor], Tensor]:
        """μ̂ [C, D], the mean unit sample mean_s p̂_{c,s} [C, D] and the unit samples r^dist uses [C, S_prior, D].

        In eval mode without autograd they depend only on μ and ρ (the eval noise is fixed), so they are cached
        until those change. There, ``with_mean_sample=False`` (the forward without losses, i.e. inference) returns
        None for the mean and computes only the S_prior samples r^dist needs: the same values as the first S_prior
        of all S, since eval samples are the fixed noise rows. Training always draws all S samples at once.
        """
        proxies = self.class_proxies
        cached = not self.training and not torch.is_grad_enabled()
        if cached and not with_mean_sample:
            def compute_prior_geometry():
                return (F.normalize(proxies.mu, dim=-1), None,
                        F.normalize(proxies.sample(self.num_prior_samples), dim=-1))

            return self.eval_cache.get("prior_geometry", (proxies.mu, proxies.rho), compute_prior_geometry,
                                       enabled=True)

        def compute():
            unit_samples = F.normalize(proxies.sample(self.num_samples), dim=-1)  # p̂ [C, S, D]
            return (F.normalize(proxies.mu, dim=-1), unit_samples.mean(dim=1),
                    unit_samples[:, :self.num_prior_samples])

        return self.eval_cache.get("proxy_geometry", (proxies.mu, proxies.rho), compute, enabled=cached)

    def embed(self, tokens: Tensor) -> Tensor:
        """z = MLP(x) as fp32 ([B, L, D_x] → [B, L, D]); the MLP runs under the caller's autocast only with
        ``projection_in_autocast``."""
        if self.projection_in_autocast:
            return self.projection(tokens).float()
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            return self.projection(tokens.float())

    def log_assignments(self, mean_similarity: Tensor, tau_e2p: Optional[float] = None,
                        tau_p2e: Optional[float] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """log P_e2p, log P_p2e and log Q from G [B, L, C] (each [B, L, C]); temperatures default to τ_e2p, τ_p2e."""
        log_e2p = e2p_log_assignment(mean_similarity, self.tau_e2p if tau_e2p is None else tau_e2p)
        log_p2e = p2e_log_assignment(mean_similarity, self.tau_p2e if tau_p2e is None else tau_p2e,
                                     over=self.p2e_softmax)
        return log_e2p, log_p2e, joint_log_assignment(log_e2p, log_p2e)

    def class_weighted_priors(self, unit_z: Tensor, unit_mu: Tensor, prior_samples: Tensor,
                              tau: Optional[float] = None, joint: Optional[Tensor] = None
                              ) -> Tuple[Tensor, Tensor, Tensor]:
        """r^dist and r^center [B, L, D] of unit embeddings ẑ [B, L, D], from μ̂ [C, D] and unit samples p̂
        [C, S_prior, D], and the Q [B, L, C] that weights r^center. The class weighting runs at ``tau`` (None:
        τ_prior, or the losses' temperatures when τ_prior is None). ``joint``: a Q of these ẑ and μ̂ at those
        temperatures to reuse instead of computing it."""
        tau = self.prior_temperature if tau is None else tau
        if joint is None:
            joint = self.log_assignments(unit_z @ unit_mu.transpose(0, 1), tau, tau)[2].exp()
        classes, samples = prior_samples.shape[:2]
        sample_similarity = (unit_z @ prior_samples.reshape(classes * samples, -1).transpose(0, 1)).view(
            *unit_z.shape[:2], classes, samples)
        dist = distribution_weighted_prior(sample_similarity, prior_samples, self.tau_e2p if tau is None else tau)
        return dist, centre_similarity_prior(joint, unit_mu), joint

    def forward(self, tokens: Tensor, compute_priors: bool = True, compute_losses: bool = True) -> SCDLOutput:
        """``tokens``: [B, L, D_x] token features → ``SCDLOutput``. Runs in fp32 with autocast disabled.

        ``compute_losses=False`` skips Ā (``mean_sample_similarity`` is then None), which only the losses read.
        In eval mode everything is deterministic: no dropout, fixed proxy noise, no token noise.
        """
        if tokens.dim() != 3 or tokens.shape[-1] != self.in_channels:
            raise ValueError(f"SCDL expects tokens [B, L, {self.in_channels}], got shape {tuple(tokens.shape)}.")
        z = self.embed(tokens)
        # the losses' view of the tokens: the same embeddings, or those of the detached tokens
        detach_tokens = compute_losses and not self.cdba_grad_to_tokens and torch.is_grad_enabled()
        loss_z = self.embed(tokens.detach()) if detach_tokens else z
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            unit_z = F.normalize(z, dim=-1)
            loss_unit_z = F.normalize(loss_z, dim=-1) if detach_tokens else unit_z
            unit_mu, mean_unit_sample, prior_samples = self.proxy_geometry(with_mean_sample=compute_losses)
            mean_similarity = loss_unit_z @ unit_mu.transpose(0, 1)  # G
            # Ā = mean_s ⟨ẑ, p̂_s⟩ = ⟨ẑ, mean_s p̂_s⟩: O(L·C·D) whatever S is.
            mean_sample_similarity = (loss_unit_z @ mean_unit_sample.transpose(0, 1)) if compute_losses else None
            log_e2p, log_p2e, log_joint = self.log_assignments(mean_similarity)
            priors = None
            if compute_priors:
                if not self.prior_grad_to_proxies:
                    unit_mu, prior_samples = unit_mu.detach(), prior_samples.detach()
                # the losses' Q serves r^center when the priors see the same ẑ, μ̂ and temperatures
                reuse_joint = not detach_tokens and self.prior_grad_to_proxies and self.prior_temperature is None
                prior_dist, prior_centre, _ = self.class_weighted_priors(
                    unit_z, unit_mu, prior_samples, joint=log_joint.exp() if reuse_joint else None)
                priors = torch.cat([
                    prior_dist,
                    prior_centre,
                    token_sampled_prior(z, self.sigma_emb, self.num_embedding_samples, stochastic=self.training),
                ], dim=-1)
        return SCDLOutput(z, unit_z, mean_similarity, mean_sample_similarity, log_e2p, log_p2e, log_joint, priors)

    # -------------------------------------------------------------------------------------------------- losses
    def cdba_loss(self, mean_similarity: Tensor, mean_sample_similarity: Tensor, class_weights: Tensor,
                  token_weights: Optional[Tensor] = None, present: Optional[Tensor] = None
                  ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """CDBA = e2p_weight·L_E2P + L_P2E + dist_weight·L_dist on N tokens. G, Ā, w: [N, C]; optional token
        weights [N] (e.g. a validity mask) and present classes [C] (class-level P2E only; None = Σ_n w > 0).
        Returns the total and its parts (a part with weight 0 is not computed)."""
        if self.p2e_level == "class":
            p2e = proxy_to_embedding_loss(mean_sample_similarity, class_weights, token_weights, present)
        else:
            p2e = token_level_proxy_to_embedding_loss(mean_sample_similarity, class_weights, token_weights)
        parts = {"p2e": p2e}
        total = p2e
        if self.e2p_weight:
            parts["e2p"] = embedding_to_proxy_loss(mean_similarity, class_weights, token_weights)
            total = total + self.e2p_weight * parts["e2p"]
        if self.dist_weight:
            parts["dist"] = proxy_distance_loss(mean_sample_similarity, class_weights, token_weights)
            total = total + self.dist_weight * parts["dist"]
        return total, parts

    def anchor_embeddings(self, anchor_features: Tensor) -> Tensor:
        """u_i = n(MLP(f_i)) for class-region features f_i [N, D_x]: deterministic (no dropout, whatever the
        mode) and without gradient, since the anchors are detached."""
        with torch.no_grad(), torch.autocast(device_type=anchor_features.device.type, enabled=False):
            return F.normalize(self.projection(anchor_features.float(), deterministic=True), dim=-1)

    def semantic_anchor_loss(self, anchor_features: Tensor, anchor_classes: Tensor,
                             anchor_weights: Optional[Tensor] = None) -> Tensor:
        """L_SAC from class-region features f_i [N, D_x] with classes y_i [N] (optional row weights [N]);
        gradient reaches μ only."""
        return semantic_anchor_loss(self.class_proxies.mu, self.anchor_embeddings(anchor_features), anchor_classes,
                                    anchor_weights)

    def loss_terms(self, output: SCDLOutput, n_labeled: int, labeled_weights: Optional[Tensor] = None,
                   labeled_valid: Optional[Tensor] = None, unlabeled_weights: Optional[Tensor] = None,
                   unlabeled_valid: Optional[Tensor] = None, anchor_features: Optional[Tensor] = None,
                   anchor_classes: Optional[Tensor] = None, anchor_weights: Optional[Tensor] = None
                   ) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
        """The named SCDL loss terms for a batch whose first ``n_labeled`` images are labeled.

        Args:
            output: the ``SCDLOutput`` of the whole batch (B images).
            n_labeled: number of labeled images (the first ones), 0 ≤ n_labeled ≤ B.
            labeled_weights: [n_labeled, L, C] GT class proportions per token (required if n_labeled > 0).
            labeled_valid: [n_labeled, L] bool, tokens to use (e.g. not fully ignored); None = all.
            unlabeled_weights: [B − n_labeled, L, C] pseudo-label proportions; None = stopgrad(Q) (default).
            unlabeled_valid: [B − n_labeled, L] bool; None = all.
            anchor_features, anchor_classes: SAC rows f_i [N, D_x] and their classes [N]; None = SAC is 0.
            anchor_weights: optional [N] weights of the SAC rows (0 = absent; avoids data-dependent shapes).
        Returns:
            terms: {'cdba_labeled', 'cdba_unlabeled', 'sac'} scalars to weight and add to the host loss;
            breakdown: detached diagnostics (the E2P/P2E/dist parts, token counts).
        The present classes of class-level P2E: on labeled tokens the classes of the ground truth; on unlabeled
        tokens with pseudo-label weights the pseudo-labels' classes, and with the soft default stopgrad(Q) the
        classes that are the most likely class of at least one valid token (every class has some soft mass, and
        an absent class must not be made to claim tokens).
        """
        batch, num_tokens, num_classes = output.mean_similarity.shape
        if output.mean_sample_similarity is None:
            raise ValueError("this SCDLOutput was computed with compute_losses=False (no Ā); run the forward with "
                             "compute_losses=True to compute the loss terms.")
        if not 0 <= n_labeled <= batch:
            raise ValueError(f"n_labeled must lie in [0, {batch}], got {n_labeled}.")
        zero = output.unit_embeddings.sum() * 0.0  # keeps every term attached to the graph
        breakdown: Dict[str, Tensor] = {}
        terms: Dict[str, Tensor] = {}

        def cdba(start: int, stop: int, weights: Tensor, valid: Optional[Tensor], name: str,
                 present: Optional[Tensor] = None) -> Tensor:
            count = stop - start
            if weights.shape != (count, num_tokens, num_classes):
                raise ValueError(f"{name}_weights must be [{count}, {num_tokens}, {num_classes}], got "
                                 f"{tuple(weights.shape)}.")
            if valid is not None and valid.shape != (count, num_tokens):
                raise ValueError(f"{name}_valid must be [{count}, {num_tokens}], got {tuple(valid.shape)}.")
            g = output.mean_similarity[start:stop].reshape(-1, num_classes)
            a = output.mean_sample_similarity[start:stop].reshape(-1, num_classes)
            token_weights = None if valid is None else valid.reshape(-1).to(g.dtype)
            total, parts = self.cdba_loss(g, a, weights.reshape(-1, num_classes).to(g.dtype), token_weights,
                                          present)
            for key, value in parts.items():
                breakdown[f"{key}_{name}"] = value.detach()
            # torch.full, not a tensor from a Python number: that would be a blocking host→device copy
            breakdown[f"tokens_{name}"] = (torch.full((), float(g.shape[0]), device=g.device) if valid is None
                                           else valid.sum().detach().float())
            return total

        if n_labeled > 0:
            if labeled_weights is None:
                raise ValueError("labeled_weights is required when n_labeled > 0.")
            terms["cdba_labeled"] = cdba(0, n_labeled, labeled_weights, labeled_valid, "labeled")
        else:
            terms["cdba_labeled"] = zero
        if n_labeled < batch:
            present = None
            if unlabeled_weights is None:
                log_joint = output.log_joint[n_labeled:].detach()
                unlabeled_weights = log_joint.exp()
                winners = F.one_hot(log_joint.argmax(dim=-1), num_classes)  # [B_u, L, C]
                if unlabeled_valid is not None:
                    winners = winners * unlabeled_valid.unsqueeze(-1)
                present = winners.flatten(0, 1).sum(dim=0) > 0
            terms["cdba_unlabeled"] = cdba(n_labeled, batch, unlabeled_weights, unlabeled_valid, "unlabeled",
                                           present)
        else:
            terms["cdba_unlabeled"] = zero
        if anchor_features is not None and anchor_classes is not None and anchor_features.shape[0] > 0:
            terms["sac"] = self.semantic_anchor_loss(anchor_features, anchor_classes, anchor_weights)
        else:
            terms["sac"] = self.class_proxies.mu.sum() * 0.0
        return terms, breakdown


def no_weight_decay_parameters(module: nn.Module) -> List[nn.Parameter]:
    """The distribution parameters (μ, ρ, σ_emb) of every SCDL inside ``module``. Optimisers exempt them from weight
    decay: decay would pull the proxy means towards the origin and the scales towards σ = softplus(0)."""
    parameters = []
    for submodule in module.modules():
        if isinstance(submodule, SCDL):
            parameters += [submodule.class_proxies.mu, submodule.class_proxies.rho, submodule.sigma_emb]
    return parameters
