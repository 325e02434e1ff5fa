"""Qwen2-Audio answering SPEECH or NONSPEECH, with LoRA on named target sets (the language model by default).

The model is ``transformers.Qwen2AudioForConditionalGeneration`` with its ``Qwen2AudioProcessor``
(Whisper log-mel features + tokenizer). The answer is read from the language-model logits of the two
answer tokens at the answer position (the last prompt token): the net's output is the binary logit
``logit(SPEECH) - logit(NONSPEECH)``, shape (B,), so sigmoid of it is the two-way softmax p(SPEECH).

Real weights come from ``from_pretrained(<local dir>)``. The embedded default is a tiny Qwen2-Audio
built from a config (Whisper features over a 1 s window: 100 mel frames, max_source_positions 50; a
byte-level tokenizer), pretrained here on label-free pretext questions over the training clips only
(which mel band is loudest, which half or quarter is louder, how much the loudness varies, how much
of it varies at a syllable rate), saved with ``save_pretrained`` into a cache and
loaded back through the same ``from_pretrained`` path. LoRA then adapts that frozen base, as it adapts
a pretrained model in the seed.

LoRA targets are a regex over full module names (peft matches a string with ``re.fullmatch``), naming
the language model's decoder layers (and, for the ``encoder_attention`` diagnostic, the audio encoder's
layers): a plain list such as ``["q_proj", "v_proj"]`` matches name suffixes and would also adapt the
audio encoder's attention.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from rigor.cache import build_once, content_hash

AUDIO_PROMPT = "<|audio_bos|><|AUDIO|><|audio_eos|>"
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")
TINY_VERSION = 5

# LoRA target sets: projections of the language model's decoder layers only.
_ATTN = r"self_attn\.(?:q_proj|k_proj|v_proj|o_proj)"
_MLP = r"mlp\.(?:gate_proj|up_proj|down_proj)"
_ENCODER_ATTN = r"(?:.*\.)?audio_tower\.layers\.\d+\.self_attn\.(?:q_proj|k_proj|v_proj|out_proj)"


def lora_target_regex(targets: str) -> str:
    """The peft ``target_modules`` regex of a target set, matched against full module paths.

    ``attention`` = q, k, v, o projections of the language model (the seed's LORA-2a); ``attention_mlp``
    adds its gate, up and down (LORA-2b); ``encoder_attention`` = the audio encoder's q, k, v, out
    projections plus the language model's attention (a diagnostic arm, not the seed's). The optional
    ``model.`` segment covers both transformers layouts (``model.language_model.layers.N`` and the older
    ``language_model.model.layers.N``).
    """
    parts = {"attention": _ATTN, "attention_mlp": f"(?:{_ATTN}|{_MLP})", "encoder_attention": _ATTN}
    if targets not in parts:
        raise ValueError(f"model.net.lora.targets: unknown target set {targets!r}; expected one of {sorted(parts)}")
    lm = rf"(?:.*\.)?language_model\.(?:model\.)?layers\.\d+\.{parts[targets]}"
    if targets == "encoder_attention":  # the diagnostic arm: can the encoder learn a cue the pretext never taught?
        return rf"(?:{_ENCODER_ATTN}|{lm})"
    return lm


# --- the tiny embedded model -------------------------------------------------------------------------

def build_tokenizer(extra_tokens: Sequence[str] = ()) -> Any:
    """A byte-level tokenizer (256 byte tokens, no merges) with Qwen2-Audio's special tokens, offline.

    Args:
        extra_tokens: Whole words added as single tokens (the answers, so each is one token).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    tok.add_tokens(list(extra_tokens))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.padding_side = "right"
    return fast


def build_processor(tiny: Mapping[str, Any], answers: Sequence[str]) -> Any:
    """Qwen2AudioProcessor: Whisper features over a ``window_seconds`` window + the byte tokenizer."""
    from transformers import Qwen2AudioProcessor, WhisperFeatureExtractor

    window = float(tiny["window_seconds"])
    if window != int(window) or window < 1:
        raise ValueError(f"model.net.tiny.window_seconds must be a whole number of seconds (Whisper's chunk_length), "
                         f"got {window}")
    fe = WhisperFeatureExtractor(
        feature_size=int(tiny["num_mel_bins"]), sampling_rate=int(tiny["sample_rate"]), hop_length=int(tiny["hop_length"]),
        chunk_length=int(window), n_fft=int(tiny["n_fft"]),
    )
    return Qwen2AudioProcessor(feature_extractor=fe, tokenizer=build_tokenizer(answers))


