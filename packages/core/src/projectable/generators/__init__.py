"""Weight generators (App. B): the ways to produce the small model's dense weights and biases from t.

``ProjectorConfig.generator`` selects one; ``ProjectableGPT`` builds it per target scale:

* ``projection`` (Sec. 2.2, the default): W_s = P(t) W_1 Q(t), b_s = P(t) b_1; reads the source.
* ``blocks`` (B.2): a t-weighted sum of the source's k x k blocks of every weight; reads the source.
* ``low_rank`` (Eq. 6): the small model's own base weights + L(t) R(t); no source.
* ``linear`` (Eq. 4): the small model's own base weights + S t, S in a learned subspace; no source.

Each is declared once, by its class and ``register`` (``registry.py``); ``GENERATORS``, ``RANKED_GENERATORS``
and ``SOURCE_FREE_GENERATORS`` follow from the registered classes.
"""

from projectable.generators.base import OwnParams, WeightGenerator, max_rank
from projectable.generators.blocks import BlockGenerator
from projectable.generators.budget import (
    COUNTS,
    BudgetMatch,
    GeneratorParams,
    generator_params,
    match_budget,
    parts_params,
)
from projectable.generators.linear import LinearGenerator
from projectable.generators.low_rank import LowRankGenerator
from projectable.generators.projection import ProjectionGenerator
from projectable.generators.registry import (
    GENERATOR_CLASSES,
    build_generator,
    generator_class,
    register,
    unregister,
)
from projectable.projector import GENERATORS, RANKED_GENERATORS, SOURCE_FREE_GENERATORS

__all__ = [
    "COUNTS",
    "GENERATOR_CLASSES",
    "GENERATORS",
    "RANKED_GENERATORS",
    "SOURCE_FREE_GENERATORS",
    "BlockGenerator",
    "BudgetMatch",
    "GeneratorParams",
    "LinearGenerator",
    "LowRankGenerator",
    "OwnParams",
    "ProjectionGenerator",
    "WeightGenerator",
    "build_generator",
    "generator_class",
    "generator_params",
    "match_budget",
    "max_rank",
    "parts_params",
    "register",
    "unregister",
]
