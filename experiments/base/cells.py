"""One declared cell of an experiment (``experiments/conf/experiment/<name>.yaml``), read by the planner
(``experiments.orchestration.plan``) and by the reports (``experiments.reporting.declared``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Cell:
    """One declared cell of an experiment: what it trains, where it starts, its role beside the others and its
    column in the reports (``experiments.reporting.declared`` reads every report's cells from these)."""

    kind: str  # unconditional | conditional | projected
    width: float = 1.0
    # Its runs: a count n (seeds 0..n-1) or a list of seeds (e.g. [2]: that seed only). Undeclared, the
    # experiment's ``seeds`` (the scale's ``budget.seeds``) or the scale's ``budget.seed_overrides.<experiment>``.
    seeds: int | tuple[int, ...] = 1
    scales: tuple[float, ...] | None = None  # projector.scales of a projected cell
    init_from: str | None = None  # cell of an earlier stage to start from (default: the stage's)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # dotted config key -> value
    # 'matched_baseline': a baseline continued alone for this stage's steps so that it has taken as many
    # steps as the models it is compared with (kept with experiment.baselines=matched, dropped with stage1);
    # 'control': the source continued alone for this stage's steps (kept in both), the step-matched baseline
    # of the cell it continues. Either stands in the reports for the cell it continues.
    role: str | None = None
    # The report column its models are read into (Table 1: M, Mc, P, Pall, control; a matched baseline or a
    # control is read into its source's column too). None: no table reads it.
    column: str | None = None
    # A weight generator of App. B (blocks, low_rank, linear) for this projected cell, its size knob chosen
    # when the cell is planned so that its own parameters match the projection's (``size_generator``).
    generator: str | None = None

    def __post_init__(self):
        from projectable.projector import GENERATORS

        seeds = self.seeds if isinstance(self.seeds, tuple) else None
        if seeds is None and self.seeds < 1:
            raise ValueError(f"seeds={self.seeds} must be >= 1 (the cell's runs are seeds 0..seeds-1); delete "
                             "a cell that should not run with ~experiment.stages.<stage>.cells.<cell>")
        if seeds is not None and (not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds)):
            raise ValueError(f"seeds={list(seeds)} must list distinct seeds >= 0 (e.g. [2]), or be a count")
        planned = sorted(set(self.overrides) & set(PLANNED_KEYS))
        if planned:
            raise ValueError(f"overrides set {planned}, which the planner sets for every run of a cell (its seeds "
                             "are 0..seeds-1, its run directory and run name follow from the cell and seed); "
                             "use the cell's own keys (kind, width, seeds, scales) or another cell")
        if self.role not in ROLES:
            raise ValueError(f"role={self.role!r} must be one of {', '.join(map(str, ROLES))}")
        if self.generator is not None:
            if self.generator not in GENERATORS:
                raise ValueError(f"generator={self.generator!r} is not one of {GENERATORS}")
            if self.kind != "projected" or self.scales is None or len(self.scales) != 1:
                raise ValueError(f"generator={self.generator!r} sizes a projected cell of one scale; this cell has "
                                 f"kind={self.kind!r}, scales={self.scales}")

    @property
    def seed_list(self) -> tuple[int, ...]:
        """The seeds its runs take."""
        return self.seeds if isinstance(self.seeds, tuple) else tuple(range(self.seeds))

    @property
    def continues(self) -> bool:
        """A baseline continued alone for its stage's steps (a matched baseline or the control)."""
        return self.role in ("matched_baseline", "control")


ROLES = (None, "matched_baseline", "control")

# Keys of a run's config that the planner sets from the cell and seed; a cell's overrides may not set them
# (an overridden seed would make two of its "seeds" the same run, counted as independent).
PLANNED_KEYS = ("seed", "run_dir", "tracking.run_name", "kind", "width", "init_from", "projector.scales")
