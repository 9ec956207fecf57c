"""SKILD training and sampling throughput on this machine (CPU unless --device says otherwise).

For each network size and lattice size: training samples/s of the full SKILD step (DCT,
forward marginal, network forward/backward, AdamW, EMA) next to the bare network
forward+backward as reference, and sampling configurations/s for K = 1000, 100 and 50
reverse steps (the respaced chain costs K network evaluations per configuration).

    python benchmarks/bench_skild.py [--sizes 32,64,128] [--nets tiny,small,base] [--seconds 2]

On a GPU, --modes compares how the network runs (skild_phys.networks.precision.accelerate):
fp32, bf16 autocast, TF32 matmuls, each optionally under torch.compile ("bf16+compile"), and
the peak device memory of the training and the sampling step is printed next to the rates:

    python benchmarks/bench_skild.py --device cuda --modes fp32,bf16,tf32,bf16+compile \
        --batch 64 --sample-batch 512
"""

from __future__ import annotations

import argparse
import time

import torch

from skild_phys.methods.skild import auto_schedule, network_denoiser
from skild_phys.networks.precision import PRECISIONS, accelerate
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


def parse_mode(mode: str) -> tuple[str, bool]:
    """"bf16+compile" -> ("bf16", True); a one-line error for anything else than PRECISIONS[+compile]."""
    precision, _, extra = mode.partition("+")
    if precision not in PRECISIONS or extra not in ("", "compile"):
        raise SystemExit(f"--modes: {mode!r} is not one of {', '.join(PRECISIONS)}, optionally with +compile")
    return precision, extra == "compile"


def set_tf32(on: bool) -> None:
    """TF32 is a process-wide switch: set it for each mode so an earlier "tf32" row leaks into no other."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def peak_memory(dev: torch.device, fn) -> str:
    """Peak device memory of one call of fn, in MiB (CUDA only; "-" elsewhere)."""
    if dev.type != "cuda":
        return "-"
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(dev)
    fn()
    torch.cuda.synchronize()
    return f"{torch.cuda.max_memory_allocated(dev) / 2**20:.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="32,64,128")
    ap.add_argument("--nets", default="tiny,small,base")
    ap.add_argument("--batch", type=int, default=8, help="training batch")
    ap.add_argument("--sample-batch", type=int, default=None, help="configurations per sampling step [default: --batch]")
    ap.add_argument("--modes", default="fp32", help="comma-separated: fp32, bf16, tf32, each optionally +compile")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-step-seconds", type=float, default=20.0, help="skip cells slower than this per step")
    args = ap.parse_args()
    dev = torch.device(args.device)
    modes = [(m, *parse_mode(m)) for m in args.modes.split(",")]
    sample_batch = args.sample_batch or args.batch
    print(f"device {dev}, torch threads {torch.get_num_threads()}, batch {args.batch}, sampling batch {sample_batch}")
    head = (f"{'net':<6}{'params':>11}{'L':>5}{'mode':>14}{'train samples/s':>17}{'bare fwd+bwd/s':>16}"
            f"{'conf/s K=1000':>15}{'K=100':>9}{'K=50':>9}{'train MiB':>11}{'sample MiB':>12}")
    print(head)
    print("-" * len(head))
    for name in args.nets.split(","):
        for L in (int(s) for s in args.sizes.split(",")):
            for mode, precision, compiled in modes:
                set_tf32(precision == "tf32" and dev.type == "cuda")
                torch.manual_seed(0)
                net = build_unet(name, periodic=True).to(dev)
                params = count_parameters(net)
                run_net = accelerate(net, dev, precision, compiled)
                process = Process(Basis.fourier(L), auto_schedule(L, 4), torch.ones(L, L)).to(dev)
                opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
                ema = torch.optim.swa_utils.AveragedModel(
                    net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(0.999))
                x0 = torch.sign(torch.randn(args.batch, 1, L, L, device=dev))
                xs = torch.sign(torch.randn(sample_batch, 1, L, L, device=dev)).double()
                gen = torch.Generator().manual_seed(0)
                n = torch.randint(1, 1000, (args.batch,), device=dev)
                ns = torch.randint(1, 1000, (sample_batch,), device=dev)
                start = time.perf_counter()
                run_net(x0, n).sum().backward()  # probe (and, compiled, the compilation): skip very slow cells
                if time.perf_counter() - start > args.max_step_seconds and not compiled:
                    print(f"{name:<6}{params:>11,}{L:>5}{mode:>14}   skipped (one step > {args.max_step_seconds:g} s)")
                    continue

                def skild_step():
                    loss = process.loss(network_denoiser(run_net, process, "v"), x0, gen).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    ema.update_parameters(net)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()

                def bare_step():
                    net.zero_grad(set_to_none=True)
                    run_net(x0, n).square().mean().backward()
                    if dev.type == "cuda":
                        torch.cuda.synchronize()

                eps_hat = network_denoiser(run_net, process, "v")

                def sample_step():
                    with torch.no_grad():
                        eps_hat(xs, ns)
                    if dev.type == "cuda":
                        torch.cuda.synchronize()

                t_train = timed(skild_step, args.seconds)
                t_bare = timed(bare_step, args.seconds)
                t_eval = timed(sample_step, args.seconds)
                mem_train, mem_sample = peak_memory(dev, skild_step), peak_memory(dev, sample_step)
                rates = [sample_batch / (K * t_eval) for K in (1000, 100, 50)]
                print(f"{name:<6}{params:>11,}{L:>5}{mode:>14}{args.batch / t_train:>17.1f}{args.batch / t_bare:>16.1f}"
                      f"{rates[0]:>15.3f}{rates[1]:>9.2f}{rates[2]:>9.2f}{mem_train:>11}{mem_sample:>12}", flush=True)


if __name__ == "__main__":
    main()
