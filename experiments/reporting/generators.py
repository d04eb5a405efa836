"""The weight generators of App. B side by side (``experiment=generators``): the validation loss of the
projection's P_s and of the blocks, low_rank and linear generators beside M_s and M~_s at s = 1/2, 1/4, 1/8,
from the newest finished generators sweep of a scale and the Table 1 runs it reused; each generator's size
knob and parameter counts beside the projection's; the claims "the projection beats generator X at s" and
"generator X beats M~_s" by Table 1's rule, corrected for the family of comparisons by Holm-Bonferroni
(``claims.holm_verdicts``); one sample grid per generator, drawn as Figure 3 draws P_s;
``reports/<scale>/generators.{md,csv,png}`` and ``generators_samples_<generator>.png``.
The notebook ``analysis/generators.py`` calls these functions step by step."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from projectable.generators import GENERATOR_CLASSES, GENERATORS, SOURCE_FREE_GENERATORS

from experiments.reporting import toolkit
from experiments.reporting.claims import Cell, HolmResult, Verdict, holm_verdicts, less_than, summarise
from experiments.reporting.toolkit import (
    Provenance,
    ReportFiles,
    fmt_cell,
    fmt_df,
    md_table,
    scale_label,
    section,
)
from experiments.tracking.store import MlflowClient
from experiments.tracking.sweeps import attach_per_image, load_trials

REFERENCE = "projection"  # the paper's generator (Sec. 2.2), which every other is compared with
WIDTHS = (0.5, 0.25, 0.125)


class Column(NamedTuple):
    """How one column of the report is named and drawn."""

    prefix: str  # of its cells in the experiment's config, followed by 1/s: "LR4", "Mc2"
    label: str
    colour: str  # matplotlib's name


# Table 1's baselines of the same width beside the generators (not generators, so declared here).
BASELINES = {"M": Column("M", "M_s", "tab:gray"), "Mc": Column("Mc", "M~_s", "tab:blue")}


def columns() -> dict[str, Column]:
    """The report's columns in order: the baselines, then every registered generator as its class declares it
    (``projectable.generators.registry``), read at every call so that a generator registered later is a
    column too."""
    generators = {name: Column(cls.prefix, cls.label, cls.colour) for name, cls in GENERATOR_CLASSES.items()}
    return {**BASELINES, **generators}


def others() -> tuple[str, ...]:
    """The generators compared with the projection."""
    return tuple(name for name in GENERATORS if name != REFERENCE)


MATCH_FIELDS = ("count", "knob", "size", "own_total", "own_task", "with_source", "source", "projection_rank",
                "projection_total", "projection_task")  # the ``match/*`` tags a generator cell's runs carry
# extra evidence key (``reporting.evidence.generator_run``): a run's generator and match/* tags (detail: JSON)
GENERATOR_TAGS = "generators/tags"


def cell_of(column: str, s: float) -> str:
    """The sweep's cell of a column at width s: ('low_rank', 0.25) -> 'LR4', ('Mc', 0.5) -> 'Mc2'."""
    return f"{columns()[column].prefix}{round(1 / s)}"


def cell_sources() -> dict[str, list[tuple[str, float]]]:
    """Cell -> (column, s) of the runs it is made of; stage-1 baselines are read from their stage-2
    continuations with matched baselines (``toolkit.baseline_sources``, ``MATCHED``)."""
    return {cell_of(column, s): [(column, s)] for column in columns() for s in WIDTHS}


SYMBOLS = {REFERENCE: "P", "Mc": "M~"}  # how comparisons name these columns; the others go by their names
MATCHED = {cell_of(c, s): f"{cell_of(c, s)}m" for c in BASELINES for s in WIDTHS}


class GeneratorRuns(NamedTuple):
    sweep_run: object  # the generators sweep's MLflow run
    trials: pd.DataFrame  # its trials and the Table 1 runs it reused (``reused_from`` names them)
    source_sweep: str  # the Table 1 sweep it started from
    stage1_steps: int | None  # that sweep's stage-1 steps (what every compared model started from)
    extras: pd.DataFrame | None = None  # from evidence: the extra records of its runs and its sources' (samples)


