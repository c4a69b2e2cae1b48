"""Token grids, tokenisation, per-token class proportions and class-region sums (2-D, 3-D, anisotropic)."""
import pytest
import torch

from nnunetv2_scdl.scdl.tokens import (class_one_hot, class_proportions_per_token, class_region_sums,
                                       features_to_tokens, pool_to_grid, prepare_labels, resize_linear,
                                       token_grid_shape, token_strides_from_stage_strides, tokens_to_map)


@pytest.mark.parametrize("strides, expected", [
    ([[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]], (3, (8, 8, 8))),
    ([[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2]], (3, (4, 8, 8))),  # anisotropic
    ([[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2]], (3, (2, 8, 8))),
    ([[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]], (3, (8, 8))),  # 2d
    ([[1, 1], [2, 2]], (1, (2, 2))),  # too shallow for 8: deepest stage
])
def test_token_strides_follow_the_encoder(strides, expected):
    assert token_strides_from_stage_strides(strides, 8) == expected


def test_grid_shapes_and_divisibility():
    assert token_grid_shape((96, 96, 96), (8, 8, 8)) == (12, 12, 12)
    assert token_grid_shape((64, 160, 160), (8, 8, 8)) == (8, 20, 20)
    assert token_grid_shape((16, 64, 64), (4, 8, 8)) == (4, 8, 8)
    assert token_grid_shape((512, 448), (8, 8)) == (64, 56)
    with pytest.raises(ValueError, match="divisible"):
        token_grid_shape((20, 64, 64), (8, 8, 8))
    with pytest.raises(ValueError, match="dimensionality"):
        token_grid_shape((64, 64), (8, 8, 8))


def test_tokens_are_block_means_in_row_major_order_and_invertible():
    features = torch.arange(2 * 4 * 6, dtype=torch.float32).view(1, 2, 4, 6)  # B=1, D_x=2, 4×6
    tokens = features_to_tokens(features, (2, 3))
    assert tokens.shape == (1, 4, 2)
    block = features[0, 0, 0:2, 3:6]  # grid position (0, 1) → token 1
    assert tokens[0, 1, 0].item() == pytest.approx(block.mean().item())
    grid_map = tokens_to_map(tokens, (2, 2))
    torch.testing.assert_close(grid_map, torch.nn.functional.avg_pool2d(features, (2, 3)))


def test_anisotropic_3d_tokens():
    features = torch.randn(2, 3, 8, 16, 16)
    tokens = features_to_tokens(features, (4, 8, 8))
    assert tokens.shape == (2, 2 * 2 * 2, 3)
    torch.testing.assert_close(tokens[1, 5], features[1, :, 4:8, 0:8, 8:16].mean(dim=(1, 2, 3)))


def test_class_proportions_by_hand_with_ignore():
    labels = torch.tensor([[[0, 0, 1, 1],
                            [0, 2, 1, 9],
                            [2, 2, 9, 9],
                            [2, 2, 9, 9]]])  # 9 = ignore
    one_hot = class_one_hot(prepare_labels(labels, 3, ignore_label=9), 3)
    assert one_hot.shape == (1, 4, 4, 4) and one_hot[0, 3].sum().item() == 5  # 5 ignored pixels
    proportions, valid = class_proportions_per_token(one_hot, (2, 2))
    assert proportions.shape == (1, 4, 3)
    torch.testing.assert_close(proportions[0, 0], torch.tensor([0.75, 0.0, 0.25]))
    torch.testing.assert_close(proportions[0, 1], torch.tensor([0.0, 1.0, 0.0]))  # 3 valid voxels, all class 1
    torch.testing.assert_close(proportions[0, 2], torch.tensor([0.0, 0.0, 1.0]))
    torch.testing.assert_close(proportions[0, 3], torch.zeros(3))  # fully ignored
    assert valid[0].tolist() == [True, True, True, False]


