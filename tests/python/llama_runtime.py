"""A real llama.cpp runtime (the `llama_cpp` module of llama-cpp-python, built
from source by scripts/setup-llama.sh) that scores a fixed prompt: logits for
every position, and how far a quantized model's next-token distributions are
from a reference (F16) model's.

    import llama_runtime as lr
    ref = lr.logits("model-f16.gguf")          # [n_tokens, n_vocab] float32
    q = lr.logits("model-q4_0.gguf")
    print(lr.compare(ref, q, lr.tokens("model-f16.gguf")))

Everything runs on the CPU with 2 threads and a fixed seed; nothing is
sampled, so the logits depend only on the model file and the prompt.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

# About 32 tokens with SmolLM2's tokenizer (the exact count is in tokens()).
PROMPT = ("The capital of France is Paris. Quantization stores the weights of a neural "
          "network in fewer bits, so a model needs less memory and runs faster.")
N_THREADS = 1  # no OpenMP barriers: fast and steady on a busy 2-core machine
SEED = 1234


def available() -> bool:
    """True when llama_cpp can be imported (without importing it)."""
    return importlib.util.find_spec("llama_cpp") is not None


def load(gguf_path, n_ctx: int = 128):
    """A llama_cpp.Llama for `gguf_path` that keeps the logits of every
    position. Close it (or use it in a `with contextlib.closing(...)`)."""
    import llama_cpp  # noqa: PLC0415 (optional dependency)

    return llama_cpp.Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_batch=n_ctx,
                           n_threads=N_THREADS, n_threads_batch=N_THREADS, seed=SEED,
                           logits_all=True, verbose=False)


def tokens(gguf_path, prompt: str = PROMPT, n_ctx: int = 128) -> list:
    """The prompt's token ids under the model's own tokenizer (BOS added
    only where the model's metadata asks for it)."""
    llm = load(gguf_path, n_ctx)
    try:
        return list(llm.tokenize(prompt.encode("utf-8"), add_bos=True))
    finally:
        llm.close()


def logits(gguf_path, prompt: str = PROMPT, n_ctx: int = 128) -> np.ndarray:
    """Logits [n_tokens, n_vocab] (float32) for every position of `prompt`,
    evaluated in one batch from an empty context: row i scores token i+1."""
    llm = load(gguf_path, n_ctx)
    try:
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True)
        if len(ids) > n_ctx:
            raise ValueError(f"prompt has {len(ids)} tokens, more than n_ctx={n_ctx}")
        llm.reset()
        llm.eval(ids)
        out = np.array(llm.scores[: llm.n_tokens, :], dtype=np.float32, copy=True)
    finally:
        llm.close()
    if out.shape[0] != len(ids):
        raise RuntimeError(f"{gguf_path}: got logits for {out.shape[0]} of {len(ids)} tokens")
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclasses.dataclass
class Comparison:
    """How a model's logits `q` differ from reference logits `p` on the same
    tokens. KL is in nats, KL(softmax p || softmax q) per position."""
    positions: int
    kl_mean: float
    kl_max: float
    max_abs_logit_diff: float
    rms_logit_diff: float
    top1_agreement: float  # fraction of positions with the same argmax
    nll_ref: Optional[float] = None  # mean -log p(next prompt token), reference
    nll: Optional[float] = None      # the same under q

    def line(self, name: str = "") -> str:
        s = (f"{name}KL mean {self.kl_mean:.5f} max {self.kl_max:.5f} nats, "
             f"top-1 {self.top1_agreement * 100:.1f}% of {self.positions}, "
             f"max |dlogit| {self.max_abs_logit_diff:.3f}, rms {self.rms_logit_diff:.4f}")
        if self.nll is not None:
            s += f", prompt NLL {self.nll:.4f} (ref {self.nll_ref:.4f})"
        return s


def compare(p: np.ndarray, q: np.ndarray, token_ids: Optional[Sequence[int]] = None) -> Comparison:
    """Compares logits `q` with reference logits `p` (both [n, vocab]). With
    the prompt's `token_ids`, also the mean negative log-likelihood of each
    next prompt token under both."""
    if p.shape != q.shape or p.ndim != 2:
        raise ValueError(f"logit shapes differ or are not 2-D: {p.shape} vs {q.shape}")
    if not (np.isfinite(p).all() and np.isfinite(q).all()):
        raise ValueError("non-finite logits")
    lp, lq = _log_softmax(p), _log_softmax(q)
    kl = (np.exp(lp) * (lp - lq)).sum(axis=-1)
    diff = p.astype(np.float64) - q.astype(np.float64)
    c = Comparison(positions=p.shape[0], kl_mean=float(kl.mean()), kl_max=float(kl.max()),
                   max_abs_logit_diff=float(np.abs(diff).max()),
                   rms_logit_diff=float(np.sqrt((diff ** 2).mean())),
                   top1_agreement=float((p.argmax(axis=-1) == q.argmax(axis=-1)).mean()))
    if token_ids is not None:
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.shape[0] != p.shape[0]:
            raise ValueError(f"{ids.shape[0]} token ids for {p.shape[0]} positions")
        rows = np.arange(p.shape[0] - 1)
        c.nll_ref = float(-lp[rows, ids[1:]].mean())
        c.nll = float(-lq[rows, ids[1:]].mean())
    return c


def describe(path) -> str:
    p = Path(path)
    return f"{p.name} ({p.stat().st_size / 1e6:.1f} MB)"
