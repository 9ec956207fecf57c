"""NCSN++-style ε-prediction U-Net backbone, conditioned on the integer diffusion step n."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

SKIP_SCALE = 1.0 / math.sqrt(2.0)  # NCSN++ skip_rescale: keeps the residual sum at unit variance


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of one named network size."""

    base_channels: int
    channel_mult: tuple[int, ...]
    blocks_per_level: int
    attention_levels: tuple[int, ...]  # levels with self-attention, counted in downsamplings
    dropout: float = 0.0
    emb_mult: int = 4  # step-embedding width = emb_mult · base_channels
    film: bool = False  # step embedding as scale and shift instead of a bias
    mid_attention: bool = True  # self-attention in the bottleneck

    def __post_init__(self):
        if not self.channel_mult:
            raise ValueError("channel_mult must name at least one level")
        levels = len(self.channel_mult)
        for level in self.attention_levels:
            if not 0 <= level < levels:
                raise ValueError(f"attention level {level} outside 0..{levels - 1}")

    @property
    def downsamplings(self) -> int:
        """Number of factor-2 downsamplings between input and bottleneck."""
        return len(self.channel_mult) - 1


CONFIGS: dict[str, UNetConfig] = {
    "tiny": UNetConfig(base_channels=16, channel_mult=(1, 2, 2), blocks_per_level=1,
                       attention_levels=(2,), dropout=0.0),
    "small": UNetConfig(base_channels=32, channel_mult=(1, 2, 2, 2), blocks_per_level=2,
                        attention_levels=(3,), dropout=0.1),
    "base": UNetConfig(base_channels=128, channel_mult=(1, 2, 2, 2), blocks_per_level=2,
                       attention_levels=(2, 3), dropout=0.1, film=True),
}


class Window:
    """How far the network's global operations see: shared by every GroupNorm and attention of one U-Net.

    `lattice` is None (global: statistics and attention over the whole grid, the default) or the
    (height, width) in input pixels of a periodic window around each site — the training lattice,
    for a checkpoint run on a larger one.  Inside the network a layer at 1/2^j resolution sees a
    window of lattice/2^j positions.  Along an axis no longer than its window the layer is global,
    so at the training size a windowed network is the trained network exactly.
    """

    def __init__(self):
        self.lattice: tuple[int, int] | None = None
        self.input: tuple[int, int] = (0, 0)  # the (H, W) of the current forward's input

    def at(self, height: int, width: int) -> tuple[int, int] | None:
        """Window (wh, ww) in positions of a height x width feature map, None where it is global."""
        if self.lattice is None:
            return None
        wh = max(1, round(self.lattice[0] * height / self.input[0]))
        ww = max(1, round(self.lattice[1] * width / self.input[1]))
        return None if (height <= wh and width <= ww) else (wh, ww)


