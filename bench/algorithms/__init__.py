"""Every algorithm module is imported here, so that each registers itself on import."""

from bench.algorithms import (  # noqa: F401
    anil,
    cnp,
    fomaml,
    maml,
    maml_l2l,
    protonet,
    metasgd,
    metasgd_l2l,
    reptile,
    transfer,
)
from bench.algorithms.base import ALGORITHMS, Algorithm, Hyperparameters, Problem, register

__all__ = ["ALGORITHMS", "Algorithm", "Hyperparameters", "Problem", "register"]
