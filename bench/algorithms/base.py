"""What every algorithm implements, and the registry that names them."""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from bench.config import MAX_STEPS, Suite
from bench.errors import BenchError, did_you_mean
from bench.models import FunctionalNetwork, build_backbone
from bench.registry import Registry
from bench.tasks import TaskBatch

ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm", entry_point_group="bench.algorithms")


def register(name: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Class decorator: register an :class:`Algorithm` under ``name`` (its public name)."""

    def decorator(cls: type[Algorithm]) -> type[Algorithm]:
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"@register({name!r}) expects an Algorithm subclass, got {cls!r}")
        cls.name = name
        return ALGORITHMS.register(name)(cls)

    return decorator


# Constrained hyperparameter types: a negative learning rate or step count is refused when the
# run is planned, not discovered after training.
LearningRate = Annotated[float, Field(gt=0.0)]
StepSize = Annotated[float, Field(ge=0.0)]  # an inner or fine-tuning step size; 0 disables the step
InnerSteps = Annotated[int, Field(ge=0, le=MAX_STEPS)]


@dataclass(frozen=True)
class Search:
    """Where ``bench tune`` looks for one hyperparameter, declared beside the field it tunes:
    ``outer_lr: Annotated[LearningRate, Search(1e-4, 1e-2, log=True)] = 0.001``.

    A range [low, high] (log-uniform when ``log``; integers when the field is an int) or one of
    ``choices``. Every value it can draw must be a valid value of the field: checked when the
    hyperparameter class is defined, so a bad space fails at import, not in the middle of a study.
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.choices:
            if self.low is not None or self.high is not None or self.log:
                raise ValueError("a search space is a range (low, high, log) or choices, not both")
            if len({repr(c) for c in self.choices}) != len(self.choices):
                raise ValueError(f"search choices {list(self.choices)} repeat a value")
            return
        if self.low is None or self.high is None:
            raise ValueError("a search range needs both low and high (or give choices)")
        if not self.low < self.high:
            raise ValueError(f"search range [{self.low}, {self.high}] is empty or inverted: low must be below high")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-uniform search range needs low > 0, got {self.low}")

    def bounds(self) -> tuple[Any, ...]:
        """The values that span the space: its two ends, or every choice."""
        return self.choices or (self.low, self.high)

    def contains(self, other: Search) -> bool:
        """Whether ``other`` searches only within this space (a suite may narrow, never widen)."""
        if self.choices:
            return bool(other.choices) and all(c in self.choices for c in other.choices)
        return (not other.choices and self.log == other.log and other.low is not None and other.high is not None
                and self.low is not None and self.high is not None and self.low <= other.low and other.high <= self.high)

    def to_json(self) -> dict[str, Any]:
        return {"choices": list(self.choices)} if self.choices else {"low": self.low, "high": self.high, "log": self.log}


class Hyperparameters(BaseModel):
    """Base of each algorithm's hyperparameters: unknown names and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @classmethod
    def search_space(cls) -> dict[str, Search]:
        """The tunable fields and where ``bench tune`` searches each (fields without a ``Search`` are not tuned)."""
        return {name: item for name, field in cls.model_fields.items() for item in field.metadata
                if isinstance(item, Search)}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, search in cls.search_space().items():
            for value in search.bounds():
                try:
                    cls.model_validate({name: value})
                except ValidationError as exc:
                    raise TypeError(f"{cls.__name__}.{name}: its search space {search.to_json()} holds {value!r}, "
                                    f"which the field refuses ({exc.errors()[0]['msg']})") from None


@dataclass(frozen=True)
class Problem:
    """What an algorithm learns: the suite, the input shape and the output size (ways, for classification).

    ``n_train_classes``: how many classes the training split has, for methods that pre-train a
    classifier over all of them (None where the task source has no classes).
    """

    suite: Suite
    in_shape: tuple[int, ...]
    out_features: int
    n_train_classes: int | None = None

    @property
    def in_features(self) -> int:
        return self.in_shape[0]

    @property
    def classification(self) -> bool:
        return self.suite.task_type == "classification"

    def build_backbone(self, generator: torch.Generator) -> FunctionalNetwork:
        return build_backbone(self.suite.model, self.in_shape, self.out_features, generator)

    def ways_of(self, batch: TaskBatch) -> int:
        """The number of classes in ``batch``'s episodes, from the suite's episode shapes: reading it
        from the labels (``labels.max()``) would make the host wait for the device at every step."""
        n_support, n_query = batch.support_y.shape[1], batch.query_y.shape[1]
        matching = {ways for shape in self.suite.episode_shape.values() if (ways := shape["ways"]) is not None
                    and n_support == ways * shape["shots"] and n_query == ways * shape["queries"]}
        if len(matching) == 1:
            return matching.pop()
        return int(batch.support_y.max()) + 1  # an undeclared (or ambiguous) episode shape: read the labels

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-task training loss, shape (B,): mean over each task's examples.

        prediction: (B, n, out) outputs or class scores; target: (B, n, out) values or (B, n) labels.
        """
        if self.classification:
            return per_task_cross_entropy(prediction, target)
        return per_task_mse(prediction, target)

    def metric(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-task test metric, shape (B,): MSE, or accuracy in percent."""
        if self.classification:
            return (prediction.argmax(dim=-1) == target).float().mean(dim=1) * 100
        return per_task_mse(prediction, target)


def per_task_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction - target).pow(2).flatten(1).mean(dim=1)


def per_task_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    losses = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none")
    return losses.view(labels.shape).mean(dim=1)


class Algorithm(nn.Module):
    """One meta-learning algorithm.

    Subclasses set ``family``, ``task_types`` and ``Hparams`` and implement ``meta_loss`` (the
    differentiable loss on a batch of training tasks, a mean of per-task losses; they create
    ``self.optimizer``) or override ``meta_train_step`` (one outer update, returning the loss as a
    tensor so that no device sync is forced), and ``evaluate`` (adapt to each task's support set and return the per-task metric
    on its query set). All randomness comes from the ``generator`` given at construction.
    """

    name: ClassVar[str]
    family: ClassVar[str]
    task_types: ClassVar[frozenset[str]] = frozenset({"regression"})
    Hparams: ClassVar[type[Hyperparameters]] = Hyperparameters
    learns: ClassVar[bool] = True  # False: nothing is meta-trained, so there is no meta-training throughput
    # Whether the algorithm can normalise with support-set statistics only (suite batch_norm: inductive).
    inductive_batch_norm: ClassVar[bool] = True
    # transductive: it classifies an episode's queries together; it runs only on suites with that
    # inference (and they run no inductive method), so the two never share a table.
    inference: ClassVar[str] = "inductive"
    # Whether its meta-loss is a mean of independent per-task losses, so that a meta-batch can be
    # processed in chunks of tasks (bench/run/execution.py measures which chunk size is fastest).
    supports_task_chunks: ClassVar[bool] = True
    task_chunk: int | None = None  # tasks processed together (None: all); set from the run's execution options
    backbone: FunctionalNetwork  # the network, for the algorithms that have one (set in their __init__)

    def __init__(self, hparams: Hyperparameters, problem: Problem, generator: torch.Generator) -> None:
        super().__init__()
        self.hparams = hparams
        self.problem = problem
        self.generator = generator

    optimizer: torch.optim.Optimizer

    def meta_loss(self, batch: TaskBatch) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def chunks_tasks(cls) -> bool:
        """Whether meta-training goes through ``accumulate_meta_gradient`` and so can take task chunks
        (not when a subclass, e.g. a plugin, replaces ``meta_train_step`` or has no ``meta_loss``)."""
        has_loss = (cls.meta_loss is not Algorithm.meta_loss
                    or cls.accumulate_meta_gradient is not Algorithm.accumulate_meta_gradient)
        return cls.supports_task_chunks and cls.meta_train_step is Algorithm.meta_train_step and has_loss

    def task_chunks(self, batch: TaskBatch, default: int | None = None) -> Iterator[TaskBatch]:
        size = self.task_chunk or default or len(batch)
        for start in range(0, len(batch), size):
            yield batch.slice(start, start + size)

    def accumulate_meta_gradient(self, batch: TaskBatch) -> torch.Tensor:
        """Add the meta-gradient of ``batch``'s mean meta-loss to ``.grad``, chunk by chunk; returns that loss."""
        total = torch.zeros((), device=batch.query_x.device)
        for chunk in self.task_chunks(batch):
            loss = self.meta_loss(chunk) * (len(chunk) / len(batch))
            loss.backward()
            total = total + loss.detach()
        return total

    def meta_train_step(self, batch: TaskBatch, iteration: int) -> torch.Tensor:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.accumulate_meta_gradient(batch)
        self.optimizer.step()
        return loss

    def evaluate(self, batch: TaskBatch, inner_steps: int) -> torch.Tensor:
        raise NotImplementedError

    def training_state(self) -> dict[str, Any]:
        """Everything meta-training changes: parameters and buffers, the optimizer's state (Adam's
        moments) and the generator's, so that training resumed from it takes the same steps."""
        state: dict[str, Any] = {"module": self.state_dict(), "generator": self.generator.get_state()}
        if hasattr(self, "optimizer"):
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["module"])
        self.generator.set_state(state["generator"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])

    @property
    def inductive(self) -> bool:
        """Inductive batch norm: each task's support set gives the statistics, so no query sees the others."""
        return self.problem.suite.batch_norm == "inductive"

    def embed_episode(self, params: dict[str, torch.Tensor], batch: TaskBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Support and query features of each task, embedded in one pass: (B, n_support, d), (B, n_query, d)."""
        n_support = batch.support_x.shape[1]
        features = self.backbone.features(params, torch.cat([batch.support_x, batch.query_x], 1),
                                          stats_from=n_support if self.inductive else None)
        return features[:, :n_support], features[:, n_support:]

    def evaluation_steps(self, protocol_steps: int) -> int:
        """Inner steps this algorithm adapts with at validation and test time (recorded)."""
        return protocol_steps

    def protocol_shaped_state(self) -> tuple[str, ...]:
        """State entries sized by the protocol's ways that no prediction reads after training (an unused
        head, a fine-tuning classifier's fixed initialisation): evaluated on a suite with other ways
        (``bench evaluate``), the saved model keeps these as built for that suite."""
        return ()

    @classmethod
    def inapplicable(cls, suite: Suite) -> str | None:
        """Why this algorithm cannot run on ``suite`` (shown where it is left out), or None when it can."""
        if suite.task_type not in cls.task_types:
            return f"supports {', '.join(sorted(cls.task_types))}, not {suite.task_type}"
        if suite.batch_norm == "inductive" and not cls.inductive_batch_norm:
            return "has no inductive batch-norm mode"
        if cls.inference != suite.inference:
            return (f"is an {cls.inference} method and this suite's inference is {suite.inference}; it runs on "
                    f"suites with inference: {cls.inference}")
        return None

    @classmethod
    def search_space(cls, suite: Suite) -> dict[str, Search]:
        """Where ``bench tune`` searches on ``suite``: the hyperparameters' own space, narrowed by the
        suite file's ``search`` entry for this algorithm (which may only narrow it)."""
        space = cls.Hparams.search_space()
        where = f"{suite.source_file or suite.name}: search.{cls.name}"
        for field, spec in suite.search.get(cls.name, {}).items():
            if field not in space:
                raise BenchError(f"{where}: {field!r} is not a tunable field of {cls.name} (tunable fields: "
                                 f"{', '.join(space) or 'none'}); {did_you_mean(field, space)}")
            try:
                narrowed = Search(**{**spec, "choices": tuple(spec["choices"])} if "choices" in spec else spec)
            except (TypeError, ValueError) as exc:
                raise BenchError(f"{where}.{field}: {exc} (give low and high, with log if the algorithm's "
                                 f"space is log-uniform, or choices)") from None
            if not space[field].contains(narrowed):
                raise BenchError(f"{where}.{field}: {narrowed.to_json()} is not within {cls.name}'s own space "
                                 f"{space[field].to_json()}; a suite may narrow a search space, not widen or change it")
            space[field] = narrowed
        return space

    @classmethod
    def applies_to(cls, suite: Suite) -> bool:
        return cls.inapplicable(suite) is None

    @classmethod
    def summary(cls) -> str:
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""

    @classmethod
    def code_version(cls) -> str:
        """A hash of the source files this algorithm runs: its module, its base classes' modules, the
        other algorithm modules those import from (ProtoNet's ``class_means`` in SimpleShot's), and
        every module of ``bench/models/`` (the networks) and ``bench/tasks/`` (the episodes' tensors)."""
        digest = hashlib.sha256()
        modules = {c.__module__ for c in cls.__mro__ if c is cls or c.__module__.startswith("bench.")}
        modules |= {origin for name in modules for value in vars(sys.modules[name]).values()
                    if isinstance(origin := getattr(value, "__module__", None), str)
                    and origin.startswith("bench.algorithms.")}
        files = {Path(inspect.getfile(sys.modules[name])) for name in modules}
        package = Path(__file__).resolve().parent.parent
        files |= {*package.glob("models/*.py"), *package.glob("tasks/*.py")}

        def label(path: Path) -> str:  # where the file sits in the source tree, not on this disk
            path = path.resolve()
            return path.relative_to(package.parent).as_posix() if path.is_relative_to(package.parent) else path.name

        for path in sorted(files, key=label):
            digest.update(label(path).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:16]


def parse_hparams(algorithm: type[Algorithm], values: dict[str, Any], where: str) -> Hyperparameters:
    try:
        return algorithm.Hparams.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        if error["type"] == "extra_forbidden":
            known = list(algorithm.Hparams.model_fields)
            raise BenchError(
                f"{where}: {algorithm.name} has no hyperparameter {field!r}; {did_you_mean(field, known)}"
            ) from None
        message = error["msg"].removeprefix("Value error, ")
        if not field:  # a rule across fields (a model validator): the message names them
            raise BenchError(f"{where}: {algorithm.name}: {message}") from None
        raise BenchError(f"{where}: {algorithm.name}.{field}: {message} (got {error.get('input')!r})") from None

