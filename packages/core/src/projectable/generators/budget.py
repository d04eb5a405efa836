"""Parameter budgets: each generator's own parameter count at a scale, and the size that matches the projection's.

"Own" means everything a generator trains besides the source: its t-dependent machinery (``task``), its base
dense weights (``base``: low_rank and linear, which read no source) and the small model's own embeddings, norms
and head (``parts``, with ``small_parts="own"``). The counts come from formulas (see each generator's module
docstring), so sizing a paper-scale generator builds nothing; a test checks them against built generators.
"""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

from projectable.generators.base import max_rank, small_config
from projectable.generators.registry import generator_class
from projectable.gpt import GPTConfig
from projectable.projector import ProjectorConfig
from projectable.validation import as_scale

COUNTS = ("total", "task")  # what match_budget compares: all own parameters, or the t-dependent ones only
_LARGEST_WIDTH = 1 << 20  # a search bound for MLP widths; no budget comes near it


class GeneratorParams(NamedTuple):
    """Own parameters of one generator at one scale (the source not counted)."""

    generator: str
    task: int  # the t-dependent machinery: MLPs, coefficient heads, subspace bases and maps
    base: int  # base dense weights and biases of its own (low_rank, linear); 0 when it reads the source
    parts: int  # the small model's own embeddings, norms and head; 0 with small_parts="derived"
    total: int  # task + base + parts


class BudgetMatch(NamedTuple):
    """The size of a generator whose own parameters come closest to the projection's at one scale."""

    config: ProjectorConfig  # the given config with this generator and its size set
    knob: str  # the field that was sized: the generator's ``size_knob``, "rank" or "generator_rank"
    size: int
    params: GeneratorParams  # what this size gives
    target: int  # the projection's count it was matched to


def parts_params(config: GPTConfig) -> int:
    """Parameters of an unconditional model's embeddings, start vector, norms and untied head."""
    V, T, L, C = config.vocab_size, config.block_size, config.n_layer, config.n_embd
    return 2 * V * C + T * C + C + 4 * L * C + 2 * C


def generator_params(source: GPTConfig, config: ProjectorConfig, scale: float) -> GeneratorParams:
    """Own parameters of the generator ``config.generator`` at ``scale`` of a source with config ``source``
    (what ``ProjectableGPT.num_projector_params(scale)`` counts once built)."""
    scale = as_scale(scale)
    own = generator_class(config.generator).count_params(source, config, scale)
    parts = parts_params(small_config(source, scale)) if config.small_parts == "own" else 0
    return GeneratorParams(config.generator, own.task, own.base, parts, own.task + own.base + parts)


def sized(config: ProjectorConfig, generator: str, size: int) -> ProjectorConfig:
    """``config`` switched to ``generator`` with its size knob at ``size`` and the settings its class declares
    it needs: ``small_parts="own"`` without a source to derive them from, ``mlp="per_operator"`` without an MLP."""
    declared = generator_class(generator)
    changes = {"generator": generator, "generator_rank": 0, declared.size_knob: size}
    if not declared.reads_source:
        changes["small_parts"] = "own"
    if not declared.has_mlp:
        changes["mlp"] = "per_operator"
    return replace(config, **changes)  # at once: each setting alone may not fit the config it replaces


def match_budget(source: GPTConfig, config: ProjectorConfig, scale: float, generator: str,
                 count: str = "total") -> BudgetMatch:
    """Size ``generator`` so that its own parameters at ``scale`` match, as closely as possible, those of the
    projection configured by ``config`` (its ``rank``, ``mlp``, ``small_parts``), e.g. rank 8 as in the paper.

    ``count="total"`` compares all own parameters; ``"task"`` only the t-dependent ones (leaving out base weights
    and small parts, which a source-free generator's base M_s holds anyway). The counts grow with the size, so
    a bisection finds the closest; when even the smallest size exceeds the target (a base model alone can be
    larger than the projection, e.g. low_rank at s = 1/2 of the paper's source) the smallest size is returned,
    and when the largest rank that fits the small model stays below it, that rank.
    """
    knob = generator_class(generator).size_knob  # an unknown generator is an error naming the choices
    if count not in COUNTS:
        raise ValueError(f"count={count!r} is not one of {COUNTS}")
    scale = as_scale(scale)
    reference = generator_params(source, sized(config, "projection", config.rank), scale)
    target = getattr(reference, count)
    largest = max_rank(source, scale) if knob == "generator_rank" else _LARGEST_WIDTH  # a delta rank or a width

    def params(size: int) -> GeneratorParams:
        return generator_params(source, sized(config, generator, size), scale)

    low, high = 1, largest  # the smallest size whose count reaches the target lies in low..high
    while low < high:
        middle = (low + high) // 2
        if getattr(params(middle), count) >= target:
            high = middle
        else:
            low = middle + 1
    best = min({max(low - 1, 1), low}, key=lambda size: (abs(getattr(params(size), count) - target), size))
    return BudgetMatch(sized(config, generator, best), knob, best, params(best), target)

