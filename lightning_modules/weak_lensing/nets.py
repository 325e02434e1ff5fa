"""Networks of the weak-lensing family (seed 001): the kit's Simple_CNN and the seed's ResNetWithAttention.

- ``SimpleCNN``: conv 5x5 stride 2 -> 16, BN, ReLU, maxpool; conv 3x3 -> 32, 64, 128, each with BN,
  ReLU, maxpool; FC 512, dropout 0.2, FC 128, dropout 0.1, FC n_outputs (2 for a point head, 4 for means
  and sigmas). The flattened size comes from a dummy forward on the configured map shape.
- ``ResNetWithAttention``: a stem convolution, ``n_stages`` residual stages (two basic blocks each, the
  first with stride 2), a CBAM module (channel then spatial attention, Woo et al. 2018) after the first
  ``n_cbam`` stages, global average pooling and an FC head with two dropouts. The seed's original is
  4 stages / 4 CBAM / dropout 0.3, 0.2 / float64; its reduced proposal is 2 stages / at most 1 CBAM /
  dropout 0.2, 0.1 / float32. The seed's code is not public, so this is a reconstruction of its
  description, with both settings as configs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _fc_head(n_in: int, hidden: Sequence[int], dropout: Sequence[float], n_out: int) -> nn.Sequential:
    if len(hidden) != len(dropout):
        raise ValueError(f"fc_hidden {list(hidden)} and dropout {list(dropout)} need one dropout per hidden layer")
    layers: list[nn.Module] = []
    for width, p in zip(hidden, dropout):
        layers += [nn.Linear(n_in, width), nn.ReLU(inplace=True), nn.Dropout(p)]
        n_in = width
    layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class SimpleCNN(nn.Module):
    """The challenge kit's Simple_CNN.

    Args:
        height, width: Map shape (after downsampling).
        n_outputs: 2 (point) or 4 (means and sigmas).
        channels: Output channels of the four convolutions.
        first_kernel, first_stride: The first convolution (5, 2 in the kit); the others are 3x3, stride 1.
        fc_hidden: Hidden FC widths (512, 128).
        dropout: Dropout after each hidden FC layer (0.2, 0.1).
    """

    def __init__(
        self,
        height: int,
        width: int,
        n_outputs: int,
        channels: Sequence[int] = (16, 32, 64, 128),
        first_kernel: int = 5,
        first_stride: int = 2,
        fc_hidden: Sequence[int] = (512, 128),
        dropout: Sequence[float] = (0.2, 0.1),
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i, c in enumerate(channels):
            k, s = (first_kernel, first_stride) if i == 0 else (3, 1)
            layers += [nn.Conv2d(c_in, c, k, stride=s, padding=k // 2), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c_in = c
        self.features = nn.Sequential(*layers)
        try:
            with torch.no_grad():
                shape = self.features.eval()(torch.zeros(1, 1, height, width)).shape  # eval: BN statistics untouched
        except RuntimeError:
            shape = (1, 0, 0, 0)
        self.features.train()
        if min(shape[1:]) == 0:
            raise ValueError(f"SimpleCNN: a {height} x {width} map shrinks to nothing after the stride and four poolings; "
                             "use a smaller data.simulation.downsample")
        self.head = _fc_head(shape[1] * shape[2] * shape[3], fc_hidden, dropout, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class CBAM(nn.Module):
    """Convolutional block attention: channel attention (shared MLP on avg and max pools), then spatial."""

    def __init__(self, channels: int, reduction: int = 8, spatial_kernel: int = 7) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + mx)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convolutions with BN) with a projected shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut = (
            nn.Identity() if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class ResNetWithAttention(nn.Module):
    """Residual stages with CBAM attention.

    Args:
        height, width: Map shape (only checked: the head follows a global average pool).
        n_outputs: 2 (point) or 4 (means and sigmas).
        n_stages: Residual stages (4 in the seed's original, 2 in its reduced proposal).
        n_cbam: CBAM modules, after the first n_cbam stages (4 original, at most 1 reduced).
        stem_channels: Channels of the stem; stage i has stem_channels * 2^i.
        fc_hidden: Hidden FC widths; dropout: one per hidden layer (0.3, 0.2 original; 0.2, 0.1 reduced).
        dtype: ``float32`` or ``float64`` (the original called ``self.double()``).
    """

    def __init__(
        self,
        height: int,
        width: int,
        n_outputs: int,
        n_stages: int = 2,
        n_cbam: int = 1,
        stem_channels: int = 16,
        fc_hidden: Sequence[int] = (256, 128),
        dropout: Sequence[float] = (0.2, 0.1),
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        if not 0 <= n_cbam <= n_stages:
            raise ValueError(f"ResNetWithAttention: n_cbam must be in [0, n_stages={n_stages}], got {n_cbam}")
        if dtype not in DTYPES:
            raise ValueError(f"ResNetWithAttention: dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self.stem = nn.Sequential(nn.Conv2d(1, stem_channels, 5, 2, 2, bias=False), nn.BatchNorm2d(stem_channels), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        c = stem_channels
        for i in range(n_stages):
            c_out = stem_channels * 2**i
            blocks: list[nn.Module] = [BasicBlock(c, c_out, 2 if i > 0 else 1), BasicBlock(c_out, c_out, 1)]
            if i < n_cbam:
                blocks.append(CBAM(c_out))
            stages.append(nn.Sequential(*blocks))
            c = c_out
        self.stages = nn.Sequential(*stages)
        self.head = _fc_head(c, fc_hidden, dropout, n_outputs)
        self.dtype = DTYPES[dtype]
        self.to(self.dtype)
        with torch.no_grad():
            self.eval()(torch.zeros(1, 1, height, width, dtype=self.dtype))  # fails early on a shape it cannot take
        self.train()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x.to(self.dtype)))
        # float32 out, whatever the internal precision: losses and metrics stay in one dtype
        return self.head(h.mean(dim=(2, 3))).float()
