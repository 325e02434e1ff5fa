"""Qwen2-Audio + LoRA: targets on the language model only, answer-token logits, adapter round trip."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lightning_modules.audio.qwen2_audio import (  # noqa: E402
    AUDIO_PROMPT,
    Qwen2AudioAnswer,
    answer_token_ids,
    build_tokenizer,
    encode_prompts,
    ensure_tiny_base,
    lora_target_regex,
    pretext_targets,
    spec_augment,
)

ANSWERS = ["NONSPEECH", "SPEECH"]
PROMPT = AUDIO_PROMPT + "Speech? Answer:"
TINY = dict(sample_rate=16000, window_seconds=1.0, hop_length=160, n_fft=400, num_mel_bins=80, encoder_layers=2,
            encoder_heads=4, encoder_ffn_dim=64, encoder_dim=32, hidden_size=32, intermediate_size=64, num_layers=2,
            num_heads=4, num_kv_heads=2, max_positions=64)
PRETEXT = dict(steps=4, batch_size=4, lr=1e-3, seed=0, n_bands=4,
               prompts={"band": AUDIO_PROMPT + "Loudest band? Answer:", "half": AUDIO_PROMPT + "Louder half? Answer:"})


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    torch.set_num_threads(1)
    audio = np.random.default_rng(0).standard_normal((12, 16000)).astype(np.float32) * 0.1
    return ensure_tiny_base(tmp_path_factory.mktemp("qwen"), TINY, PRETEXT, ANSWERS, lambda: (audio, "toy"), progress=False)


@pytest.fixture(scope="module")
def batch(base_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(base_dir)
    rng = np.random.default_rng(1)
    clips = [rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000, 11000, 16000)]
    return encode_prompts(processor, clips, PROMPT, 16000)


def _lora(targets: str) -> dict:
    return {"targets": targets, "r": 4, "alpha": 8, "dropout": 0.0}


def test_attention_targets_adapt_only_language_model_attention(base_dir) -> None:
    net = Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora("attention"))
    adapted = net.adapted_modules()
    assert len(adapted) == TINY["num_layers"] * 4
    assert all(".language_model.layers." in n for n in adapted)
    assert not any("audio_tower" in n or "multi_modal_projector" in n for n in adapted)
    assert {n.rsplit(".", 1)[1] for n in adapted} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    # only the adapters train
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_attention_mlp_adds_gate_up_down(base_dir) -> None:
    net = Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora("attention_mlp"))
    adapted = net.adapted_modules()
    assert len(adapted) == TINY["num_layers"] * 7
    assert {n.rsplit(".", 1)[1] for n in adapted} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any("audio_tower" in n for n in adapted)


def test_encoder_attention_adapts_exactly_the_encoder_and_lm_attention(base_dir) -> None:
    net = Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora("encoder_attention"))
    adapted = set(net.adapted_modules())
    encoder = {n for n in adapted if ".audio_tower." in n}
    lm = adapted - encoder
    assert len(encoder) == TINY["encoder_layers"] * 4 and len(lm) == TINY["num_layers"] * 4
    assert {n.rsplit(".", 1)[1] for n in encoder} == {"q_proj", "k_proj", "v_proj", "out_proj"}
    assert all(".self_attn." in n for n in adapted) and all(".language_model.layers." in n for n in lm)
    # nothing else: not the encoder's MLP (fc1, fc2), the projector or the LM's MLP
    assert not any(k in n for n in adapted for k in ("fc1", "fc2", "multi_modal_projector", "mlp"))
    # and the regex, by hand
    rx = lora_target_regex("encoder_attention")
    assert re.fullmatch(rx, "model.audio_tower.layers.1.self_attn.out_proj")
    assert re.fullmatch(rx, "audio_tower.layers.0.self_attn.q_proj") and re.fullmatch(rx, "model.language_model.layers.0.self_attn.o_proj")
    assert not re.fullmatch(rx, "model.audio_tower.layers.0.fc1") and not re.fullmatch(rx, "model.language_model.layers.0.mlp.up_proj")


def test_plain_name_list_would_adapt_the_audio_encoder(base_dir) -> None:
    """Why targets are a regex: peft's list form matches suffixes and hits the encoder's q/k/v too."""
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2AudioForConditionalGeneration

    base = Qwen2AudioForConditionalGeneration.from_pretrained(base_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    names = {n.rsplit(".lora_A", 1)[0] for n, _ in model.named_parameters() if ".lora_A" in n}
    encoder = [n for n in names if "audio_tower" in n]
    assert len(encoder) == TINY["encoder_layers"] * 3  # q, k, v of each encoder layer (its out proj is out_proj)


def test_regex_fullmatch_hand_cases() -> None:
    rx = lora_target_regex("attention")
    assert re.fullmatch(rx, "model.language_model.layers.0.self_attn.q_proj")
    assert re.fullmatch(rx, "language_model.model.layers.11.self_attn.o_proj")  # older transformers layout
    assert not re.fullmatch(rx, "model.audio_tower.layers.0.self_attn.q_proj")
    assert not re.fullmatch(rx, "model.language_model.layers.0.mlp.up_proj")
    assert re.fullmatch(lora_target_regex("attention_mlp"), "model.language_model.layers.3.mlp.down_proj")
    with pytest.raises(ValueError, match="unknown target set"):
        lora_target_regex("everything")


def test_answer_logits_equal_lm_logits_at_answer_ids(base_dir, batch) -> None:
    net = Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora("attention")).eval()
    with torch.no_grad():
        pair = net.answer_logits(**batch)
        full = net.model(**batch).logits
        out = net(**batch)
    last = batch["attention_mask"].sum(1) - 1
    assert int(last[1]) < int(last[0])  # the shorter clip has fewer audio tokens: right padding
    ids = answer_token_ids(net.processor.tokenizer, ANSWERS)
    for b in range(3):
        torch.testing.assert_close(pair[b], full[b, int(last[b]), ids], rtol=0, atol=0)
    torch.testing.assert_close(out, pair[:, 1] - pair[:, 0])
    # the padded row's answer equals the same clip run alone (padding changes nothing)
    alone = {k: v[1:2, : int(last[1]) + 1] if v.ndim == 2 and k in ("input_ids", "attention_mask") else v[1:2]
             for k, v in batch.items()}
    with torch.no_grad():
        torch.testing.assert_close(net(**alone), out[1:2], rtol=1e-4, atol=1e-5)


def test_adapter_round_trip_gives_identical_logits(base_dir, batch) -> None:
    torch.manual_seed(0)
    a = Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora("attention_mlp"))
    for n, p in a.named_parameters():  # LoRA B starts at zero: move it, or every adapter looks the same
        if p.requires_grad:
            p.data.normal_(0, 0.05)
    state = a.adapter_state_dict()
    assert state and all("lora_" in k for k in state)
    b = Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora("attention_mlp"))
    with torch.no_grad():
        before = b.eval()(**batch)
        missing, unexpected = b.load_state_dict(state, strict=False)
        assert not unexpected and not [k for k in missing if "lora_" in k]
        torch.testing.assert_close(b.eval()(**batch), a.eval()(**batch), rtol=0, atol=0)
        assert not torch.allclose(before, b(**batch))


def test_answers_must_differ_at_first_token() -> None:
    tok = build_tokenizer(["SPEECH", "NONSPEECH"])
    expected = [tok.convert_tokens_to_ids("NONSPEECH"), tok.convert_tokens_to_ids("SPEECH")]
    assert answer_token_ids(tok, ["NONSPEECH", "SPEECH"]) == expected
    assert answer_token_ids(tok, ["NONSPEECH", "SPEECH"], prefix=" ") == answer_token_ids(tok, ["NONSPEECH", "SPEECH"])
    with pytest.raises(ValueError, match="share a first token"):
        answer_token_ids(tok, ["yes", "yeah"])


def test_pretext_targets_hand_worked() -> None:
    feats = np.zeros((2, 8, 12))
    feats[0, 6:8, :] = 1.0  # top band loudest
    feats[0, :, 9:] += 0.5  # last quarter (frames 9-11) louder: second half too
    feats[1, 0:2, 3:6] = 2.0  # bottom band, second quarter, first half
    out = pretext_targets(feats, n_bands=4, modulation_edges=np.array([0.1, 0.2, 0.3]))
    assert out["band"].tolist() == [3, 0] and out["half"].tolist() == [1, 0] and out["quarter"].tolist() == [3, 1]
    # loudness std over time: clip 0 = std of [0.25]*9 + [0.75]*3 = 0.2165; clip 1 = std of 0.5 on 3 of 12 frames = 0.2165
    spread = np.array([np.std([0.25] * 9 + [0.75] * 3), np.std([0, 0, 0, 0.5, 0.5, 0.5] + [0] * 6)])
    assert out["modulation"].tolist() == np.searchsorted([0.1, 0.2, 0.3], spread, side="right").tolist() == [2, 2]
    assert pretext_targets(feats, 4)["modulation_edges"].shape == (3,)


def test_spec_augment_masks_within_bounds() -> None:
    x = torch.arange(2 * 20 * 30, dtype=torch.float32).reshape(2, 20, 30) + 1.0
    gens = [torch.Generator().manual_seed(s) for s in (0, 1)]
    y = spec_augment(x, torch.tensor([30, 12]), freq_mask=5, time_mask=10, generators=gens, fill=0.0)
    masked = y == 0
    rows = masked.all(dim=2).sum(dim=1)  # fully masked mel rows per clip
    assert (rows <= 5).all()
    cols = masked.all(dim=1)  # fully masked frames per clip
    assert (cols.sum(dim=1) <= 10).all()
    assert not cols[1, 12:].any()  # the time mask stays inside the 12 valid frames
    assert masked.any()
    again = spec_augment(x, torch.tensor([30, 12]), 5, 10, [torch.Generator().manual_seed(s) for s in (0, 1)], fill=0.0)
    torch.testing.assert_close(y, again)


def test_module_specaugment_and_adapter_only_checkpoint(base_dir, batch) -> None:
    from functools import partial

    from lightning_modules.audio.module import AudioLoRAModule

    net = Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora("attention"))
    module = AudioLoRAModule(net=net, optimizer=partial(torch.optim.AdamW, lr=1e-3),
                             spec_augment={"freq_mask": 5, "time_mask": 10}, seed=3)
    full = {**batch, "target": torch.tensor([1, 0, 1]), "index": torch.tensor([4, 9, 2])}
    a, b = module.augment(full), module.augment(full)
    torch.testing.assert_close(a["input_features"], b["input_features"])  # a function of (seed, epoch, sample)
    assert not torch.equal(a["input_features"], full["input_features"])
    torch.testing.assert_close(a["input_ids"], full["input_ids"])  # only the features are masked
    swapped = module.augment({**full, "index": torch.tensor([9, 4, 2])})
    assert not torch.equal(swapped["input_features"][0], a["input_features"][0])
    assert AudioLoRAModule(net=net, optimizer=partial(torch.optim.AdamW)).augment(full) is full  # off by default
    # a checkpoint keeps only the adapters; the optimizer sees only them
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])
    assert {id(p) for p in module.trainable_parameters()} == {id(p) for n, p in module.named_parameters() if "lora_" in n}


def test_a_checkpoint_that_does_not_fit_the_module_is_refused_naming_the_keys(base_dir) -> None:
    """Issue 21 item 5: strict loading is off for adapter-only checkpoints, so foreign ones loaded silently."""
    from functools import partial

    from lightning_modules.audio.module import AudioLoRAModule

    def module(targets: str) -> AudioLoRAModule:
        return AudioLoRAModule(net=Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora(targets)),
                               optimizer=partial(torch.optim.AdamW, lr=1e-3))

    attention, both = module("attention"), module("attention_mlp")
    ckpt = {"state_dict": both.state_dict()}
    both.on_save_checkpoint(ckpt)
    # attention + MLP adapters into an attention run: the MLP adapters have nowhere to go
    with pytest.raises(ValueError, match=r"unexpected keys: \d+ \(.*mlp\.(gate|up|down)_proj\.lora_"):
        attention.load_state_dict(ckpt["state_dict"], strict=False)
    # an attention checkpoint in an attention + MLP run: adapters missing
    own = {"state_dict": attention.state_dict()}
    attention.on_save_checkpoint(own)
    with pytest.raises(ValueError, match=r"missing adapter keys: \d+ \(.*mlp\..*lora_"):
        both.load_state_dict(own["state_dict"], strict=False)
    # another family's checkpoint (a lens ResNet): no adapter key, only foreign ones
    with pytest.raises(ValueError, match=r"missing adapter keys: .*unexpected keys: 2 \(net\.conv1\.weight, net\.fc\.weight\)"):
        attention.load_state_dict({"net.conv1.weight": torch.zeros(1), "net.fc.weight": torch.zeros(1)}, strict=False)
    # its own adapter-only checkpoint loads (the frozen base's keys are optional), and so does a full one
    with torch.no_grad():
        for k in own["state_dict"]:
            own["state_dict"][k] = own["state_dict"][k] + 1.0
    attention.load_state_dict(own["state_dict"], strict=False)
    loaded = attention.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in own["state_dict"].items())
    attention.load_state_dict(attention.state_dict(), strict=False)


def test_bf16_base_trains_its_adapters_in_float32_under_bf16_autocast(base_dir, batch) -> None:
    """Issue 23 item 4: a bf16 checkpoint (model.net.dtype=bfloat16) under trainer=gpu_bf16's bf16-mixed.

    Lightning's bf16-mixed is torch.autocast(bfloat16); on CPU the same autocast runs, so this checks what a GPU
    run relies on: the frozen base stays bf16 (half the memory), the adapters are float32 (an AdamW step of 1e-3
    on a bf16 weight near 1 would round away), the answer logits agree with the float32 net to bf16 precision,
    and one optimiser step moves them.
    """
    torch.manual_seed(0)
    ref = Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora("attention"), dtype="float32").eval()
    torch.manual_seed(0)
    net = Qwen2AudioAnswer(base_dir, ANSWERS, PROMPT, _lora("attention"), dtype="bfloat16").eval()
    frozen = {p.dtype for p in net.parameters() if not p.requires_grad}
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert frozen == {torch.bfloat16} and trainable and {p.dtype for p in trainable} == {torch.float32}
    with torch.no_grad():
        expected = ref(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = net(**batch)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    # bf16 keeps 8 bits of mantissa: agreement to 1 per cent of the logits' scale, not to float32's 1e-6
    scale = float(expected.abs().max()) + 1.0
    assert float((got - expected).abs().max()) < 0.01 * scale
    opt = torch.optim.AdamW(trainable, lr=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(**batch), torch.tensor([1.0, 0.0, 1.0]))
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable)
    opt.step()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        after = net(**batch)
    assert not torch.equal(after, got)
