"""SCDL loss terms against values computed by hand on tiny examples, and their gradient paths."""
import math

import pytest
import torch
import torch.nn.functional as F

from nnunetv2_scdl.scdl.losses import (class_anchors, embedding_to_proxy_loss, proxy_distance_loss,
                                       proxy_to_embedding_loss, semantic_anchor_loss,
                                       token_level_proxy_to_embedding_loss)
from nnunetv2_scdl.scdl.module import SCDL

# Two tokens, two classes.
G = torch.tensor([[0.5, -0.2], [0.1, 0.9]])  # cosine to the proxy means
A_BAR = torch.tensor([[0.4, 0.3], [-0.6, 0.8]])  # mean cosine to the proxy samples
W = torch.tensor([[1.0, 0.0], [0.25, 0.75]])  # class weights per token


def test_e2p_matches_hand_value():
    # token 0: 1·(1−0.5) + 0·(1+0.2) = 0.5 ; token 1: 0.25·(1−0.1) + 0.75·(1−0.9) = 0.225 + 0.075 = 0.3
    assert embedding_to_proxy_loss(G, W).item() == pytest.approx((0.5 + 0.3) / 2, abs=1e-6)


def test_class_level_p2e_matches_hand_value():
    # class 0: E⁺ = (1·0.4 + 0.25·(−0.6)) / 1.25 = 0.2, E⁻ = (0.75·(−0.6)) / 0.75 = −0.6 → exp(−0.8)
    # class 1: E⁺ = (0.75·0.8) / 0.75 = 0.8,             E⁻ = (1·0.3 + 0.25·0.8) / 1.25 = 0.4 → exp(−0.4)
    expected = (math.exp(-0.8) + math.exp(-0.4)) / 2
    assert proxy_to_embedding_loss(A_BAR, W).item() == pytest.approx(expected, abs=1e-6)


def test_class_level_p2e_averages_over_present_classes_only():
    # a third class with no token: it must not enter the mean (nor pull its proxy towards other classes' tokens)
    a_bar = torch.cat([A_BAR, torch.tensor([[0.9], [0.9]])], dim=1)
    w = torch.cat([W, torch.zeros(2, 1)], dim=1)
    expected = (math.exp(-0.8) + math.exp(-0.4)) / 2
    assert proxy_to_embedding_loss(a_bar, w).item() == pytest.approx(expected, abs=1e-6)
    a = a_bar.clone().requires_grad_()
    proxy_to_embedding_loss(a, w).backward()
    assert torch.count_nonzero(a.grad[:, 2]) == 0
    # an explicit present mask overrides the default Σ w > 0
    only_class_1 = torch.tensor([False, True, False])
    assert proxy_to_embedding_loss(a_bar, w, present=only_class_1).item() == pytest.approx(math.exp(-0.4), abs=1e-6)


def test_class_level_p2e_counts_a_small_class_as_much_as_a_large_one():
    # 99 tokens of class 0 that match their proxy, 1 token of class 1 that does not: the per-token form barely
    # notices the small class, the class-level form gives it half of the loss
    a_bar = torch.tensor([[0.9, -0.9]] * 99 + [[0.9, -0.9]])
    w = torch.tensor([[1.0, 0.0]] * 99 + [[0.0, 1.0]])
    class_level = proxy_to_embedding_loss(a_bar, w).item()
    # class 0: E⁺ = 0.9, E⁻ = 0.9 → exp(0) = 1 ; class 1: E⁺ = −0.9, E⁻ = −0.9 → 1
    assert class_level == pytest.approx(1.0, abs=1e-6)
    assert token_level_proxy_to_embedding_loss(a_bar, w).item() < 0.45


def test_class_level_p2e_of_a_class_owning_every_token_has_no_negative_evidence():
    a = torch.tensor([[0.5, 0.1], [0.3, 0.2]])
    w = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert proxy_to_embedding_loss(a, w).item() == pytest.approx(math.exp(-0.4), abs=1e-6)


def test_class_level_p2e_token_weights_drop_tokens():
    valid = torch.tensor([1.0, 0.0])
    # only token 0: class 0 present with E⁺ = 0.4 and no negatives; class 1 absent
    assert proxy_to_embedding_loss(A_BAR, W, valid).item() == pytest.approx(math.exp(-0.4), abs=1e-6)


