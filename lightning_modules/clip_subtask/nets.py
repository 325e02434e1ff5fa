"""Subtask heads and the meta-learner of seed 000, on frozen CLIP image embeddings.

    embedding (D) -> superclass head (2), brightness head (3), complexity head (3)
    [embedding, subtask outputs] -> 4 x (Linear 384, BatchNorm, ReLU, Dropout 0.3) -> Linear 10

The subtask outputs enter the meta-learner as the seed feeds them, one predicted class per subtask
(D + 3 inputs: 515 for a 512-d embedding), or as the heads' probabilities (D + 2 + 3 + 3). ``none`` is the
ablation (issue 23): no subtask heads at all, the meta-learner reads the embedding alone (D inputs), which
separates "the subtask features help" from "the non-linear meta-learner helps".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

SUBTASK_FEATURES = ("class", "probs", "none")


def mlp_head(in_dim: int, n_classes: int, hidden: Sequence[int] = ()) -> nn.Sequential:
    """A subtask head: Linear layers with ReLU between them (no dropout or BatchNorm, so the frozen head
    gives the same output in train and eval mode)."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, int(h)), nn.ReLU()]
        d = int(h)
    layers.append(nn.Linear(d, n_classes))
    return nn.Sequential(*layers)


class MetaLearner(nn.Module):
    """n_blocks x (Linear, BatchNorm1d, ReLU, Dropout) then Linear to the classes (seed: 4 x 384, p 0.3)."""

    def __init__(self, in_dim: int, n_classes: int = 10, hidden: int = 384, n_blocks: int = 4, dropout: float = 0.3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(n_blocks):
            layers += [nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
            d = hidden
        layers.append(nn.Linear(d, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SubtaskMetaNet(nn.Module):
    """Subtask heads on the embedding, and the meta-learner on [embedding, subtask outputs].

    Args:
        embed_dim: Size of the CLIP embedding (512 for ViT-B/32).
        subtasks: Subtask name -> number of classes, in the order their outputs are concatenated.
        n_classes: Classes of the main task.
        head_hidden: Hidden sizes of each subtask head ([] = one Linear layer, the seed's "512 -> 2").
        meta_hidden, meta_blocks, dropout: The meta-learner (seed: 384, 4, 0.3).
        subtask_features: ``class`` (predicted class index per subtask, the seed), ``probs``, or ``none``
            (the ablation: no heads are built, ``subtasks`` is ignored and ``subtask_names`` is empty; the
            meta-learner's input is the embedding alone).
    """

    def __init__(
        self,
        embed_dim: int,
        subtasks: Mapping[str, int],
        n_classes: int = 10,
        head_hidden: Sequence[int] = (),
        meta_hidden: int = 384,
        meta_blocks: int = 4,
        dropout: float = 0.3,
        subtask_features: str = "class",
    ) -> None:
        super().__init__()
        if subtask_features not in SUBTASK_FEATURES:
            raise ValueError(f"model.net.subtask_features: expected one of {SUBTASK_FEATURES}, got {subtask_features!r}")
        if subtask_features == "none":
            subtasks = {}  # the ablation: no heads, no subtask inputs
        elif not subtasks:
            raise ValueError("model.net.subtasks: at least one subtask is needed (subtask_features=none runs without)")
        self.embed_dim = int(embed_dim)
        self.subtask_names = tuple(subtasks)
        self.subtask_features = subtask_features
        self.heads = nn.ModuleDict({name: mlp_head(embed_dim, int(k), head_hidden) for name, k in subtasks.items()})
        extra = len(subtasks) if subtask_features == "class" else sum(int(k) for k in subtasks.values())
        self.meta_in_dim = embed_dim + extra
        self.meta = MetaLearner(self.meta_in_dim, n_classes, meta_hidden, meta_blocks, dropout)

    def subtask_logits(self, embedding: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits of every subtask head."""
        return {name: head(embedding) for name, head in self.heads.items()}

    def meta_input(self, embedding: torch.Tensor, subtask_logits: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[embedding, subtask outputs]; the subtask part carries no gradient (the heads are trained apart)."""
        parts = [embedding]
        for name in self.subtask_names:
            logits = subtask_logits[name].detach()
            if self.subtask_features == "class":
                parts.append(logits.argmax(-1, keepdim=True).to(embedding.dtype))
            else:
                parts.append(torch.softmax(logits, -1).to(embedding.dtype))
        return torch.cat(parts, dim=-1)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """Main-task logits (B, n_classes)."""
        return self.meta(self.meta_input(embedding, self.subtask_logits(embedding)))

    def forward_all(self, embedding: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Main-task logits and every subtask's logits, from one pass of the heads."""
        sub = self.subtask_logits(embedding)
        return self.meta(self.meta_input(embedding, sub)), sub
