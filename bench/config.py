"""Suite files: declarative YAML validated into typed, frozen configuration at load time.

A suite file names its task source (``data``), the network (``model``), the protocol fields, the
training seeds and the tiers (``smoke``, ``standard``, ``paper``, optionally ``ci``: overrides of the same fields).
``include: other.yaml`` reads another suite file first and overrides the keys given here.
Every error names the file and the field and says what is allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from bench.errors import BenchError, did_you_mean
from bench.formatting import relative_path
from bench.registry import Registry

# In a checkout bench/suites links to the top-level suites/ folder; an installed wheel holds the files
# themselves there.
_PACKAGED_SUITES = Path(__file__).resolve().parent / "suites"
SUITES_DIR = _PACKAGED_SUITES.resolve() if _PACKAGED_SUITES.is_symlink() else _PACKAGED_SUITES
TIERS = ("smoke", "ci", "standard", "paper")
REQUIRED_TIERS = ("smoke", "standard", "paper")  # every suite has these; ci is optional
# Upper bounds far above any published protocol, so that a typo (an extra zero, 1e20) is refused
# when the suite is read instead of overflowing, or running for years, after training.
MAX_ITERATIONS = 10**8
MAX_TASKS = 10**6  # validation or test episodes, or tasks per meta-batch
MAX_PER_CLASS = 10**5  # ways, shots, queries
MAX_STEPS = 10**5  # inner steps
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds
MAX_NAME_LENGTH = 100

SplitName = Literal["train", "val", "test"]


class EpisodeShape(TypedDict):
    """One kind of episode: classes (None for regression), support and query examples (per class)."""

    ways: int | None
    shots: int
    queries: int

class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


def non_finite_number(value: Any, _seen: frozenset[int] = frozenset()) -> float | None:
    """The first NaN or infinity in ``value`` (a number, or lists and mappings of them), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    if isinstance(value, (list, tuple, dict)) and id(value) not in _seen:  # YAML aliases can make cycles
        items = value.values() if isinstance(value, dict) else value
        return next((bad for item in items if (bad := non_finite_number(item, _seen | {id(value)})) is not None), None)
    return None


class SineData(StrictModel):
    """Finn et al. 2017: y = A sin(x - phase), A ~ U[a0, a1], phase ~ U[p0, p1], x ~ U[x0, x1]."""

    kind: Literal["sine"]
    amplitude_range: tuple[float, float] = (0.1, 5.0)
    phase_range: tuple[float, float] = (0.0, math.pi)
    input_range: tuple[float, float] = (-5.0, 5.0)

    @model_validator(mode="after")
    def _ranges_ordered(self) -> SineData:
        for name in ("amplitude_range", "phase_range", "input_range"):
            low, high = getattr(self, name)
            if not low <= high:
                raise ValueError(f"{name} must be [low, high] with low <= high, got [{low}, {high}]")
        return self


class MLPModel(StrictModel):
    """A multilayer perceptron; ``hidden`` lists the hidden widths."""

    kind: Literal["mlp"]
    hidden: tuple[int, ...] = Field(default=(40, 40), min_length=1)
    activation: Literal["relu", "tanh"] = "relu"

    @model_validator(mode="after")
    def _positive_widths(self) -> MLPModel:
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {list(self.hidden)}")
        return self


class Normalization(StrictModel):
    """Per-channel (x - mean) / std after scaling pixels to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


def check_normalization(mean: tuple[float, ...] | None, std: tuple[float, ...] | None, channels: int | None) -> None:
    """Optional per-channel ``mean``/``std``: both or neither, one positive std per channel (``channels``
    when known)."""
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if mean is not None and std is not None:
        if len(mean) != len(std) or (channels is not None and len(mean) != channels):
            raise ValueError("mean and std need one value per channel" + (f" ({channels})" if channels else ""))
        if any(v <= 0 for v in std):
            raise ValueError("std values must be positive")


class OmniglotData(StrictModel):
    """Lake et al.'s Omniglot archives; each (character, rotation) is a class (Vinyals et al. 2016).

    ``split`` lists, per split, alphabets (``Alphabet``) or character ranges of an alphabet
    (``Alphabet/character01-character32``); every rotation of a listed character is in that split.
    ``channels: 3`` repeats the grey value in three channels and ``mean``/``std`` normalise, so that
    a network trained on colour images can be tested on Omniglot (Meta-Dataset reads it as RGB).
    """

    kind: Literal["omniglot"]
    archives: tuple[str, ...] = ("omniglot/images_background.zip", "omniglot/images_evaluation.zip")
    image_size: int = Field(default=28, ge=4)
    resize_filter: Literal["lanczos", "bilinear", "bicubic", "box", "nearest"] = "lanczos"
    strokes: Literal[0, 1] = 1
    rotations: tuple[Literal[0, 90, 180, 270], ...] = (0, 90, 180, 270)
    split: dict[SplitName, tuple[str, ...]]
    channels: Literal[1, 3] = 1
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _valid_normalization(self) -> OmniglotData:
        check_normalization(self.mean, self.std, self.channels)
        return self

    @model_serializer(mode="wrap")
    def _without_unset_colour(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out at their defaults, so that every Omniglot protocol keeps the hash it had before they existed.
        dumped: dict[str, Any] = handler(self)
        for name, default in (("channels", 1), ("mean", None), ("std", None)):
            if dumped.get(name, default) == default:
                dumped.pop(name, None)
        return dumped

    @property
    def normalization(self) -> Normalization | None:
        return None if self.mean is None or self.std is None else Normalization(mean=self.mean, std=self.std)


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ImageFilter = Literal["lanczos", "bilinear", "bicubic", "box", "nearest"]


def _disjoint_split(split: dict[SplitName, tuple[str, ...]]) -> None:
    seen: dict[str, str] = {}
    for name, classes in split.items():
        for cls in classes:
            if cls in seen:
                raise ValueError(f"class {cls} is listed twice (in {seen[cls]!r} and {name!r})")
            seen[cls] = name


class NormalizedRGBData(StrictModel):
    """Base of the RGB image datasets that always normalise with their ``mean`` and ``std``."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def channels(self) -> int:
        return 3

    @property
    def normalization(self) -> Normalization | None:
        return Normalization(mean=self.mean, std=self.std)


