"""Diffusion schedule, forward noising, x₀ encoding, DDIM sampler and time embedding."""
import math

import pytest
import torch

from nnunetv2_scdl.networks.diffusion import (
    DiffusionSchedule,
    TimeEmbedding,
    ddim_sample,
    ddim_timesteps,
    labels_to_x0,
    linear_beta_schedule,
    sinusoidal_time_embedding,
)


def _alpha_bar_reference(t):
    """ᾱ_t from scratch in double precision: ∏_{s≤t} (1 − β_s), β_s = 1e-4 + s·(0.02 − 1e-4)/999."""
    return math.prod(1.0 - (1e-4 + s * (0.02 - 1e-4) / 999) for s in range(t + 1))


def test_schedule_values_at_known_t():
    sched = DiffusionSchedule()
    assert sched.betas.shape == (1000,) and sched.betas.dtype == torch.float64
    assert sched.betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert sched.betas[999].item() == pytest.approx(0.02, abs=1e-15)
    assert sched.betas[500].item() == pytest.approx(1e-4 + 500 * 0.0199 / 999, rel=1e-12)
    assert sched.alphas_cumprod[0].item() == pytest.approx(1 - 1e-4, rel=1e-12)
    for t in (1, 100, 500, 999):
        assert sched.alphas_cumprod[t].item() == pytest.approx(_alpha_bar_reference(t), rel=1e-9)
    assert 3e-5 < sched.alphas_cumprod[999].item() < 5e-5
    assert bool((sched.alphas_cumprod[1:] < sched.alphas_cumprod[:-1]).all())
    with pytest.raises(ValueError):
        linear_beta_schedule(1000, 0.02, 1e-4)


def test_q_sample_formula_and_determinism():
    sched = DiffusionSchedule()
    x0 = labels_to_x0(torch.randint(0, 3, (2, 4, 4)), 3)
    noise = torch.randn_like(x0)
    t = torch.tensor([0, 999])
    xt = sched.q_sample(x0, t, noise=noise)
    ab = torch.tensor([_alpha_bar_reference(0), _alpha_bar_reference(999)], dtype=torch.float32)
    expected = ab.sqrt()[:, None, None, None] * x0 + (1 - ab).sqrt()[:, None, None, None] * noise
    assert torch.allclose(xt, expected, atol=1e-6)
    a = sched.q_sample(x0, t, generator=torch.Generator().manual_seed(0))
    b = sched.q_sample(x0, t, generator=0)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        sched.q_sample(x0, torch.tensor([0, 1000]))
    with pytest.raises(ValueError, match="t must be \\[B\\]"):
        sched.q_sample(x0, torch.tensor([1]))
    ts = sched.sample_timesteps(64, generator=5)
    assert ts.dtype == torch.long and int(ts.min()) >= 0 and int(ts.max()) <= 999
    assert torch.equal(ts, sched.sample_timesteps(64, generator=5))


def test_labels_to_x0():
    y = torch.tensor([[[0, 2], [1, 0]]])  # [1, 2, 2]
    x0 = labels_to_x0(y, 3)
    assert x0.shape == (1, 3, 2, 2)
    assert x0[0, :, 0, 1].tolist() == [-1, -1, 1]
    assert x0[0, :, 1, 0].tolist() == [-1, 1, -1]
    assert torch.equal(labels_to_x0(y[:, None].float(), 3), x0)  # nnU-Net target layout [B, 1, ...]
    with pytest.raises(ValueError, match="ignore"):
        labels_to_x0(torch.tensor([[0, 3]]), 3)


