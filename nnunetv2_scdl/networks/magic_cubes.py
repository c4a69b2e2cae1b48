"""Magic-cube partition and recovery (MagicNet), generalised to nnU-Net's anisotropic plans (docs/magicnet.md).

Pure torch, no trainer logic. Works for 2-D ([B, C, H, W]) and 3-D ([B, C, D, H, W]) tensors.

Conventions (used by every function here)
-----------------------------------------
- Spatial axes are numbered a = 0..n-1 in tensor order. MagicNet's (x, y, z) are spatial axes (0, 1, 2); in nnU-Net
  plans axis 0 is usually the through-plane (low-resolution) axis.
- ``grid`` = (n_0, ..., n_{n-1}): the number of cubes per spatial axis. A feature map whose spatial size S_a is
  divisible by n_a is "aligned" with the grid; its cubes have size S_a / n_a. Passing counts rather than a cube size
  lets the same grid act on the input patch, the full-resolution embedding and lower-resolution deep-supervision
  outputs.
- **Cube list order** (the order of ``partition_cubes``' output): cube position i = (i_0, ..., i_{n-1}) has list index
  k = ravel_C(i) = i_0·n_1·…·n_{n-1} + … + i_{n-1}, i.e. axis 0 outermost and the last axis innermost. For MagicNet's
  3×3×3 grid this is k = 9x + 3y + z, the "x-outer/z-inner" list of the released code.
- Partitioned batches are image-major: row b·K + k holds cube k of image b (K = n_cubes), so ``cubes.view(B, K, ...)``
  gives one group of K cubes per image (MagicNet runs "each image's 27 cubes as a batch of 27").
- **Location label** of the cube at position i : l(i) = i_0 + n_0·i_1 + n_0·n_1·i_2 (+ …), i.e. the
  Fortran (first-axis-fastest) ravel. For 3×3×3 it is x + 3y + 9z. It is a bijection on {0..K-1}, so any consistent
  choice trains the location head equally well; we keep MagicNet's formula.

Faithful mode (the released code's read order)
-------------------------
The released within-image recovery places, at position i, the list element whose index is l(i) (it reads the list with
the location-label formula x + 3y + 9z while the list was built as 9x + 3y + z). ``recover_cubes(..., faithful=True)``
reproduces exactly this rule for any grid: "list built in C (axis-0-outer) order, read back in the reversed
(axis-0-inner) order". Consequences:
- If n_0 == n_{n-1} (e.g. MagicNet's 3×3×3), this is exactly the transposition of the cube grid along axes 0 ↔ n-1
  (18 of 27 cubes misplaced for 3×3×3).
- Otherwise the released code has no counterpart (it hard-codes 3 per axis). The rule above is still well defined,
  because every cube has the same shape, so any permutation of cubes reassembles into a tensor of the original shape;
  but it is no longer a transposition of the grid. We do not raise in that case: it keeps the "scrambled reassembly"
  behaviour available for parity experiments on nnU-Net's non-cubic grids. ``faithful_read_order`` returns the
  permutation so callers can inspect or log it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch

__all__ = [
    "SPEC_CUBE_SIZE",
    "MIN_BOTTLENECK_VOXELS",
    "CubeGrid",
    "encoder_total_stride",
    "validate_cube_size",
    "default_cube_size",
    "MIN_LOCATION_EDGE",
    "cube_size_at_stage",
    "default_location_stage",
    "partition_cubes",
    "recover_cubes",
    "location_labels",
    "faithful_read_order",
    "random_cube_permutations",
    "invert_cube_permutations",
    "mix_cubes_across_images",
    "unmix_cubes_across_images",
]

SPEC_CUBE_SIZE = 32  # MagicNet's cube edge (96³ patch → 3×3×3 grid)
# Every cube runs through the whole encoder; nnU-Net's instance norm cannot normalise a single voxel in training.
MIN_BOTTLENECK_VOXELS = 2
# MagicNet's location head reads a 2×2×2 bottleneck: it needs a layout within the cube, not just a channel vector
MIN_LOCATION_EDGE = 2

GridLike = Union["CubeGrid", Sequence[int]]


# ---------------------------------------------------------------------------------------------------------------------
# Grid construction from a plan
# ---------------------------------------------------------------------------------------------------------------------
def encoder_total_stride(stage_strides: Sequence[Union[int, Sequence[int]]], ndim: Optional[int] = None
                         ) -> Tuple[int, ...]:
    """Per-axis product of nnU-Net's per-stage encoder strides.

    Args:
        stage_strides: the plans' ``architecture.arch_kwargs['strides']`` (a.k.a. pool_op_kernel_sizes): one entry per
            encoder stage, each an int (same stride on every axis) or a per-axis sequence.
        ndim: number of spatial axes. Needed only if every entry is an int; otherwise read from the sequences.

    Returns:
        total stride per spatial axis, e.g. [[1,1,1],[2,2,2],[2,2,2],[2,2,2],[2,2,2],[1,2,2]] → (16, 32, 32).
    """
    if len(stage_strides) == 0:
        raise ValueError("stage_strides is empty: the encoder needs at least one stage.")
    lengths = {len(s) for s in stage_strides if not isinstance(s, int)}
    if len(lengths) > 1:
        raise ValueError(f"stage_strides mixes per-axis sequences of different lengths: {list(stage_strides)}")
    if lengths:
        seq_ndim = lengths.pop()
        if ndim is not None and ndim != seq_ndim:
            raise ValueError(f"ndim={ndim} but the stride sequences have {seq_ndim} axes: {list(stage_strides)}")
        ndim = seq_ndim
    if ndim is None:
        raise ValueError("All stage strides are ints; pass ndim to say how many spatial axes there are.")
    total = [1] * ndim
    for stage, s in enumerate(stage_strides):
        per_axis = [s] * ndim if isinstance(s, int) else list(s)
        for a, v in enumerate(per_axis):
            if int(v) != v or v < 1:
                raise ValueError(f"Encoder stage {stage} has an invalid stride {s!r} (axis {a}); strides must be "
                                 f"positive integers.")
            total[a] *= int(v)
    return tuple(total)


def validate_cube_size(patch_size: Sequence[int], cube_size: Sequence[int], total_stride: Sequence[int]
                       ) -> Tuple[int, ...]:
    """Check that ``cube_size`` tiles ``patch_size`` and survives the encoder; return the grid (cubes per axis).

    Per axis a: c_a must be a multiple of the encoder's total stride s_a (so a cube has a whole-voxel bottleneck of
    c_a / s_a and the U-Net returns a cube of the same size), and c_a must divide the patch size P_a.

    Raises:
        ValueError naming the axis, the patch size, the cube size and the stride when a condition fails.
    """
    patch_size, cube_size, total_stride = tuple(patch_size), tuple(cube_size), tuple(total_stride)
    if not (len(patch_size) == len(cube_size) == len(total_stride)):
        raise ValueError(f"patch_size {patch_size}, cube_size {cube_size} and total_stride {total_stride} must have "
                         f"one entry per spatial axis.")
    grid = []
    for a, (p, c, s) in enumerate(zip(patch_size, cube_size, total_stride)):
        if p < 1 or c < 1 or s < 1:
            raise ValueError(f"Axis {a}: patch size {p}, cube size {c} and total stride {s} must all be positive.")
        if c % s != 0:
            raise ValueError(f"Axis {a}: cube size {c} is not a multiple of the encoder's total stride {s} on that "
                             f"axis (patch size {p}); the cube's bottleneck would not be a whole number of voxels.")
        if p % c != 0:
            raise ValueError(f"Axis {a}: cube size {c} does not divide the patch size {p} (total stride {s}).")
        grid.append(p // c)
    return tuple(grid)


def default_cube_size(patch_size: Sequence[int], stage_strides: Sequence[Union[int, Sequence[int]]],
                      preferred: Optional[int] = SPEC_CUBE_SIZE, target_cubes_per_axis: int = 3) -> Tuple[int, ...]:
    """Pick a cube size per axis from the patch size and the encoder strides.

    Valid sizes on axis a are the multiples of the total stride s_a that divide P_a. Per axis:
      1. use ``preferred`` (default 32, MagicNet's cube edge) when it is valid;
      2. otherwise the valid size whose cube count P_a / c_a is closest to ``target_cubes_per_axis`` (MagicNet's 3);
         ties go to the smaller cube (more cubes, a finer location task).
    Pass ``preferred=None`` to use rule 2 only; rule 2 alone also applies when ``preferred`` would leave a single
    cube (a 32 × 32 patch). Then, while a cube's bottleneck ∏ c_a / s_a has fewer than
    ``MIN_BOTTLENECK_VOXELS`` voxels, the cube grows to the next valid size on the axis that keeps the most cubes
    (ties: the lowest axis).

    Examples (strides of the usual 3-D plans, total (16, 32, 32)):
      (96, 96, 96) → (32, 32, 32), grid 3×3×3;  (64, 160, 160) → (32, 32, 32), grid 2×5×5;
      (80, 192, 160) → (16, 64, 32), grid 5×3×5 (32 does not divide 80, and 16×32×32 would reach the bottleneck as
      one voxel); (48, 64, 64) → (16, 64, 32), grid 3×1×2.

    Raises:
        ValueError (naming axis, patch and stride) if P_a is not a multiple of s_a, or if no grid of at least two
        cubes keeps ``MIN_BOTTLENECK_VOXELS`` voxels per cube at the bottleneck.
    """
    patch_size = tuple(int(p) for p in patch_size)
    total = encoder_total_stride(stage_strides, len(patch_size))
    if len(total) != len(patch_size):
        raise ValueError(f"patch_size {patch_size} has {len(patch_size)} axes but the strides describe {len(total)}.")
    if target_cubes_per_axis < 1:
        raise ValueError(f"target_cubes_per_axis must be >= 1, got {target_cubes_per_axis}.")
    candidates, cube = [], []
    for a, (p, s) in enumerate(zip(patch_size, total)):
        if p % s != 0:
            raise ValueError(f"Axis {a}: patch size {p} is not a multiple of the encoder's total stride {s}, so no "
                             f"cube size can both divide the patch and be a multiple of the stride on that axis.")
        candidates.append([c for c in range(s, p + 1, s) if p % c == 0])
        if preferred is not None and preferred in candidates[a]:
            cube.append(preferred)
        else:
            cube.append(min(candidates[a], key=lambda c: (abs(p // c - target_cubes_per_axis), c)))

    def n_cubes(sizes):
        return math.prod(p // c for p, c in zip(patch_size, sizes))

    while math.prod(c // s for c, s in zip(cube, total)) < MIN_BOTTLENECK_VOXELS:
        larger = [cube[:a] + [next(c for c in candidates[a] if c > cube[a])] + cube[a + 1:]
                  for a in range(len(cube)) if cube[a] < patch_size[a]]
        if not larger:
            break
        cube = max(larger, key=n_cubes)  # max keeps the first (lowest axis) of equals
    if n_cubes(cube) < 2 and preferred is not None:  # the preferred edge fills the patch: rule 2 alone
        return default_cube_size(patch_size, stage_strides, None, target_cubes_per_axis)
    if n_cubes(cube) < 2:
        raise ValueError(f"Patch {patch_size} with encoder total stride {total} allows only one cube whose "
                         f"bottleneck keeps {MIN_BOTTLENECK_VOXELS} voxels; magic-cube partition needs at least two "
                         f"cubes (each cube must be a multiple of the stride).")
    return tuple(cube)


def cube_size_at_stage(cube_size: Sequence[int], stage_strides: Sequence[Union[int, Sequence[int]]], stage: int
                       ) -> Tuple[int, ...]:
    """The spatial size of one cube at the output of encoder stage ``stage``: c_a / ∏_{t ≤ stage} s_{t,a}.

    Example: cube (16, 64, 32), strides [[1,1,1],[2,2,2],[2,2,2],[2,2,2],[2,2,2],[1,2,2]]: stage 3 → (2, 8, 4),
    stage 5 (the bottleneck) → (1, 2, 1).
    """
    if not 0 <= stage < len(stage_strides):
        raise ValueError(f"stage {stage} is not an encoder stage (the encoder has {len(stage_strides)}).")
    stride = encoder_total_stride(stage_strides[:stage + 1], len(cube_size))
    for a, (c, s) in enumerate(zip(cube_size, stride)):
        if c % s != 0:
            raise ValueError(f"Axis {a}: cube size {c} is not a multiple of the stride {s} of encoder stage {stage}.")
    return tuple(c // s for c, s in zip(cube_size, stride))


def default_location_stage(cube_size: Sequence[int], stage_strides: Sequence[Union[int, Sequence[int]]]) -> int:
    """The encoder stage whose output the location head reads: the deepest stage at which a cube still spans at least
    ``MIN_LOCATION_EDGE`` voxels along every axis that is that long at the input (MagicNet's 32³ cube reaches its
    bottleneck as 2×2×2).

    On anisotropic plans the bottleneck of a cube is often a line or a pair of voxels (BTCV's CPU plans: 1×2×1), which
    instance norm reduces to which voxel is larger in each channel; a shallower stage keeps the cube's layout. When
    the bottleneck is already at least 2 voxels along every axis, this is the bottleneck, as in MagicNet.
    """
    needed = [min(MIN_LOCATION_EDGE, c) for c in cube_size]
    deep_enough = [stage for stage in range(len(stage_strides))
                   if all(size >= n for size, n in zip(cube_size_at_stage(cube_size, stage_strides, stage), needed))]
    return max(deep_enough, default=0)


@dataclass(frozen=True)
class CubeGrid:
    """A validated magic-cube grid for one plan.

    Attributes:
        patch_size: P, the network input patch (spatial only).
        cube_size: c, cube edge per axis (multiple of total_stride, divides P).
        total_stride: s, the encoder's cumulative stride per axis.
    Derived: ``grid`` = P / c (cubes per axis), ``n_cubes`` = K = ∏ grid, ``bottleneck_size`` = c / s (the spatial size
    of one cube's encoder bottleneck, used to size the location head).
    """
    patch_size: Tuple[int, ...]
    cube_size: Tuple[int, ...]
    total_stride: Tuple[int, ...]

    def __post_init__(self):
        object.__setattr__(self, "patch_size", tuple(int(v) for v in self.patch_size))
        object.__setattr__(self, "cube_size", tuple(int(v) for v in self.cube_size))
        object.__setattr__(self, "total_stride", tuple(int(v) for v in self.total_stride))
        validate_cube_size(self.patch_size, self.cube_size, self.total_stride)
        if self.n_cubes < 2:
            raise ValueError(f"Cube size {self.cube_size} on patch {self.patch_size} gives a single cube; magic-cube "
                             f"partition needs at least two.")
        if math.prod(self.bottleneck_size) < MIN_BOTTLENECK_VOXELS:
            raise ValueError(f"Cube size {self.cube_size} with encoder total stride {self.total_stride} reaches the "
                             f"bottleneck as {'×'.join(map(str, self.bottleneck_size))} voxel per cube; instance norm "
                             f"cannot normalise a single voxel in training. Use cubes with at least "
                             f"{MIN_BOTTLENECK_VOXELS} voxels at the bottleneck (a larger multiple of the stride on "
                             f"one axis).")

    @classmethod
    def from_plan(cls, patch_size: Sequence[int], stage_strides: Sequence[Union[int, Sequence[int]]],
                  cube_size: Optional[Union[int, Sequence[int]]] = None, preferred: Optional[int] = SPEC_CUBE_SIZE,
                  target_cubes_per_axis: int = 3) -> "CubeGrid":
        """Build from nnU-Net plans: ``patch_size`` and the per-stage encoder ``strides`` of the configuration.

        ``cube_size`` None → ``default_cube_size(patch_size, stage_strides, preferred, target_cubes_per_axis)``;
        an int means the same edge on every axis.
        """
        patch_size = tuple(patch_size)
        total = encoder_total_stride(stage_strides, len(patch_size))
        if cube_size is None:
            cube_size = default_cube_size(patch_size, stage_strides, preferred, target_cubes_per_axis)
        elif isinstance(cube_size, int):
            cube_size = (cube_size,) * len(patch_size)
        return cls(patch_size, tuple(cube_size), total)

    @property
    def ndim(self) -> int:
        return len(self.patch_size)

    @property
    def grid(self) -> Tuple[int, ...]:
        return tuple(p // c for p, c in zip(self.patch_size, self.cube_size))

    @property
    def n_cubes(self) -> int:
        return math.prod(self.grid)

    @property
    def bottleneck_size(self) -> Tuple[int, ...]:
        return tuple(c // s for c, s in zip(self.cube_size, self.total_stride))


# ---------------------------------------------------------------------------------------------------------------------
# Within-image partition / recovery
# ---------------------------------------------------------------------------------------------------------------------
def _grid_counts(grid: GridLike) -> Tuple[int, ...]:
    counts = grid.grid if isinstance(grid, CubeGrid) else tuple(int(n) for n in grid)
    if len(counts) == 0 or any(n < 1 for n in counts):
        raise ValueError(f"grid must list a positive number of cubes per spatial axis, got {counts}.")
    return counts


def _check_aligned(x: torch.Tensor, counts: Tuple[int, ...], what: str) -> None:
    if x.dim() != 2 + len(counts):
        raise ValueError(f"{what} must be [B, C, *spatial] with {len(counts)} spatial axes to match grid {counts}, "
                         f"got shape {tuple(x.shape)}.")
    for a, (size, n) in enumerate(zip(x.shape[2:], counts)):
        if size % n != 0:
            raise ValueError(f"{what}: spatial axis {a} has size {size}, which is not divisible by {n} cubes; the "
                             f"feature map is not aligned with grid {counts}.")


def partition_cubes(x: torch.Tensor, grid: GridLike) -> torch.Tensor:
    """Cut every image into its cubes.

    Args:
        x: [B, C, S_0, ..., S_{n-1}], S_a divisible by grid[a].
        grid: cubes per axis (n_0, ..., n_{n-1}) or a ``CubeGrid``.

    Returns:
        [B·K, C, S_0/n_0, ..., S_{n-1}/n_{n-1}]; row b·K + k is cube k (C-order list index, see module doc) of image b.
    """
    counts = _grid_counts(grid)
    _check_aligned(x, counts, "partition_cubes input")
    b, c, spatial = x.shape[0], x.shape[1], x.shape[2:]
    nd = len(counts)
    cube = [s // n for s, n in zip(spatial, counts)]
    # [B, C, n_0, c_0, n_1, c_1, ...] → [B, n_0, n_1, ..., C, c_0, c_1, ...]
    split = [b, c] + [v for pair in zip(counts, cube) for v in pair]
    perm = [0] + [2 + 2 * a for a in range(nd)] + [1] + [3 + 2 * a for a in range(nd)]
    return x.reshape(split).permute(perm).reshape(b * math.prod(counts), c, *cube)


def recover_cubes(cubes: torch.Tensor, grid: GridLike, faithful: bool = False) -> torch.Tensor:
    """Reassemble cubes into images (within-image recovery).

    Args:
        cubes: [B·K, C, c_0, ..., c_{n-1}] in the layout of ``partition_cubes`` (image-major, C-order list).
        grid: cubes per axis or a ``CubeGrid``.
        faithful: False (default) → exact inverse of ``partition_cubes``. True → the released MagicNet behaviour
            (the released code): position i receives list element l(i) (location-label formula), i.e. the grid transposed
            along axes 0 ↔ n-1 when n_0 == n_{n-1}; see the module docstring for non-cubic grids.

    Returns:
        [B, C, n_0·c_0, ..., n_{n-1}·c_{n-1}].
    """
    counts = _grid_counts(grid)
    nd, k = len(counts), math.prod(counts)
    if cubes.dim() != 2 + nd:
        raise ValueError(f"cubes must be [B*K, C, *cube] with {nd} spatial axes to match grid {counts}, got shape "
                         f"{tuple(cubes.shape)}.")
    if cubes.shape[0] % k != 0:
        raise ValueError(f"cubes has {cubes.shape[0]} rows, not a multiple of the {k} cubes of grid {counts}.")
    b, c, cube = cubes.shape[0] // k, cubes.shape[1], cubes.shape[2:]
    if faithful:
        # Reading the list at index l(i) for output position i (the released code's order).
        order = faithful_read_order(counts, device=cubes.device)
        cubes = cubes.reshape(b, k, c, *cube).index_select(1, order).reshape(b * k, c, *cube)
    # [B, n_0, ..., n_{n-1}, C, c_0, ...] → [B, C, n_0, c_0, n_1, c_1, ...]
    x = cubes.reshape(b, *counts, c, *cube)
    perm = [0, 1 + nd] + [v for a in range(nd) for v in (1 + a, 2 + nd + a)]
    return x.permute(perm).reshape(b, c, *[n * s for n, s in zip(counts, cube)])


def location_labels(grid: GridLike, batch_size: Optional[int] = None, device=None) -> torch.Tensor:
    """Location-reasoning targets l(i) = i_0 + n_0·i_1 + n_0·n_1·i_2 + … (MagicNet: x + n_x·y + n_x·n_y·z).

    Returns:
        LongTensor [K] in cube-list order (entry k is the label of list element k), or [B·K] repeated per image when
        ``batch_size`` is given, matching the rows of ``partition_cubes``.
    """
    counts = _grid_counts(grid)
    positions = torch.stack(torch.meshgrid(*[torch.arange(n) for n in counts], indexing="ij"), dim=0)
    positions = positions.reshape(len(counts), -1)  # [n_dims, K], column k = position of list element k (C order)
    weights = torch.tensor([math.prod(counts[:a]) for a in range(len(counts))], dtype=torch.long)
    labels = (weights[:, None] * positions).sum(0)
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        labels = labels.repeat(batch_size)
    return labels.to(device) if device is not None else labels


def faithful_read_order(grid: GridLike, device=None) -> torch.Tensor:
    """The released (buggy) within-image read order: entry k = list index placed at position k (C-order) = l(pos k).

    For an n_0 == n_{n-1} grid this is the axis-0 ↔ axis-(n-1) transposition of the grid; it is a permutation of
    0..K-1 for any grid (see the module docstring).
    """
    return location_labels(grid, device=device)


# ---------------------------------------------------------------------------------------------------------------------
# Cross-image mixing
# ---------------------------------------------------------------------------------------------------------------------
def random_cube_permutations(batch_size: int, n_cubes: int, generator: Optional[torch.Generator] = None,
                             device=None) -> torch.Tensor:
    """One independent random permutation of the batch indices per cube position.

    Returns:
        LongTensor π [K, B]: mixed image b takes its cube at list position k from image π[k, b]. Drawn on the CPU (or
        the generator's device) and moved to ``device``.
    """
    if batch_size < 1 or n_cubes < 1:
        raise ValueError(f"batch_size and n_cubes must be >= 1, got {batch_size} and {n_cubes}.")
    gen_device = generator.device if generator is not None else "cpu"
    keys = torch.rand(n_cubes, batch_size, generator=generator, device=gen_device)
    perms = keys.argsort(dim=1)
    return perms.to(device) if device is not None else perms


def invert_cube_permutations(perms: torch.Tensor) -> torch.Tensor:
    """π⁻¹ with π⁻¹[k, π[k, b]] = b, row-wise. Raises if a row is not a permutation of 0..B-1."""
    if perms.dim() != 2:
        raise ValueError(f"perms must be [K, B], got shape {tuple(perms.shape)}.")
    expected = torch.arange(perms.shape[1], device=perms.device)
    if not torch.equal(perms.sort(dim=1).values, expected.expand_as(perms)):
        raise ValueError("Every row of perms must be a permutation of the batch indices 0..B-1.")
    return perms.argsort(dim=1)


def _permute_cubes(x: torch.Tensor, counts: Tuple[int, ...], perms: torch.Tensor, what: str) -> torch.Tensor:
    _check_aligned(x, counts, what)
    b, k = x.shape[0], math.prod(counts)
    if tuple(perms.shape) != (k, b):
        raise ValueError(f"{what}: perms must have shape [n_cubes, B] = [{k}, {b}], got {tuple(perms.shape)}.")
    cubes = partition_cubes(x, counts)
    cubes = cubes.reshape(b, k, *cubes.shape[1:])
    # out[b, k] = cubes[perms[k, b], k]
    mixed = cubes[perms.t().to(x.device), torch.arange(k, device=x.device)[None, :]]
    return recover_cubes(mixed.reshape(b * k, *cubes.shape[2:]), counts)


def mix_cubes_across_images(x: torch.Tensor, grid: GridLike, perms: torch.Tensor) -> torch.Tensor:
    """Cross-image partition: mixed[b] has, at cube position k, the cube k of image π[k, b].

    Args:
        x: [B, C, *spatial], aligned with ``grid``.
        grid: cubes per axis or a ``CubeGrid``.
        perms: π [K, B] from ``random_cube_permutations``.
    Returns:
        [B, C, *spatial].
    """
    return _permute_cubes(x, _grid_counts(grid), perms, "mix_cubes_across_images input")


def unmix_cubes_across_images(x: torch.Tensor, grid: GridLike, perms: torch.Tensor) -> torch.Tensor:
    """Cross-image recovery: the exact inverse of ``mix_cubes_across_images`` with the same π.

    ``x`` may be any feature map computed from the mixed batch whose spatial grid is aligned (input, full-resolution
    embedding, logits, or a deep-supervision output whose size is still divisible by the grid).
    """
    return _permute_cubes(x, _grid_counts(grid), invert_cube_permutations(perms), "unmix_cubes_across_images input")
