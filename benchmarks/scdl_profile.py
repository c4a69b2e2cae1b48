"""Where SCDL's extra time goes: a ``torch.profiler`` view of the host U-Net and the SCDL copy.

For each of host/SCDL × train/inference (``--only`` one of them) it runs a few warm-up steps, then profiles ``--steps``
steps and prints:
- wall time per step, the summed GPU kernel time per step, and the kernel count per step (GPU). Wall time well above
  the kernel time means the GPU waits for the CPU to launch work (many small ops), not for arithmetic;
- the operators whose time or count differs most between SCDL and host (what SCDL adds): GPU time of each ``aten``
  operator on a GPU, self CPU time on the CPU;
- on the CPU, SCDL's share of its own network's inference forward, timed inside the same forwards (pooling F to
  tokens, the SCDL module, adding the prior logits). Host and SCDL forwards run one after the other, so on a loaded
  machine their difference mixes load changes into the overhead; the share inside one forward does not.

Same network options as ``scdl_cost.py``; examples::

    python benchmarks/scdl_profile.py --device cuda --amp --patch 128 128 128 --stages 6 --batch 2
    python benchmarks/scdl_profile.py --threads 1 --only infer --batch 1 --patch 40 56 40 --stages 4 \
        --num-classes 3 --steps 20      # CPU, nnU-Net's default Hippocampus plans
"""
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scdl_cost import Workload, parse_args, sync  # noqa: E402


def _self_time_us(event, device) -> float:
    """The operator's own time: on the GPU its kernels', on the CPU its self CPU time."""
    names = ("self_device_time_total", "self_cuda_time_total") if device.type == "cuda" else ("self_cpu_time_total",)
    for name in names:
        if hasattr(event, name):
            return float(getattr(event, name))
    return 0.0


def profile_step(step, device, steps: int, warmup: int):
    """(wall ms per step, kernel ms per step, kernels per step, {op name: (self µs, calls)} per step); no kernels on
    the CPU."""
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
            per_op[avg.key] = (_self_time_us(avg, device) / steps, avg.count / steps)
    return 1e3 * wall, kernel_us / 1e3 / steps, len(kernels) / steps, per_op


@contextmanager
def timed_scdl_parts(net):
    """Accumulate the wall time of SCDL's parts of ``net`` (an ``SCDLUNet``) in the returned dict, in seconds."""
    from nnunetv2_scdl.networks import scdl_unet

    seconds = {"tokens": 0.0, "scdl module": 0.0, "prior logits": 0.0}

    def timed(part, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[part] += time.perf_counter() - start
        return wrapper

    pooling, add_prior = scdl_unet.features_to_tokens, net._add_prior_logits
    started = {}
    hooks = [net.scdl.register_forward_pre_hook(lambda *_: started.update(t=time.perf_counter())),
             net.scdl.register_forward_hook(lambda *_: seconds.update(
                 {"scdl module": seconds["scdl module"] + time.perf_counter() - started["t"]}))]
    scdl_unet.features_to_tokens = timed("tokens", pooling)
    net._add_prior_logits = timed("prior logits", add_prior)
    try:
        yield seconds
    finally:
        scdl_unet.features_to_tokens = pooling
        del net._add_prior_logits
        for hook in hooks:
            hook.remove()


def scdl_share_of_inference(work, steps: int, warmup: int) -> str:
    """SCDL's parts as a share of the SCDL network's own inference forward (CPU, timed in place)."""
    step = work.infer_step(True)
    for _ in range(warmup):
        step()
    with timed_scdl_parts(work.scdl_net) as parts:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - start
    own = sum(parts.values())
    details = ", ".join(f"{name} {1e3 * t / steps:.2f} ms" for name, t in parts.items())
    return (f"  SCDL's parts: {1e3 * own / steps:.2f} of {1e3 * total / steps:.2f} ms per forward "
            f"({100 * own / total:.2f} %; vs the rest of the forward {100 * own / (total - own):+.2f} %): {details}")


def diff_table(host_ops, scdl_ops, top: int, unit: str = "GPU"):
    rows = []
    for name in set(host_ops) | set(scdl_ops):
        h_us, h_n = host_ops.get(name, (0.0, 0.0))
        s_us, s_n = scdl_ops.get(name, (0.0, 0.0))
        rows.append((s_us - h_us, s_n - h_n, name, h_us, s_us))
    rows.sort(key=lambda r: -abs(r[0]))
    lines = [f"  {'operator':<42} {'extra ' + unit + ' us':>12} {'extra calls':>11} {'host us':>9} {'SCDL us':>9}"]
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
    extra.add_argument("--only", choices=("train", "infer"), default=None, help="profile one of the two steps")
    own, rest = extra.parse_known_args(argv)
    args = parse_args(rest)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Workload(args)
    print(f"device={work.device} amp={args.amp} patch={args.patch} strides={work.strides} batch={args.batch} "
          f"prior_mode={args.prior_mode} token_grid={work.scdl_net.token_grid}")
    kinds = [(k, m) for k, m in (("train", work.train_step), ("infer", work.infer_step)) if own.only in (None, k)]
    unit = "GPU" if work.device.type == "cuda" else "CPU"
    for kind, make in kinds:
        host = profile_step(make(False), work.device, own.steps, args.warmup)
        scdl = profile_step(make(True), work.device, own.steps, args.warmup)
        print(f"\n== {kind}: wall ms, kernel ms, kernels per step")
        for label, (wall, kernel_ms, count, _) in (("host", host), ("SCDL", scdl)):
            print(f"  {label:<5} wall {wall:8.2f}  kernels {kernel_ms:8.2f}  count {count:7.0f}")
        print(f"  SCDL extra: wall {scdl[0] - host[0]:+.2f} ms ({_percent(scdl[0], host[0])}), kernels "
              f"{scdl[1] - host[1]:+.2f} ms ({_percent(scdl[1], host[1])}), {scdl[2] - host[2]:+.0f} kernels")
        print(diff_table(host[3], scdl[3], own.top, unit))
        if kind == "infer" and work.device.type == "cpu":
            print(scdl_share_of_inference(work, own.steps, args.warmup))


if __name__ == "__main__":
    main()
