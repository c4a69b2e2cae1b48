"""Magic-cube partition/recovery, cross-image mixing, location labels, plan validation and the location head."""
import math

import pytest
import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.plain_conv_encoder import PlainConvEncoder
from torch import nn

from nnunetv2_scdl.networks.location_head import LocationHead, PerProcessBatchNorm1d, location_head_in_features
from nnunetv2_scdl.networks.magic_cubes import (
    CubeGrid,
    cube_size_at_stage,
    default_cube_size,
    default_location_stage,
    encoder_total_stride,
    faithful_read_order,
    invert_cube_permutations,
    location_labels,
    mix_cubes_across_images,
    partition_cubes,
    random_cube_permutations,
    recover_cubes,
    unmix_cubes_across_images,
    validate_cube_size,
)

NNUNET_3D_STRIDES = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]]  # total (16, 32, 32)
BTCV_CPU_STRIDES = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]]  # total (16, 32, 32)


def _cube_index_volume(grid, cube):
    """[1, 1, *spatial] volume whose voxels hold the C-order index of the cube they belong to."""
    idx = torch.arange(math.prod(grid)).reshape(grid)
    for a, c in enumerate(cube):
        idx = idx.repeat_interleave(c, dim=a)
    return idx[None, None]


# --- within-image partition / recovery --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,grid", [((2, 3, 4, 6, 10), (2, 3, 5)),
                                        ((3, 2, 6, 4, 9), (3, 1, 3)),
                                        ((2, 2, 6, 10), (3, 5))])  # 2-D too