class TinyImageNetData(NormalizedRGBData):
    """Tiny-ImageNet-200 (Stanford CS231n): the train images of the official archive, 64x64 RGB.

    No few-shot split of Tiny-ImageNet is standard, so ``split`` lists the wnids of each split
    (ours, fixed in the suite file). Each class keeps its first ``images_per_class`` images by
    index, so the official archive (500 per class) and the 300-per-class subset give the same
    tensor; ``archives`` are candidates and the first that exists is read.
    """

    kind: Literal["tiny-imagenet"]
    archives: tuple[str, ...] = Field(
        default=("tiny-imagenet/tiny-imagenet-200.zip", "tiny-imagenet/tiny-imagenet-200-train300.zip"), min_length=1)
    images_per_class: int = Field(default=300, ge=1, le=500)
    image_size: int = Field(default=64, ge=4)
    resize_filter: ImageFilter = "lanczos"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    split: dict[SplitName, tuple[str, ...]]

    @model_validator(mode="after")
    def _valid_split(self) -> TinyImageNetData:
        bad = [w for classes in self.split.values() for w in classes if not (w[:1] == "n" and w[1:].isdigit())]
        if bad:
            raise ValueError(f"split entries must be WordNet ids like n01443537, got {bad[0]!r}")
        _disjoint_split(self.split)
        return self


# CIFAR-100's published class hierarchy (Krizhevsky 2009, https://www.cs.toronto.edu/~kriz/cifar.html):
# each superclass and its five classes. The reader checks it against the archive's own labels.
CIFAR100_SUPERCLASSES: dict[str, tuple[str, ...]] = {
    "aquatic_mammals": ("beaver", "dolphin", "otter", "seal", "whale"),
    "fish": ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    "flowers": ("orchid", "poppy", "rose", "sunflower", "tulip"),
    "food_containers": ("bottle", "bowl", "can", "cup", "plate"),
    "fruit_and_vegetables": ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "insects": ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    "large_carnivores": ("bear", "leopard", "lion", "tiger", "wolf"),
    "large_man-made_outdoor_things": ("bridge", "castle", "house", "road", "skyscraper"),
    "large_natural_outdoor_scenes": ("cloud", "forest", "mountain", "plain", "sea"),
    "large_omnivores_and_herbivores": ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    "medium_mammals": ("fox", "porcupine", "possum", "raccoon", "skunk"),
    "non-insect_invertebrates": ("crab", "lobster", "snail", "spider", "worm"),
    "people": ("baby", "boy", "girl", "man", "woman"),
    "reptiles": ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    "small_mammals": ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    "trees": ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
}
# MetaOptNet's CIFAR-FS / FC100 normalisation (its data loaders: the CIFAR-100 training pixels' mean and std).
CIFAR100_MEAN = (129.37731888 / 255, 124.10583864 / 255, 112.47758569 / 255)
CIFAR100_STD = (68.20947949 / 255, 65.43124043 / 255, 70.45866994 / 255)


class CIFAR100Data(NormalizedRGBData):
    """CIFAR-100 (Krizhevsky 2009) as few-shot classes, from the official python archive, 32x32 RGB.

    Every class keeps its first ``images_per_class`` images of the archive's 500 train then 100 test
    images (600: all of them, as CIFAR-FS and FC100 use). ``split_by: class`` lists classes per split
    (CIFAR-FS, Bertinetto et al. 2019: 64 / 16 / 20); ``split_by: superclass`` lists superclasses,
    each standing for its five classes (FC100, Oreshkin et al. 2018: 12 / 4 / 4 superclasses, so no
    superclass spans two splits).
    """

    kind: Literal["cifar100"]
    archive: str = "cifar100/cifar-100-python.tar.gz"
    split_by: Literal["class", "superclass"]
    split: dict[SplitName, tuple[str, ...]]
    images_per_class: int = Field(default=600, ge=1, le=600)
    image_size: int = Field(default=32, ge=4)
    resize_filter: ImageFilter = "lanczos"
    mean: tuple[float, float, float] = CIFAR100_MEAN
    std: tuple[float, float, float] = CIFAR100_STD

    @model_validator(mode="after")
    def _valid_split(self) -> CIFAR100Data:
        known = set(CIFAR100_SUPERCLASSES) if self.split_by == "superclass" else {
            c for classes in CIFAR100_SUPERCLASSES.values() for c in classes}
        bad = [name for names in self.split.values() for name in names if name not in known]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a CIFAR-100 {self.split_by}; {did_you_mean(bad[0], sorted(known))}")
        _disjoint_split(self.split)
        return self

    @property
    def split_classes(self) -> dict[SplitName, tuple[str, ...]]:
        """Each split's classes (a superclass split's in the hierarchy's order)."""
        if self.split_by == "class":
            return dict(self.split)
        return {split: tuple(c for name in names for c in CIFAR100_SUPERCLASSES[name]) for split, names in self.split.items()}