def load_runs(tracking_uri: str, experiment: str, scale: str, sweeps=()) -> GeneratorRuns:
    """The newest finished generators sweep of ``scale`` (of ``sweeps`` where given), its trials plus the Table 1
    runs it reused under this sweep's cell names (and, with ``experiment.baselines=stage1``, Table 1's stage-1
    baselines), each with its ``generator`` and ``match/*`` tags as columns (``generator``, ``match_<field>``)."""
    sweep_run = toolkit.store_sweep(tracking_uri, experiment, scale, "generators", sweeps)
    tags = sweep_run.data.tags
    trials = load_trials(tracking_uri, experiment, tags["sweep_id"]).assign(reused_from="")
    source_sweep = tags.get("source_sweep", "")
    client = MlflowClient(tracking_uri)
    stage1_steps = None
    if source_sweep:
        source = load_trials(tracking_uri, experiment, source_sweep)
        trials = pd.concat([trials, *_reused(source, sweep_run, tags, source_sweep)], ignore_index=True)
        parents = client.search_runs([sweep_run.info.experiment_id],
                                     f"tags.sweep_id = '{source_sweep}' and tags.role = 'sweep'")
        stage1_steps = _stage1_steps(parents[0].data.params) if parents else None
    run_tags = [client.get_run(run_id).data.tags for run_id in trials.run_id]
    return GeneratorRuns(sweep_run, _with_tags(trials, run_tags), source_sweep, stage1_steps)


def _reused(source: pd.DataFrame, sweep_run, tags: Mapping[str, str], source_sweep: str) -> list[pd.DataFrame]:
    """The runs of Table 1 a generators sweep (or one part of it, ``tags``) reused, under its cell names."""
    wanted = dict(json.loads(tags.get("reused", "{}")))  # this sweep's cell -> the source sweep's
    if toolkit.baselines_of(sweep_run) == "stage1":
        wanted.update({cell: cell for cell in MATCHED})
    return [source[source.cell == theirs].assign(cell=mine, reused_from=f"{source_sweep}/{theirs}")
            for mine, theirs in wanted.items()]


def _stage1_steps(params: Mapping[str, str]) -> int | None:
    value = params.get("experiment.stages.stage1.steps")
    return None if value is None else int(value)


def _with_tags(trials: pd.DataFrame, run_tags: Sequence[Mapping[str, str | None]]) -> pd.DataFrame:
    """``trials`` (one tag mapping per row) with columns ``generator`` (a projected run without the tag: the
    projection) and ``match_<field>``, in cell and seed order."""
    columns = [{"generator": tags.get("generator") if tags.get("generator") is not None else
                ("projection" if kind == "projected" else ""),
                **{f"match_{key}": tags.get(f"match/{key}") for key in MATCH_FIELDS}}
               for kind, tags in zip(trials.kind, run_tags)]
    trials = pd.concat([trials.reset_index(drop=True), pd.DataFrame(columns, index=range(len(trials)))], axis=1)
    return trials.sort_values(["cell", "seed"]).reset_index(drop=True)


def generator_runs(params: toolkit.NotebookParams) -> GeneratorRuns:
    """What the report reads, with per-image losses: from the store, or from the evidence files
    (``toolkit.check_runs``), the same trials either way."""
    if toolkit.check_runs(params, "generators") == "evidence":
        return evidence_runs(params, *toolkit.sweep_and_trials(params, "generators", per_image=True))
    runs = load_runs(params.tracking_uri, params.experiment, params.scale, params.sweeps)
    return runs._replace(trials=attach_per_image(runs.trials, params.tracking_uri))


def evidence_runs(params: toolkit.NotebookParams, sweep_run, trials: pd.DataFrame) -> GeneratorRuns:
    """``generator_runs`` from evidence: each part's reused runs from the committed evidence of the Table 1
    sweep it started from, the tags from the extra records of its own runs (``reporting.evidence.generator_run``;
    a run without them is named, with the command that adds them)."""
    evidence, frames, sources, stage1_steps = toolkit.evidence_of(sweep_run), [trials.assign(reused_from="")], [], None
    extras = [evidence.extras]
    for sweep, source in zip(evidence.sweeps, toolkit.part_sources(params, evidence)):
        if source is not None:
            frames += _reused(source.runs, sweep_run, sweep["tags"], source.sweep_id)
            sources.append(source.sweep_id)
            extras.append(source.evidence.extras)
            stage1_steps = _stage1_steps(source.evidence.sweeps[0]["params"])
    trials = pd.concat(frames, ignore_index=True)
    own = trials.run_id[trials.reused_from == ""]
    if lacking := toolkit.lacking_extra(trials, own, evidence.extras, GENERATOR_TAGS):
        raise toolkit.MissingRuns(f"generators: the evidence of {', '.join(evidence.sweep_ids)} holds no generator "
                                  f"tags of cells {', '.join(lacking)}; {toolkit.ADD_EXTRAS}")
    tagged = evidence.extras[evidence.extras.key == GENERATOR_TAGS].drop_duplicates("run_id").set_index("run_id")
    run_tags = [json.loads(tagged.detail[run_id]) if run_id in tagged.index else {} for run_id in trials.run_id]
    return GeneratorRuns(sweep_run, _with_tags(trials, run_tags), " + ".join(dict.fromkeys(sources)), stage1_steps,
                         pd.concat(extras, ignore_index=True))