def test_partition_recover_identity(shape, grid):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    cubes = partition_cubes(x, grid)
    k = math.prod(grid)
    assert cubes.shape == (shape[0] * k, shape[1], *[s // n for s, n in zip(shape[2:], grid)])
    assert torch.equal(recover_cubes(cubes, grid), x)


def test_partition_order_by_hand():
    # spatial (4, 6, 10), grid (2, 3, 5) → cube (2, 2, 2); list index k = 15·i0 + 5·i1 + i2, row b·30 + k
    x = torch.randn(2, 3, 4, 6, 10)
    cubes = partition_cubes(x, (2, 3, 5))
    assert torch.equal(cubes[0 * 30 + 0], x[0, :, 0:2, 0:2, 0:2])
    assert torch.equal(cubes[1 * 30 + 28], x[1, :, 2:4, 4:6, 6:8])   # position (1, 2, 3)
    assert torch.equal(cubes[0 * 30 + 7], x[0, :, 0:2, 2:4, 4:6])    # position (0, 1, 2)
    assert torch.equal(cubes[1 * 30 + 29], x[1, :, 2:4, 4:6, 8:10])  # position (1, 2, 4)


def test_partition_accepts_cubegrid():
    g = CubeGrid((8, 12, 12), (4, 4, 4), (2, 4, 4))
    x = torch.randn(1, 2, 8, 12, 12)
    assert torch.equal(partition_cubes(x, g), partition_cubes(x, (2, 3, 3)))
    assert torch.equal(recover_cubes(partition_cubes(x, g), g), x)


def test_faithful_3x3x3_is_xz_transpose_and_misplaces_18_cubes():
    grid, cube = (3, 3, 3), (2, 2, 2)
    vol = _cube_index_volume(grid, cube).float()
    out = recover_cubes(partition_cubes(vol, grid), grid, faithful=True)
    got = partition_cubes(out, grid)[:, 0].flatten(1)[:, 0].long()  # source list index at each position
    expected = torch.arange(27).reshape(3, 3, 3).permute(2, 1, 0).reshape(-1)  # position (x,y,z) ← cube (z,y,x)
    assert torch.equal(got, expected)
    assert int((got != torch.arange(27)).sum()) == 18
    # hand checks: position (0,0,1) (list 1) gets cube (1,0,0) (list 9); (2,1,0) (list 21) gets (0,1,2) (list 5)
    assert got[1] == 9 and got[21] == 5 and got[13] == 13
    assert not torch.equal(out, vol)


def test_faithful_equal_first_last_counts_is_transpose():
    grid, cube = (2, 3, 2), (1, 2, 3)
    x = torch.randn(2, 3, 2, 6, 6)
    out = recover_cubes(partition_cubes(x, grid), grid, faithful=True)
    cubes_in = partition_cubes(x, grid).reshape(2, *grid, 3, *cube)
    expected = recover_cubes(cubes_in.transpose(1, 3).reshape(24, 3, *cube), grid)
    assert torch.equal(out, expected)


def test_faithful_noncubic_grid_documented_read_order():
    # grid (2, 1, 3): l(i) = i0 + 2·i1 + 2·i2; C-order positions (0,0,0),(0,0,1),(0,0,2),(1,0,0),(1,0,1),(1,0,2)
    grid = (2, 1, 3)
    assert faithful_read_order(grid).tolist() == [0, 2, 4, 1, 3, 5]
    x = torch.randn(2, 1, 4, 3, 6)
    cubes = partition_cubes(x, grid)
    out_cubes = partition_cubes(recover_cubes(cubes, grid, faithful=True), grid)
    for b in range(2):
        for k, src in enumerate([0, 2, 4, 1, 3, 5]):
            assert torch.equal(out_cubes[b * 6 + k], cubes[b * 6 + src])
    assert out_cubes.shape == cubes.shape


def test_recover_validates_shapes():
    with pytest.raises(ValueError, match="not a multiple"):
        recover_cubes(torch.randn(5, 1, 2, 2, 2), (2, 2, 1))
    with pytest.raises(ValueError, match="spatial axes"):
        recover_cubes(torch.randn(4, 1, 2, 2), (2, 2, 1))
    with pytest.raises(ValueError, match="axis 1 has size 7"):
        partition_cubes(torch.randn(1, 1, 4, 7, 4), (2, 2, 2))


# --- location labels --------------------------------------------------------------------------------------------------
def test_location_labels_3x3x3_by_hand():
    labels = location_labels((3, 3, 3))
    # list index 9x + 3y + z → label x + 3y + 9z
    assert labels[0] == 0
    assert labels[1] == 9      # (0,0,1)
    assert labels[9] == 1      # (1,0,0)
    assert labels[5] == 21     # (0,1,2)
    assert labels[26] == 26    # (2,2,2)
    assert sorted(labels.tolist()) == list(range(27))


def test_location_labels_anisotropic_by_hand_and_batched():
    labels = location_labels((2, 5, 5))
    assert labels[1 * 25 + 2 * 5 + 3] == 1 + 2 * 2 + 2 * 5 * 3  # position (1,2,3): list 38 → label 35
    assert labels[0 * 25 + 0 * 5 + 1] == 10                     # (0,0,1)
    assert labels[1 * 25] == 1                                  # (1,0,0)
    assert sorted(labels.tolist()) == list(range(50))
    batched = location_labels((2, 5, 5), batch_size=3)
    assert batched.shape == (150,) and torch.equal(batched[50:100], labels)


# --- cross-image mixing -----------------------------------------------------------------------------------------------
def test_cross_image_mix_unmix_identity_and_content():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 2, 4, 6, 10, generator=g)
    grid = (2, 3, 5)
    perms = random_cube_permutations(4, 30, generator=g)
    assert perms.shape == (30, 4)
    assert torch.equal(perms.sort(1).values, torch.arange(4).expand(30, 4))
    mixed = mix_cubes_across_images(x, grid, perms)
    assert not torch.equal(mixed, x)
    cx, cm = partition_cubes(x, grid), partition_cubes(mixed, grid)
    for b, k in [(0, 0), (1, 17), (3, 29), (2, 8)]:
        assert torch.equal(cm[b * 30 + k], cx[int(perms[k, b]) * 30 + k])
    assert torch.equal(unmix_cubes_across_images(mixed, grid, perms), x)


def test_cross_image_unmix_on_aligned_lower_resolution_map():
    # A feature map at half resolution (e.g. a DS output) is aligned with the same grid: mixing commutes with pooling.
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 8, 12, 4, generator=g)
    grid = (2, 3, 2)
    perms = random_cube_permutations(3, 12, generator=g)
    low = F.avg_pool3d(mix_cubes_across_images(x, grid, perms), 2)
    assert torch.allclose(unmix_cubes_across_images(low, grid, perms), F.avg_pool3d(x, 2))


def test_permutations_deterministic_and_inverse():
    p1 = random_cube_permutations(5, 7, generator=torch.Generator().manual_seed(3))
    p2 = random_cube_permutations(5, 7, generator=torch.Generator().manual_seed(3))
    assert torch.equal(p1, p2)
    inv = invert_cube_permutations(p1)
    assert torch.equal(torch.gather(p1, 1, inv), torch.arange(5).expand(7, 5))
    with pytest.raises(ValueError, match="permutation"):
        invert_cube_permutations(torch.tensor([[0, 0, 1]]))
    with pytest.raises(ValueError, match="perms must have shape"):
        mix_cubes_across_images(torch.randn(2, 1, 4, 4), (2, 2), torch.zeros(3, 2, dtype=torch.long))