class CUBData(NormalizedRGBData):
    """CUB-200-2011 (Wah et al. 2011), read directly from the official ``CUB_200_2011.tgz``, RGB.

    The split is Chen et al. 2019's (their ``write_CUB_filelist.py``, after Hilliard et al. 2018):
    the 200 class folders in name order, class i in train when i % 2 == 0, in val when i % 4 == 1,
    in test when i % 4 == 3 (100 / 50 / 50). A class keeps all its images (41 to 60), in file-name
    order, each resized to ``image_size`` squared (the whole image: no bounding-box crop).
    """

    kind: Literal["cub"]
    archive: str = "cub/CUB_200_2011.tgz"
    image_size: int = Field(default=84, ge=4)
    resize_filter: ImageFilter = "lanczos"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


# MetaOptNet's tieredImageNet normalisation (its data loader's mean and std of the training pixels).
TIERED_MEAN = (120.39586422 / 255, 115.59361427 / 255, 104.54012653 / 255)
TIERED_STD = (70.68188272 / 255, 68.27635443 / 255, 72.54505529 / 255)


class TieredImageNetData(NormalizedRGBData):
    """tieredImageNet (Ren et al. 2018): 608 ImageNet classes under 34 high-level categories, split by
    category 20 / 6 / 8 (351 / 97 / 160 classes), 84x84 RGB.

    Read from the de facto distribution of Ren et al.'s code: ``{train,val,test}_images_png.pkl``
    (each image PNG-encoded) and ``{train,val,test}_labels.pkl`` (``label_specific`` per image and
    ``label_specific_str``, the class names) in ``pickle_dir``. There is no official download: the
    files are shared by the authors (the message of a missing file says where to put them). A class
    keeps its images in the pickle's order, the first ``images_per_class`` when given; classes differ
    in size. The same images as a folder tree ``<root>/{train,val,test}/<class>/<image>`` are read
    by the ``image-folder`` kind with ``split: subfolders``.
    """

    kind: Literal["tiered-imagenet"]
    pickle_dir: str = "tiered-imagenet"
    images_per_class: int | None = Field(default=None, ge=1)
    image_size: int = Field(default=84, ge=4)
    resize_filter: ImageFilter = "lanczos"
    mean: tuple[float, float, float] = TIERED_MEAN
    std: tuple[float, float, float] = TIERED_STD


class MiniImageNetData(StrictModel):
    """mini-ImageNet (Vinyals et al. 2016) with Ravi & Larochelle's 64 / 16 / 20 class split, 84x84 RGB.

    The images are distributed by third parties in two forms, read as they are (``format``):
    ``folder``, the images named as in the split CSVs (``filename,label``) in ``image_dir``; or
    ``pickle``, learn2learn's ``mini-imagenet-cache-{train,validation,test}.pkl`` in ``pickle_dir``.
    Each class keeps its first ``images_per_class`` images (CSV row order, or the pickle's index
    order). ``mean``/``std`` default to none: pixels in [0, 1], as in MAML's and ProtoNets' code.
    """

    kind: Literal["mini-imagenet"]
    format: Literal["folder", "pickle"]
    csv_dir: str = "mini-imagenet/splits/ravi"
    image_dir: str = "mini-imagenet/images"
    pickle_dir: str = "mini-imagenet"
    images_per_class: int = Field(default=600, ge=1)
    image_size: int = Field(default=84, ge=4)
    resize_filter: ImageFilter = "lanczos"
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> MiniImageNetData:
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither")
        return self

    @property
    def channels(self) -> int:
        return 3

    @property
    def normalization(self) -> Normalization | None:
        return None if self.mean is None or self.std is None else Normalization(mean=self.mean, std=self.std)


class ImageFolderData(StrictModel):
    """Your own images, no code: ``root/<class>/<image>``, any format PIL reads, any size.

    ``root`` is relative to the data directory (``$BENCH_DATA_DIR``) unless absolute. ``split``
    lists the class folders of each split, or is ``subfolders``: ``root/train/<class>/``,
    ``root/val/<class>/`` and ``root/test/<class>/``. Every image is converted to ``channels``
    (1: grey, 3: RGB; default: the images' own, which must then agree), resized to ``image_size``
    squared with ``resize_filter``, scaled to [0, 1] and, with ``mean`` and ``std``, normalised.
    A class keeps its images in file-name order, the first ``images_per_class`` if given; classes
    may differ in size. Hidden files (``.name``) are skipped; every other file must be an image.
    """

    kind: Literal["image-folder"]
    root: str = Field(min_length=1)
    split: dict[SplitName, tuple[str, ...]] | Literal["subfolders"]
    image_size: int = Field(default=84, ge=4)
    channels: Literal[1, 3] | None = None
    resize_filter: ImageFilter = "lanczos"
    images_per_class: int | None = Field(default=None, ge=1)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @model_validator(mode="after")
    def _valid(self) -> ImageFolderData:
        check_normalization(self.mean, self.std, self.channels)
        if isinstance(self.split, dict):
            _disjoint_split(self.split)
        return self

    @property
    def normalization(self) -> Normalization | None:
        return None if self.mean is None or self.std is None else Normalization(mean=self.mean, std=self.std)


