"""Frozen CLIP image embeddings through open_clip, computed once and cached on disk.

Loading is open_clip's own path for local weights:
``open_clip.create_model_and_transforms(name, pretrained=<local .safetensors/.bin/.pt/.pth>)``, with
``weights_only`` loading (a user's file cannot run code). OpenAI's original ``ViT-B-32.pt`` is a
TorchScript archive: it needs ``force_quick_gelu=True`` (the activation OpenAI trained with) and
``weights_only=False``, which runs whatever the file says, so it is refused unless
``allow_torchscript=True`` is given for a file you trust.

The cache key is (model name, its open_clip config, which fixes the eval transform, open_clip's
version, force_quick_gelu, sha256 of the weights file, data set id, split, normalisation): every arm
and seed reuses one computation, and changing the weights file (even at the same path) invalidates it.
On a warm cache the model is never built (``ClipSpec`` loads it only on a miss), and a weights file's
hash is remembered by (path, inode, size, mtime, ctime): see memo_sha256. Each entry is ``<key>.npy`` plus a ``<key>.json`` that
records what went into the key and the transform's repr; it is written once by rigor.cache.build_once
(under a lock, into a temporary file renamed into place), so parallel runs compute it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rigor.cache import build_once, content_hash

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: Entries of a TorchScript CLIP's state dict that are not parameters of open_clip's CLIP.
TORCHSCRIPT_EXTRAS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def is_torchscript(path: str | Path) -> bool:
    """True for a TorchScript archive (a zip holding ``code/`` and ``constants.pkl``), e.g. OpenAI's .pt."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("constants.pkl") for n in names) or any("/code/" in n for n in names)


def check_weights_file(path: str | Path, allow_torchscript: bool = False) -> Path:
    """Check a local weights file before open_clip reads it; returns it as a Path.

    Raises:
        FileNotFoundError: If the file does not exist.
        ValueError: For an unknown suffix, or a TorchScript archive without `allow_torchscript`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data.clip.pretrained: weights file {path} does not exist (nothing is downloaded)")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"data.clip.pretrained: {path} has suffix {path.suffix!r}; expected one of {WEIGHT_SUFFIXES}")
    if is_torchscript(path) and not allow_torchscript:
        raise ValueError(
            f"data.clip.pretrained: {path} is a TorchScript archive (OpenAI's original CLIP .pt files are). "
            "Loading it needs weights_only=False, which runs code stored in the file. If you trust it, set "
            "data.clip.allow_torchscript=true (and data.clip.force_quick_gelu=true for OpenAI weights), or convert it "
            "once to a state dict: torch.save(torch.jit.load(path, map_location='cpu').state_dict(), 'weights.pt')"
        )
    return path


@dataclass
class LoadedClip:
    """A frozen open_clip model, its eval transform and the identity of its weights."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]
    name: str
    weights: str | None
    weights_sha256: str | None
    force_quick_gelu: bool

    @property
    def identity(self) -> dict[str, Any]:
        """What determines this model's embeddings (part of the cache key)."""
        return clip_identity(self.name, self.weights_sha256, self.force_quick_gelu)

    def load(self) -> LoadedClip:
        return self


def clip_identity(name: str, weights_sha256: str | None, force_quick_gelu: bool) -> dict[str, Any]:
    """Model name, its open_clip config (which fixes the eval transform), open_clip's version, QuickGELU, weights hash."""
    import open_clip

    return {"model": name, "model_cfg": open_clip.get_model_config(name), "open_clip": open_clip.__version__,
            "force_quick_gelu": bool(force_quick_gelu), "weights_sha256": weights_sha256}


