"""SKILD training and sampling throughput on this machine (CPU unless --device says otherwise).

For each network size and lattice size: training samples/s of the full SKILD step (DCT,
forward marginal, network forward/backward, AdamW, EMA) next to the bare network
forward+backward as reference, and sampling configurations/s for K = 1000, 100 and 50
reverse steps (the respaced chain costs K network evaluations per configuration).

    python benchmarks/bench_skild.py [--sizes 32,64,128] [--nets tiny,small,base] [--seconds 2]
"""

from __future__ import annotations

import argparse
import time

import torch

from skild_phys.methods.skild import auto_schedule, network_denoiser
from skild_phys.networks.unet import build_unet, count_parameters
from skild_phys.process.basis import Basis
from skild_phys.process.diffusion import Process


def timed(fn, seconds: float) -> float:
    """Seconds per call of fn, averaged over at least `seconds` (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt > seconds:
            return dt / n


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,64,128")
    ap.add_argument("--nets", default="tiny,small,base")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-step-seconds", type=float, default=20.0, help="skip cells slower than this per step")
    args = ap.parse_args()
    dev = torch.device(args.device)
    print(f"device {dev}, torch threads {torch.get_num_threads()}, batch {args.batch}")
    head = (f"{'net':<6}{'params':>11}{'L':>5}{'train samples/s':>17}{'bare fwd+bwd/s':>16}"
            f"{'conf/s K=1000':>15}{'K=100':>9}{'K=50':>9}")
    print(head)
    print("-" * len(head))
    for name in args.nets.split(","):
        for L in (int(s) for s in args.sizes.split(",")):
            torch.manual_seed(0)
            net = build_unet(name, periodic=True).to(dev)
            params = count_parameters(net)
            process = Process(Basis.dct(L), auto_schedule(L, 4), torch.ones(L, L)).to(dev)
            opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
            ema = torch.optim.swa_utils.AveragedModel(
                net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.999))
            x0 = torch.sign(torch.randn(args.batch, 1, L, L, device=dev))
            gen = torch.Generator().manual_seed(0)
            n = torch.randint(1, 1000, (args.batch,), device=dev)
            start = time.perf_counter()
            net(x0, n).sum().backward()  # probe: skip very slow cells
            if time.perf_counter() - start > args.max_step_seconds:
                print(f"{name:<6}{params:>11,}{L:>5}   skipped (one step > {args.max_step_seconds:g} s)")
                continue

            def skild_step():
                loss = process.loss(network_denoiser(net, process, "v"), x0, gen).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                ema.update_parameters(net)
                if dev.type == "cuda":
                    torch.cuda.synchronize()

            def bare_step():
                net.zero_grad(set_to_none=True)
                net(x0, n).square().mean().backward()
                if dev.type == "cuda":
                    torch.cuda.synchronize()

            eps_hat = network_denoiser(net, process, "v")

            def sample_step():
                with torch.no_grad():
                    eps_hat(x0.double(), n)
                if dev.type == "cuda":
                    torch.cuda.synchronize()

            t_train = timed(skild_step, args.seconds)
            t_bare = timed(bare_step, args.seconds)
            t_eval = timed(sample_step, args.seconds)
            rates = [args.batch / (K * t_eval) for K in (1000, 100, 50)]
            print(f"{name:<6}{params:>11,}{L:>5}{args.batch / t_train:>17.1f}{args.batch / t_bare:>16.1f}"
                  f"{rates[0]:>15.3f}{rates[1]:>9.2f}{rates[2]:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