TextFormat = Literal["bao-json", "banking77-csv", "hwu64-json", "clinc150-json", "jsonl"]


class TextData(StrictModel):
    """A labelled text dataset split into disjoint classes for few-shot classification.

    ``files`` are read (relative to the data directory) in ``format``, and their examples pooled:
    ``bao-json`` and ``hwu64-json`` are JSON lines ``{"raw": text, "label": int}``,
    ``banking77-csv`` is ``text,category`` CSV, ``clinc150-json`` is ``data_full.json`` (its
    ``train``/``val``/``test`` rows, out-of-scope rows left out), ``jsonl`` is the bring-your-own
    format, one ``{"text": ..., "label": ...}`` object per line. Class names are the labels as
    strings; ``split`` lists them per split (every listed class must exist, none twice).
    """

    kind: Literal["text"]
    format: TextFormat
    files: tuple[str, ...] = Field(min_length=1)
    split: dict[SplitName, tuple[str, ...]]

    @field_validator("split", mode="before")
    @classmethod
    def _labels_as_text(cls, split: Any) -> Any:
        # Label ids (HuffPost's 0-40) are written as numbers in YAML; class names are strings.
        if isinstance(split, dict):
            return {k: [str(c) if isinstance(c, int) and not isinstance(c, bool) else c for c in v]
                    if isinstance(v, (list, tuple)) else v for k, v in split.items()}
        return split

    @model_validator(mode="after")
    def _valid_split(self) -> TextData:
        _disjoint_split(self.split)
        return self


class Budget(StrictModel):
    """Fields a tier may override (training budget and evaluation size)."""

    meta_iterations: int | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    meta_batch_size: int | None = Field(default=None, ge=1, le=MAX_TASKS)
    train_queries: int | None = Field(default=None, ge=1, le=MAX_PER_CLASS)
    val_every: int | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    val_tasks: int | None = Field(default=None, ge=1, le=MAX_TASKS)
    test_tasks: int | None = Field(default=None, ge=1, le=MAX_TASKS)
    test_inner_steps: int | None = Field(default=None, ge=0, le=MAX_STEPS)
    seeds: tuple[Seed, ...] | None = Field(default=None, min_length=1)
    warmup_iterations: int | None = Field(default=None, ge=0, le=MAX_ITERATIONS)


class PublishedResult(StrictModel):
    """A number from a paper, shown beside ours only when ``conditions`` match the record."""

    algorithm: str
    value: float
    ci95: float | None = None
    source: str
    verified: bool = False
    conditions: dict[str, Any] = Field(default_factory=dict)

    @property
    def label(self) -> str:
        return "published" if self.verified else "published (unverified)"


class Conv4Model(StrictModel):
    """Four blocks of 3x3 convolution, batch norm, ReLU and 2x2 max-pool (Vinyals et al. 2016)."""

    kind: Literal["conv4"]
    filters: int = Field(default=64, ge=1)


class ResNet12Model(StrictModel):
    """ResNet-12 of TADAM and MetaOptNet: four residual blocks of three 3x3 convolutions, batch norm,
    leaky ReLU and 2x2 max-pool; ``channels`` are the blocks' widths."""

    kind: Literal["resnet12"]
    channels: tuple[int, int, int, int] = (64, 160, 320, 640)

    @model_validator(mode="after")
    def _positive_channels(self) -> ResNet12Model:
        if any(c < 1 for c in self.channels):
            raise ValueError(f"channels must be >= 1, got {list(self.channels)}")
        return self


TextEncoder = Literal["minilm", "wordcnn", "minilm-finetune"]
TRANSFORMER_FIELDS = ("finetune_layers", "pooling")  # TextModel's fields for encoder: minilm-finetune
MINILM_LAYERS = 6  # all-MiniLM-L6-v2's transformer layers (bench/models/minilm.py checks its config.json)
TEXT_ENCODERS: tuple[str, ...] = get_args(TextEncoder)