def window_weights(size: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights over the offsets of a periodic window of `window` sites centred on a site, on an axis of `size`.

    Odd window: offsets −(w−1)/2 … (w−1)/2, weight 1.  Even window: offsets −w/2 … w/2 with half weight
    at both ends, so the window is symmetric and, when the axis is exactly w long (the two ends are one
    site), every site counts once.  An axis no longer than the window: every site once (offsets 0 … size−1).
    Returns (offsets, weights) with weights summing to min(size, window)."""
    if size <= window:
        return torch.arange(size), torch.ones(size, dtype=torch.float64)
    half = window // 2
    offsets = torch.arange(-half, half + 1)
    weights = torch.ones(len(offsets), dtype=torch.float64)
    if window % 2 == 0:
        weights[0] = weights[-1] = 0.5
    return offsets, weights


def _window_mean(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Weighted periodic mean of x (B, G, H, W) over the window around every site (separable)."""
    for axis, w in zip((2, 3), window):
        size = x.shape[axis]
        offsets, weights = window_weights(size, w)
        if size <= w:
            x = x.mean(dim=axis, keepdim=True).expand_as(x)
            continue
        lo, hi = -int(offsets[0]), int(offsets[-1])
        pad = (0, 0, lo, hi) if axis == 2 else (lo, hi, 0, 0)
        kernel = (weights / weights.sum()).to(x)
        shape = (1, 1, len(kernel), 1) if axis == 2 else (1, 1, 1, len(kernel))
        groups = x.shape[1]
        x = F.conv2d(F.pad(x, pad, mode="circular"), kernel.reshape(shape).expand(groups, 1, *shape[2:]),
                     groups=groups)
    return x


class WindowedGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are, under a Window, those of the periodic window around each site."""

    def __init__(self, groups: int, channels: int, window: Window, eps: float = 1e-6):
        super().__init__(groups, channels, eps=eps)
        self.window = window

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        window = self.window.at(*x.shape[-2:])
        if window is None:
            return super().forward(x)
        batch, channels, height, width = x.shape
        xg = x.reshape(batch, self.num_groups, channels // self.num_groups, height, width)
        xf = xg.to(torch.promote_types(x.dtype, torch.float32))  # bf16 statistics in float32
        mean = _window_mean(xf.mean(dim=2), window)
        var = (_window_mean((xf * xf).mean(dim=2), window) - mean * mean).clamp_min(0.0)
        out = ((xf - mean[:, :, None]) * torch.rsqrt(var[:, :, None] + self.eps)).to(x.dtype)
        out = out.reshape(batch, channels, height, width)
        return out * self.weight[:, None, None] + self.bias[:, None, None]


def _group_norm(channels: int, window: Window) -> WindowedGroupNorm:
    """GroupNorm with up to 32 groups of at least 4 channels (as in EDM)."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return WindowedGroupNorm(groups, channels, window, eps=1e-6)


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Single-head attention of every site to the periodic window around it; q, k, v (B, C, H, W) -> (B, C, H, W).

    The keys are weighted by `window_weights` (a log-weight on the logits), so a window as large as the
    grid is global attention exactly."""
    batch, channels, height, width = q.shape
    (oh, wh), (ow, ww) = window_weights(height, window[0]), window_weights(width, window[1])
    pad = (-int(ow[0]), int(ow[-1]), -int(oh[0]), int(oh[-1]))
    kh, kw = len(oh), len(ow)
    k_win = F.unfold(F.pad(k, pad, mode="circular"), (kh, kw)).reshape(batch, channels, kh * kw, height * width)
    v_win = F.unfold(F.pad(v, pad, mode="circular"), (kh, kw)).reshape(batch, channels, kh * kw, height * width)
    log_w = torch.log(wh[:, None] * ww[None, :]).reshape(1, kh * kw, 1).to(q)
    logits = torch.einsum("bcq,bckq->bkq", q.reshape(batch, channels, -1), k_win) / math.sqrt(channels) + log_w
    a = torch.softmax(logits, dim=1)
    return torch.einsum("bkq,bckq->bcq", a, v_win).reshape(batch, channels, height, width)


def _conv(c_in: int, c_out: int, kernel: int, periodic: bool, stride: int = 1) -> nn.Conv2d:
    """Same-padded convolution; circular padding makes the lattice a torus."""
    return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2,
                     padding_mode="circular" if periodic else "zeros")


def step_embedding(n: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal embedding of integer steps n (batch,) → (batch, channels), as in DDPM."""
    half = channels // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=dtype, device=n.device) / half)
    args = n.to(dtype)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class SelfAttention(nn.Module):
    """Single-head self-attention over all positions (or a Window's); no positional code, so it commutes
    with translations."""

    def __init__(self, channels: int, window: Window):
        super().__init__()
        self.window = window
        self.norm = _group_norm(channels, window)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        window = self.window.at(height, width)
        if window is not None:
            q, k, v = self.qkv(self.norm(x)).chunk(3, dim=1)
            return (x + self.proj(windowed_attention(q, k, v, window))) * SKIP_SCALE
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, channels, height * width).unbind(1)
        a = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        h = self.proj(a.transpose(1, 2).reshape(batch, channels, height, width))
        return (x + h) * SKIP_SCALE


