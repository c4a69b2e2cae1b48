"""Where SCDL's extra time goes: a ``torch.profiler`` view of the host U-Net and the SCDL copy (GPU).

For each of host/SCDL × train/inference it runs a few warm-up steps, then profiles ``--steps`` steps and prints:
- wall time per step, the summed GPU kernel time per step, and the kernel count per step. Wall time well above the
  kernel time means the GPU waits for the CPU to launch work (many small ops), not for arithmetic;
- the operators whose GPU time or count differs most between SCDL and host (what SCDL adds).

Same network options as ``scdl_cost.py``; example::

    python benchmarks/scdl_profile.py --device cuda --amp --patch 128 128 128 --stages 6 --batch 2
"""
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scdl_cost import Workload, parse_args, sync  # noqa: E402


def _device_time_us(event) -> float:
    for name in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def profile_step(step, device, steps: int, warmup: int):
    """(wall ms per step, kernel ms per step, kernels per step, {op name: (GPU µs, calls)} per step)."""
    for _ in range(warmup):
        step()
    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        wall = (time.perf_counter() - start) / steps
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    kernel_us = sum(e.device_time_total if hasattr(e, "device_time_total") else e.cuda_time_total for e in kernels)
    per_op = {}
    for avg in prof.key_averages():
        if avg.device_type == torch.autograd.DeviceType.CPU and avg.key.startswith("aten::"):
            per_op[avg.key] = (_device_time_us(avg) / steps, avg.count / steps)
    return 1e3 * wall, kernel_us / 1e3 / steps, len(kernels) / steps, per_op


def diff_table(host_ops, scdl_ops, top: int):
    rows = []
    for name in set(host_ops) | set(scdl_ops):
        h_us, h_n = host_ops.get(name, (0.0, 0.0))
        s_us, s_n = scdl_ops.get(name, (0.0, 0.0))
        rows.append((s_us - h_us, s_n - h_n, name, h_us, s_us))
    rows.sort(key=lambda r: -abs(r[0]))
    lines = [f"  {'operator':<42} {'extra GPU us':>12} {'extra calls':>11} {'host us':>9} {'SCDL us':>9}"]
    for extra_us, extra_n, name, h_us, s_us in rows[:top]:
        lines.append(f"  {name:<42} {extra_us:12.1f} {extra_n:11.1f} {h_us:9.1f} {s_us:9.1f}")
    calls = sorted(rows, key=lambda r: -r[1])[:top]
    lines.append("  most extra calls: " + ", ".join(f"{r[2]} +{r[1]:.0f}" for r in calls if r[1] > 0))
    return "\n".join(lines)


def _percent(value: float, reference: float) -> str:
    return f"{100 * (value / reference - 1):+.1f}%" if reference else "n/a"


def main(argv=None):
    import argparse
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--steps", type=int, default=3)
    extra.add_argument("--top", type=int, default=25)
    own, rest = extra.parse_known_args(argv)
    args = parse_args(rest)
    work = Workload(args)
    print(f"device={work.device} amp={args.amp} patch={args.patch} strides={work.strides} batch={args.batch} "
          f"prior_mode={args.prior_mode} token_grid={work.scdl_net.token_grid}")
    for kind, make in (("train", work.train_step), ("infer", work.infer_step)):
        host = profile_step(make(False), work.device, own.steps, args.warmup)
        scdl = profile_step(make(True), work.device, own.steps, args.warmup)
        print(f"\n== {kind}: wall ms, kernel ms, kernels per step")
        for label, (wall, kernel_ms, count, _) in (("host", host), ("SCDL", scdl)):
            print(f"  {label:<5} wall {wall:8.2f}  kernels {kernel_ms:8.2f}  count {count:7.0f}")
        print(f"  SCDL extra: wall {scdl[0] - host[0]:+.2f} ms ({_percent(scdl[0], host[0])}), kernels "
              f"{scdl[1] - host[1]:+.2f} ms ({_percent(scdl[1], host[1])}), {scdl[2] - host[2]:+.0f} kernels")
        print(diff_table(host[3], scdl[3], own.top))


if __name__ == "__main__":
    main()
