"""Networks of the puzzle family (seed 002): plain conv backbones with a global-average-pool head.

The seed's architecture table pins them (3x3 convolutions with bias, stride 2, ReLU, no BatchNorm):

| net (seed name)      | backbone               | head                         | params at 950 cells |
|----------------------|------------------------|------------------------------|---------------------|
| CellClassifier       | 3->16->32->64          | Linear(64, C)                | 85,334              |
| CellClassifierDeep   | 3->16->32->64          | hidden FC layers, Linear(., C) | config-dependent  |
| CellRegressor        | 3->16->32->64          | Linear(64, 2): (x, y)        | 23,714              |
| LargerBackbone       | 3->32->64->128->256    | Linear(256, C)               | 632,566             |

Channel widths, kernel size and stride come from conf/model/puzzle_*.yaml. ``TimmBackbone`` wraps any
timm model (resnet18 in the configs) as a feature extractor with the same heads.

Every net takes ``num_outputs`` (cells, or 2 for regression) and ``num_rotations`` (0, or 4 for the
k x 90 degree rotation head of seed "next step 2"); with a rotation head, ``forward`` returns the two
heads' outputs concatenated: ``[..., :num_outputs]`` and ``[..., num_outputs:]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


class PuzzleNet(nn.Module):
    """A feature extractor plus a main head and an optional rotation head.

    Args:
        features: Module mapping (B, 3, H, W) images to (B, F) features.
        num_features: F.
        num_outputs: Outputs of the main head.
        head_hidden: Widths of hidden Linear+ReLU layers before the main head's last Linear.
        num_rotations: Classes of the rotation head (0: no rotation head).
    """

    def __init__(self, features: nn.Module, num_features: int, num_outputs: int, head_hidden: Sequence[int] = (),
                 num_rotations: int = 0) -> None:
        super().__init__()
        if num_outputs < 1:
            raise ValueError(f"num_outputs must be >= 1, got {num_outputs}")
        self.features = features
        layers: list[nn.Module] = []
        width = num_features
        for hidden in head_hidden:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU(inplace=True)]
            width = int(hidden)
        layers.append(nn.Linear(width, num_outputs))
        self.head = nn.Sequential(*layers) if len(layers) > 1 else layers[0]
        self.rotation_head = nn.Linear(num_features, num_rotations) if num_rotations else None
        self.num_outputs = num_outputs
        self.num_rotations = num_rotations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        out = self.head(f)
        if self.rotation_head is not None:
            out = torch.cat([out, self.rotation_head(f)], dim=-1)
        return out


def conv_backbone(channels: Sequence[int], kernel_size: int, stride: int, in_chans: int = 3) -> nn.Sequential:
    """Conv(k, stride, padding k//2, bias) + ReLU per width, then global average pooling to (B, channels[-1])."""
    if not channels:
        raise ValueError("model.net.channels must list at least one width")
    layers: list[nn.Module] = []
    prev = in_chans
    for width in channels:
        # padding k//2 halves 64 -> 32 -> 16 -> 8 -> 4 exactly, as in the seed's exp4 shape table
        layers += [nn.Conv2d(prev, int(width), kernel_size, stride=stride, padding=kernel_size // 2), nn.ReLU(inplace=True)]
        prev = int(width)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)


class ConvNet(PuzzleNet):
    """A plain conv backbone (no BatchNorm) with a GAP head; the seed's nets are named subclasses.

    Args:
        num_outputs: Cells (classification) or 2 (regression of (x, y)).
        channels: Output widths of the stride-`stride` convolutions.
        kernel_size: Square kernel size.
        stride: Stride of every convolution.
        head_hidden: Hidden FC widths (empty: a direct Linear head).
        num_rotations: Rotation classes (0: none).
        in_chans: Input channels.
    """

    def __init__(self, num_outputs: int, channels: Sequence[int], kernel_size: int, stride: int,
                 head_hidden: Sequence[int] = (), num_rotations: int = 0, in_chans: int = 3) -> None:
        super().__init__(conv_backbone(channels, kernel_size, stride, in_chans), int(channels[-1]), num_outputs,
                         head_hidden, num_rotations)


class CellClassifier(ConvNet):
    """exp3: 3->16->32->64 convolutions, GAP, Linear(64, C) (85,334 parameters at C=950)."""


class CellClassifierDeep(ConvNet):
    """exp3 deep-FC variant: the CellClassifier backbone with hidden FC layers before Linear(., C)."""


class CellRegressor(ConvNet):
    """exp3 regression variant: the CellClassifier backbone with Linear(64, 2) predicting (x, y)."""


class LargerBackbone(ConvNet):
    """exp4: 3->32->64->128->256 convolutions, GAP, Linear(256, C) (632,566 parameters at C=950)."""


class TimmBackbone(PuzzleNet):
    """A timm model (e.g. resnet18) as a feature extractor, with the puzzle heads.

    Random initialisation unless ``pretrained_path`` names a local weights file (nothing is downloaded);
    the file's classifier is dropped, since the heads here are new.

    Args:
        num_outputs: See ConvNet.
        model_name: timm model name.
        pretrained_path: Local timm/torch state dict, or None/"" for random init.
        head_hidden: See ConvNet.
        num_rotations: See ConvNet.
        in_chans: Input channels.
    """

    def __init__(self, num_outputs: int, model_name: str, pretrained_path: str | None = None,
                 head_hidden: Sequence[int] = (), num_rotations: int = 0, in_chans: int = 3) -> None:
        import timm

        kwargs: dict = {"num_classes": 0, "in_chans": in_chans}
        if pretrained_path:
            if not Path(pretrained_path).is_file():
                raise ValueError(f"model.net.pretrained_path: {pretrained_path} is not a file; give a local weights file or null")
            # pretrained_cfg_overlay points timm at the local file; it adapts/drops the classifier itself
            kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(pretrained_path)})
        else:
            kwargs["pretrained"] = False
        features = timm.create_model(model_name, **kwargs)
        super().__init__(features, int(features.num_features), num_outputs, head_hidden, num_rotations)


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