class ResBlock(nn.Module):
    """GroupNorm–SiLU–conv residual block taking the step embedding, optionally followed by attention."""

    def __init__(self, c_in: int, c_out: int, emb_channels: int, dropout: float, film: bool,
                 periodic: bool, window: Window, attention: bool = False):
        super().__init__()
        self.film = film
        self.norm0 = _group_norm(c_in, window)
        self.conv0 = _conv(c_in, c_out, 3, periodic)
        self.emb_proj = nn.Linear(emb_channels, 2 * c_out if film else c_out)
        self.norm1 = _group_norm(c_out, window)
        self.dropout = nn.Dropout(dropout)
        self.conv1 = _conv(c_out, c_out, 3, periodic)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.attention = SelfAttention(c_out, window) if attention else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(F.silu(self.norm0(x)))
        params = self.emb_proj(F.silu(emb))[:, :, None, None]
        if self.film:
            scale, shift = params.chunk(2, dim=1)
            h = self.norm1(h) * (1 + scale) + shift
        else:
            h = self.norm1(h + params)
        h = self.conv1(self.dropout(F.silu(h)))
        x = (self.skip(x) + h) * SKIP_SCALE
        return x if self.attention is None else self.attention(x)


class Downsample(nn.Module):
    """Stride-2 3×3 convolution."""

    def __init__(self, channels: int, periodic: bool):
        super().__init__()
        self.conv = _conv(channels, channels, 3, periodic, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour ×2 upsampling followed by a 3×3 convolution."""

    def __init__(self, channels: int, periodic: bool):
        super().__init__()
        self.conv = _conv(channels, channels, 3, periodic)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    """ε_θ(x_n, n [, cond]): fully convolutional U-Net in pixel space."""

    def __init__(self, config: UNetConfig, in_channels: int = 1, out_channels: int = 1,
                 cond_channels: int = 0, periodic: bool = False, name: str = "custom"):
        super().__init__()
        self.config = config
        self.name = name
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.cond_channels = cond_channels
        self.periodic = periodic
        self.window = Window()  # global by default; `set_window` bounds what GroupNorm and attention see

        base = config.base_channels
        emb_channels = config.emb_mult * base
        self.emb_mlp = nn.Sequential(
            nn.Linear(base, emb_channels), nn.SiLU(), nn.Linear(emb_channels, emb_channels),
        )

        def res_block(c_in: int, c_out: int, attention: bool) -> ResBlock:
            return ResBlock(c_in, c_out, emb_channels, config.dropout, config.film, periodic, self.window, attention)

        self.conv_in = _conv(in_channels + cond_channels, base, 3, periodic)
        self.down = nn.ModuleList()
        skip_channels = [base]
        channels = base
        for level, mult in enumerate(config.channel_mult):
            attention = level in config.attention_levels
            for _ in range(config.blocks_per_level):
                self.down.append(res_block(channels, base * mult, attention))
                channels = base * mult
                skip_channels.append(channels)
            if level < config.downsamplings:
                self.down.append(Downsample(channels, periodic))
                skip_channels.append(channels)

        self.mid = nn.ModuleList([res_block(channels, channels, attention=config.mid_attention),
                                  res_block(channels, channels, attention=False)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            attention = level in config.attention_levels
            for _ in range(config.blocks_per_level + 1):
                self.up.append(res_block(channels + skip_channels.pop(), base * mult, attention))
                channels = base * mult
            if level > 0:
                self.up.append(Upsample(channels, periodic))

        self.norm_out = _group_norm(channels, self.window)
        self.conv_out = _conv(channels, out_channels, 3, periodic)
        self._init_weights()

    def set_window(self, lattice: tuple[int, int] | None) -> None:
        """Bound every GroupNorm's statistics and every attention to the periodic window of `lattice`
        input pixels around each site (None: global, the default).  With the training lattice as the
        window the network is unchanged at the training size and local on larger lattices."""
        if lattice is not None and (len(lattice) != 2 or min(lattice) < 1):
            raise ValueError(f"window must be (height, width) of at least one pixel, got {lattice}")
        self.window.lattice = None if lattice is None else (int(lattice[0]), int(lattice[1]))

    def _init_weights(self) -> None:
        """Xavier-uniform weights and zero biases (NCSN++ default_init); residual branches end at zero."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        # Every block starts as the identity and the network outputs exactly zero (NCSN++ init_scale=0).
        zero_init = [self.conv_out]
        zero_init += [m.conv1 for m in self.modules() if isinstance(m, ResBlock)]
        zero_init += [m.proj for m in self.modules() if isinstance(m, SelfAttention)]
        for conv in zero_init:
            nn.init.zeros_(conv.weight)

    def forward(self, x: torch.Tensor, n: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Predict ε for images x (batch, C, H, W) at integer steps n (batch,)."""
        self._check_inputs(x, n, cond)
        self.window.input = tuple(x.shape[-2:])
        if cond is not None:
            x = torch.cat([x, cond], dim=1)
        emb = self.emb_mlp(step_embedding(n, self.config.base_channels, x.dtype))

        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
            skips.append(h)
        for block in self.mid:
            h = block(h, emb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb)
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))

    def _check_inputs(self, x: torch.Tensor, n: torch.Tensor, cond: torch.Tensor | None) -> None:
        """Raise ValueError for shapes the network cannot take."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (batch, {self.in_channels}, H, W), got {tuple(x.shape)}")
        factor = 2 ** self.config.downsamplings
        height, width = x.shape[-2:]
        if height % factor or width % factor:
            raise ValueError(f"image size {height}×{width} must be divisible by 2^(levels−1) = {factor}")
        if n.shape != (x.shape[0],) or n.dtype.is_floating_point:
            raise ValueError(f"n must be an integer tensor of shape ({x.shape[0]},), "
                             f"got {n.dtype} {tuple(n.shape)}")
        if self.cond_channels == 0:
            if cond is not None:
                raise ValueError("cond given to a network built with cond_channels=0")
            return
        expected = (x.shape[0], self.cond_channels, height, width)
        if cond is None or tuple(cond.shape) != expected:
            got = None if cond is None else tuple(cond.shape)
            raise ValueError(f"cond must have shape {expected}, got {got}")

    def summary(self) -> str:
        """One line naming the size, its shape and its parameter count."""
        cfg = self.config
        levels = ",".join(str(m) for m in cfg.channel_mult)
        attention = ", ".join([f"levels {','.join(str(a) for a in cfg.attention_levels)}"] * bool(cfg.attention_levels)
                              + ["bottleneck"] * cfg.mid_attention) or "none"
        return (f"UNet[{self.name}] {count_parameters(self):,} parameters: "
                f"{cfg.base_channels}×({levels}) channels, {cfg.blocks_per_level} blocks/level, "
                f"attention: {attention}, "
                f"in={self.in_channels} cond={self.cond_channels} out={self.out_channels}, "
                f"{'periodic' if self.periodic else 'zero'} padding")


SHAPE_OVERRIDES = ("base_channels", "blocks_per_level", "attention_levels", "mid_attention")


def build_unet(name: str, in_channels: int = 1, out_channels: int = 1, cond_channels: int = 0,
               periodic: bool = False, overrides: dict | None = None) -> UNet:
    """Build the U-Net of a named size (`tiny`, `small`, `base`), optionally reshaped by SHAPE_OVERRIDES."""
    if name not in CONFIGS:
        raise ValueError(f"unknown U-Net size {name!r}; choose from {sorted(CONFIGS)}")
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(SHAPE_OVERRIDES)
    if unknown:
        raise ValueError(f"unknown U-Net shape settings {sorted(unknown)}; choose from {SHAPE_OVERRIDES}")
    if "attention_levels" in overrides:
        overrides["attention_levels"] = tuple(overrides["attention_levels"])
    return UNet(replace(CONFIGS[name], **overrides), in_channels, out_channels, cond_channels, periodic, name=name)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
