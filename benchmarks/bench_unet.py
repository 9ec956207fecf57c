"""CPU throughput of the named U-Net sizes: training (forward+backward) and inference samples/s."""

import argparse
import time

import torch

from skild_phys.networks.unet import CONFIGS, build_unet, count_parameters


def batch_size(name: str, size: int) -> int:
    """Batch for one row: 8, except base at L ≥ 128 where 8 samples would take minutes per step."""
    return 2 if name == "base" and size >= 128 else 8


def seconds_per_call(step, min_seconds: float, min_calls: int = 2) -> float:
    """Mean wall time of step() after one warm-up call, repeated for at least min_seconds."""
    step()
    calls = 0
    start = time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        step()
        calls += 1
    return (time.perf_counter() - start) / calls


def bench_row(name: str, size: int, min_seconds: float, max_seconds: float) -> str:
    """One table row: parameters and samples/s, or the reason the row was skipped."""
    torch.manual_seed(0)
    model = build_unet(name)
    params = count_parameters(model)
    batch = batch_size(name, size)
    x = torch.randn(batch, 1, size, size)
    n = torch.randint(1, 1001, (batch,))

    model.eval()
    with torch.inference_mode():
        start = time.perf_counter()
        model(x[:1], n[:1])
        probe = time.perf_counter() - start
    # a training step costs about three forwards; each measurement runs a warm-up and ≥ 2 calls
    estimate = probe * batch * (3 + 1) * 3
    if estimate > max_seconds:
        return f"{name:>5} {size:>4} {params:>12,} {batch:>5}   skipped (estimated {estimate:.0f} s)"

    def forward():
        with torch.inference_mode():
            model(x, n)

    def train_step():
        model.zero_grad(set_to_none=True)
        model(x, n).square().mean().backward()

    forward_rate = batch / seconds_per_call(forward, min_seconds)
    model.train()
    train_rate = batch / seconds_per_call(train_step, min_seconds)
    return f"{name:>5} {size:>4} {params:>12,} {batch:>5} {train_rate:>12.1f} {forward_rate:>12.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--L", nargs="+", type=int, default=[32, 64, 128])
    parser.add_argument("--min-seconds", type=float, default=2.0, help="timing window per measurement")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="skip rows estimated to take longer")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, float32")
    print(f"{'size':>5} {'L':>4} {'parameters':>12} {'batch':>5} {'fwd+bwd/s':>12} {'fwd/s':>12}")
    for name in args.sizes:
        for size in args.L:
            print(bench_row(name, size, args.min_seconds, args.max_seconds), flush=True)


if __name__ == "__main__":
    main()
