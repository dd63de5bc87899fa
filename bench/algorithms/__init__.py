"""Every algorithm module is imported here, so that each registers itself on import."""

from bench.algorithms import (  # noqa: F401
    anil,
    baseline,
    boil,
    cavia,
    centroid,
    cnp,
    feat,
    finetune,
    fomaml,
    imaml,
    laplacianshot,
    maml,
    maml_l2l,
    mamlpp,
    matchingnet,
    metabaseline,
    metaoptnet,
    metasgd,
    metasgd_l2l,
    protomaml,
    protonet,
    relationnet,
    reptile,
    rfs,
    setfit,
    simpleshot,
    tim,
    transfer,
    versa,
)
from bench.algorithms.base import ALGORITHMS, Algorithm, Hyperparameters, Problem, register

__all__ = ["ALGORITHMS", "Algorithm", "Hyperparameters", "Problem", "register"]
