"""The generators by name: ``ProjectorConfig.generator`` -> its class (each in a file of its own).

A generator is declared once: by its class, whose attributes (``WeightGenerator``: name, whether it reads the
source, its size knob, its cells' prefix, label, colour and one line on what it computes) say everything the
rest of the code needs, and by one ``register`` call, which adds it to ``projector.GENERATOR_CLASSES`` (the
table lives beside the config that names a generator; the classes take that config, so it cannot import
them). The rest reads the table: ``ProjectorConfig`` checks its ``generator`` and the settings that go with
it, ``GENERATORS``, ``RANKED_GENERATORS`` and ``SOURCE_FREE_GENERATORS`` list the registered names,
``match_budget`` sizes the class's knob, the reports take their columns, labels and colours from it
(``experiments/reporting/generators.py``). The built-in generators are registered below in the order the
reports show them, the projection (the method the others are compared with) first.
"""

from __future__ import annotations

from projectable.generators.base import SIZE_KNOBS, WeightGenerator
from projectable.generators.blocks import BlockGenerator
from projectable.generators.linear import LinearGenerator
from projectable.generators.low_rank import LowRankGenerator
from projectable.generators.projection import ProjectionGenerator
from projectable.gpt import GPTConfig
from projectable.projector import GENERATOR_CLASSES, ProjectorConfig, generator_class

# What a generator class must declare (see ``WeightGenerator``); ``has_mlp`` and ``unit_layout`` have defaults.
DECLARED = ("name", "reads_source", "size_knob", "prefix", "label", "colour", "what")


def register(cls: type[WeightGenerator]) -> type[WeightGenerator]:
    """Add generator ``cls`` under ``cls.name``, after checking its declaration: from then on
    ``ProjectorConfig(generator=cls.name)`` builds it, and every name list, budget and report includes it.
    Returns ``cls``, so it also serves as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, WeightGenerator)):
        raise TypeError(f"register takes a WeightGenerator subclass, got {cls!r}")
    missing = [attribute for attribute in DECLARED if not hasattr(cls, attribute)]
    if missing:
        raise ValueError(f"{cls.__name__} does not declare {', '.join(missing)}; set them as class attributes "
                         "(see WeightGenerator)")
    if cls.size_knob not in SIZE_KNOBS:
        raise ValueError(f"{cls.__name__}.size_knob={cls.size_knob!r} is not one of {SIZE_KNOBS}")
    if not isinstance(cls.reads_source, bool) or not isinstance(cls.has_mlp, bool):
        raise ValueError(f"{cls.__name__}.reads_source and .has_mlp must be True or False")
    for other in GENERATOR_CLASSES.values():
        if other is not cls and (other.name == cls.name or other.prefix == cls.prefix):
            raise ValueError(
                f"{cls.__name__} declares name={cls.name!r}, prefix={cls.prefix!r}, but {other.__name__} already "
                f"has name={other.name!r}, prefix={other.prefix!r}; give it a name and a cell prefix of its own"
            )
    GENERATOR_CLASSES[cls.name] = cls
    return cls


def unregister(name: str) -> type[WeightGenerator]:
    """Remove generator ``name`` from the registry (e.g. one a test registered); returns its class."""
    return GENERATOR_CLASSES.pop(generator_class(name).name)


def build_generator(source: GPTConfig, config: ProjectorConfig, scale: float) -> WeightGenerator:
    """The generator ``config.generator`` for target ``scale`` of a source with config ``source``."""
    return generator_class(config.generator)(source, config, scale)


BUILT_IN = (ProjectionGenerator, BlockGenerator, LowRankGenerator, LinearGenerator)  # in the reports' order
for built_in in BUILT_IN:
    register(built_in)