class TextModel(StrictModel):
    """A sentence encoder, then trainable layers of widths ``hidden`` (ReLU) and a linear head.

    ``encoder``: ``minilm``, the frozen pre-trained all-MiniLM-L6-v2 (its 384-d normalised sentence
    embeddings are computed once per dataset and cached); or ``wordcnn``, a word-level CNN learned
    from scratch (Kim 2014; FewRel's Proto-CNN): a word embedding of ``embedding_dim``, a 1-d
    convolution of ``filters`` filters of width ``kernel_size`` with ReLU, and max-pooling over
    the text, on the first ``max_tokens`` tokens, with a vocabulary of the ``vocabulary_size`` most
    frequent words of the training classes (the rest map to an unknown-word id).

    Gradient-based methods adapt the convolution and the layers above it per task; the word
    embeddings are meta-learned by the outer loop only, unless ``adapt_embeddings`` (a per-task copy
    of the whole table made MAML's test episodes 8x slower here, measured on HuffPost).

    ``minilm-finetune``: the same all-MiniLM-L6-v2 transformer, run on the texts' word-piece ids
    (tokenized once per dataset, at the model's limit of 256 tokens) with its top
    ``finetune_layers`` layers trained (``all``: every layer and the embeddings) and the rest frozen,
    then ``pooling`` (``mean``, the model's own, or ``cls``) and L2 normalisation. The transformer
    is trained by the outer loop (or a method's own training); per task, the gradient-based
    methods adapt the layers above it, as with the frozen encoder.
    """

    kind: Literal["text"]
    encoder: TextEncoder = "minilm"
    hidden: tuple[int, ...] = (256,)
    embedding_dim: int = Field(default=64, ge=1)
    filters: int = Field(default=128, ge=1)
    kernel_size: int = Field(default=3, ge=1)
    max_tokens: int = Field(default=48, ge=1)
    vocabulary_size: int = Field(default=20000, ge=3)
    adapt_embeddings: bool = False
    finetune_layers: int | Literal["all"] = Field(default=1)
    pooling: Literal["mean", "cls"] = "mean"

    @model_validator(mode="after")
    def _positive_widths(self) -> TextModel:
        if any(w < 1 for w in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {list(self.hidden)}")
        if self.finetune_layers != "all" and not 0 <= self.finetune_layers <= MINILM_LAYERS:
            raise ValueError(f"finetune_layers {self.finetune_layers}: all-MiniLM-L6-v2 has {MINILM_LAYERS} transformer "
                             f"layers; use 0 to {MINILM_LAYERS}, or 'all' (every layer and the embeddings)")
        return self


DataConfig = Annotated[SineData | OmniglotData | TinyImageNetData | CIFAR100Data | CUBData | TieredImageNetData
                       | MiniImageNetData | ImageFolderData | TextData,
                       Field(discriminator="kind")]
ModelConfig = Annotated[MLPModel | Conv4Model | ResNet12Model | TextModel, Field(discriminator="kind")]
BUILT_IN_DATA_KINDS = tuple(get_args(m.model_fields["kind"].annotation)[0] for m in get_args(get_args(DataConfig)[0]))
_BUILT_IN_DATA = TypeAdapter(DataConfig)


class DataPlugin(StrictModel):
    """The configuration of a data kind that a plugin package adds: subclass it with ``kind`` and
    the kind's own fields, and register it with ``register_data_kind`` (docs/data.md, "Data plugins")."""

    kind: str


@dataclass(frozen=True)
class DataKind:
    """A plugin's data kind: its configuration model, its task source (``module:Class``, built as
    ``Class(suite, device)``), and optionally a reader module with ``required_files(config)`` and
    ``class_sizes(config)`` for the checks before any work."""

    config: type[DataPlugin]
    source: str
    reader: str | None = None


DATA_KINDS: Registry[DataKind] = Registry("data kind", entry_point_group="bench.data")
"""Data kinds from plugins: packages in the ``bench.data`` entry-point group (or modules in
``BENCH_PLUGINS``), loaded the first time a suite names a kind bench does not know."""


def register_data_kind(kind: str, source: str, reader: str | None = None) -> Callable[[type[DataPlugin]], type[DataPlugin]]:
    """Class decorator: ``@register_data_kind("my-kind", source="my_package.tasks:MyTasks")``."""

    def decorator(config: type[DataPlugin]) -> type[DataPlugin]:
        if kind in BUILT_IN_DATA_KINDS:
            raise ValueError(f"data kind {kind!r} is built into bench; give the plugin's kind another name")
        DATA_KINDS.register(kind)(DataKind(config, source, reader))
        return config

    return decorator


def plugin_data_kind(kind: str) -> DataKind | None:
    """The plugin that provides data kind ``kind`` (None for the built-in kinds)."""
    return None if kind in BUILT_IN_DATA_KINDS else DATA_KINDS.get(kind)


class Suite(StrictModel):
    """A validated suite at one tier. Protocol fields are recorded in every run record."""

    name: str = Field(description="letters, digits, '.', '_' and '-': records are filed under results/NAME/")
    version: int = Field(ge=1)
    description: str
    task_type: Literal["regression", "classification"]
    protocol: str = Field(description="name of the published protocol this suite follows")
    data: DataConfig | SerializeAsAny[DataPlugin]
    model: ModelConfig
    metric: Literal["mse", "accuracy"]
    ways: int | None = Field(default=None, ge=2, le=MAX_PER_CLASS, description="classes per test task (classification)")
    shots: int = Field(ge=1, le=MAX_PER_CLASS, description="support examples per task (per class for classification)")
    queries: int = Field(ge=1, le=MAX_PER_CLASS, description="query examples per task (per class for classification)")
    train_ways: int | None = Field(default=None, ge=2, le=MAX_PER_CLASS, description="classes per training task (default: ways)")
    train_shots: int | None = Field(default=None, ge=1, le=MAX_PER_CLASS, description="default: shots")
    train_queries: int | None = Field(default=None, ge=1, le=MAX_PER_CLASS, description="default: queries")
    batch_norm: Literal["none", "transductive", "inductive"] = Field(
        default="none",
        description="transductive: statistics of each episode's support and query images together (MAML's code); "
                    "inductive: of its support set only, so no query's prediction depends on another query "
                    "(MetaBN, Bronskill et al. 2020); none: a network without batch norm")
    inference: Literal["inductive", "transductive"] = Field(
        default="inductive",
        description="transductive: a method classifies each episode's queries together (TIM's query entropies, "
                    "LaplacianShot's query graph), so only transductive methods run and share a table; inductive: "
                    "each query on its own, as far as the classifier goes (batch_norm says the same of the normaliser)")
    meta_batch_size: int = Field(ge=1, le=MAX_TASKS)
    meta_iterations: int = Field(ge=1, le=MAX_ITERATIONS)
    val_every: int = Field(ge=1, le=MAX_ITERATIONS)
    val_tasks: int = Field(ge=1, le=MAX_TASKS)
    test_tasks: int = Field(ge=1, le=MAX_TASKS)
    test_inner_steps: int = Field(ge=0, le=MAX_STEPS)
    warmup_iterations: int = Field(default=5, ge=0, le=MAX_ITERATIONS)
    episode_seed: Seed = Field(default=0, description="seed of the validation and test episodes")
    seeds: tuple[Seed, ...] = Field(min_length=1, description="training seeds")
    grouped_episodes: bool = Field(default=False, description="draw each episode's classes from one group: the part of "
                                   "the class name before its first '/' (Omniglot: one alphabet)")
    test_episodes: str | None = Field(default=None, description="an episode file (bench episodes export) to evaluate "
                                      "on instead of drawing test episodes; relative to the suite file")
    ci_method: Literal["normal"] = "normal"
    algorithms: dict[str, dict[str, Any]] = Field(default_factory=dict)
    exclude_algorithms: tuple[str, ...] = ()
    search: dict[str, dict[str, dict[str, Any]]] = Field(
        default_factory=dict, description="bench tune: per algorithm and field, a narrower search space than the "
        "algorithm's own ({low, high, log} or {choices}); not part of the protocol")
    tiers: dict[Literal["smoke", "ci", "standard", "paper"], Budget]
    default_tier: Literal["smoke", "ci", "standard", "paper"] = "standard"
    published: tuple[PublishedResult, ...] = ()
    tier: str | None = None
    source_file: str | None = None
    file_sha256: str | None = None
    test_episodes_sha256: str | None = None
    overrides: tuple[str, ...] = ()

    @field_validator("data", mode="wrap")
    @classmethod
    def _data_of_its_kind(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if not isinstance(value, dict):
            return handler(value)
        kind = value.get("kind")
        if not isinstance(kind, str) or kind in BUILT_IN_DATA_KINDS:
            return _BUILT_IN_DATA.validate_python(value)  # its errors as for the built-in union alone
        try:
            plugin = DATA_KINDS.get(kind)
        except BenchError as exc:
            raise ValueError(f"{exc} (data kinds built in: {', '.join(BUILT_IN_DATA_KINDS)}; others come from "
                             "plugins)") from None
        return plugin.config.model_validate(value)

    @field_validator("algorithms")
    @classmethod
    def _finite_hyperparameters(cls, algorithms: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, values in algorithms.items():
            for key, value in values.items():
                if non_finite_number(value) is not None:
                    raise ValueError(f"{name}.{key} must be a finite number, got {value!r}")
        return algorithms

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: tuple[int, ...]) -> tuple[int, ...]:
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            raise ValueError(f"give each training seed once ({', '.join(map(str, repeated))} repeated)")
        return seeds

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise ValueError("a suite name is letters, digits, '.', '_' and '-', starting with a letter or digit "
                             "(its records are filed under results/NAME/)")
        if len(name) > MAX_NAME_LENGTH:  # file systems allow 255 bytes per path component
            raise ValueError(f"a suite name has at most {MAX_NAME_LENGTH} characters (its records are filed under "
                             f"results/NAME/), got {len(name)}")
        return name

    @model_validator(mode="after")
    def _consistent(self) -> Suite:
        if self.default_tier not in self.tiers:
            raise ValueError(f"default_tier {self.default_tier!r} has no entry under tiers")
        if self.metric == "mse" and self.task_type != "regression":
            raise ValueError("metric 'mse' needs task_type 'regression'")
        if self.metric == "accuracy" and self.task_type != "classification":
            raise ValueError("metric 'accuracy' needs task_type 'classification'")
        if self.task_type == "classification" and self.ways is None:
            raise ValueError("a classification suite needs 'ways'")
        if self.task_type == "regression" and any(
            v is not None for v in (self.ways, self.train_ways, self.train_shots, self.train_queries)
        ):
            raise ValueError("ways, train_ways, train_shots and train_queries apply to classification suites only")
        if (self.data.kind == "text") != (self.model.kind == "text"):
            raise ValueError("a text dataset needs model kind 'text' (a sentence encoder), and model 'text' a text dataset")
        if self.grouped_episodes and self.task_type != "classification":
            raise ValueError("grouped_episodes applies to classification suites")
        if self.inference == "transductive" and self.task_type != "classification":
            raise ValueError("inference: transductive applies to classification suites (no regression method here is "
                             "transductive)")
        if self.test_episodes is not None and self.task_type != "classification":
            raise ValueError("test_episodes applies to classification suites (regression tasks are generated, not drawn "
                             "from a dataset)")
        if (self.model.kind in ("conv4", "resnet12")) != (self.batch_norm != "none"):
            raise ValueError("batch_norm must be 'transductive' or 'inductive' for a network with batch norm, else 'none'")
        return self

    def test_episodes_path(self) -> Path | None:
        """The episode file to evaluate on (None: draw the test episodes)."""
        return None if self.test_episodes is None else SUITES_DIR.parent / self.test_episodes

    @property
    def lower_is_better(self) -> bool:
        return self.metric == "mse"

    def protocol_fields(self) -> dict[str, Any]:
        """Everything that decides what a number means: two records compare only if these match."""
        return {
            "suite": self.name,
            "suite_version": self.version,
            "protocol": self.protocol,
            "task_type": self.task_type,
            "data": self.data.model_dump(mode="json"),
            "model": self._model_fields(),
            "metric": self.metric,
            "shots": self.shots,
            "queries": self.queries,
            "meta_batch_size": self.meta_batch_size,
            "test_tasks": self.test_tasks,
            "test_inner_steps": self.test_inner_steps,
            "episode_seed": self.episode_seed,
            "ci_method": self.ci_method,
            "batch_norm": "none",
        } | ({
            "ways": self.ways,
            "train_ways": self.episode_shape["train"]["ways"],
            "train_shots": self.episode_shape["train"]["shots"],
            "train_queries": self.episode_shape["train"]["queries"],
            "batch_norm": self.batch_norm,
        } if self.task_type == "classification" else {}) | (
            # Only when set, so that every other protocol keeps the hash it had.
            {"test_episodes_sha256": self.test_episodes_sha256} if self.test_episodes_sha256 else {}) | (
            {"grouped_episodes": True} if self.grouped_episodes else {}) | (
            {"inference": self.inference} if self.inference != "inductive" else {})

    def _model_fields(self) -> dict[str, Any]:
        fields = self.model.model_dump(mode="json")
        if isinstance(self.model, TextModel) and self.model.encoder != "minilm-finetune":
            # Fields of the trainable transformer only: absent elsewhere, so that those protocols keep their hash.
            for name in TRANSFORMER_FIELDS:
                fields.pop(name)
        return fields

    @property
    def episode_shape(self) -> dict[str, EpisodeShape]:
        """Ways, shots and queries of training and of evaluation episodes."""
        return {
            "train": {"ways": self.train_ways or self.ways, "shots": self.train_shots or self.shots,
                      "queries": self.train_queries or self.queries},
            "eval": {"ways": self.ways, "shots": self.shots, "queries": self.queries},
        }

    def protocol_hash(self) -> str:
        text = json.dumps(self.protocol_fields(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def budget(self) -> dict[str, Any]:
        return {
            "meta_iterations": self.meta_iterations,
            "val_every": self.val_every,
            "val_tasks": self.val_tasks,
            "warmup_iterations": self.warmup_iterations,
        }


BUDGET_FIELDS = tuple(Budget.model_fields)


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error: by default
    the last one silently wins, so a suite file could say one thing and run another."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            # Keys merged in with `<<: *alias` may be overridden by the mapping's own: that is YAML's rule.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice in one mapping (keep one)", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_text(text: str) -> Any:
    """Parse YAML safely, refusing a key given twice in one mapping."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def _yaml_problem(exc: Exception) -> str:
    """What is wrong with a YAML text, on one line (with the line and column when known)."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    if "integer string conversion" in str(exc):
        return f"a number of more than {sys.get_int_max_str_digits()} digits"
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None) or str(exc) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return " ".join(str(problem).split()) + where


def _read_yaml(path: Path, seen: tuple[Path, ...] = (), read: list[bytes] | None = None) -> dict[str, Any]:
    """The suite file's mapping, its includes merged in; the bytes of every file read go to ``read``."""
    if path.resolve() in seen:
        raise BenchError(f"{path}: include cycle through {' -> '.join(map(str, seen))}; remove one of the includes")
    try:
        data = path.read_bytes()
        raw = read_yaml_text(data.decode())
    except FileNotFoundError:
        raise BenchError(f"{path}: suite file not found") from None
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path}: not a text file in UTF-8 (byte {exc.start}); save the suite file as UTF-8") from None
    except OSError as exc:
        raise BenchError(f"{path}: cannot read the suite file ({exc.strerror or exc})") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        # PyYAML raises ValueError for values it cannot construct (2024-02-30, !!int x, 5000 digits).
        raise BenchError(f"{path}: not valid YAML ({_yaml_problem(exc)}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise BenchError(f"{path}: a suite file must be a YAML mapping of fields, got {type(raw).__name__}")
    if read is not None:
        read.append(data)
    include = raw.pop("include", None)
    if include is None:
        return raw
    if not isinstance(include, str):
        raise BenchError(f"{path}: field 'include' must be a file name, got {include!r}")
    return _deep_merge(_read_yaml(path.parent / include, (*seen, path.resolve()), read), raw)


def _format_validation_error(path: Path | str, exc: ValidationError, model: type[BaseModel]) -> str:
    # An unknown field explains a "missing" one (a typo), and a tier's own entry is where a
    # bad tier value must be fixed: report those first.
    error = min(exc.errors(), key=lambda e: (e["type"] != "extra_forbidden", e["loc"][:1] != ("tiers",)))
    # A discriminated union puts the member's tag in the location (data.sine.x): drop it.
    tags = {get_args(m.model_fields["kind"].annotation)[0] for m in (*get_args(get_args(DataConfig)[0]),
                                                                      *get_args(get_args(ModelConfig)[0]))}
    parts = [p for i, p in enumerate(error["loc"]) if not (i == 1 and p in tags) and not str(p).startswith("function-")]
    location = ".".join(str(part) for part in parts)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        known = model.model_fields if len(error["loc"]) == 1 else {}
        hint = f"; {did_you_mean(str(error['loc'][-1]), known)}" if known else ""
        return f"{path}: unknown field {location!r}{hint}"
    if error["type"] == "missing":
        return f"{path}: field {location!r} is required"
    shown = error.get("input")
    got = f" (got {shown!r})" if shown is not None and not isinstance(shown, dict) else ""
    return f"{path}: field {location!r}: {message}{got}"


def suite_path(name_or_path: str, suites_dir: Path = SUITES_DIR) -> Path:
    candidate = Path(name_or_path)
    try:
        if candidate.suffix in (".yaml", ".yml") and candidate.exists():
            return candidate
        path = suites_dir / f"{name_or_path}.yaml"
        found = path.exists()
    except OSError as exc:  # a name too long for the file system, say
        raise BenchError(f"suite {name_or_path[:60]!r}{'...' if len(name_or_path) > 60 else ''}: cannot look it up "
                         f"({exc.strerror or exc}); give a suite name or a suite file's path") from None
    if not found:
        raise BenchError(
            f"unknown suite {name_or_path!r}; {did_you_mean(name_or_path, available_suites(suites_dir))} "
            f"(suite files live in {suites_dir})"
        )
    return path


def available_suites(suites_dir: Path = SUITES_DIR) -> list[str]:
    return sorted(p.stem for p in suites_dir.glob("*.yaml"))


def _set_path(raw: dict[str, Any], keys: list[str], value: Any, path: Path) -> dict[str, Any]:
    """A copy of ``raw`` with ``raw[k0][k1]... = value`` (``--set suite.model.encoder=wordcnn``)."""
    head, *rest = keys
    if not rest:
        return {**raw, head: value}
    inner = raw.get(head)
    if not isinstance(inner, dict):
        raise BenchError(f"--set suite.{'.'.join(keys)}: {path} has no mapping {head!r} to set {'.'.join(rest)!r} in")
    return {**raw, head: _set_path(inner, rest, value, path)}


def read_episode_file_bytes(path: Path) -> bytes:
    """A ``test_episodes`` file's bytes (a missing or unreadable file is a ``BenchError`` saying what to do)."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BenchError(f"test_episodes file {path} not found; write one with `python -m bench episodes export SUITE "
                         "--out FILE`") from None
    except OSError as exc:
        raise BenchError(f"test_episodes file {path}: cannot read it ({exc.strerror or exc})") from None


def load_suite(
    name_or_path: str,
    tier: str | None = None,
    overrides: dict[str, Any] | None = None,
    override_texts: tuple[str, ...] = (),
    suites_dir: Path = SUITES_DIR,
) -> Suite:
    """Read, merge, validate and resolve a suite at ``tier`` (its default tier when None).

    ``overrides`` maps suite field names, or dotted paths into them (``model.encoder``), to values
    (from ``--set suite.FIELD=VALUE``); they win over
    the tier, which wins over the file.
    """
    path = suite_path(name_or_path, suites_dir)
    read: list[bytes] = []
    raw = _read_yaml(path, read=read)
    tiers_raw = raw.get("tiers")
    chosen = tier or raw.get("default_tier", "standard")
    if tier is not None and tier not in TIERS:
        raise BenchError(f"unknown tier {tier!r}; {did_you_mean(tier, TIERS)}")
    if not isinstance(chosen, str) or chosen not in TIERS:
        raise BenchError(f"{path}: field 'default_tier' must be one of {', '.join(TIERS)} (got {chosen!r})")
    if isinstance(tiers_raw, dict):
        if chosen not in tiers_raw:
            raise BenchError(f"{path}: suite has no tier {chosen!r}; it has {sorted(map(str, tiers_raw))}")
        tier_fields = tiers_raw[chosen]
        if isinstance(tier_fields, dict):
            raw = {**raw, **{k: v for k, v in tier_fields.items() if v is not None}}
    if isinstance(raw.get("test_episodes"), str):  # relative to the suite file; a --set value to the working directory
        raw["test_episodes"] = str(path.parent / raw["test_episodes"])
    for key, value in (overrides or {}).items():
        raw = _set_path(raw, key.split("."), value, path)
    if isinstance(raw.get("test_episodes"), str):
        episodes = Path(raw["test_episodes"])
        raw["test_episodes"] = relative_path(episodes.resolve(), SUITES_DIR.parent)  # as source_file: project-relative
        raw["test_episodes_sha256"] = hashlib.sha256(read_episode_file_bytes(episodes)).hexdigest()
    raw.update(
        tier=chosen,
        source_file=relative_path(path, SUITES_DIR.parent),  # records name project suites independently of the checkout
        # Over every file read, includes too (for a file without includes: the file's own SHA-256).
        file_sha256=hashlib.sha256(b"".join(read)).hexdigest(),
        overrides=tuple(override_texts),
    )
    try:
        return Suite.model_validate(raw)
    except ValidationError as exc:
        message = _format_validation_error(path, exc, Suite)
        field = str(exc.errors()[0]["loc"][0]) if exc.errors()[0]["loc"] else ""
        overridden = [key for key in overrides or {} if key.split(".")[0] == field]
        if overridden:  # the value came from the command line, not from the file
            message = re.sub(rf"^{re.escape(str(path))}: field '[^']*'", f"--set suite.{overridden[0]}", message)
        raise BenchError(message) from None


SUITE_OVERRIDABLE = tuple(
    name
    for name in Suite.model_fields
    if name not in {"name", "version", "description", "tiers", "default_tier", "published", "tier",
                    "source_file", "file_sha256", "test_episodes_sha256", "overrides", "algorithms",
                    "exclude_algorithms", "search"}
)
