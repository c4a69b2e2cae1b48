"""Cost of SCDL on a plans-like nnU-Net U-Net: training iteration and inference forward, host vs SCDL-wrapped.

The host is the plan-generated ``PlainConvUNet`` (or ``ResidualEncoderUNet`` with ``--arch resenc``); the SCDL network
wraps an identical copy. Timed, interleaved host/SCDL and reported as medians:
- train: forward with deep supervision + loss + backward + SGD step. Host loss: cross-entropy on every DS output.
  SCDL adds ``forward(x, return_scdl=True)`` and ``scdl_loss_terms`` for a batch whose first half is labeled.
- infer: eval mode, no grad, deep supervision off, one forward (what nnU-Net's predictor runs per patch).
- (train fwd+loss): the training forward and losses only, ending with ``loss.item()`` (a diagnostic row).

Default: a small 3-D configuration with the channel widths of nnU-Net's 3d_fullres plans (32…320), so the relative
cost is representative (both the U-Net's and SCDL's cost scale with the number of voxels) while a CPU run takes about
a minute. Example::

    python benchmarks/scdl_cost.py --threads 1                      # CPU default (about 1.5 min)
    python benchmarks/scdl_cost.py --device cuda --amp --patch 128 128 128 --stages 6 --batch 2 --iters 15 --warmup 4
"""
import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F
from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet
from torch import nn

from nnunetv2_scdl.networks.scdl_unet import SCDLUNet


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", choices=("plain", "resenc"), default="plain")
    parser.add_argument("--dim", type=int, choices=(2, 3), default=3)
    parser.add_argument("--patch", type=int, nargs="+", default=[32, 48, 48])
    parser.add_argument("--stages", type=int, default=5, help="number of resolution stages")
    parser.add_argument("--strides", type=str, default=None,
                        help="JSON list of per-stage strides; default [1, 2, 2, ...] per axis")
    parser.add_argument("--features", type=int, nargs="+", default=None,
                        help="features per stage; default nnU-Net's 32·2^s capped at 320 (3d) / 512 (2d)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=14)
    parser.add_argument("--token-source", default="decoder")
    parser.add_argument("--prior-mode", default="decoder")
    parser.add_argument("--num-samples", type=int, default=50)
    parser.add_argument("--num-prior-samples", type=int, default=None)
    parser.add_argument("--token-stride", type=int, default=None)
    parser.add_argument("--projection-in-autocast", action="store_true",
                        help="run SCDL's projection MLP under autocast (default: fp32)")
    parser.add_argument("--iters", type=int, default=5, help="timed repetitions per measurement")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--amp", action="store_true", help="fp16 autocast (CUDA)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both networks first, as nnU-Net does for CUDA training by default "
                             "(compilation takes minutes; the warm-up steps absorb it)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads (default: torch's). On a shared machine use 1 with --clock process")
    parser.add_argument("--clock", choices=("wall", "process"), default=None,
                        help="wall-clock time (default on CUDA, synchronised) or this process's CPU time (default on "
                             "CPU: less sensitive to other jobs on a shared machine)")
    return parser.parse_args(argv)