def test_token_level_p2e_matches_hand_value():
    # exp(−(E⁺ − E⁻)) with E⁺ − E⁻ = (2w − 1)·Ā, averaged over the 4 (token, class) pairs
    expected = (math.exp(-(1.0 * 0.4)) + math.exp(-(-1.0 * 0.3))
                + math.exp(-(-0.5 * -0.6)) + math.exp(-(0.5 * 0.8))) / 4
    assert token_level_proxy_to_embedding_loss(A_BAR, W).item() == pytest.approx(expected, abs=1e-6)


def test_token_level_p2e_stays_in_documented_range_and_has_no_gradient_at_half_weight():
    a = torch.tensor([[1.0, -1.0]], requires_grad=True)
    value = token_level_proxy_to_embedding_loss(a, torch.tensor([[1.0, 0.0]]))
    assert value.item() == pytest.approx(math.exp(-1.0), abs=1e-6)  # the minimum e⁻¹
    half = torch.tensor([[0.3, -0.7]], requires_grad=True)
    token_level_proxy_to_embedding_loss(half, torch.full((1, 2), 0.5)).backward()
    assert torch.count_nonzero(half.grad) == 0


def test_distance_matches_hand_value():
    # token 0: 1·(1−0.4) = 0.6 ; token 1: 0.25·(1+0.6) + 0.75·(1−0.8) = 0.4 + 0.15 = 0.55
    assert proxy_distance_loss(A_BAR, W).item() == pytest.approx((0.6 + 0.55) / 2, abs=1e-6)


def test_semantic_anchor_loss_matches_hand_value():
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    u = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    classes = torch.tensor([1, 1, 0])
    # anchor_1 = n([1,0]) ⊥ μ_1 = [0,1] → 1 ; anchor_0 = n([1,1]) vs μ_0 = [1,0] → 1 − 1/√2 ; class 2 absent
    expected = (1.0 + (1.0 - 1.0 / math.sqrt(2.0))) / 2
    loss = semantic_anchor_loss(mu, u, classes)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert u.grad is None  # anchors are detached
    assert torch.count_nonzero(mu.grad[2]) == 0  # absent class untouched
    assert torch.count_nonzero(mu.grad[:2]) > 0


def test_class_anchors_average_then_normalise():
    u = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    anchors, present = class_anchors(u, torch.tensor([0, 0]), 2)
    assert present.tolist() == [True, False]
    torch.testing.assert_close(anchors[0], torch.tensor([1.5, 0.5]) / math.sqrt(1.5 ** 2 + 0.5 ** 2))


def test_empty_inputs_give_attached_zero():
    g = torch.zeros(0, 3, requires_grad=True)
    for fn in (embedding_to_proxy_loss, proxy_to_embedding_loss, token_level_proxy_to_embedding_loss,
               proxy_distance_loss):
        value = fn(g, torch.zeros(0, 3))
        assert value.item() == 0.0 and value.requires_grad


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        embedding_to_proxy_loss(G, W[:1])
    with pytest.raises(ValueError, match="present"):
        proxy_to_embedding_loss(A_BAR, W, present=torch.tensor([True]))
    with pytest.raises(ValueError, match="anchor_classes"):
        class_anchors(torch.zeros(2, 2), torch.tensor([0, 5]), 2)


def test_module_sac_reaches_proxy_means_only():
    scdl = SCDL(in_channels=4, num_classes=3, embed_dim=8, num_samples=3)
    features = torch.randn(5, 4, requires_grad=True)
    scdl.semantic_anchor_loss(features, torch.tensor([0, 1, 1, 2, 0])).backward()
    assert scdl.class_proxies.mu.grad is not None and torch.count_nonzero(scdl.class_proxies.mu.grad) > 0
    assert features.grad is None
    for name, parameter in scdl.named_parameters():
        if name != "class_proxies.mu":
            assert parameter.grad is None, name