def tiny_config(tiny: Mapping[str, Any], tokenizer: Any) -> Any:
    """A Qwen2AudioConfig of the sizes in ``tiny`` (conf/model/audio_*.yaml, ``net.tiny``)."""
    from transformers import Qwen2AudioConfig

    frames = int(round(float(tiny["window_seconds"]) * int(tiny["sample_rate"]) / int(tiny["hop_length"])))
    if frames % 2:
        raise ValueError(f"model.net.tiny: window_seconds x sample_rate / hop_length = {frames} mel frames; must be even")
    return Qwen2AudioConfig(
        audio_config={
            "num_mel_bins": int(tiny["num_mel_bins"]), "encoder_layers": int(tiny["encoder_layers"]),
            "encoder_attention_heads": int(tiny["encoder_heads"]), "encoder_ffn_dim": int(tiny["encoder_ffn_dim"]),
            "d_model": int(tiny["encoder_dim"]), "max_source_positions": frames // 2,  # the encoder needs 2 x this
        },
        text_config={
            "model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": int(tiny["hidden_size"]),
            "intermediate_size": int(tiny["intermediate_size"]), "num_hidden_layers": int(tiny["num_layers"]),
            "num_attention_heads": int(tiny["num_heads"]), "num_key_value_heads": int(tiny["num_kv_heads"]),
            "max_position_embeddings": int(tiny["max_positions"]), "tie_word_embeddings": False,
        },
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )


PRETEXT_QUESTIONS = ("band", "half", "quarter", "modulation", "syllabic", "pulse_words")


def pretext_targets(features: np.ndarray, n_bands: int, modulation_edges: np.ndarray | None = None,
                    syllabic_edges: np.ndarray | None = None, frame_rate: float = 100.0,
                    syllabic_hz: tuple[float, float] = (2.0, 8.0)) -> dict[str, np.ndarray]:
    """Label-free pretext answers from log-mel features (B, n_mels, T); each answer is a digit.

    - ``band``: which of n_bands mel bands has the highest mean log-mel (0..n_bands-1);
    - ``half``: is the second half louder than the first (0/1);
    - ``quarter``: which quarter of the clip is loudest (0..3);
    - ``modulation``: quartile of the std over time of the frame loudness (0..3), by ``modulation_edges``
      (the 25/50/75% quantiles of the pretext clips; computed from these features when None);
    - ``syllabic``: quartile (by ``syllabic_edges``, likewise) of the share of the loudness envelope's
      modulation power between ``syllabic_hz`` (the 2-8 Hz syllable rate, the classic speech cue) among
      all modulation frequencies above 1 Hz. A property of the signal, not a label;
    - ``pulse_words``: that share above its median (1) or not (0), answered with the answer words, so
      the base knows the two words and links them to a crude signal rule (its "zero-shot" knowledge),
      as a pretrained audio model knows the words before it is fine-tuned.

    Returns:
        ``{question: (B,) int answers}``, ``"modulation_edges"`` and ``"syllabic_edges"``.
    """
    features = np.asarray(features, dtype=np.float64)
    bands = np.array_split(np.arange(features.shape[1]), n_bands)
    band_energy = np.stack([features[:, b, :].mean(axis=(1, 2)) for b in bands], axis=1)
    loudness = features.mean(axis=1)  # (B, T) frame loudness
    half = loudness.shape[1] // 2
    quarters = np.stack([q.mean(axis=1) for q in np.array_split(loudness, 4, axis=1)], axis=1)
    spread = loudness.std(axis=1)
    edges = np.quantile(spread, [0.25, 0.5, 0.75]) if modulation_edges is None else np.asarray(modulation_edges)
    envelope = loudness - loudness.mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(envelope, axis=1)) ** 2
    freqs = np.fft.rfftfreq(envelope.shape[1], d=1.0 / frame_rate)
    above = freqs >= 1.0
    band = (freqs >= syllabic_hz[0]) & (freqs <= syllabic_hz[1])
    share = power[:, band].sum(axis=1) / np.maximum(power[:, above].sum(axis=1), 1e-12)
    s_edges = np.quantile(share, [0.25, 0.5, 0.75]) if syllabic_edges is None else np.asarray(syllabic_edges)
    return {
        "band": band_energy.argmax(axis=1),
        "half": (loudness[:, half:].mean(axis=1) > loudness[:, :half].mean(axis=1)).astype(np.int64),
        "quarter": quarters.argmax(axis=1),
        "modulation": np.searchsorted(edges, spread, side="right").astype(np.int64),
        "modulation_edges": edges,
        "syllabic": np.searchsorted(s_edges, share, side="right").astype(np.int64),
        "pulse_words": (share > s_edges[1]).astype(np.int64),
        "syllabic_edges": s_edges,
    }


