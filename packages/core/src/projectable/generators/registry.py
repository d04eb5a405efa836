"""The generators by name: ``ProjectorConfig.generator`` -> its class (each in a file of its own)."""

from __future__ import annotations

from projectable.generators.base import WeightGenerator
from projectable.generators.blocks import BlockGenerator
from projectable.generators.linear import LinearGenerator
from projectable.generators.low_rank import LowRankGenerator
from projectable.generators.projection import ProjectionGenerator
from projectable.gpt import GPTConfig
from projectable.projector import GENERATORS, ProjectorConfig

GENERATOR_CLASSES: dict[str, type[WeightGenerator]] = {
    cls.name: cls for cls in (ProjectionGenerator, BlockGenerator, LowRankGenerator, LinearGenerator)
}


def generator_class(name: str) -> type[WeightGenerator]:
    """The class of generator ``name``; an unknown name is an error naming the choices."""
    if name not in GENERATOR_CLASSES:
        raise ValueError(f"generator={name!r} is not one of {GENERATORS}")
    return GENERATOR_CLASSES[name]


def build_generator(source: GPTConfig, config: ProjectorConfig, scale: float) -> WeightGenerator:
    """The generator ``config.generator`` for target ``scale`` of a source with config ``source``."""
    return generator_class(config.generator)(source, config, scale)