@dataclass
class ClipSpec:
    """A CLIP model to be loaded only when embeddings must be computed (a warm cache never builds it).

    Args: as ``load_clip``.
    """

    name: str
    pretrained: str | None
    force_quick_gelu: bool = False
    allow_torchscript: bool = False
    device: str = "cpu"
    init_seed: int = 0
    memo_dir: str | None = None

    def __post_init__(self) -> None:
        import open_clip

        if self.name not in open_clip.list_models():
            raise ValueError(f"data.clip.model: unknown open_clip architecture {self.name!r}; e.g. ViT-B-32 (see open_clip.list_models())")
        if self.pretrained is None:
            self.weights_sha256 = f"random-init:{self.init_seed}"
        else:
            path = check_weights_file(self.pretrained, self.allow_torchscript)
            self.weights_sha256 = memo_sha256(path, self.memo_dir) if self.memo_dir else file_sha256(path)
        self._loaded: LoadedClip | None = None

    @property
    def identity(self) -> dict[str, Any]:
        return clip_identity(self.name, self.weights_sha256, self.force_quick_gelu)

    def load(self) -> LoadedClip:
        if self._loaded is None:
            self._loaded = load_clip(self.name, self.pretrained, self.force_quick_gelu, self.allow_torchscript, self.device,
                                     self.init_seed)
        return self._loaded


def memo_sha256(path: Path, memo_dir: str | Path) -> str:
    """sha256 of a weights file, remembered by the file's identity: a 600 MB file is hashed once.

    The identity is (resolved path, device, inode, size, mtime_ns, ctime_ns). mtime alone is not enough:
    other weights copied over with ``cp -p`` (or ``touch -r``) keep size and mtime, but no user can set
    ctime, which changes on every write, copy or rename. The memo is written whole (temporary file and
    rename), so a killed run never leaves half a hash; an unreadable memo is recomputed.
    """
    stat = Path(path).stat()
    key = cache_key({"path": str(Path(path).resolve()), "dev": stat.st_dev, "ino": stat.st_ino, "size": stat.st_size,
                     "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns})
    memo = Path(memo_dir) / "sha256" / f"{key}.txt"
    if memo.is_file():
        sha = memo.read_text().strip()
        if len(sha) == 64 and all(c in "0123456789abcdef" for c in sha):
            return sha
    sha = file_sha256(path)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
    tmp.write_text(sha)
    os.replace(tmp, memo)
    return sha


def load_clip(
    name: str,
    pretrained: str | Path | None,
    force_quick_gelu: bool = False,
    allow_torchscript: bool = False,
    device: str = "cpu",
    init_seed: int = 0,
) -> LoadedClip:
    """An open_clip model from a local weights file, frozen, in eval mode.

    Args:
        name: open_clip architecture name (``ViT-B-32``, or a registered config such as the tiny CLIP).
        pretrained: Local weights file; None gives random weights (benchmarks only: the embeddings are
            then close to useless).
        force_quick_gelu: QuickGELU activations (OpenAI's weights were trained with them).
        allow_torchscript: Accept a TorchScript archive (loaded with weights_only=False).
        device: Where the model runs.
        init_seed: Seed of the random weights when `pretrained` is None (part of the cache key).
    """
    import open_clip

    sha = None
    if pretrained is not None:
        path = check_weights_file(pretrained, allow_torchscript)
        sha = file_sha256(path)
        scripted = is_torchscript(path)
        pretrained = str(path)
    else:
        scripted = False
    if name not in open_clip.list_models():
        raise ValueError(f"data.clip.model: unknown open_clip architecture {name!r}; e.g. ViT-B-32 (see open_clip.list_models())")
    if scripted:
        # open_clip's loader keeps extra buffers of a traced/scripted archive; take its state dict ourselves
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, force_quick_gelu=force_quick_gelu)
        state = torch.jit.load(pretrained, map_location="cpu").state_dict()
        for key in TORCHSCRIPT_EXTRAS:
            state.pop(key, None)
        model.load_state_dict(state, strict=True)
        model.to(device)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)  # random weights (pretrained=None) are a function of the seed
            try:
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, pretrained=pretrained, force_quick_gelu=force_quick_gelu, weights_only=True, device=device
                )
            except Exception as err:
                if pretrained is None:
                    raise
                raise weights_error(Path(pretrained), name, err) from err
        if pretrained is None:
            sha = f"random-init:{init_seed}"
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return LoadedClip(model, preprocess, name, pretrained, sha, force_quick_gelu)


