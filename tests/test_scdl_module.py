"""The pure SCDL module: shapes, assignments, priors, loss-term plumbing, determinism, gradients, fp16."""
import math

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_scdl.scdl.assignments import (e2p_log_assignment, joint_log_assignment, p2e_log_assignment)
from nnunetv2_scdl.scdl.module import LOSS_TERM_NAMES, SCDL
from nnunetv2_scdl.scdl.priors import (PriorProjections, centre_similarity_prior, distribution_weighted_prior,
                                       token_sampled_prior)
from nnunetv2_scdl.scdl.proxies import ClassProxies
from nnunetv2_scdl.scdl.variants import PAPER_INITIAL_SIGMA


def small_scdl(**kwargs):
    options = dict(in_channels=6, num_classes=3, embed_dim=8, num_samples=4)
    options.update(kwargs)
    return SCDL(**options)


def test_forward_shapes_and_fp32():
    torch.manual_seed(0)
    scdl = small_scdl()
    out = scdl(torch.randn(2, 10, 6))
    assert out.embeddings.shape == out.unit_embeddings.shape == (2, 10, 8)
    for tensor in (out.mean_similarity, out.mean_sample_similarity, out.log_e2p, out.log_p2e, out.log_joint):
        assert tensor.shape == (2, 10, 3) and tensor.dtype == torch.float32
    assert out.priors.shape == (2, 10, 3 * 8)
    torch.testing.assert_close(out.unit_embeddings.norm(dim=-1), torch.ones(2, 10))
    # each prior block is a unit vector per token
    for block in out.priors.split(8, dim=-1):
        torch.testing.assert_close(block.norm(dim=-1), torch.ones(2, 10))


def test_input_validation():
    scdl = small_scdl()
    with pytest.raises(ValueError, match=r"\[B, L, 6\]"):
        scdl(torch.randn(2, 10, 5))
    with pytest.raises(ValueError, match="p2e_softmax"):
        small_scdl(p2e_softmax="voxels")
    with pytest.raises(ValueError, match="variant"):
        small_scdl(variant="sum")
    with pytest.raises(ValueError, match="at least 2 classes"):
        small_scdl(num_classes=1)


def test_p2e_softmax_over_tokens_vs_classes():
    g = torch.tensor([[[0.9, 0.1], [0.2, 0.3], [-0.5, 0.7]]])  # B=1, L=3, C=2
    tokens = p2e_log_assignment(g, 0.2, over="tokens").exp()
    torch.testing.assert_close(tokens.sum(dim=1), torch.ones(1, 2))  # each proxy distributes over tokens
    column = torch.exp(g[0, :, 0] / 0.2)
    torch.testing.assert_close(tokens[0, :, 0], column / column.sum())
    classes = p2e_log_assignment(g, 0.2, over="classes")
    # the released code's P2E equals E2P when τ_p2e = τ_e2p (so its symmetric KL between the two is 0)
    torch.testing.assert_close(classes, e2p_log_assignment(g, 0.2))


def test_joint_assignment_is_normalised_product():
    log_a = torch.log(torch.tensor([[[0.2, 0.8]]]))
    log_b = torch.log(torch.tensor([[[0.6, 0.1]]]))  # need not be normalised over classes
    q = joint_log_assignment(log_a, log_b).exp()
    expected = torch.tensor([0.12, 0.08]) / 0.2
    torch.testing.assert_close(q[0, 0], expected)


def test_variants_select_their_assignment_and_initialisation():
    paper, released = small_scdl(), small_scdl(variant="released")
    assert (paper.p2e_softmax, paper.p2e_level, paper.e2p_weight, paper.dist_weight) == ("tokens", "class", 1.0, 0.0)
    assert (released.p2e_softmax, released.p2e_level, released.e2p_weight, released.dist_weight) == \
        ("classes", "token", 0.0, 0.1)
    torch.testing.assert_close(paper.class_proxies.sigma, torch.full((3, 8), PAPER_INITIAL_SIGMA))
    assert released.class_proxies.sigma.mean().item() == pytest.approx(math.log(2), abs=0.05)  # softplus(≈0)
    # the projection MLP: D_x → H → H → D with H = D (paper) or 2·D (released)
    assert [layer.weight.shape for layer in paper.projection.layers if hasattr(layer, "weight")] == \
        [(8, 6), (8, 8), (8, 8)]
    assert [layer.weight.shape for layer in released.projection.layers if hasattr(layer, "weight")] == \
        [(16, 6), (16, 16), (8, 16)]
    # a single detail can still be overridden
    assert small_scdl(variant="released", p2e_softmax="tokens").p2e_softmax == "tokens"
    assert small_scdl(projection_hidden_dim=5).projection.layers[0].weight.shape == (5, 6)