# ------------------------------------------------------------------------------------------------
# Cells, counts, claims


class GeneratorTable(NamedTuple):
    cells: dict[tuple[str, float], Cell]  # (column, s) -> cell; the columns of ``columns()``
    baselines: str  # 'matched' or 'stage1' (the sweep's experiment.baselines)


def generator_cells(trials: pd.DataFrame, baselines: str = "matched", subset: str = "all") -> GeneratorTable:
    """Combine the trials (seeds) into the table's cells; with matched baselines M_s and M~_s are read from
    their stage-2 continuations, as in Table 1."""
    sources = toolkit.baseline_sources(cell_sources(), baselines, MATCHED)
    return GeneratorTable(toolkit.gather_cells(trials, sources, subset), baselines)


def generator_verdicts(cells: Mapping[tuple[str, float], Cell]) -> list[Verdict]:
    """The family of comparisons (18 with the four generators of App. B), each by Table 1's rule before any
    correction: for every other generator X and s, "the projection beats X" (P_s < X_s), then for every X
    and s "X beats M~_s" (X_s < M~_s)."""
    claims = [*((f"the projection beats {g}", REFERENCE, g) for g in others()),
              *((f"{g} beats M~_s", g, "Mc") for g in others())]
    return [less_than(claim, f"{_symbol(lower, s)} < {_symbol(higher, s)}", cells.get((lower, s)),
                      cells.get((higher, s))) for claim, lower, higher in claims for s in WIDTHS]


def _symbol(column: str, s: float) -> str:
    """A column at width s as comparisons name it: P_1/2, M~_1/4, blocks_1/8."""
    return f"{SYMBOLS.get(column, column)}_{scale_label(s)}"


class Claims(NamedTuple):
    uncorrected: list[Verdict]  # each comparison by Table 1's rule alone
    corrected: list[Verdict]  # the same with Holm-Bonferroni's decision
    holm: list[HolmResult]
    alpha: float


def judge(cells: Mapping[tuple[str, float], Cell], alpha: float = 0.05) -> Claims:
    """The comparisons by Table 1's rule, then Holm-Bonferroni over all of them at family level ``alpha``."""
    uncorrected = generator_verdicts(cells)
    corrected, holm = holm_verdicts(uncorrected, alpha)
    return Claims(uncorrected, corrected, holm, alpha)


