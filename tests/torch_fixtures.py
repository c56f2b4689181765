"""Tiny PyTorch `transformers` DeBERTa models built offline, with weights re-drawn large.

With transformers' default init (std 0.02) attention is near uniform and a wrong relative-position
term moves outputs by ~1e-4; re-drawn weights make every term matter (GUIDE §4).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

torch = __import__("pytest").importorskip("torch")
transformers = __import__("pytest").importorskip("transformers")


def redraw_weights(model, seed: int, std: float = 0.3) -> None:
    """Re-draw every parameter: matrices ~ N(0, std), biases ~ N(0, 0.1), LayerNorm scale ~ 1 + N(0, 0.2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if "LayerNorm" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.2 * noise)
            elif name.endswith("bias"):
                param.copy_(0.1 * noise)
            else:
                param.copy_(std * noise)


def build_deberta(tmp_dir: Path, seed: int, safetensors: bool = True, std: float = 0.3, **config_kwargs):
    """Save a random `DebertaV2Model` to `tmp_dir`; return the eval-mode torch model."""
    config = transformers.DebertaV2Config(**config_kwargs)
    torch.manual_seed(seed)
    model = transformers.DebertaV2Model(config).eval()
    redraw_weights(model, seed, std)
    model.save_pretrained(tmp_dir)
    if not safetensors:  # transformers 5 always writes safetensors; emulate an older checkpoint
        (Path(tmp_dir) / "model.safetensors").unlink()
        torch.save(model.state_dict(), Path(tmp_dir) / "pytorch_model.bin")
    return model


def ragged_batch(rng: np.random.Generator, vocab_size: int, lengths: list[int]):
    """input_ids / attention_mask with right padding (pad id 0) for the given row lengths."""
    seq_len = max(lengths)
    ids = rng.integers(1, vocab_size, size=(len(lengths), seq_len))
    mask = (np.arange(seq_len)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)
    return (ids * mask).astype(np.int64), mask


def torch_last_hidden(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    return out.last_hidden_state.numpy()