def test_proxy_samples_correlate_with_their_own_mean_at_initialisation():
    torch.manual_seed(0)
    proxies = ClassProxies(14, 256, initial_sigma=PAPER_INITIAL_SIGMA)  # BTCV's C, the default D
    unit_samples = F.normalize(proxies.sample(50), dim=-1)  # [C, S, D]
    unit_mu = F.normalize(proxies.mu, dim=-1)
    cosines = torch.einsum("csd,kd->csk", unit_samples, unit_mu)  # sample of c vs mean of k
    own = cosines.diagonal(dim1=0, dim2=2)  # [S, C]
    assert own.min().item() > 0.9
    other = cosines.masked_fill(torch.eye(14, dtype=torch.bool)[:, None, :], -2).amax(dim=-1)  # best other class
    assert (own.T > other + 0.5).all()
    # with the released initialisation the noise (norm ≈ 11) drowns the mean (norm ≈ 1)
    released = ClassProxies(14, 256)
    released_own = torch.einsum("csd,cd->cs", F.normalize(released.sample(50), dim=-1),
                                F.normalize(released.mu, dim=-1))
    assert released_own.abs().mean().item() < 0.2


def test_centre_prior_of_one_hot_assignment_is_the_proxy_direction():
    unit_mu = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    q = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]])
    # the 50/50 mix: (0.5·[0.6, 0.8] + 0.5·[0, 1]) = [0.3, 0.9], normalised
    expected = torch.tensor([[[0.0, 1.0], [0.6, 0.8], [0.3 / math.sqrt(0.9), 0.9 / math.sqrt(0.9)]]])
    torch.testing.assert_close(centre_similarity_prior(q, unit_mu), expected)


def test_distribution_prior_weights_samples_by_similarity():
    samples = F.normalize(torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[-1.0, 0.0], [0.6, 0.8]]]), dim=-1)  # C=2, S=2
    z = torch.tensor([[[0.6, 0.8]]])
    sims = (z @ samples.reshape(4, 2).T).view(1, 1, 2, 2)
    # a cold temperature selects the most similar sample, p̂_{1,1} = [0.6, 0.8]
    torch.testing.assert_close(distribution_weighted_prior(sims, samples, 1e-3), z)
    # a hot temperature averages all samples uniformly
    uniform = F.normalize(samples.reshape(4, 2).mean(0), dim=-1)
    torch.testing.assert_close(distribution_weighted_prior(sims, samples, 1e6)[0, 0], uniform, atol=1e-4, rtol=0)


def test_token_prior_is_the_unit_embedding_without_noise_and_perturbed_with_it():
    z = torch.randn(1, 5, 8)
    torch.testing.assert_close(token_sampled_prior(z, torch.full((8,), 0.5), 2, stochastic=False),
                               F.normalize(z, dim=-1))
    torch.manual_seed(1)
    noisy = token_sampled_prior(z, torch.full((8,), 0.5), 2, stochastic=True)
    assert not torch.allclose(noisy, F.normalize(z, dim=-1))
    torch.testing.assert_close(noisy.norm(dim=-1), torch.ones(1, 5))


def test_proxy_sampling_uses_sigma_and_is_fixed_in_eval():
    proxies = ClassProxies(3, 4, eval_samples=6)
    noise = torch.randn(3, 2, 4)
    torch.testing.assert_close(proxies.sample(2, noise), proxies.mu[:, None] + F.softplus(proxies.rho)[:, None] * noise)
    proxies.eval()
    torch.testing.assert_close(proxies.sample(5), proxies.sample(5))
    proxies.train()
    assert not torch.allclose(proxies.sample(5), proxies.sample(5))
    assert "eval_noise" not in proxies.state_dict()  # regenerated from the seed, not stored
    torch.testing.assert_close(ClassProxies(3, 4, eval_samples=6).eval_noise, proxies.eval_noise)


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    torch.manual_seed(0)
    scdl = small_scdl()
    tokens = torch.randn(2, 10, 6)
    scdl.eval()
    a, b = scdl(tokens), scdl(tokens)
    assert torch.equal(a.priors, b.priors) and torch.equal(a.mean_sample_similarity, b.mean_sample_similarity)
    scdl.train()
    assert not torch.equal(scdl(tokens).priors, scdl(tokens).priors)