def _number(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _first_number(runs: pd.DataFrame, column: str) -> float:
    """The first value a column holds among ``runs`` (NaN if none does)."""
    values = runs[column].dropna() if column in runs else ()
    return _number(values.iloc[0]) if len(values) else math.nan


def params_frame(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per generator and s: its size knob and the counts its cell was planned with (``match_*``
    columns), the projection's, the relative difference of the matched count, and the count the runs logged
    (``num_params/projector_<s>``: every own parameter, as built)."""
    rows = []
    for s in WIDTHS:
        generated = _first_number(trials, f"num_params/generated_{s}")  # the standalone small model, whatever made it
        planned = {}
        for generator in others():
            runs = trials[trials.cell == cell_of(generator, s)]
            if "match_size" in runs and runs.match_size.notna().any():
                planned[generator] = runs[runs.match_size.notna()].iloc[0]
        reference = next(iter(planned.values()), None)
        for generator in GENERATORS:
            runs = trials[trials.cell == cell_of(generator, s)]
            logged = _first_number(runs, f"num_params/projector_{s}")
            row = {"generator": generator, "s": scale_label(s), "knob": "", "size": math.nan, "count": "",
                   "own_total": math.nan, "own_task": math.nan, "with_source": math.nan,
                   "projection_total": math.nan, "projection_task": math.nan, "logged_own_total": logged,
                   "generated": generated}
            if reference is not None:
                count = str(reference.match_count)
                row.update(count=count, projection_total=_number(reference.match_projection_total),
                           projection_task=_number(reference.match_projection_task))
                if generator == REFERENCE:
                    row.update(knob="rank", size=_number(reference.match_projection_rank),
                               own_total=row["projection_total"], own_task=row["projection_task"],
                               with_source=row["projection_total"] + _number(reference.match_source))
            if generator in planned:
                run = planned[generator]
                row.update(knob=str(run.match_knob), size=_number(run.match_size),
                           own_total=_number(run.match_own_total), own_task=_number(run.match_own_task),
                           with_source=_number(run.match_with_source))
            own = row["own_task"] if row["count"] == "task" else row["own_total"]
            target = row["projection_task"] if row["count"] == "task" else row["projection_total"]
            row["relative_difference"] = (own - target) / target if target and not math.isnan(target) else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def results_frame(table: GeneratorTable, params: pd.DataFrame) -> pd.DataFrame:
    """The CSV: one row per column and s, the loss with its standard error and, for the generators, the
    size knob and parameter counts."""
    rows = []
    for column, shown in columns().items():
        for s in WIDTHS:
            cell = table.cells.get((column, s))
            row = {"model": shown.label, "s": scale_label(s), "ours_nats": getattr(cell, "mean", math.nan),
                   "ours_se": getattr(cell, "se", math.nan), "seeds": getattr(cell, "seeds", 0)}
            counts = params[(params.generator == column) & (params.s == scale_label(s))]
            if len(counts):
                row.update(counts.iloc[0].drop(["generator", "s"]).to_dict())
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Markdown, figure, samples


def _listed(names: Iterable[str]) -> str:
    """Names in prose: "a", "a and b", "a, b and c" ("none" for none)."""
    names = list(names)
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names) or "none"


def _count(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{int(value):,}"


def _knob(row) -> str:
    return "-" if not row.knob or math.isnan(row.size) else f"{row.knob} = {int(row.size)}"


def params_lines(params: pd.DataFrame) -> list[str]:
    """The parameter table: knob, own (matched) count beside the projection's, relative difference, all
    counts."""
    rows = []
    for row in params.itertuples():
        matched = row.own_task if row.count == "task" else row.own_total
        target = row.projection_task if row.count == "task" else row.projection_total
        difference = "-" if math.isnan(row.relative_difference) else f"{100 * row.relative_difference:+.1f}%"
        rows.append([row.generator, row.s, _knob(row), _count(matched), _count(target), difference,
                     _count(row.own_total), _count(row.own_task), _count(row.with_source),
                     _count(row.logged_own_total), _count(row.generated)])
    return md_table(["generator", "s", "size knob", "own (matched count)", "projection's", "relative difference",
                     "own, all", "own, t-dependent", "with the co-trained source", "logged by the runs",
                     "generated model"], rows)


def claim_lines(claims: Claims) -> list[str]:
    """Each claim's summary after the correction, then every comparison: difference, t·SE, df, p, the
    level Holm's step-down held it to, and the verdict before and after the correction."""
    m = len(claims.corrected)
    summary = summarise(claims.corrected)
    lines = [f"- **{claim}**: {verdict} (Holm-Bonferroni over {m})" for claim, verdict in summary.items()]
    rows = []
    for before, after, holm in zip(claims.uncorrected, claims.corrected, claims.holm):
        tested = not math.isnan(before.difference)
        rows.append([before.claim, before.comparison, f"{before.difference:+.4f}" if tested else "-",
                     f"{before.t_se:.4f}" if tested else "-", fmt_df(before.df),
                     "-" if math.isnan(holm.p) else f"{holm.p:.2g}", f"{holm.level:.4f}",
                     "-" if math.isnan(holm.p) else f"{holm.adjusted:.2g}", before.verdict, after.verdict])
    header = ["claim", "comparison", "difference", "t·SE", "df", "p", "Holm level", "Holm-adjusted p",
              "Table 1's rule alone", f"Holm-Bonferroni (family {claims.alpha:g})"]
    return [*lines, "", *md_table(header, rows)]


def markdown(table: GeneratorTable, claims: Claims, params: pd.DataFrame, prov: Provenance, runs: GeneratorRuns,
             samples: Sequence[Path] = ()) -> str:
    """reports/<scale>/generators.md."""
    tags = runs.sweep_run.data.tags
    reused = json.loads(tags.get("reused", "{}"))
    count = next((c for c in params["count"] if c), "task")
    steps1, steps2 = runs.stage1_steps or "?", prov.stage_steps.get("stage2", "?")
    shown = columns()
    rows = [[scale_label(s), *(fmt_cell(table.cells.get((column, s))) for column in shown)] for s in WIDTHS]
    free = _listed(SOURCE_FREE_GENERATORS)
    readers = [g for g in others() if GENERATOR_CLASSES[g].reads_source]
    counted = ("the t-dependent parameters only (MLPs, coefficient heads, subspace maps): the base weights and "
               f"small parts of {free} are an M_s of the target width, which every compared model of "
               "that width holds too" if count == "task" else
               f"every own parameter (t-dependent machinery, base weights, small parts); {free} may "
               "then sit at their smallest rank and still above the budget where a base M_s alone exceeds it")
    lines = [
        f"# Weight generators at scale `{prov.scale}`: validation loss (nats/token) on SynthMNIST",
        "",
        "The small model's dense weights made from t by each generator of App. B, at equal parameter budgets, beside "
        "the baselines of the same width. Ours: mean ± standard error (n = independent lineages averaged, with the runs where several continue one stage-1 model).",
        "",
        *md_table(["s", *(column.label for column in shown.values())], rows),
        "",
        "![loss per s per generator](generators.png)",
        "",
        *section("The generators", *(f"- `{g}`: {cls.what}." for g, cls in GENERATOR_CLASSES.items())),
        *section(
            "Parameters",
            f"Each generator cell was sized when planned (`experiments.orchestration.plan.size_generator`, "
            f"`projectable.generators.match_budget`) so that its own parameters, the source never counted, come "
            f"closest to the projection's at its rank (`experiment.match={count}`: {counted}). Counts are "
            f"per P_s; the co-trained source is M_1's parameters, read by {_listed(['the projection', *readers])} "
            "only. "
            "\"Logged by the runs\" is `num_params/projector_<s>`, every own parameter of the built model; "
            "\"generated model\" is `num_params/generated_<s>`, the standalone GPT that `generate(t, s)` returns "
            "(the same for every generator at s).",
            "",
            *params_lines(params),
        ),
        *section(
            "Protocol",
            f"- Sources: stage 1's M_1, M_1/2, M_1/4, M_1/8 of Table 1 sweep `{runs.source_sweep or '?'}` "
            f"({steps1} steps from scratch). Every new cell trains for {steps2} steps, Table 1's stage-2 budget, "
            "with the same schedule and seeds (seed i starts from seed i of its stage-1 cell).",
            f"- The generators that read the source ({_listed(readers)}) co-train stage 1's M_1 exactly as P_s does "
            f"(Eq. 2, w_src = 1). Those that read none ({free}) start their base weights and small parts from "
            "stage 1's M_s of their width (`ProjectableGPT.load_base`), so each starts as that M_s for every t, "
            "and has no source loss.",
            "- Reused from Table 1 (same config, not retrained): "
            + (", ".join(f"{mine}" + (f" ({theirs})" if theirs != mine else "") for mine, theirs in reused.items())
               or "none") + ".",
            toolkit.baselines_line(table.baselines, steps1, steps2),
        ),
        *section(
            "Claims",
            toolkit.claim_rule_line([*claims.uncorrected, *claims.corrected]) + " The summaries and the last "
            "column are after the correction.",
            "",
            *claim_lines(claims),
        ),
    ]
    if samples:
        lines += section(
            "Samples",
            "One sample per validation task vector t (columns) from the standalone model each generator makes for "
            "t (`ProjectableGPT.generate`), seed 0 of each cell, under the data package's render of t and its "
            "quantised version, as in Figure 3:",
            "",
            *(f"![{Path(p).stem}]({Path(p).name})" for p in samples),
        )
    lines += [*toolkit.runs_per_cell(runs.trials),
              *toolkit.provenance_lines(prov, sources=runs.source_sweep or None,
                                        wall_time_note=" for the new cells (the reused ones were timed in Table 1)")]
    return "\n".join(lines)


def plot(table: GeneratorTable, path, title: str):
    """Loss against s, one line per generator and baseline, ±1 SE bars."""
    fig, ax = toolkit.new_figure((6.5, 4.2), "s (width / source width)", "validation loss (nats/token), ±1 SE")
    for column, shown in columns().items():
        points = [(1 / s, c.mean, c.se) for s in WIDTHS if (c := table.cells.get((column, s))) is not None]
        if points:
            x, y, e = zip(*points)
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, color=shown.colour, label=shown.label)
    ax.set_xscale("log", base=2)
    ax.set_xticks([1 / s for s in WIDTHS], [scale_label(s) for s in WIDTHS])
    ax.legend(fontsize=8)
    return toolkit.save_figure(fig, title, path)


def write_report(out_dir, table: GeneratorTable, claims: Claims, params: pd.DataFrame, prov: Provenance,
                 runs: GeneratorRuns, samples: Sequence[Path] = ()) -> ReportFiles:
    title = f"Weight generators, scale {prov.scale} (sweep {prov.sweep_id})"
    return toolkit.write_report(out_dir, "generators", markdown(table, claims, params, prov, runs, samples),
                                results_frame(table, params), lambda path: plot(table, path, title))


def sample_cells() -> dict[str, tuple[str, float]]:
    """Cell -> (generator, s) of every generated P_s a sample grid shows."""
    return {cell_of(g, s): (g, s) for g in GENERATORS for s in WIDTHS}


class SampleModels(NamedTuple):
    models: dict[tuple[str, float], object]  # (generator, s) -> the ProjectableGPT of seed 0 of its cell
    data: object  # the runs' dataset


def load_sample_models(trials: pd.DataFrame, tracking_uri: str, cache_dir: str | Path) -> SampleModels:
    """Seed 0 of every generator cell that finished (Table 1's reused P_s among them), from MLflow."""
    wanted = sample_cells()
    finished = set(trials[trials.status == "FINISHED"].cell)
    cells = [cell for cell in wanted if cell in finished]
    saved = toolkit.load_saved_models(trials, cells, tracking_uri, cache_dir, seed=0, device="cpu")
    return SampleModels({wanted[cell]: model for cell, model in zip(saved.runs.cell, saved.models)}, saved.data)


def model_rows(models: SampleModels, tasks) -> dict[tuple[str, float], object]:
    """(generator, s) -> its sample tokens (N, T) for the task vectors ``tasks`` (N, 18), drawn as Figure 3
    draws a P_s (``figure3.model_samples``: each row from its own seeded generator)."""
    from experiments.reporting import figure3

    return {(g, s): figure3.model_samples(model, "P", s, tasks) for (g, s), model in models.models.items()}


def evidence_rows(runs: GeneratorRuns) -> dict[tuple[str, float], object]:
    """``model_rows`` from the sample records the sweeps' drivers wrote (``reporting.evidence.generator_run``;
    the reused P_s rows are Table 1's Figure 3 samples), as ``evidence_runs`` read them with the runs."""
    import torch

    from experiments.reporting import figure3

    samples = runs.extras[runs.extras.key == figure3.FIGURE3_SAMPLES]
    trials = runs.trials
    wanted, finished = sample_cells(), trials[(trials.status == "FINISHED") & (trials.seed == figure3.SEED)]
    runs = finished[finished.cell.isin(list(wanted))]
    rows = {}
    for run in runs.itertuples():
        tokens = samples[samples.run_id == run.run_id].drop_duplicates("image").sort_values("image")
        if tokens.empty:
            raise toolkit.MissingRuns(f"generators: no sample row of cell {run.cell} (run {run.run_id}) in the "
                                      f"evidence; {toolkit.ADD_EXTRAS}")
        rows[wanted[run.cell]] = torch.tensor([json.loads(detail) for detail in tokens.detail])
    return rows


def sample_grids(rows: Mapping[tuple[str, float], object], data, tasks, digit_indices, out_dir: str | Path,
                 title: str) -> list[Path]:
    """``generators_samples_<generator>.png``: for each generator, its P_s(t) rows at s = 1/2, 1/4, 1/8 for
    the same task vectors (N, t), under the renders, as ``figure3.compose_figure`` lays them out."""
    from experiments.reporting import figure3

    out = []
    for generator in GENERATORS:
        shown = [figure3.SampleRow(f"{generator} {scale_label(s)}(t)", rows[(generator, s)])
                 for s in WIDTHS if (generator, s) in rows]
        if shown:
            path = Path(out_dir) / f"generators_samples_{generator}.png"
            out.append(figure3.compose_figure(data, tasks, digit_indices, shown, path, title=f"{generator}, {title}"))
    return out