# --- plans ------------------------------------------------------------------------------------------------------------
def test_total_stride_and_default_cube_size():
    assert encoder_total_stride(NNUNET_3D_STRIDES) == (16, 32, 32)
    assert encoder_total_stride([1, 2, 2, 2], ndim=2) == (8, 8)
    assert default_cube_size((96, 96, 96), [[1, 1, 1]] + [[2, 2, 2]] * 4) == (32, 32, 32)  # MagicNet: stride 16
    assert default_cube_size((96, 96, 96), [[1, 1, 1]] + [[2, 2, 2]] * 5) == (96, 32, 32)  # stride 32: grow axis 0
    assert default_cube_size((64, 160, 160), NNUNET_3D_STRIDES) == (32, 32, 32)
    # 32 does not divide 80, and (16, 32, 32) would leave one bottleneck voxel: grow axis 1, which keeps most cubes
    assert default_cube_size((80, 192, 160), NNUNET_3D_STRIDES) == (16, 64, 32)
    assert default_cube_size((80, 192, 160), NNUNET_3D_STRIDES, preferred=None) == (16, 64, 32)  # ~3 per axis
    # 32 would fill a 32 × 32 patch with one cube: ~3 cubes per axis instead (tie 8 or 16: the smaller)
    assert default_cube_size((32, 32), [[1, 1], [2, 2], [2, 2]]) == (8, 8)
    g = CubeGrid.from_plan((64, 160, 160), NNUNET_3D_STRIDES)
    assert g.grid == (2, 5, 5) and g.n_cubes == 50 and g.bottleneck_size == (2, 1, 1)
    assert CubeGrid.from_plan((96, 96, 96), [[1, 1, 1]] + [[2, 2, 2]] * 4, cube_size=32).n_cubes == 27


def test_location_stage_keeps_a_layout_of_at_least_two_voxels_per_axis():
    """The location head reads the deepest encoder stage at which a cube is at least 2 voxels along every axis (sizes
    by hand): MagicNet's own 32³ cubes at stride 16 keep 2×2×2 at the bottleneck, so the head stays there; BTCV's CPU
    cubes reach it as 1×2×1 and are read at stage 4 (2×4×2); Hippocampus's quarter-width CPU cubes (8×56×8, total
    stride 8) at stage 2 (2×14×2) instead of 1×7×1."""
    magicnet = [[1, 1, 1]] + [[2, 2, 2]] * 4
    assert default_location_stage((32, 32, 32), magicnet) == 4
    assert cube_size_at_stage((32, 32, 32), magicnet, 4) == (2, 2, 2)
    btcv = CubeGrid.from_plan((48, 64, 64), BTCV_CPU_STRIDES).cube_size
    assert [cube_size_at_stage(btcv, BTCV_CPU_STRIDES, s) for s in range(6)] == [
        (16, 64, 32), (16, 32, 16), (8, 16, 8), (4, 8, 4), (2, 4, 2), (1, 2, 1)]
    assert default_location_stage(btcv, BTCV_CPU_STRIDES) == 4
    hippocampus = [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]]
    cube = CubeGrid.from_plan((40, 56, 40), hippocampus).cube_size
    assert cube == (8, 56, 8) and default_location_stage(cube, hippocampus) == 2
    assert cube_size_at_stage(cube, hippocampus, 2) == (2, 14, 2)
    # an axis one voxel long at the input cannot reach 2: it does not hold the stage back
    assert default_location_stage((1, 8, 8), [[1, 1, 1], [1, 2, 2], [1, 2, 2]]) == 2
    with pytest.raises(ValueError, match="stage 6 is not an encoder stage"):
        cube_size_at_stage(btcv, BTCV_CPU_STRIDES, 6)


def test_invalid_plans_raise_with_axis_patch_and_stride():
    with pytest.raises(ValueError, match=r"Axis 0: cube size 24 is not a multiple of the encoder's total stride 16"):
        validate_cube_size((48, 96, 96), (24, 32, 32), (16, 32, 32))
    with pytest.raises(ValueError, match=r"Axis 2: cube size 32 does not divide the patch size 80"):
        validate_cube_size((64, 96, 80), (32, 32, 32), (16, 32, 16))
    with pytest.raises(ValueError, match=r"Axis 1: patch size 100 is not a multiple of the encoder's total stride 32"):
        default_cube_size((64, 100, 96), NNUNET_3D_STRIDES)
    with pytest.raises(ValueError, match="only one cube"):
        default_cube_size((16, 32, 32), NNUNET_3D_STRIDES)
    with pytest.raises(ValueError, match="single cube"):
        CubeGrid.from_plan((32, 32, 32), NNUNET_3D_STRIDES, cube_size=32)
    with pytest.raises(ValueError, match="Axis 0: cube size 32 is not a multiple"):
        CubeGrid.from_plan((128, 128, 128), [[1, 1, 1]] + [[2, 2, 2]] * 6, cube_size=32)  # stride 64
    with pytest.raises(ValueError, match=r"bottleneck as 1×1×1 voxel per cube; instance norm"):
        CubeGrid.from_plan((48, 64, 64), BTCV_CPU_STRIDES, cube_size=(16, 32, 32))
    with pytest.raises(ValueError, match="only one cube whose bottleneck keeps 2 voxels"):
        default_cube_size((16, 32, 64), NNUNET_3D_STRIDES)  # (16, 32, 32) is 1 voxel deep, (16, 32, 64) one cube