def test_inference_forward_gives_the_full_eval_forward_s_priors_bit_for_bit():
    """The inference forward (eval, no autograd, no losses) takes shortcuts: it computes only the S_prior proxy
    samples r^dist uses and takes r^tok = ẑ. Its priors must equal those of the full eval forward (all S samples,
    autograd on, nothing cached), written out here from the paper's formulas."""
    torch.manual_seed(0)
    scdl = small_scdl(num_samples=6, num_prior_samples=3, num_embedding_samples=2).eval()
    with torch.no_grad():
        scdl.class_proxies.rho.copy_(torch.randn_like(scdl.class_proxies.rho))  # σ_c differ per dimension
        scdl.sigma_emb.fill_(0.5)  # r^tok would change if noise were drawn
    tokens = torch.randn(2, 10, 6)
    with torch.no_grad():
        fast = scdl(tokens, compute_losses=False)
    full = scdl(tokens)
    for name in ("embeddings", "mean_similarity", "log_joint", "priors"):
        assert torch.equal(getattr(fast, name), getattr(full, name)), name
    unit_z = F.normalize(scdl.projection(tokens), dim=-1)
    unit_samples = F.normalize(scdl.class_proxies.mu.unsqueeze(1) + scdl.class_proxies.sigma.unsqueeze(1)
                               * scdl.class_proxies.eval_noise[:, :3], dim=-1)  # the first S_prior fixed samples
    similarity = torch.einsum("bld,csd->blcs", unit_z, unit_samples)
    expected = torch.cat([distribution_weighted_prior(similarity, unit_samples, scdl.tau_e2p),
                          centre_similarity_prior(full.log_joint.exp(), F.normalize(scdl.class_proxies.mu, dim=-1)),
                          unit_z], dim=-1)
    torch.testing.assert_close(fast.priors, expected)


def test_mean_sample_similarity_is_the_mean_over_all_samples():
    torch.manual_seed(0)
    scdl = small_scdl(num_samples=6, num_prior_samples=2).eval()
    tokens = torch.randn(2, 10, 6)
    out = scdl(tokens)
    unit_samples = F.normalize(scdl.class_proxies.sample(6), dim=-1)  # eval: the same fixed noise
    explicit = torch.einsum("bld,csd->blcs", out.unit_embeddings, unit_samples).mean(dim=-1)
    torch.testing.assert_close(out.mean_sample_similarity, explicit)
    with pytest.raises(ValueError, match="num_prior_samples"):
        small_scdl(num_samples=4, num_prior_samples=5)