def test_class_proportions_match_area_pooled_one_hot_in_3d():
    torch.manual_seed(0)
    labels = torch.randint(0, 4, (2, 8, 16, 16))
    proportions, valid = class_proportions_per_token(class_one_hot(labels, 4), (4, 8, 8))
    assert bool(valid.all())
    one_hot = torch.nn.functional.one_hot(labels, 4).permute(0, 4, 1, 2, 3).float()
    pooled = torch.nn.functional.avg_pool3d(one_hot, (4, 8, 8)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(proportions, pooled)


def test_prepare_labels_layouts_and_errors():
    assert prepare_labels(torch.zeros(2, 1, 4, 4), 3, spatial_dims=2).shape == (2, 4, 4)
    assert prepare_labels(torch.zeros(2, 4, 4), 3, spatial_dims=2).dtype == torch.int64
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        prepare_labels(torch.full((1, 4, 4), 3), 3, spatial_dims=2)
    with pytest.raises(ValueError, match=r"\[B, 1, \*S\]"):
        prepare_labels(torch.zeros(2, 2, 4, 4), 3, spatial_dims=2)


def test_class_region_sums_by_hand():
    features = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]).unsqueeze(0)  # [1, 2, 2, 2]
    labels = prepare_labels(torch.tensor([[[0, 1], [1, 7]]]), 3, ignore_label=7)
    sums, counts = class_region_sums(features, class_one_hot(labels, 3))
    torch.testing.assert_close(sums[0], torch.tensor([[1.0, 10.0], [5.0, 50.0], [0.0, 0.0]]))
    assert counts[0].tolist() == [1.0, 2.0, 0.0]


@pytest.mark.parametrize("shape, size", [((2, 3, 4, 6), (32, 48)), ((1, 2, 2, 3, 3), (8, 24, 24)),
                                         ((1, 2, 4, 6, 6), (2, 3, 12))])  # up, anisotropic up, mixed up/down
def test_resize_linear_equals_interpolate(shape, size):
    maps = torch.randn(*shape)
    mode = "trilinear" if len(size) == 3 else "bilinear"
    expected = torch.nn.functional.interpolate(maps, size=size, mode=mode, align_corners=False)
    cache = {}
    torch.testing.assert_close(resize_linear(maps, size, cache), expected, atol=1e-5, rtol=1e-5)
    assert len(cache) > 0
    torch.testing.assert_close(resize_linear(maps, size, cache), expected, atol=1e-5, rtol=1e-5)


def test_pool_to_grid_equals_avg_pool():
    maps = torch.randn(2, 3, 8, 16, 24)
    torch.testing.assert_close(pool_to_grid(maps, (4, 8, 8)), torch.nn.functional.avg_pool3d(maps, (4, 8, 8)))
    maps2d = torch.randn(1, 2, 32, 48)
    torch.testing.assert_close(pool_to_grid(maps2d, (16, 16)), torch.nn.functional.avg_pool2d(maps2d, 16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 pooling is CUDA-only (the fp16 one-hot is used on GPUs)")
def test_fp16_one_hot_gives_the_same_proportions():
    labels = prepare_labels(torch.randint(0, 4, (2, 8, 16, 16), device="cuda"), 3, ignore_label=3)
    exact = class_proportions_per_token(class_one_hot(labels, 3), (4, 8, 8))
    half = class_proportions_per_token(class_one_hot(labels, 3, torch.float16), (4, 8, 8))
    assert half[0].dtype == torch.float32
    assert torch.equal(half[0], exact[0]) and torch.equal(half[1], exact[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fp16 product with fp32 output is CUDA-only")
def test_region_sums_of_fp16_features_on_gpu_match_fp32():
    torch.manual_seed(0)
    features = (torch.randn(2, 8, 16, 32, 32, device="cuda") * 4).half()
    labels = torch.randint(0, 3, (2, 16, 32, 32), device="cuda")
    sums, counts = class_region_sums(features, class_one_hot(labels, 3, torch.float16), chunk=4096)
    expected, expected_counts = class_region_sums(features.float(), class_one_hot(labels, 3), chunk=4096)
    assert sums.dtype == torch.float32
    torch.testing.assert_close(sums, expected, atol=1e-2, rtol=1e-3)
    assert torch.equal(counts, expected_counts)


def test_chunked_region_sums_equal_masked_sums():
    torch.manual_seed(0)
    features = torch.randn(2, 5, 4, 8, 8)
    labels = torch.randint(0, 3, (2, 4, 8, 8))
    one_hot = class_one_hot(labels, 3)
    expected = torch.stack([torch.stack([features[b][:, labels[b] == k].sum(dim=1) for k in range(3)])
                            for b in range(2)])
    for chunk in (32, 256, 100):  # 100 does not divide 256 voxels: one product
        sums, counts = class_region_sums(features, one_hot, chunk=chunk)
        torch.testing.assert_close(sums, expected, atol=1e-4, rtol=1e-5)
        assert counts[1].tolist() == [float((labels[1] == k).sum()) for k in range(3)]