def test_default_grid_of_btcv_cpu_plans_survives_instance_norm_encoder():
    """BTCV's CPU plans: patch (48, 64, 64), total stride (16, 32, 32). Cubes of 16×32×32 reach the bottleneck as one
    voxel, and nnU-Net's instance norm refuses that in training; the default grid must not."""
    grid = CubeGrid.from_plan((48, 64, 64), BTCV_CPU_STRIDES)
    assert grid.cube_size == (16, 64, 32) and grid.grid == (3, 1, 2) and grid.bottleneck_size == (1, 2, 1)
    encoder = PlainConvEncoder(1, 6, [2] * 6, nn.Conv3d, 3, BTCV_CPU_STRIDES, 1, norm_op=nn.InstanceNorm3d,
                               norm_op_kwargs={"affine": True}, nonlin=nn.LeakyReLU).train()
    bottleneck = encoder(partition_cubes(torch.randn(2, 1, 48, 64, 64), grid))
    assert bottleneck.shape == (2 * 6, 2, 1, 2, 1) and torch.isfinite(bottleneck).all()


# --- location head ----------------------------------------------------------------------------------------------------
def test_location_head_sizes_and_forward():
    assert location_head_in_features(256, (32, 32, 32), (16, 16, 16)) == 2048  # spec FcLayer input
    assert location_head_in_features(320, (32, 32, 32), (16, 32, 32)) == 640
    head = LocationHead(in_features=24, n_cubes=6, hidden_features=16)
    assert [type(m) for m in head.layers] == [nn.Linear, PerProcessBatchNorm1d, nn.LeakyReLU, nn.Linear]
    assert head.layers[2].negative_slope == 0.2
    assert head(torch.randn(6, 6, 2, 2, 1)).shape == (6, 6)
    with pytest.raises(ValueError, match="flattens to 12"):
        head(torch.randn(6, 3, 2, 2, 1))
    with pytest.raises(ValueError, match="n_cubes"):
        LocationHead(8, 1)


def test_location_head_batchnorm_is_batchnorm1d_that_stays_per_process():
    """The head's BatchNorm computes exactly what nn.BatchNorm1d does (train and eval, running statistics, state-dict
    keys), and nnU-Net's SyncBatchNorm conversion under DDP does not touch it."""
    torch.manual_seed(0)
    reference, ours = nn.BatchNorm1d(5), PerProcessBatchNorm1d(5)
    assert reference.state_dict().keys() == ours.state_dict().keys()
    ours.load_state_dict(reference.state_dict())
    for step in range(3):
        x = torch.randn(4, 5) * (step + 1) + step
        assert torch.equal(reference(x), ours(x))
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in reference.state_dict().items())
    reference.eval(), ours.eval()
    x = torch.randn(3, 5)
    assert torch.equal(reference(x), ours(x))
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(LocationHead(8, 4, hidden_features=5))
    assert isinstance(converted.layers[1], PerProcessBatchNorm1d)


def test_cubes_through_anisotropic_encoder_fit_location_head():
    # Tiny plan: strides total (2, 4, 4); patch (8, 8, 16) with cube (4, 4, 4) → grid 2×2×4, bottleneck 2×1×1.
    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2]]
    grid = CubeGrid.from_plan((8, 8, 16), strides, cube_size=4)
    assert grid.grid == (2, 2, 4) and grid.bottleneck_size == (2, 1, 1)
    enc = PlainConvEncoder(1, 3, [2, 4, 6], nn.Conv3d, 3, strides, 1, norm_op=nn.InstanceNorm3d, nonlin=nn.ReLU)
    x = torch.randn(2, 1, 8, 8, 16)
    bottleneck = enc(partition_cubes(x, grid))
    assert bottleneck.shape == (2 * 16, 6, 2, 1, 1)
    head = LocationHead(location_head_in_features(6, grid.cube_size, grid.total_stride), grid.n_cubes,
                        hidden_features=8)
    logits = head(bottleneck)
    assert logits.shape == (32, 16)
    loss = F.cross_entropy(logits, location_labels(grid, batch_size=2))
    loss.backward()
    assert torch.isfinite(loss)