def test_loss_terms_keys_labeled_unlabeled_split_and_gradients():
    torch.manual_seed(0)
    scdl = small_scdl()
    tokens = torch.randn(3, 10, 6, requires_grad=True)
    out = scdl(tokens)
    weights = F.one_hot(torch.randint(0, 3, (2, 10)), 3).float()
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[0, :4] = False
    terms, breakdown = scdl.loss_terms(out, 2, weights, valid, anchor_features=torch.randn(4, 6),
                                       anchor_classes=torch.tensor([0, 1, 2, 1]))
    assert tuple(terms) == LOSS_TERM_NAMES
    assert breakdown["tokens_labeled"].item() == 16 and breakdown["tokens_unlabeled"].item() == 10
    # the labeled term equals the CDBA loss on exactly the valid labeled tokens
    expected, _ = scdl.cdba_loss(out.mean_similarity[:2][valid], out.mean_sample_similarity[:2][valid],
                                 weights[valid])
    assert terms["cdba_labeled"].item() == pytest.approx(expected.item(), abs=1e-6)
    # unlabeled weights default to the detached joint assignment, over the classes that win at least one token
    q = out.log_joint[2:].exp().reshape(-1, 3)
    present = torch.zeros(3, dtype=torch.bool)
    present[q.argmax(dim=1)] = True
    expected_u, _ = scdl.cdba_loss(out.mean_similarity[2:].reshape(-1, 3),
                                   out.mean_sample_similarity[2:].reshape(-1, 3), q, present=present)
    assert terms["cdba_unlabeled"].item() == pytest.approx(expected_u.item(), abs=1e-6)
    # the labeled term reaches the tokens of labeled images only
    tokens.grad = None
    terms["cdba_labeled"].backward(retain_graph=True)
    assert torch.count_nonzero(tokens.grad[2]) == 0 and torch.count_nonzero(tokens.grad[0]) > 0
    assert torch.count_nonzero(tokens.grad[0, :4]) == 0  # invalid tokens are skipped
    # the unlabeled term still trains z and μ
    scdl.zero_grad()
    terms["cdba_unlabeled"].backward()
    assert scdl.class_proxies.mu.grad is not None and scdl.projection.layers[0].weight.grad is not None


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_unlabeled_weights_are_detached(variant):
    """The gradient of the unlabeled term equals that of the same loss with stopgrad(Q) weights, and differs from
    the one with Q left attached (so removing the detach would fail this test)."""
    torch.manual_seed(0)
    scdl = small_scdl(variant=variant, dropout=0.0).eval()  # deterministic forward: three identical passes
    tokens = torch.randn(2, 10, 6)

    def token_gradient(weights_of):
        x = tokens.clone().requires_grad_()
        out = scdl(x)
        if weights_of is None:
            loss = scdl.loss_terms(out, 0)[0]["cdba_unlabeled"]
        else:
            weights, present = weights_of(out)
            loss, _ = scdl.cdba_loss(out.mean_similarity.reshape(-1, 3), out.mean_sample_similarity.reshape(-1, 3),
                                     weights.reshape(-1, 3), present=present)
        loss.backward()
        return x.grad

    def present_of(out):
        present = torch.zeros(3, dtype=torch.bool)
        present[out.log_joint.argmax(dim=-1).reshape(-1)] = True
        return present

    module = token_gradient(None)
    detached = token_gradient(lambda out: (out.log_joint.detach().exp(), present_of(out)))
    attached = token_gradient(lambda out: (out.log_joint.exp(), present_of(out)))
    torch.testing.assert_close(module, detached)
    assert not torch.allclose(module, attached, atol=1e-6)


def _gradients(scdl, tokens, loss_of):
    """Gradients of loss_of(output) with respect to the tokens, μ and the MLP's first weight (zeros where none)."""
    tokens = tokens.clone().requires_grad_()
    scdl.zero_grad()
    loss_of(scdl(tokens)).backward()
    first = scdl.projection.layers[0].weight
    return [torch.zeros_like(t) if t.grad is None else t.grad.clone()
            for t in (tokens, scdl.class_proxies.mu, first)]


@pytest.mark.parametrize("detach", [False, True])
def test_cdba_gradient_stops_at_the_tokens_when_asked(detach):
    """cdba_grad_to_tokens=False: CDBA trains the MLP and μ but sends nothing into the tokens, while the priors
    still do; the default sends CDBA's gradient into the tokens. The loss values do not change (no dropout)."""
    torch.manual_seed(0)
    tokens = torch.randn(2, 10, 6)
    weights = F.one_hot(torch.randint(0, 3, (2, 10)), 3).float()
    torch.manual_seed(1)
    scdl = small_scdl(dropout=0.0, cdba_grad_to_tokens=not detach).eval()  # fixed proxy noise

    def cdba(out):
        return scdl.loss_terms(out, 2, weights)[0]["cdba_labeled"]

    token_grad, mu_grad, mlp_grad = _gradients(scdl, tokens, cdba)
    assert torch.count_nonzero(mu_grad) > 0 and torch.count_nonzero(mlp_grad) > 0
    assert (torch.count_nonzero(token_grad) == 0) == detach
    prior_token_grad = _gradients(scdl, tokens, lambda out: out.priors.pow(2).sum())[0]
    assert torch.count_nonzero(prior_token_grad) > 0
    torch.manual_seed(1)
    reference = small_scdl(dropout=0.0).eval()
    reference.load_state_dict(scdl.state_dict())
    assert cdba(reference(tokens)).item() == pytest.approx(cdba(scdl(tokens)).item(), abs=1e-6)