def encode_prompts(processor: Any, audio: Sequence[np.ndarray], prompt: str, sample_rate: int) -> dict[str, torch.Tensor]:
    """Processor inputs (input_ids, attention_mask, input_features, feature_attention_mask) of one prompt per clip.

    The prompt must contain one ``<|AUDIO|>``; the processor expands it to the clip's number of audio tokens.
    """
    if prompt.count("<|AUDIO|>") != 1:
        raise ValueError(f"model.net.prompt must contain exactly one <|AUDIO|>, got {prompt!r}")
    out = processor(text=[prompt] * len(audio), audio=[np.asarray(a, dtype=np.float32) for a in audio],
                    sampling_rate=sample_rate, return_tensors="pt", padding=True)
    return {k: out[k] for k in ("input_ids", "attention_mask", "input_features", "feature_attention_mask")}


def last_token_logits(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """LM logits (B, V) at each sequence's last attended position (right padding)."""
    out = model(**inputs)
    last = inputs["attention_mask"].long().sum(dim=1) - 1
    return out.logits[torch.arange(out.logits.shape[0], device=out.logits.device), last]


def pretrain_tiny(model: nn.Module, processor: Any, audio: np.ndarray, pretext: Mapping[str, Any], sample_rate: int,
                  progress: bool = True, answers: Sequence[str] = ("NONSPEECH", "SPEECH")) -> list[float]:
    """Train every weight of the tiny model on the pretext questions (cross-entropy over each question's answer tokens).

    The questions (pretext_targets) cycle batch by batch; each has its own prompt in
    ``pretext["prompts"]``. No SPEECH/NONSPEECH label is used, and only the clips given (the training
    split) are seen.

    Returns:
        The loss of every step.
    """
    n_bands = int(pretext["n_bands"])
    if not 2 <= n_bands <= 10:
        raise ValueError(f"model.net.pretext.n_bands must lie in 2..10 (one digit token each), got {n_bands}")
    prompts = dict(pretext["prompts"])
    unknown = sorted(set(prompts) - set(PRETEXT_QUESTIONS))
    if unknown or not prompts:
        raise ValueError(f"model.net.pretext.prompts: unknown question(s) {unknown}; expected some of {PRETEXT_QUESTIONS}")
    questions = [q for q in PRETEXT_QUESTIONS if q in prompts]
    tokenizer = processor.tokenizer
    digit_ids = torch.as_tensor([tokenizer.convert_tokens_to_ids(str(k)) for k in range(10)], dtype=torch.long)
    word_ids = torch.as_tensor(answer_token_ids(tokenizer, answers), dtype=torch.long)
    # features once; each question's token ids are the same for every clip of the window
    encoded = {q: encode_prompts(processor, audio, prompts[q], sample_rate) for q in questions}
    targets = pretext_targets(encoded[questions[0]]["input_features"].numpy(), n_bands)
    gen = torch.Generator().manual_seed(int(pretext["seed"]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(pretext["lr"]), weight_decay=0.0)
    steps, batch = int(pretext["steps"]), int(pretext["batch_size"])
    losses = []
    model.train()
    for step in tqdm(range(steps), desc="pretrain tiny Qwen2-Audio (pretext)", unit="step", disable=not progress):
        q = questions[step % len(questions)]
        idx = torch.randint(0, len(audio), (batch,), generator=gen)
        inputs = {k: v[idx] for k, v in encoded[q].items()}
        logits = last_token_logits(model, inputs)
        # a choice among the question's own answer tokens (digits, or the two answer words): the rows of
        # tokens a question never answers get no gradient, so the answer words keep distinct rows
        choices = word_ids if q == "pulse_words" else digit_ids
        loss = nn.functional.cross_entropy(logits[:, choices], torch.as_tensor(targets[q])[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def tiny_base_key(tiny: Mapping[str, Any], pretext: Mapping[str, Any], answers: Sequence[str], data_key: str) -> str:
    """Cache key of a pretrained tiny base: its sizes, pretext settings, answers and training clips."""
    return content_hash({"v": TINY_VERSION, "tiny": dict(tiny), "pretext": dict(pretext), "answers": list(answers),
                         "data": data_key}, length=12)


@contextlib.contextmanager
def preserved_global_rng() -> Iterator[None]:
    """Restore torch's (CPU), numpy's and Python's global generator states on exit."""
    state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.random.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])


def ensure_tiny_base(cache_dir: str | Path, tiny: Mapping[str, Any], pretext: Mapping[str, Any], answers: Sequence[str],
                     train_audio: Callable[[], tuple[np.ndarray, str]], progress: bool = True) -> Path:
    """Build, pretrain and ``save_pretrained`` the tiny base once; return its directory.

    Built by rigor.cache.build_once: under a lock (parallel jobs pretrain it once), into a temporary
    directory that gets ``COMPLETE`` last and is then renamed into place.

    Args:
        cache_dir: Root of the cache (``${paths.data_dir}``); the base goes to ``qwen2_audio_tiny_<key>``.
        tiny: Model sizes and the feature window.
        pretext: Pretext settings (steps, batch_size, lr, seed, n_bands, prompts).
        answers: The answer words, added to the tokenizer as single tokens.
        train_audio: Returns (training clips (N, samples), a key naming them); only training clips may
            be used, so the base never sees a dev or test clip.
    """
    from transformers import Qwen2AudioForConditionalGeneration

    audio, data_key = train_audio()
    plain = {k: (list(v) if isinstance(v, (list, tuple)) else v) for k, v in dict(tiny).items()}
    final = Path(cache_dir) / f"qwen2_audio_tiny_{tiny_base_key(plain, dict(pretext), answers, data_key)}"

    def build(tmp: Path) -> None:
        # the global generators are left as they were: a run that builds the base must draw the same LoRA
        # initialisation (and later masks) as one that finds it cached, or a resumed run ends elsewhere
        with preserved_global_rng():
            torch.manual_seed(int(pretext["seed"]))
            processor = build_processor(plain, answers)
            model = Qwen2AudioForConditionalGeneration(tiny_config(plain, processor.tokenizer))
            losses = pretrain_tiny(model, processor, np.asarray(audio), pretext, int(plain["sample_rate"]), progress, answers)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        n = max(1, len(losses) // 10)
        (tmp / "pretext.json").write_text(json.dumps({"first_loss": float(np.mean(losses[:n])),
                                                      "last_loss": float(np.mean(losses[-n:])), "steps": len(losses),
                                                      "n_clips": len(audio), "data": data_key}, indent=1))

    return build_once(final, build, marker="COMPLETE", marker_text="tiny Qwen2-Audio base\n")


def load_base(path: str | Path, dtype: str = "auto") -> tuple[nn.Module, Any]:
    """Qwen2AudioForConditionalGeneration and its processor from a local directory (no download).

    Args:
        path: A directory written by ``save_pretrained`` (the real Qwen2-Audio-7B, or the tiny base).
        dtype: ``auto`` = bfloat16 on a GPU, float32 on CPU; or ``float32``/``bfloat16``/``float16``.
    """
    from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"model.net.base_path: {path} has no config.json; expected a save_pretrained directory")
    if dtype == "auto":
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    model = Qwen2AudioForConditionalGeneration.from_pretrained(path, dtype=getattr(torch, dtype), local_files_only=True)
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    return model, processor


def answer_token_ids(tokenizer: Any, answers: Sequence[str], prefix: str = "") -> list[int]:
    """The first token id of each answer (after prefix); fails if two answers share their first token."""
    ids = []
    for a in answers:
        toks = tokenizer.encode(prefix + a, add_special_tokens=False)
        if prefix and len(toks) > 1 and tokenizer.encode(prefix, add_special_tokens=False) == toks[:1]:
            toks = toks[1:]  # a prefix that is its own token (byte-level space): the answer starts after it
        if not toks:
            raise ValueError(f"model.net.answers: {a!r} encodes to no token")
        ids.append(int(toks[0]))
    if len(set(ids)) != len(ids):
        raise ValueError(f"model.net.answers {list(answers)} share a first token {ids}; pick answers that differ at once")
    return ids


# --- the net the LightningModule wraps -----------------------------------------------------------------

class Qwen2AudioAnswer(nn.Module):
    """Qwen2-Audio (+ LoRA adapters) whose output is logit(SPEECH) - logit(NONSPEECH) at the answer position.

    Args:
        base_path: A local ``save_pretrained`` directory; None = the tiny embedded base (built on demand by
            the LightningModule, which knows the training clips).
        answers: ``[negative, positive]`` answer words, index = label (NONSPEECH, SPEECH).
        answer_prefix: Text between the prompt and the answer (e.g. a space for Qwen's tokenizer).
        prompt: The question; contains one ``<|AUDIO|>``.
        lora: ``{targets: attention | attention_mlp | encoder_attention, r, alpha, dropout}``; None = no adapter (zero-shot).
        dtype: See load_base.
    """

    def __init__(self, base_path: str | Path, answers: Sequence[str], prompt: str, lora: Mapping[str, Any] | None,
                 answer_prefix: str = "", dtype: str = "auto") -> None:
        super().__init__()
        base, processor = load_base(base_path, dtype)
        self.processor = processor
        self.prompt = prompt
        self.answer_ids = answer_token_ids(processor.tokenizer, answers, answer_prefix)
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_cfg = dict(lora) if lora else None
        if self.lora_cfg:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=int(self.lora_cfg["r"]), lora_alpha=int(self.lora_cfg["alpha"]),
                lora_dropout=float(self.lora_cfg["dropout"]), bias="none",
                target_modules=lora_target_regex(str(self.lora_cfg["targets"])),
            )
            # get_peft_model changes the base in place: the base was loaded fresh for this net
            self.model = get_peft_model(base, config)
        else:
            self.model = base

    def answer_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, input_features: torch.Tensor,
                      feature_attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, 2) LM logits of the [NONSPEECH, SPEECH] answer tokens at the answer position."""
        dtype = next(self.model.parameters()).dtype
        logits = last_token_logits(self.model, {
            "input_ids": input_ids, "attention_mask": attention_mask,
            "input_features": input_features.to(dtype), "feature_attention_mask": feature_attention_mask,
        })
        return logits[:, self.answer_ids].float()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, input_features: torch.Tensor,
                feature_attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) binary logit: logit(SPEECH) - logit(NONSPEECH)."""
        pair = self.answer_logits(input_ids, attention_mask, input_features, feature_attention_mask)
        return pair[:, 1] - pair[:, 0]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable (adapter) weights only, by their full names."""
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def adapted_modules(self) -> list[str]:
        """Names of the modules that carry a LoRA adapter."""
        return sorted({n.rsplit(".lora_A", 1)[0] for n, _ in self.named_parameters() if ".lora_A" in n})


def spec_augment(features: torch.Tensor, valid_frames: torch.Tensor, freq_mask: int, time_mask: int,
                 generators: Sequence[torch.Generator], fill: float | None = None) -> torch.Tensor:
    """SpecAugment (one frequency and one time mask per clip), each clip from its own generator.

    Args:
        features: (B, n_mels, T) log-mel features.
        valid_frames: (B,) number of real (unpadded) frames per clip.
        freq_mask: Largest frequency-mask width F (width uniform in 0..F).
        time_mask: Largest time-mask width (uniform in 0..time_mask), inside the valid frames.
        generators: One torch.Generator per clip (seeded from seed, epoch and sample).
        fill: Masked value; None = each clip's mean.
    """
    out = features.clone()
    n_mels = features.shape[1]
    for b, gen in enumerate(generators):
        value = float(out[b].mean()) if fill is None else fill
        f = int(torch.randint(0, freq_mask + 1, (1,), generator=gen))
        f0 = int(torch.randint(0, max(1, n_mels - f + 1), (1,), generator=gen))
        out[b, f0 : f0 + f, :] = value
        frames = int(valid_frames[b])
        t = min(int(torch.randint(0, time_mask + 1, (1,), generator=gen)), frames)
        t0 = int(torch.randint(0, max(1, frames - t + 1), (1,), generator=gen))
        out[b, :, t0 : t0 + t] = value
    return out


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in module.parameters())


__all__ = [
    "AUDIO_PROMPT", "Qwen2AudioAnswer", "answer_token_ids", "build_processor", "build_tokenizer", "count_parameters",
    "encode_prompts", "ensure_tiny_base", "last_token_logits", "load_base", "lora_target_regex", "pretext_targets",
    "pretrain_tiny", "spec_augment", "tiny_config",
]