def test_module_cdba_combines_parts_with_weights():
    scdl = SCDL(in_channels=4, num_classes=2, embed_dim=8, num_samples=3, e2p_weight=0.5, dist_weight=0.1)
    total, parts = scdl.cdba_loss(G, A_BAR, W)
    expected = 0.5 * parts["e2p"] + parts["p2e"] + 0.1 * parts["dist"]
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)
    assert parts["e2p"].item() == pytest.approx(0.4, abs=1e-6)


def test_module_cdba_of_each_variant():
    # paper: L_E2P + class-level L_P2E, nothing else
    paper = SCDL(in_channels=4, num_classes=2, embed_dim=8, num_samples=3)
    total, parts = paper.cdba_loss(G, A_BAR, W)
    assert set(parts) == {"e2p", "p2e"}
    assert total.item() == pytest.approx(0.4 + (math.exp(-0.8) + math.exp(-0.4)) / 2, abs=1e-6)
    # released: per-token L_P2E + 0.1·L_dist, no E2P
    released = SCDL(in_channels=4, num_classes=2, embed_dim=8, num_samples=3, variant="released")
    total, parts = released.cdba_loss(G, A_BAR, W)
    assert set(parts) == {"p2e", "dist"}
    expected = token_level_proxy_to_embedding_loss(A_BAR, W) + 0.1 * proxy_distance_loss(A_BAR, W)
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="variant"):
        SCDL(in_channels=4, num_classes=2, variant="both")


def test_token_weights_equal_selecting_the_valid_tokens():
    valid = torch.tensor([1.0, 0.0])
    for fn in (embedding_to_proxy_loss, token_level_proxy_to_embedding_loss, proxy_distance_loss):
        weighted = fn(G if fn is embedding_to_proxy_loss else A_BAR, W, valid)
        selected = fn((G if fn is embedding_to_proxy_loss else A_BAR)[:1], W[:1])
        assert weighted.item() == pytest.approx(selected.item(), abs=1e-6)
    assert embedding_to_proxy_loss(G, W, torch.zeros(2)).item() == 0.0  # no valid token


def test_anchor_weights_drop_rows():
    mu = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    u = torch.tensor([[0.0, 1.0], [1.0, 0.0], [5.0, 5.0]])
    classes = torch.tensor([0, 1, 1])
    # row 2 has weight 0: anchor_1 = [1, 0] (⊥ μ_1 → 1); class 0: [0, 1] ⊥ [1, 0] → 1
    assert semantic_anchor_loss(mu, u, classes, torch.tensor([1.0, 1.0, 0.0])).item() == pytest.approx(1.0)
    # with row 2, anchor_1 = n([6, 5]) → 1 − 5/√61
    with_row = semantic_anchor_loss(mu, u, classes).item()
    assert with_row == pytest.approx((1.0 + 1.0 - 5.0 / math.sqrt(61.0)) / 2, abs=1e-6)
    # a class whose rows all have weight 0 is absent
    only_zero = semantic_anchor_loss(mu, u[:1], classes[:1], torch.zeros(1))
    assert only_zero.item() == 0.0 and only_zero.requires_grad


def test_module_sac_anchors_are_deterministic_in_train_mode():
    torch.manual_seed(0)
    scdl = SCDL(in_channels=4, num_classes=3, embed_dim=8, num_samples=3, dropout=0.5).train()
    features = torch.randn(6, 4)
    first, second = scdl.anchor_embeddings(features), scdl.anchor_embeddings(features)
    assert torch.equal(first, second)  # no dropout noise
    scdl.eval()
    torch.testing.assert_close(first, F.normalize(scdl.projection(features), dim=-1))
    # and the loss is the hand formula on those anchors: mean over present classes of 1 − ⟨n(mean u), μ̂⟩
    classes = torch.tensor([0, 0, 1, 1, 1, 0])
    anchors = torch.stack([F.normalize(first[classes == c].mean(0), dim=0) for c in (0, 1)])
    mu_hat = F.normalize(scdl.class_proxies.mu[:2], dim=1)
    expected = (1 - (anchors * mu_hat).sum(1)).mean()
    scdl.train()
    assert scdl.semantic_anchor_loss(features, classes).item() == pytest.approx(expected.item(), abs=1e-6)
