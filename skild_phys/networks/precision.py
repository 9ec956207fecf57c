"""How a network runs: fp32, bf16 autocast or TF32 matmuls, optionally under torch.compile."""

from __future__ import annotations

import torch

from skild_base.errors import InputError

PRECISIONS = ("fp32", "bf16", "tf32")


class AutocastNet(torch.nn.Module):
    """The network's forward under bf16 autocast, returning float32; the process stays float64.

    Only the network runs in reduced precision: the basis transforms, the schedule's tables
    and the chain's arithmetic keep their dtypes (autocast never touches float64, and the
    output is cast back before any of them sees it).
    """

    def __init__(self, net: torch.nn.Module, device_type: str):
        super().__init__()
        self.net, self.device_type = net, device_type

    def forward(self, x, n, cond=None):
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16):
            out = self.net(x, n, cond)
        return out.float()


def accelerate(net: torch.nn.Module, device: torch.device, precision: str = "fp32", compile: bool = False):
    """The network as it runs: bf16 autocast and/or torch.compile on request; TF32 matmuls for "tf32".

    fp32 (the default) is the network untouched.  "tf32" lets CUDA matmuls and convolutions use
    TensorFloat-32 (no effect on CPU).  The weights are shared with `net`, so saving and the
    EMA see the same parameters.
    """
    if precision not in PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "tf32" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    out = AutocastNet(net, device.type) if precision == "bf16" else net
    if compile:
        out = torch.compile(out)
    return out
