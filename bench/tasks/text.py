"""N-way K-shot text classification episodes over a dataset's encoder inputs, gathered on the device."""

from __future__ import annotations

import hashlib
import logging

import torch

from bench.config import Suite, TextData, TextModel
from bench.datasets.base import cache_key, cached_file, cached_tensor
from bench.datasets.text import TextExamples, load_examples, split_members
from bench.datasets.text_features import (
    MINILM,
    MINILM_MAX_SEQ_LENGTH,
    TOKEN,
    build_vocabulary,
    minilm_tokens,
    sentence_embeddings,
    tokenizer_sha256,
    word_ids,
)
from bench.tasks.base import TaskBatch, classification_batch
from bench.tasks.classes import ClassEpisodes

log = logging.getLogger(__name__)


InputNotes = dict[str, object]  # what the record says about the inputs beyond their key (how many texts were cut)


def _sentence_embedding_inputs(model: TextModel, examples: TextExamples, train_classes: list[str],
                               train_texts: list[str]) -> tuple[torch.Tensor, str, InputNotes]:
    return (*sentence_embeddings(examples), {})


def _word_id_inputs(model: TextModel, examples: TextExamples, train_classes: list[str],
                    train_texts: list[str]) -> tuple[torch.Tensor, str, InputNotes]:
    """Word ids over a vocabulary built from the training classes' texts only (no test text leaks into it)."""
    key = cache_key(dataset=examples.key, train_classes=train_classes, tokenizer=TOKEN.pattern,
                    vocabulary_size=model.vocabulary_size, max_tokens=model.max_tokens)

    def build() -> torch.Tensor:
        return word_ids(examples.texts, build_vocabulary(train_texts, model.vocabulary_size), model.max_tokens)

    return cached_tensor("text-words", key, build), key, {}


def _word_piece_inputs(model: TextModel, examples: TextExamples, train_classes: list[str],
                       train_texts: list[str]) -> tuple[torch.Tensor, str, InputNotes]:
    """all-MiniLM-L6-v2's word-piece ids (tokenized once per dataset, cached with each text's length
    before the cut), truncated at the model's limit; the notes count the texts that were cut."""
    key = cache_key(dataset=examples.key, model=MINILM, tokenizer=tokenizer_sha256(), max_seq_length=MINILM_MAX_SEQ_LENGTH,
                    stored=["ids", "lengths"])
    stored = cached_file("text-wordpieces", key, lambda: dict(zip(("ids", "lengths"), minilm_tokens(examples.texts),
                                                                  strict=True)))
    lengths = stored["lengths"]
    notes: InputNotes = {"tokens_limit": MINILM_MAX_SEQ_LENGTH, "texts": len(lengths),
                         "truncated_texts": int((lengths > MINILM_MAX_SEQ_LENGTH).sum()),
                         "longest_text_tokens": int(lengths.max()) if len(lengths) else 0}
    return stored["ids"], key, notes


ENCODER_INPUTS = {"minilm": _sentence_embedding_inputs, "wordcnn": _word_id_inputs,
                  "minilm-finetune": _word_piece_inputs}
"""What each encoder reads of the texts, the cache key that names it (part of every episode's hash), and notes for the record."""
COMPUTED_INPUTS: frozenset[str] = frozenset({"minilm"})
"""Encoders whose inputs are a model's floating-point output (their last bits depend on the CPU's
instruction set): their episodes' contents hash counts the example ids and the inputs' key."""


class TextTasks(ClassEpisodes):
    """Episode i of (split, seed): ``ways`` classes of the split, ``shots + queries`` examples of each.

    Classes have different numbers of examples, so each class's example indices are a row of a
    padded table; an episode draws, from a generator seeded by (suite, split, seed, i), the classes
    and a random order of each class's own examples, and gathers the inputs in one indexing
    operation. The draws do not depend on the encoder, so the frozen and the trainable encoder see
    the same episodes. Inputs are the frozen sentence embeddings (``encoder: minilm``) or word ids
    with a vocabulary of the training classes' texts only (``encoder: wordcnn``), or word-piece
    ids for the trainable transformer (``encoder: minilm-finetune``).
    """

    # Evaluation episodes materialised at once: 100 episodes of word ids are ~13,000 texts, whose
    # word-CNN activations take a few hundred MB.
    eval_chunk = 100

    def __init__(self, suite: Suite, device: torch.device) -> None:
        data, model = suite.data, suite.model
        assert isinstance(data, TextData) and isinstance(model, TextModel)
        examples = load_examples(data)
        splits = split_members(data, examples)
        class_names = sorted({c for classes in splits.values() for c in classes})
        by_class: dict[str, list[int]] = {c: [] for c in class_names}
        for index, label in enumerate(examples.labels):
            if label in by_class:
                by_class[label].append(index)
        super().__init__(suite, {split: {c: len(by_class[c]) for c in classes} for split, classes in splits.items()})
        counts = torch.tensor([len(by_class[c]) for c in class_names])
        members = torch.full((len(class_names), int(counts.max())), -1, dtype=torch.long)
        for row, name in enumerate(class_names):
            members[row, : counts[row]] = torch.tensor(by_class[name])
        position = {c: i for i, c in enumerate(class_names)}
        self.split_classes = {s: torch.tensor([position[c] for c in cs], device=device) for s, cs in splits.items()}
        self.n_train_classes = len(splits["train"])
        self.members = members.to(device)
        train_rows = members[[position[c] for c in splits["train"]]].flatten()
        train_texts = [examples.texts[i] for i in train_rows[train_rows >= 0].tolist()]
        inputs, input_key, self.input_notes = ENCODER_INPUTS[model.encoder](model, examples, splits["train"], train_texts)
        self.inputs = inputs.to(device)
        if self.input_notes.get("truncated_texts"):
            log.warning("%s: %d of %d texts are longer than the encoder's %d tokens and were truncated", suite.name,
                        self.input_notes["truncated_texts"], self.input_notes["texts"], self.input_notes["tokens_limit"])
        # An episode's identity: the key of the inputs (dataset and encoder) and the drawn indices.
        self.input_key = input_key
        # What stands for the inputs in the contents hash, where they are a model's output (else the inputs themselves).
        self.contents_key = input_key.encode() if model.encoder in COMPUTED_INPUTS else None
        self.device = device

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])

    def batch(self, split: str, seed: int, indices: range) -> TaskBatch:
        shots = self.shapes["train" if split == "train" else "eval"]["shots"]
        classes, positions = self.episode_examples(split, seed, indices)
        identity = hashlib.sha256(self.input_key.encode() + classes.numpy().tobytes() + positions.numpy().tobytes())
        classes, positions = classes.to(self.device), positions.to(self.device)
        rows = self.members[self.split_classes[split][classes].unsqueeze(-1), positions]  # (B, ways, k) example ids
        return classification_batch(self.inputs[rows], classes, shots, identity.digest(),
                                    rows if self.contents_key else None, self.contents_key)