def weights_error(path: Path, name: str, err: Exception) -> ValueError:
    """A message naming the weights file and why open_clip could not load it into architecture `name`.

    A state dict of another architecture fails with torch's missing / unexpected / size-mismatch report; anything
    else is a file that is not (or no longer all) a weights file: truncated, or another format.
    """
    text = str(err)
    if any(k in text for k in ("Missing key(s)", "Unexpected key(s)", "size mismatch")):
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()][1:4]
        return ValueError(f"data.clip.pretrained: {path} holds the weights of another architecture than data.clip.model="
                          f"{name!r} ({'; '.join(lines)[:400]} ...): give the model name these weights were trained as")
    size = path.stat().st_size if path.exists() else 0
    return ValueError(f"data.clip.pretrained: {path} ({size} bytes) cannot be read as {path.suffix} weights: "
                      f"{type(err).__name__}: {text[:300]}. Is it truncated (an interrupted copy or download) or another format?")


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of the parts that determine an embedding array."""
    return content_hash(parts, length=24)


@torch.inference_mode()
def encode_images(
    clip: LoadedClip,
    images: np.ndarray,
    batch_size: int = 256,
    normalize: bool = True,
    desc: str = "embedding",
) -> np.ndarray:
    """Image embeddings (N, D) float32 of uint8 images through the model's eval transform."""
    from datamodules.clip_subtask.simulate import to_pil

    device = next(clip.model.parameters()).device
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, unit="batch"):
        pixels = torch.stack([clip.preprocess(to_pil(im)) for im in images[start : start + batch_size]]).to(device)
        out.append(clip.model.encode_image(pixels, normalize=normalize).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


class EmbeddingCache:
    """Embeddings on disk under `root`, keyed by everything that determines them.

    Args:
        root: Cache directory (``${paths.data_dir}/clip_embeddings`` in the configs).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0

    def parts(self, clip: LoadedClip | ClipSpec, dataset_id: str, split: str, normalize: bool) -> dict[str, Any]:
        return {**clip.identity, "dataset": dataset_id, "split": split, "normalize": normalize}

    def get(
        self,
        clip: LoadedClip | ClipSpec,
        images: np.ndarray,
        dataset_id: str,
        split: str,
        batch_size: int = 256,
        normalize: bool = True,
    ) -> np.ndarray:
        """The embeddings of `images`, from the cache when present (logged as a hit), else computed and stored."""
        parts = self.parts(clip, dataset_id, split, normalize)
        path = self.root / f"{cache_key(parts)}.npy"
        computed: list[np.ndarray] = []

        def has_all_rows(p: Path) -> bool:
            if not p.is_file():
                return False
            try:
                array = np.load(p, mmap_mode="r")
            except (OSError, ValueError, EOFError) as err:  # truncated or not an array (EOFError: 0 bytes): recompute
                log.warning("embedding cache entry %s is unreadable (%s: %s): recomputing it", p, type(err).__name__, err)
                return False
            if array.ndim != 2 or array.shape[0] != len(images):
                log.warning("embedding cache entry %s has shape %s, expected %d rows: recomputing it", p, array.shape,
                            len(images))
                return False
            return True

        def build(tmp: Path) -> None:
            log.info("embedding cache miss: %s %s, computing %d embeddings with %s", dataset_id, split, len(images), clip.name)
            start = time.time()
            loaded = clip.load()
            array = encode_images(loaded, images, batch_size, normalize, desc=f"embedding {split}")
            with open(tmp, "wb") as f:  # a file object: np.save would add a second .npy to a path
                np.save(f, array)
            meta = {**parts, "shape": list(array.shape), "seconds": round(time.time() - start, 2), "weights": loaded.weights,
                    "transform": repr(loaded.preprocess)}
            path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
            computed.append(array)

        build_once(path, build, is_complete=has_all_rows, marker=None)
        if computed:
            self.misses += 1
            return computed[0]
        array = np.load(path)
        self.hits += 1
        log.info("embedding cache hit: %s %s (%d x %d) %s", dataset_id, split, *array.shape, path)
        return array