@pytest.mark.parametrize("detach", [False, True])
def test_priors_pass_no_gradient_to_the_proxies_when_asked(detach):
    """prior_grad_to_proxies=False: the priors reach the tokens but not μ, and their values do not change."""
    torch.manual_seed(0)
    tokens = torch.randn(2, 10, 6)
    scdl = small_scdl(dropout=0.0, prior_grad_to_proxies=not detach).eval()
    token_grad, mu_grad, _ = _gradients(scdl, tokens, lambda out: out.priors.pow(3).sum())
    assert torch.count_nonzero(token_grad) > 0
    assert (torch.count_nonzero(mu_grad) == 0) == detach
    reference = small_scdl(dropout=0.0).eval()
    reference.load_state_dict(scdl.state_dict())
    torch.testing.assert_close(scdl(tokens).priors, reference(tokens).priors)


def test_prior_temperature_sets_how_sharply_the_priors_weight_the_classes():
    """τ_prior weights r^dist's samples and r^center's Q; at τ_e2p = τ_p2e it changes nothing, and a very large
    τ_prior makes both priors the same for every token (uniform weights), which the default's are not."""
    torch.manual_seed(0)
    tokens = torch.randn(2, 10, 6)
    reference = small_scdl(dropout=0.0).eval()
    out = reference(tokens)
    dist, centre = out.priors[..., :8], out.priors[..., 8:16]  # D = 8
    assert (dist - dist[:1, :1]).abs().max() > 1e-3 and (centre - centre[:1, :1]).abs().max() > 1e-3

    def priors(temperature):
        scdl = small_scdl(dropout=0.0, prior_temperature=temperature).eval()
        scdl.load_state_dict(reference.state_dict())
        return scdl(tokens).priors

    torch.testing.assert_close(priors(0.2), out.priors)
    soft = priors(1e6)
    unit_samples = F.normalize(reference.class_proxies.sample(reference.num_prior_samples), dim=-1)
    uniform_dist = F.normalize(unit_samples.reshape(-1, 8).mean(dim=0), dim=-1)
    uniform_centre = F.normalize(F.normalize(reference.class_proxies.mu, dim=-1).mean(dim=0), dim=-1)
    torch.testing.assert_close(soft[..., :8], uniform_dist.expand(2, 10, 8), atol=1e-4, rtol=0)
    torch.testing.assert_close(soft[..., 8:16], uniform_centre.expand(2, 10, 8), atol=1e-4, rtol=0)
    torch.testing.assert_close(soft[..., 16:], out.priors[..., 16:])  # r^tok has no temperature
    with pytest.raises(ValueError, match="τ_prior"):
        small_scdl(prior_temperature=0.0)


def test_loss_terms_without_labeled_images_or_anchors_are_attached_zeros():
    scdl = small_scdl()
    out = scdl(torch.randn(2, 5, 6))
    terms, _ = scdl.loss_terms(out, 0)
    assert terms["cdba_labeled"].item() == 0.0 and terms["sac"].item() == 0.0
    assert all(t.requires_grad for t in terms.values())
    with pytest.raises(ValueError, match="labeled_weights"):
        scdl.loss_terms(out, 1)
    with pytest.raises(ValueError, match="n_labeled"):
        scdl.loss_terms(out, 3)


def test_prior_projections_start_at_zero():
    projections = PriorProjections(12, [5, 7])
    assert len(projections) == 2
    assert projections(torch.randn(1, 3, 12), 1).abs().sum().item() == 0.0
    assert projections.weight(0).shape == (5, 12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast needs CUDA")
def test_no_nan_under_fp16_autocast():
    torch.manual_seed(0)
    scdl = small_scdl(embed_dim=16, num_samples=8).cuda()
    # large-magnitude half-precision tokens, as a decoder may produce under autocast
    tokens = (torch.randn(2, 64, 6, device="cuda") * 300).half().requires_grad_()
    with torch.autocast("cuda", dtype=torch.float16):
        out = scdl(tokens)
        weights = F.one_hot(torch.randint(0, 3, (1, 64), device="cuda"), 3).float()
        terms, _ = scdl.loss_terms(out, 1, weights, anchor_features=tokens[0, :3].float() * 10,
                                   anchor_classes=torch.tensor([0, 1, 2], device="cuda"))
    assert out.priors.dtype == torch.float32
    loss = sum(terms.values())
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(tokens.grad).all()
    for name, parameter in scdl.named_parameters():
        if parameter.grad is not None:
            assert torch.isfinite(parameter.grad).all(), name
