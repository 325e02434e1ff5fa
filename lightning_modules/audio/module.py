"""SPEECH / NONSPEECH with Qwen2-Audio + LoRA (seed 003): one binary logit from two answer tokens.

The net (lightning_modules/audio/qwen2_audio.py) returns logit(SPEECH) - logit(NONSPEECH) at the answer
position, so this is a binary module: BCE on that logit is the cross-entropy of the two-way softmax
over the answer tokens, and predictions, calibration and compare work as for any binary family.

Only the LoRA adapters train; checkpoints hold only them (``on_save_checkpoint`` drops the frozen base,
``strict_loading = False`` lets them load into a freshly built base); ``load_state_dict`` still refuses a
checkpoint that lacks an adapter or holds a key this module does not have, naming them. SpecAugment (one frequency and
one time mask per clip, seed 003 phase 4) is an option of training batches, drawn from
(seed, epoch, sample).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy, BinaryAUROC, BinaryRecall, BinarySpecificity

from lightning_modules.base import BaseTask
from lightning_modules.audio.qwen2_audio import Qwen2AudioAnswer, ensure_tiny_base, spec_augment


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def build_net(base_path: str | None, cache_dir: str, data: Any, prompt: str, answers: list[str],
              lora: Mapping[str, Any] | None, tiny: Mapping[str, Any], pretext: Mapping[str, Any],
              answer_prefix: str = "", dtype: str = "auto") -> Qwen2AudioAnswer:
    """The answer net on a freshly loaded base (``get_peft_model`` changes its base in place).

    Args:
        base_path: A local ``save_pretrained`` directory (e.g. Qwen2-Audio-7B); null = the tiny base,
            built and pretrained once on the training clips of ``data`` and cached under cache_dir.
        cache_dir: Cache root of the tiny base (``${paths.data_dir}``).
        data: The data config (``${data}``): only its training split feeds the pretext pretraining.
        prompt, answers, lora, answer_prefix, dtype: See Qwen2AudioAnswer.
        tiny, pretext: The tiny model's sizes and its pretext pretraining.
    """
    answers = list(_plain(answers))
    if base_path is None:
        import hydra

        datamodule = hydra.utils.instantiate(data)
        base_path = ensure_tiny_base(cache_dir, _plain(tiny), _plain(pretext), answers,
                                     lambda: (datamodule.audio("train"), datamodule.data_key()))
    return Qwen2AudioAnswer(base_path, answers, prompt, _plain(lora), answer_prefix, dtype)


class AudioLoRAModule(BaseTask):
    """Binary SPEECH (1) / NONSPEECH (0) classifier over the two answer-token logits.

    Args:
        net: A Qwen2AudioAnswer (``build_net``).
        spec_augment: null, or ``{freq_mask, time_mask}`` (training batches only).
        seed: Seed of the SpecAugment draws.
        **kwargs: Optimizer, scheduler, ... (BaseTask).
    """

    monitor = "val/loss"
    mode = "min"
    input_keys = ("input_features", "feature_attention_mask", "input_ids", "attention_mask")
    output_kind = "binary"
    strict_loading = False  # checkpoints hold the adapters only; the frozen base comes from base_path

    def __init__(self, net: nn.Module, spec_augment: Mapping[str, Any] | None = None, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(net=net, **kwargs)
        self.spec_augment_cfg = dict(_plain(spec_augment)) if spec_augment else None
        self.seed = int(seed)

    def configure_metrics(self) -> MetricCollection:
        # recall = SPEECH accuracy, specificity = NONSPEECH accuracy (per-class accuracy of the seed)
        return MetricCollection({"accuracy": BinaryAccuracy(), "auroc": BinaryAUROC(thresholds=None),
                                 "speech_accuracy": BinaryRecall(), "nonspeech_accuracy": BinarySpecificity()})

    def compute_loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), batch["target"].float())

    def metric_inputs(self, logits: torch.Tensor, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(logits.float()), batch["target"].long()

    def trainable_parameters(self) -> Iterable[nn.Parameter]:
        """The LoRA adapters (the base is frozen)."""
        return [p for p in self.net.parameters() if p.requires_grad]

    # --- SpecAugment on training batches ---------------------------------------------------------------
    def augment(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """SpecAugment of the batch's features, each clip from (seed, epoch, sample)."""
        if not self.spec_augment_cfg:
            return batch
        epoch = self.current_epoch
        seeds = [np.random.default_rng([self.seed, epoch, int(i)]).integers(1 << 62) for i in batch["index"].tolist()]
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        features = spec_augment(batch["input_features"].cpu(), batch["feature_attention_mask"].sum(-1).cpu(),
                                int(self.spec_augment_cfg["freq_mask"]), int(self.spec_augment_cfg["time_mask"]), gens)
        return {**batch, "input_features": features.to(batch["input_features"].device)}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(self.augment(batch), "train")

    def _log_balanced(self, split: str) -> None:
        out = self.epoch_outputs(split)
        if not len(out["index"]):
            return
        pred = out["outputs"] > 0
        target = out["target"] > 0.5
        recalls = [float((pred[target == k] == k).float().mean()) for k in (False, True) if (target == k).any()]
        self.log(f"{split}/balanced_accuracy", float(np.mean(recalls)), on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        self._log_balanced("val")

    def on_test_epoch_end(self) -> None:
        self._log_balanced("test")

    # --- adapter-only checkpoints -----------------------------------------------------------------------
    def trainable_keys(self) -> set[str]:
        """State-dict keys of the trainable (adapter) weights: what a checkpoint must hold."""
        return {f"net.{n}" for n, p in self.net.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = self.trainable_keys()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load adapters; the frozen base's weights are the only optional keys (they come from base_path).

        strict_loading is off so that an adapter-only checkpoint loads, but a checkpoint of another module (a
        lens ResNet: no adapter keys) or of another LoRA target set (attention + MLP into an attention run:
        12 of 28 tensors would be dropped) must not give predictions: every adapter key must be present and
        every key must be one of this module's.

        Raises:
            ValueError: Naming the missing and unexpected keys (a few of each, with their counts).
        """
        required, known = self.trainable_keys(), set(self.state_dict())
        missing, unexpected = sorted(required - set(state_dict)), sorted(set(state_dict) - known)
        if missing or unexpected:
            def some(keys: list[str]) -> str:
                return f"{len(keys)} ({', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''})"

            raise ValueError(f"{type(self).__name__}: the checkpoint does not fit this model (LoRA targets "
                             f"{(self.net.lora_cfg or {}).get('targets')!r}): missing adapter keys: {some(missing)}; "
                             f"unexpected keys: {some(unexpected)}. Was it written by another family or another "
                             f"model.net.lora.targets?")
        return super().load_state_dict(state_dict, strict=False, assign=assign)