def build_host(args):
    dim = args.dim
    if len(args.patch) != dim:
        raise SystemExit(f"--patch needs {dim} values")
    strides = json.loads(args.strides) if args.strides else [[1] * dim] + [[2] * dim] * (args.stages - 1)
    cap = 320 if dim == 3 else 512
    features = (args.features or [min(32 * 2 ** s, cap) for s in range(len(strides))])[:len(strides)]
    conv = nn.Conv3d if dim == 3 else nn.Conv2d
    norm = nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d
    n = len(strides)
    common = dict(input_channels=1, n_stages=n, features_per_stage=features, conv_op=conv, kernel_sizes=3,
                  strides=strides, num_classes=args.num_classes, n_conv_per_stage_decoder=[2] * (n - 1) if
                  args.arch == "plain" else [1] * (n - 1), conv_bias=True, norm_op=norm,
                  norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
                  deep_supervision=True)
    if args.arch == "plain":
        host = PlainConvUNet(n_conv_per_stage=[2] * n, **common)
    else:
        host = ResidualEncoderUNet(n_blocks_per_stage=[1, 3, 4, 6, 6, 6, 6][:n], **common)
    host.apply(host.initialize)
    return host, strides, features


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Workload:
    """The host U-Net and its SCDL-wrapped copy on one synthetic batch, with step functions for both.

    ``train_step(with_scdl)`` / ``infer_step(with_scdl)`` return closures that run one step of the respective
    network; ``benchmarks/scdl_profile.py`` re-uses them.
    """

    def __init__(self, args):
        self.args = args
        self.device = device = torch.device(args.device)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # as nnU-Net does
        torch.manual_seed(0)
        host, self.strides, self.features = build_host(args)
        scdl_net = SCDLUNet(copy.deepcopy(host), args.num_classes, args.patch, token_source=args.token_source,
                            prior_mode=args.prior_mode, num_samples=args.num_samples,
                            num_prior_samples=args.num_prior_samples, token_stride=args.token_stride,
                            projection_in_autocast=args.projection_in_autocast)
        self.host, self.scdl_net = host.to(device), scdl_net.to(device)
        # the projections start at zero; give them values so that no shortcut is measured
        with torch.no_grad():
            for linear in self.scdl_net.scdl.prior_projections.maps:
                linear.weight.normal_(0, 0.01)
        self.x = torch.randn(args.batch, 1, *args.patch, device=device)
        self.target = torch.randint(0, args.num_classes, (args.batch, 1, *args.patch), device=device)
        with torch.no_grad():
            self.host.eval()
            ds_shapes = [o.shape[2:] for o in self.host(self.x)]
        self.ds_targets = [F.interpolate(self.target.float(), size=s, mode="nearest")[:, 0].long()
                           for s in ds_shapes]
        if args.compile:  # after the eager shape probe above, which would compile another graph
            self.host, self.scdl_net = torch.compile(self.host), torch.compile(self.scdl_net)
        self.n_labeled = max(1, args.batch // 2)
        self.amp = torch.autocast(device.type, dtype=torch.float16, enabled=args.amp)

    def network(self, with_scdl):
        return self.scdl_net if with_scdl else self.host

    def train_step(self, with_scdl, backward=True):
        net = self.network(with_scdl)
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.args.amp)

        def step():
            net.train()
            net.decoder.deep_supervision = True
            optimizer.zero_grad(set_to_none=True)
            with self.amp:
                if with_scdl:
                    outputs, aux = net(self.x, return_scdl=True)
                else:
                    outputs = net(self.x)
                loss = sum(F.cross_entropy(o, t) for o, t in zip(outputs, self.ds_targets))
            if with_scdl:
                terms = net.scdl_loss_terms(aux, self.target, self.n_labeled)
                loss = loss + 0.1 * sum(terms.values())
            if not backward:
                loss.item()  # what nnU-Net does with the loss; also the end of the timed region
                return
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        return step

    def infer_step(self, with_scdl):
        net = self.network(with_scdl)

        def step():
            net.eval()
            net.decoder.deep_supervision = False
            with torch.no_grad(), self.amp:
                net(self.x)
        return step


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Workload(args)
    device, host, scdl_net, strides, features = work.device, work.host, work.scdl_net, work.strides, work.features

    if args.clock is None:
        args.clock = "wall" if device.type == "cuda" else "process"
    clock = time.process_time if args.clock == "process" else time.perf_counter

    def timed(step):
        sync(device)
        start = clock()
        step()
        sync(device)
        return clock() - start

    def compare(host_step, scdl_step):
        for _ in range(args.warmup):
            host_step(), scdl_step()
        host_times, scdl_times = [], []
        for i in range(args.iters):  # interleaved, alternating order, to cancel drift and contention
            if i % 2 == 0:
                host_times.append(timed(host_step)), scdl_times.append(timed(scdl_step))
            else:
                scdl_times.append(timed(scdl_step)), host_times.append(timed(host_step))
        return (statistics.median(host_times), statistics.median(scdl_times), min(host_times), min(scdl_times))

    results = {
        "train iteration": compare(work.train_step(False), work.train_step(True)),
        "inference forward": compare(work.infer_step(False), work.infer_step(True)),
        "(train fwd+loss)": compare(work.train_step(False, False), work.train_step(True, False)),
    }
    bounds = {"train iteration": "5%", "inference forward": "2%", "(train fwd+loss)": "-"}

    host_params = sum(p.numel() for p in host.parameters())
    scdl_params = sum(p.numel() for p in scdl_net.scdl.parameters())
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu, {torch.get_num_threads()} threads")
    print(f"device={device} ({where}) amp={args.amp} arch={args.arch} dim={args.dim} "
          f"patch={args.patch} strides={strides} features={features} batch={args.batch} classes={args.num_classes}")
    print(f"token_source={args.token_source} prior_mode={args.prior_mode} token_strides={scdl_net.token_strides} "
          f"grid={scdl_net.token_grid} L={scdl_net.num_tokens} S={args.num_samples} "
          f"S_prior={scdl_net.scdl.num_prior_samples} projection_in_autocast={args.projection_in_autocast} "
          f"host params={host_params / 1e6:.2f}M scdl params={scdl_params / 1e6:.2f}M")
    print(f"| {'measurement':<18} | {'host ms':>9} | {'SCDL ms':>9} | {'overhead':>8} | {'min-based':>9} | "
          f"{'bound':>5} |")
    print(f"|{'-' * 20}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 11}|{'-' * 7}|")
    for name, (host_time, scdl_time, host_min, scdl_min) in results.items():
        overhead = 100.0 * (scdl_time - host_time) / host_time
        overhead_min = 100.0 * (scdl_min - host_min) / host_min
        print(f"| {name:<18} | {1e3 * host_time:9.1f} | {1e3 * scdl_time:9.1f} | {overhead:7.2f}% | "
              f"{overhead_min:8.2f}% | {bounds[name]:>5} |")
    print(f"clock={args.clock}; times are medians over {args.iters} interleaved runs; min-based = the same from "
          f"the fastest run of each")


if __name__ == "__main__":
    main()