def test_ddim_timesteps():
    # GenericSSL's space_timesteps(1000, [10]): stride 999/9 = 111 from t = 0, so sampling starts at t = 999
    assert ddim_timesteps(10) == [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
    assert ddim_timesteps(1) == [0]
    assert ddim_timesteps(3, 1000) == [999, 500, 0]  # stride 499.5: round(499.5) = 500 (ties to even)
    assert ddim_timesteps(7, 1000) == [999, 832, 666, 500, 333, 166, 0]  # 166.5 → 166, 499.5 → 500, 832.5 → 832
    assert ddim_timesteps(1000) == list(range(999, -1, -1))
    with pytest.raises(ValueError):
        ddim_timesteps(0)


def test_ddim_sample_shapes_determinism_and_calls():
    calls = []

    def model(x_t, t):
        calls.append(t.clone())
        return 3.0 * torch.tanh(x_t) + 0.01 * t.float().view(-1, 1, 1, 1, 1)

    shape = (2, 3, 2, 4, 4)
    a = ddim_sample(model, shape, generator=torch.Generator().manual_seed(7))
    assert a.sample.shape == shape and a.x0_logits.shape == shape
    assert len(calls) == 10 and [int(c[0]) for c in calls] == ddim_timesteps(10)
    assert all(c.shape == (2,) and c.dtype == torch.long for c in calls)
    assert float(a.sample.abs().max()) <= 1.0
    b = ddim_sample(model, shape, generator=7)
    assert torch.equal(a.sample, b.sample) and torch.equal(a.x0_logits, b.x0_logits)
    c = ddim_sample(model, shape, generator=8)
    assert not torch.equal(a.sample, c.sample)
    assert ddim_sample(model, shape, num_steps=4, generator=7).sample.shape == shape


def test_ddim_two_steps_by_hand():
    sched = DiffusionSchedule()

    def model(x_t, t):
        return 2.0 * torch.sin(x_t) * (1 + t.float().view(-1, 1, 1) / 1000)

    x_T = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    out = ddim_sample(model, x_T.shape, sched, num_steps=2, x_T=x_T)  # timesteps [999, 0]
    a999, a0 = _alpha_bar_reference(999), _alpha_bar_reference(0)
    x0 = model(x_T, torch.full((2,), 999)).clamp(-1, 1)
    eps = (x_T - math.sqrt(a999) * x0) / math.sqrt(1 - a999)
    x_prev = math.sqrt(a0) * x0 + math.sqrt(1 - a0) * eps
    logits = model(x_prev, torch.zeros(2, dtype=torch.long))
    assert torch.allclose(out.x0_logits, logits, atol=1e-5)
    assert torch.allclose(out.sample, logits.clamp(-1, 1), atol=1e-5)


def test_ddim_perfect_denoiser_recovers_x0():
    target = labels_to_x0(torch.randint(0, 4, (2, 6, 6), generator=torch.Generator().manual_seed(1)), 4)
    out = ddim_sample(lambda x_t, t: 5.0 * target, target.shape, generator=3)
    assert torch.equal(out.sample, target)  # clipped to ±1
    ds = ddim_sample(lambda x_t, t: [target, target[..., ::2, ::2]], target.shape, generator=3)  # DS list → first
    assert torch.equal(ds.sample, target)
    with pytest.raises(ValueError, match="denoiser returned shape"):
        ddim_sample(lambda x_t, t: target[:, :2], target.shape, generator=3)


def test_time_embedding():
    t = torch.tensor([0, 10, 999])
    emb = sinusoidal_time_embedding(t, 128)
    assert emb.shape == (3, 128)
    assert torch.equal(emb[0, :64], torch.ones(64)) and torch.equal(emb[0, 64:], torch.zeros(64))
    assert emb[1, 0].item() == pytest.approx(math.cos(10.0), abs=1e-6)
    assert emb[1, 64].item() == pytest.approx(math.sin(10.0), abs=1e-6)
    assert emb[1, 65].item() == pytest.approx(math.sin(10.0 * 10000 ** (-1 / 64)), abs=1e-6)
    assert sinusoidal_time_embedding(t, 7).shape == (3, 7)
    te = TimeEmbedding()
    out = te(t)
    assert out.shape == (3, 512)
    assert not torch.allclose(out[0], out[1])
