"""What every report shares, written once: the notebooks' parameters, the sweep a report reads, provenance,
claim verdicts, cell formatting, runs per cell, the ours-beside-the-paper plot and the md/csv/png files.

Each artefact module (``table1`` ... ``table4``, ``figure3``, ``figure4``, ``generators`` ...) keeps only its
own table logic and the paper's numbers; the generic claim rules are in ``claims``, explained once in
``claims.md``. Reports read the MLflow store (``experiments.tracking``), or without it the sweeps' evidence
files (``experiments.tracking.evidence``), never the trainer.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import pandas as pd
from projectable import scale_name

from experiments.config import code_root, project_root
from experiments.reporting.claims import Cell, Verdict, combine_runs, summarise
from experiments.reporting.declared import baseline_sources, declared  # noqa: F401 (baseline_sources: re-export)
from experiments.run.evaluate import val_key, width_key
from experiments.tracking.evidence import (
    Evidence,
    histories_of,
    load_evidence,
    merge_evidence,
    missing_seeds,
    precision_of,
    sweep_run_of,
    trials_of,
)
from experiments.tracking.store import git_commit, machine
from experiments.tracking.sweeps import attach_per_image, find_sweep, is_partial, load_trials

SCALES = (1.0, 0.5, 0.25, 0.125)  # s of Tables 1 and 2
DATA_SUMMARY = "data/summary"  # extra evidence key: the sweep's data summary (detail: JSON; Tables 2 and 4)
# what a report lacking an extra says
ADD_EXTRAS = ("add it from the store that holds the sweep's weights with `python -m experiments.reporting extras "
              "<sweep id>`")


def scale_label(s: float) -> str:
    """0.125 -> '1/8', 1.0 -> '1' (the core's ``scale_name``)."""
    return scale_name(float(s))


# ------------------------------------------------------------------------------------------------
# Which sweep each artefact reads, and the command that makes it

# artefact -> (experiment whose newest finished sweep it reads, nox session that makes that sweep)
ARTEFACTS: dict[str, tuple[str, str]] = {
    "table1": ("table1", "reproduce_table1"),
    "table2": ("table2", "reproduce_table2"),
    "table3": ("table3", "reproduce_table3"),
    "table4": ("table4", "reproduce_table4"),
    "figure3": ("table1", "reproduce_table1"),
    "figure4": ("table1", "reproduce_table1"),
    "split_study": ("split_study", "reproduce_split_study"),
    "ablations": ("ablations", "reproduce_ablations"),
    "generators": ("generators", "reproduce_generators"),
    "specialisation": ("specialisation", "reproduce_specialisation"),
}


def make_command(artefact: str, scale: str) -> str:
    """The command that makes the runs ``artefact`` reads, at ``scale``."""
    return f"nox -s {ARTEFACTS[artefact][1]} -- scale={scale}"


class MissingRuns(SystemExit):
    """The runs a report reads are not in the store (its message names the command that makes them)."""


# ------------------------------------------------------------------------------------------------
# Notebook parameters: one prefix for every notebook

ENV_PREFIX = "PROJECTABLE_REPORT_"


class NotebookParams(NamedTuple):
    scale: str  # which scale's sweep to report
    tracking_uri: str
    experiment: str  # MLflow experiment
    out_dir: Path  # reports/<scale>
    cache: Path  # downloaded models and data caches of reports that evaluate models
    root: Path  # the repository
    source: str = "auto"  # where runs are read: store | evidence | auto (the store when it has them)
    sweeps: tuple[str, ...] = ()  # the sweep ids to read (evidence: merged; store: the newest of them); default all

    @property
    def evidence_dir(self) -> Path:
        """reports/<scale>/evidence: the sweeps' evidence files (``experiments.tracking.evidence``)."""
        return self.out_dir / "evidence"


SOURCES = ("auto", "store", "evidence")


def notebook_params(environ: Mapping[str, str] | None = None, quiet: bool = False) -> NotebookParams:
    """``PROJECTABLE_REPORT_{SCALE,TRACKING_URI,EXPERIMENT,REPORTS,CACHE,SOURCE,SWEEPS}``, each with the
    repository's default (cpu, its ``mlflow.db``, ``projectable``, ``reports/``, ``.cache/reports``, auto, every
    evidence file of the experiment)."""
    env = os.environ if environ is None else environ
    root = project_root()
    get = lambda key, default: env.get(ENV_PREFIX + key) or default
    scale = get("SCALE", "cpu")
    params = NotebookParams(
        scale=scale,
        tracking_uri=get("TRACKING_URI", f"sqlite:///{root}/mlflow.db"),
        experiment=get("EXPERIMENT", "projectable"),
        out_dir=Path(get("REPORTS", root / "reports")) / scale,
        cache=Path(get("CACHE", root / ".cache" / "reports")),
        root=root,
        source=get("SOURCE", "auto"),
        sweeps=tuple(s for s in get("SWEEPS", "").split(",") if s),
    )
    if params.source not in SOURCES:
        raise ValueError(f"{ENV_PREFIX}SOURCE={params.source}: choose one of {', '.join(SOURCES)}")
    if not quiet:
        print(f"scale={params.scale} store={params.tracking_uri} source={params.source} -> {params.out_dir}")
    return params


# The reports that read every declared cell of their experiment's sweep, in either baselines mode: a sweep of
# only some of them (Hydra's ``~``, e.g. the ablation's reference) is never reported as Table 1 or its figures
WHOLE_SWEEP = ("table1", "figure3", "figure4")


def needed_cells(artefact: str) -> tuple[str, ...]:
    """The cells a sweep must have finished for ``artefact`` (``Declared.needed``), or () for any sweep."""
    return declared(ARTEFACTS[artefact][0]).needed if artefact in WHOLE_SWEEP else ()


def _store_exists(uri: str) -> bool:
    """A sqlite store whose file is missing has no runs (and must not be created by looking)."""
    return not uri.startswith("sqlite:") or Path(uri.removeprefix("sqlite:///")).is_file()


def store_sweep(tracking_uri: str, experiment: str, scale: str, artefact: str, sweeps: Sequence[str] = ()):
    """The one way every artefact finds its sweep in a store: the newest finished sweep of the experiment
    ``artefact`` reads (``ARTEFACTS``) at ``scale`` with every cell it needs, of every declared seed (a partial
    sweep of some seeds is one part of a report: its parts are merged from their evidence files), or the newest
    of ``sweeps`` where given (``PROJECTABLE_REPORT_SWEEPS``, partial or not); else ``MissingRuns`` naming the
    command that makes it."""
    name = ARTEFACTS[artefact][0]
    cells = needed_cells(artefact)
    found = None
    if _store_exists(tracking_uri):
        found = find_sweep(tracking_uri, experiment, scale, name, cells=cells, sweep_ids=sweeps, whole=not sweeps)
    if found is None:
        which = f"complete {name} sweep (cells {', '.join(cells)})" if cells else f"{name} sweep"
        which += f" among {', '.join(sweeps)}" if sweeps else " of every declared seed"
        raise MissingRuns(f"{artefact}: no finished {which} at scale {scale} in {tracking_uri}; "
                          f"run `{make_command(artefact, scale)}` first")
    return found


def newest_sweep(params: NotebookParams, artefact: str):
    """``store_sweep`` in the store the notebooks' parameters name."""
    return store_sweep(params.tracking_uri, params.experiment, params.scale, artefact, params.sweeps)


def newest_evidence(params: NotebookParams, artefact: str) -> Evidence:
    """The evidence ``artefact`` reads: the finished sweeps of its experiment in ``reports/<scale>/evidence``
    (those of ``params.sweeps`` where given) merged (``tracking.evidence.merge_evidence``), or
    ``MissingRuns``. Every file there of the experiment is part of it: committing an evidence file declares
    its sweep part of the experiment's reports, deleting it withdraws it. Every report renders from evidence
    files alone: what it reads beyond the runs' metrics rides in their extra records
    (``experiments.reporting.evidence.EXTRAS``)."""
    name, cells = ARTEFACTS[artefact][0], needed_cells(artefact)
    where = f"{params.evidence_dir}"
    parts = []
    for path in sorted(params.evidence_dir.glob("*.parquet")):
        evidence = load_evidence(path)
        sweep = evidence.sweeps[0]
        if sweep["tags"].get("experiment") != name or not evidence.finished:
            continue
        if params.sweeps and sweep["tags"].get("sweep_id") not in params.sweeps:
            continue
        parts.append(evidence)
    if not parts:
        raise MissingRuns(f"{artefact}: no finished {name} sweep at scale {params.scale} in {params.tracking_uri} "
                          f"nor an evidence file of one in {where}; run `{make_command(artefact, params.scale)}` first")
    merged = merge_evidence(parts)
    lacking = sorted(set(cells) - set(merged.runs.loc[merged.runs.status == "FINISHED", "cell"]))
    if lacking:
        raise MissingRuns(f"{artefact}: the evidence of {', '.join(merged.sweep_ids)} in {where} lacks finished runs "
                          f"of cells {', '.join(lacking)}; run `{make_command(artefact, params.scale)}` first")
    if seeds := missing_seeds(merged):  # partial sweeps: every part is needed, or verdicts outrun their seeds
        shown = "; ".join(f"{cell}: {missing}" for cell, missing in list(seeds.items())[:6])
        raise MissingRuns(f"{artefact}: the partial sweeps {', '.join(merged.sweep_ids)} in {where} lack seeds their "
                          f"declaration asks for ({shown}); run and commit the other parts "
                          "(`experiment.seed_subset=[...]`) first")
    return merged


def check_runs(params: NotebookParams, artefact: str) -> str:
    """'store' or 'evidence': where ``artefact`` reads its runs (``params.source``; auto prefers the store
    while it has them), or ``MissingRuns`` saying what is missing in both."""
    if params.source in ("auto", "store"):
        try:
            newest_sweep(params, artefact)
            return "store"
        except MissingRuns:
            if params.source == "store":
                raise
    newest_evidence(params, artefact)
    return "evidence"


def sweep_and_trials(params: NotebookParams, artefact: str, per_image: bool = False):
    """(sweep run, trials) of the newest finished sweep ``artefact`` reads, from the store or its evidence
    files (``check_runs``); with ``per_image`` each trial's per-image validation losses too (paired standard
    errors). From evidence the sweep run is a stand-in with the same ``info`` and ``data`` fields, and
    ``evidence_of`` returns the evidence behind it."""
    if check_runs(params, artefact) == "evidence":
        evidence = newest_evidence(params, artefact)
        return sweep_run_of(evidence), trials_of(evidence, per_image)
    sweep_run = newest_sweep(params, artefact)
    trials = load_trials(params.tracking_uri, params.experiment, sweep_run.data.tags["sweep_id"])
    return sweep_run, attach_per_image(trials, params.tracking_uri) if per_image else trials


def reference_trials(params: NotebookParams, sweep_run, cells: Sequence[str]) -> pd.DataFrame:
    """The finished trials of ``cells`` in the sweep this one started from (its ``source_sweep`` tag: the
    Table 1 sweep of an ablation or a specialisation study), with their per-image losses. A report read from
    evidence reads them from the committed evidence of those sweeps, merged: each partial sweep
    (``experiment.seed_subset``) names the partial Table 1 sweep of its own seeds."""
    evidence = evidence_of(sweep_run)
    if evidence is None:
        reference = load_trials(params.tracking_uri, params.experiment, sweep_run.data.tags["source_sweep"])
        return attach_per_image(reference[reference.cell.isin(list(cells))], params.tracking_uri)
    sources = dict.fromkeys(sweep["tags"].get("source_sweep", "?") for sweep in evidence.sweeps)
    reference = trials_of(merge_evidence([source_evidence(params, evidence, source) for source in sources]),
                          per_image=True)
    return reference[reference.cell.isin(list(cells))].reset_index(drop=True)


def source_evidence(params: NotebookParams, evidence: Evidence, source_sweep: str) -> Evidence:
    """The committed evidence of ``source_sweep``, the Table 1 sweep a part of ``evidence`` started from (its
    reference cells, the runs Table 3 and the generators reuse); a file not committed is named, never guessed."""
    path = params.evidence_dir / f"{source_sweep}.parquet"
    if not path.is_file():
        raise MissingRuns(f"the evidence of {', '.join(evidence.sweep_ids)} started from sweep {source_sweep}, "
                          f"whose evidence is not committed ({path}); commit it, or render from the store "
                          "(PROJECTABLE_REPORT_SOURCE=store)")
    return load_evidence(path)


class PartSource(NamedTuple):
    sweep_id: str  # the Table 1 sweep one part of merged evidence started from (its ``source_sweep``)
    evidence: Evidence  # that sweep's committed evidence
    runs: pd.DataFrame  # its runs of the part's seeds (``trials_of``, with per-image losses)


def part_sources(params: NotebookParams, evidence: Evidence) -> list[PartSource | None]:
    """Per part of ``evidence`` (each sweep, in order) the Table 1 sweep it started from and reused runs of, with
    that sweep's runs of the part's own seeds (``experiment.seed_subset``; every seed for a whole sweep), or None
    for a part that started from none."""
    out = []
    for sweep in evidence.sweeps:
        source_sweep = sweep["tags"].get("source_sweep")
        if not source_sweep:
            out.append(None)
            continue
        source = source_evidence(params, evidence, source_sweep)
        runs = trials_of(source, per_image=True)
        seeds = json.loads(sweep["params"]["experiment.seed_subset"]) if is_partial(sweep["params"]) else None
        out.append(PartSource(source_sweep, source, runs if seeds is None else runs[runs.seed.isin(seeds)]))
    return out


def lacking_extra(trials: pd.DataFrame, run_ids: Iterable[str], extras: pd.DataFrame, key: str) -> list[str]:
    """The cells of ``trials`` with a run among ``run_ids`` whose ``key`` extra record ``extras`` lacks."""
    missing = set(run_ids) - set(extras.run_id[extras.key == key])
    return sorted(set(trials.cell[trials.run_id.isin(missing)]))


def evidence_of(sweep_run) -> Evidence | None:
    """The evidence a sweep run stand-in was read from (``sweep_and_trials``); None for a run of the store."""
    return getattr(sweep_run, "evidence", None)


def metric_source(params: NotebookParams, sweep_run) -> str | Evidence:
    """Where the runs' metric histories are (``learning_curves``): the store, or the sweep's evidence."""
    return evidence_of(sweep_run) or params.tracking_uri


class ReportInputs(NamedTuple):
    """What a report's notebook starts from (``report_inputs``)."""

    params: NotebookParams
    sweep_run: object  # the sweep's MLflow run, or its stand-in read from evidence files
    trials: pd.DataFrame
    prov: Provenance  # where the trials' numbers come from


def report_inputs(artefact: str, per_image: bool = False, params: NotebookParams | None = None) -> ReportInputs:
    """The first step of every report's notebook: its parameters (``notebook_params``, from the environment
    unless given), the newest finished sweep ``artefact`` reads with its trials (``sweep_and_trials``, per-image
    losses with ``per_image``), and their provenance."""
    params = notebook_params() if params is None else params
    sweep_run, trials = sweep_and_trials(params, artefact, per_image)
    return ReportInputs(params, sweep_run, trials, provenance(sweep_run, trials))


class SavedModels(NamedTuple):
    runs: pd.DataFrame  # the finished trials loaded, in cell and seed order
    models: list  # the GPT or ProjectableGPT of each run, in eval mode on ``device``
    data: object  # the runs' dataset (they must share one data config)
    device: str


def load_saved_models(trials: pd.DataFrame, cells: Sequence[str], tracking_uri: str, cache_dir: str | Path,
                      seed: int | None = None, device: str | None = None) -> SavedModels:
    """The final weights of the finished runs of ``cells`` (every seed, or one), downloaded from MLflow into
    ``cache_dir/models`` once, and the dataset they were trained on (built in ``cache_dir/data``)."""
    from experiments.run.saved import data_of, load_model, pick_device
    from experiments.tracking.sweeps import download_run, runs_frame

    device = pick_device(device)
    runs = runs_frame(trials, list(cells))
    if seed is not None:
        runs = runs[runs.seed == seed].reset_index(drop=True)
    if runs.empty:
        raise ValueError(f"no finished run of cells {list(cells)} among the trials")
    saved = [download_run(tracking_uri, run_id, Path(cache_dir) / "models") for run_id in runs.run_id]
    configs = {repr(s.config.data) for s in saved}
    if len(configs) > 1:
        raise ValueError(f"the runs were trained on different data configs: {sorted(configs)}")
    data = data_of(saved[0].config, Path(cache_dir) / "data")
    return SavedModels(runs, [load_model(s).to(device) for s in saved], data, device)


# ------------------------------------------------------------------------------------------------
# Cells from trials


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def loss_of(row: Mapping, subset: str, width: float) -> tuple[float, float] | None:
    """(nats/token, its standard error) of the model of ``width`` in a trial row (the metric schema's
    ``val/<subset>/s1_4/nats_per_token``; runs from before it are renamed where stores are read,
    ``tracking.sweeps.schema_metrics``)."""
    mean, se = row.get(val_key(subset, width)), row.get(val_key(subset, width, "nats_se"))
    return (float(mean), float(se)) if _present(mean) else None


def per_image_of(row: Mapping, subset: str, width: float) -> list[float] | None:
    """The per-image losses of that model (``eval/per_image_nats.json``'s ``<subset>/<width key>``)."""
    return (row.get("per_image") or {}).get(f"{subset}/{width_key(width)}")


def _run_id_of_uri(uri) -> str | None:
    """``runs:/<id>/model`` -> ``<id>``; None for anything else (a local file, no source)."""
    if not isinstance(uri, str) or not uri.startswith("runs:/"):
        return None
    return uri[len("runs:/"):].split("/", 1)[0] or None


def lineage_ids(trials: pd.DataFrame) -> list[str]:
    """Each trial's lineage (``claims.md``): the stage-1 run its weights descend from.

    A run that started from ``runs:/<id>/model`` (``init_from``, logged as a param and read by
    ``tracking.sweeps.load_trials``) has that run's lineage, followed back through the trials given (include
    the source sweep's trials for a sweep that starts from another's), or ``<id>`` itself when that run is
    not among them. Without ``init_from`` a run with an ``init_cell`` tag has the lineage of that cell's run
    of its own seed (seed i continues seed i, ``orchestration.plan``); any other run is its own lineage,
    named by its run id (or ``<cell>/seed<seed>``)."""
    records = trials.to_dict("records")
    own = [str(r.get("run_id")) if _present(r.get("run_id")) else f"{r['cell']}/seed{r['seed']}" for r in records]
    by_run = {r.get("run_id"): i for i, r in enumerate(records) if _present(r.get("run_id"))}
    by_cell_seed = {(r["cell"], r["seed"]): i for i, r in enumerate(records)}

    def parent(i: int):
        row = records[i]
        run_id = _run_id_of_uri(row.get("init_from"))
        if run_id is not None:
            return by_run.get(run_id, run_id)
        cell = row.get("init_cell")
        if isinstance(cell, str) and cell:
            return by_cell_seed.get((cell, row["seed"]), f"{cell}/seed{row['seed']}")
        return None

    out = []
    for i in range(len(records)):
        node, seen = i, set()
        while isinstance(node, int) and node not in seen:
            seen.add(node)
            up = parent(node)
            if up is None:
                break
            node = up
        out.append(own[node] if isinstance(node, int) else node)
    return out


def gather_cells(trials: pd.DataFrame, cell_sources: Mapping[str, list[tuple[str, float]]],
                 subset: str = "all") -> dict[tuple[str, float], Cell]:
    """Combine finished trials into table cells: ``cell_sources[trial cell]`` lists the (column, s) entries a
    trial contributes to, s being the model's width. Runs are averaged per lineage
    (``lineage_ids``; the independent unit, ``claims``), and cells that share lineages are paired by them.
    Per-image losses (``tracking.sweeps.attach_per_image``) make the cells' standard errors of differences
    paired over images."""
    pools: dict[tuple[str, float], tuple[list[float], list[float], list, list[str]]] = {}
    for row, lineage in zip(trials.to_dict("records"), lineage_ids(trials)):
        if row["status"] != "FINISHED":
            continue
        for column, s in cell_sources.get(row["cell"], []):
            loss = loss_of(row, subset, s)
            if loss is None:
                continue
            means, ses, images, lineages = pools.setdefault((column, s), ([], [], [], []))
            means.append(loss[0])
            ses.append(loss[1])
            images.append(per_image_of(row, subset, s))
            lineages.append(lineage)
    return {
        key: combine_runs(means, ses, images if all(i is not None for i in images) else None, lineages)
        for key, (means, ses, images, lineages) in pools.items()
    }


def baselines_of(sweep_run) -> str:
    """'matched' (the baselines continued alone for the stage-2 steps) or 'stage1' (stage 1's runs; the
    protocol of sweeps made before the switch existed)."""
    return sweep_run.data.params.get("experiment.baselines", "stage1")


class CellsRead(NamedTuple):
    cells: dict[str, str]  # the cell read -> the declared (stage-1) cell it stands for
    baselines: str  # 'matched' when every baseline with a step-matched continuation is read from it


def matched_cells(trials: pd.DataFrame, cells: Sequence[str], matched: Mapping[str, str]) -> CellsRead:
    """The cells a report of a Table 1 sweep reads: each stage-1 baseline in ``matched`` (stage-1 cell ->
    continuing cell) is read from its step-matched continuation whenever the trials hold finished runs of it,
    so that P_s is set beside M~_s after the same optimizer steps; sweeps made before the continuations existed
    fall back to stage 1's runs (said in the report through ``baselines``)."""
    finished = set(trials.loc[trials.status == "FINISHED", "cell"])
    read, baselines = {}, "matched"
    for cell in cells:
        if cell in matched and matched[cell] in finished:
            read[matched[cell]] = cell
        else:
            read[cell] = cell
            baselines = "stage1" if cell in matched else baselines
    return CellsRead(read, baselines)


# The claim rule is explained once, in claims.md beside claims.py; a report is written to reports/<scale>/<name>.md
CLAIM_RULE_DOC = "experiments/reporting/claims.md"  # from the repository root
REPORT_TO_ROOT = "../.."  # from reports/<scale>/


def claim_rule_line(verdicts: Iterable[Verdict]) -> str:
    """The one line a report gives the claim rule: the rules its verdicts use, as their ``rule`` column writes
    them (so with the report's margin, or its Holm-Bonferroni family), and a link to ``claims.md`` that works
    from ``reports/<scale>/<name>.md``."""
    rules = list(dict.fromkeys(v.rule for v in verdicts))
    if not rules:
        raise ValueError("no verdicts: a report without claims has no claim rule to link")
    used = "; ".join(f"`{rule}`" for rule in rules)
    return (f"Claim rules here (nats/token): {used}. How each is judged, with its standard error and df: "
            f"[`{CLAIM_RULE_DOC}`]({REPORT_TO_ROOT}/{CLAIM_RULE_DOC}).")


def baselines_line(baselines: str, steps1, steps2) -> str:
    """The protocol's sentence on how many steps the baselines took (experiment.baselines)."""
    if baselines == "matched":
        return (f"- Baselines: **step-matched**. Stage 2 continues every stage-1 M_s and M~_s alone for {steps2} "
                "steps with a fresh warm-up and cosine, as the control continues M_1 (M_1's cell is the control), so "
                f"every compared model has taken {steps1} + {steps2} optimizer steps on the same schedule.")
    return (f"- Baselines: **stage 1's runs** (experiment.baselines=stage1): M_s and M~_s took {steps1} steps, "
            f"{steps2} fewer than the P runs' source; part of any P_s advantage can be that extra training.")


def margin_of(sweep_run, default: float = 0.01) -> float:
    """The non-inferiority margin the sweep was configured with (``experiment.margin``)."""
    return float(sweep_run.data.params.get("experiment.margin", default))


# ------------------------------------------------------------------------------------------------
# The ImageNet track's data (Tables 2 and 4)


def data_lines(summary: dict | None) -> list[str]:
    """What the runs saw: the stand-in (said plainly) or ImageNet, the tokenizer's quality, the encoder."""
    if summary is None:
        return ["- data summary not found in the cache (run `python -m experiments.prepare_data` with the same "
                "config to rebuild it)"]
    side, tokens = summary["image_side"], summary["image_side"] // 2
    lines = []
    if summary.get("stand_in"):
        lines.append(
            f"- **These numbers are NOT ImageNet.** No ImageNet files were given, so the runs used the STAND-IN: "
            f"{summary['train_images']} training and {summary['val_images']} validation SynthMNIST renders "
            f"({side}x{side} RGB, digit labels) through the identical pipeline. They test the protocol and the "
            "direction of the claims on image-embedding task vectors, not the paper's ImageNet numbers.")
    else:
        lines.append(f"- ImageNet 64x64: {summary['train_images']} training and {summary['val_images']} validation images.")
    lines += [
        f"- Tokens: a VQ-VAE (App. C.2 layout, {summary['vqvae_params']:,} parameters) with {summary['vqvae_codes']} "
        f"codes, {side}x{side} images -> {tokens}x{tokens} = {tokens * tokens} tokens; validation reconstruction "
        f"PSNR {summary['vqvae_val_psnr']:.1f} dB, codebook perplexity {summary['vqvae_val_perplexity']:.1f}, "
        f"{summary['vqvae_val_dead_codes']} codes unused on validation images.",
        f"- Task vectors: `{summary['encoder']}` embeddings ({summary['embedding_dim']}-d, standardised on the "
        "training images; PCA-whitened when data.task_dim is smaller) of each image -- never the stand-in's "
        "SynthMNIST t. The paper uses SimCLRv2 embeddings.",
    ]
    return lines


def sweep_data_summary(tracking_uri: str, sweep_run, cache_dir: str | None = None) -> dict | None:
    """The data summary of a sweep's (base) data config, read from the cache its config names; for a sweep
    read from evidence, the summary its runs carry (``reporting.evidence.data_summary``), None without one."""
    if (evidence := evidence_of(sweep_run)) is not None:
        summaries = list(dict.fromkeys(evidence.extras.loc[evidence.extras.key == DATA_SUMMARY, "detail"]))
        if len(summaries) != 1:
            what = "no data summary" if not summaries else f"{len(summaries)} different data summaries"
            raise MissingRuns(f"the evidence of {', '.join(evidence.sweep_ids)} holds {what} (one is every run's "
                              "extra record data/summary); add it from the store that holds the sweep with "
                              "`python -m experiments.reporting extras <sweep id>`")
        return json.loads(summaries[0])
    import mlflow
    from omegaconf import OmegaConf

    from experiments.config import build_section
    from experiments.run.datasets import data_config_class
    from experiments.run.image_tokens import read_summary

    mlflow.set_tracking_uri(tracking_uri)
    text = mlflow.artifacts.load_text(f"runs:/{sweep_run.info.run_id}/config/config.yaml")
    cfg = OmegaConf.create(text)
    config = build_section(data_config_class(cfg.data), cfg.data, "data")
    return read_summary(config, cache_dir or cfg.paths.cache)


# ------------------------------------------------------------------------------------------------
# Provenance


class Provenance(NamedTuple):
    sweep_id: str
    commit: str
    command: str
    scale: str
    stage_steps: dict[str, int]
    wall_time_s: float
    machine: str
    finished: str
    report_commit: str  # the checkout that wrote the report (the notebook may run after later commits)
    precision: str = "?"  # train.precision the sweep trained in (fp32, bf16)


def provenance(sweep_run, trials: pd.DataFrame) -> Provenance:
    """Where a sweep's numbers come from: its MLflow tags, params and wall time."""
    tags, params = sweep_run.data.tags, sweep_run.data.params
    steps = {}
    for stage in sorted(trials["stage"].dropna().unique()):
        key = f"experiment.stages.{stage}.steps"
        steps[stage] = int(params[key]) if key in params else int(trials[trials.stage == stage].steps.max())
    end = sweep_run.info.end_time or sweep_run.info.start_time
    return Provenance(
        sweep_id=tags.get("sweep_id", "?"), commit=tags.get("commit", "unknown"), command=tags.get("command", "?"),
        scale=tags.get("scale", "?"), stage_steps=steps,
        wall_time_s=float(sweep_run.data.metrics.get("wall_time_s", math.nan)), machine=tags.get("machine", "?"),
        finished=datetime.fromtimestamp(end / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        report_commit=git_commit(code_root()), precision=precision_of(params),
    )


def evaluation_provenance(tick: float, **extra) -> dict:
    """Who evaluated saved models for a report (commit, machine, wall time since ``tick``), plus ``extra``."""
    return {"commit": git_commit(code_root()), "machine": machine(), "wall_time_s": time.time() - tick, **extra}


def evaluations(records: pd.DataFrame) -> dict:
    """The evaluations behind a report's extra records (each a ``toolkit.evaluation_provenance`` JSON), as one:
    their distinct commits and machines joined by ' + ', their wall times added."""
    details = [json.loads(detail) for detail in records.detail]
    joined = lambda field: " + ".join(dict.fromkeys(str(d[field]) for d in details)) or "?"
    return {"commit": joined("commit"), "machine": joined("machine"),
            "wall_time_s": sum(d["wall_time_s"] for d in details)}


def provenance_lines(prov: Provenance, sources: str | None = None, wall_time_note: str = "",
                     evaluation: dict | None = None) -> list[str]:
    """The report's ``## Provenance`` section: sweep, commits, command, scale and steps, wall time, machine;
    the sweep it took sources from, and the evaluation of saved models, where there was one."""
    steps = ", ".join(f"{stage} {n}" for stage, n in prov.stage_steps.items())
    from_sources = f"; sources and reused runs from `{sources}`" if sources else ""
    lines = [
        "## Provenance",
        "",
        f"- sweep: `{prov.sweep_id}` (MLflow, finished {prov.finished}){from_sources}",
        f"- commit: `{prov.commit}` (training); report written at `{prov.report_commit}`",
        f"- command: `{prov.command}`",
        f"- scale: `{prov.scale}`; steps: {steps}",
        f"- wall time: {prov.wall_time_s / 60:.1f} min{wall_time_note}",
        f"- machine: {prov.machine}; training precision: {prov.precision}",
    ]
    if evaluation is not None:
        lines.append(f"- evaluation of the saved models: commit `{evaluation['commit']}`, "
                     f"{evaluation['wall_time_s']:.0f} s on {evaluation['machine']}")
    return [*lines, ""]


# ------------------------------------------------------------------------------------------------
# Markdown


def md_table(header: Sequence[str], rows: Iterable[Sequence]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def section(title: str, *lines: str) -> list[str]:
    """``## title``, a blank line, the lines, a blank line."""
    return [f"## {title}", "", *lines, ""]


def fmt_cell(cell: Cell | None) -> str:
    """Ours: ``mean ± se (n=lineages)``, with the runs where several share a lineage, or '-' for a missing
    cell."""
    if cell is None:
        return "-"
    runs = f", {cell.run_count} runs" if cell.run_count != cell.seeds else ""
    return f"{cell.mean:.3f} ± {cell.se:.3f} (n={cell.seeds}{runs})"


def fmt_mean_se(mean: float, se: float) -> str:
    return "-" if mean is None or math.isnan(mean) else f"{mean:.3f} ± {se:.3f}"


def fmt_df(df: float) -> str:
    """Degrees of freedom for a verdict table: one decimal, '∞' when unlimited, '-' when untested."""
    return "-" if math.isnan(df) else "∞" if math.isinf(df) else f"{df:.1f}"


def verdict_lines(verdicts: Sequence[Verdict], unpaired: bool = False, rule: bool = True,
                  paper: Mapping[str, bool] | None = None, suffix: str = "") -> list[str]:
    """Each claim's summary, then one row per comparison: difference, t(0.975, df) x SE (paired; with
    ``unpaired`` the unpaired value beside it), the df, the rule, the verdict, and (with ``paper``) the
    verdict on the paper's numbers."""
    lines = [f"- **{claim}**: {verdict}{suffix}" for claim, verdict in summarise(verdicts).items()]
    header = ["claim", "comparison", "difference", "t·SE (paired)" if unpaired else "t·SE"]
    header += ["t·SE (unpaired)"] * unpaired + ["df (paired)" if unpaired else "df"]
    header += ["rule"] * rule + ["verdict"] + ["paper"] * (paper is not None)
    rows = []
    for v in verdicts:
        row = [v.claim, v.comparison, f"{v.difference:+.4f}", f"{v.t_se:.4f}"]
        row += [f"{v.t_se_unpaired:.4f}"] * unpaired + [fmt_df(v.df)] + [v.rule] * rule + [v.verdict]
        if paper is not None:
            row.append("holds" if paper.get(v.comparison) else "does not hold")
        rows.append(row)
    return [*lines, "", *md_table(header, rows)]


def verdicts_frame(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "claim": v.claim, "comparison": v.comparison, "difference": v.difference, "t·SE": v.t_se,
        "t·SE (unpaired)": v.t_se_unpaired, "df": v.df, "t": v.critical, "rule": v.rule, "verdict": v.verdict,
    } for v in verdicts])


def runs_per_cell(trials: pd.DataFrame) -> list[str]:
    """The ``## Runs per cell`` section: seeds that ran in each cell of the sweep."""
    seeds = trials.groupby("cell").seed.nunique().to_dict()
    return section("Runs per cell", ", ".join(f"{cell}: {n}" for cell, n in sorted(seeds.items())))


# ------------------------------------------------------------------------------------------------
# Figures and files


def new_figure(figsize: tuple[float, float], xlabel: str = "", ylabel: str = ""):
    """(figure, axes) of one panel with these axis labels, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return fig, ax


def save_figure(fig, title: str, path: str | Path) -> Path:
    """Title (wrapped to the figure's width: a report of several sweeps names them all), tight layout, PNG at
    120 dpi; the figure is closed."""
    import textwrap

    import matplotlib.pyplot as plt

    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * 11)))
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_ours_beside_paper(cells: Mapping[tuple[str, float], Cell], paper: Mapping[tuple[str, float], float],
                           columns: Mapping[str, tuple[str, str]], path: str | Path, title: str,
                           control: Cell | None = None, paper_title: str = "paper") -> Path:
    """Loss against s, ours with 2-SE bars (left) and the paper's (right), one line per column
    (``columns[column] = (label, colour)``); the control as a black square at s = 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    x_of = {s: 1 / s for s in SCALES}
    for column, (label, colour) in columns.items():
        ours = [(x_of[s], c.mean, 2 * c.se) for s in SCALES if (c := cells.get((column, s))) is not None]
        if ours:
            x, y, e = zip(*ours)
            axes[0].errorbar(x, y, yerr=e, marker="o", capsize=3, color=colour, label=label)
        theirs = [(x_of[s], paper[(column, s)]) for s in SCALES if (column, s) in paper]
        if theirs:
            axes[1].plot(*zip(*theirs), "--o", color=colour, label=label)
    if control is not None:
        axes[0].errorbar([1], [control.mean], yerr=[2 * control.se], marker="s", color="black",
                         linestyle="none", capsize=3, label="M_1 continued")
    for ax, name in zip(axes, ("ours (±2 SE)", paper_title)):
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x_of.values()), [scale_label(s) for s in SCALES])
        ax.set_xlabel("s (width / source width)")
        ax.set_ylabel("validation loss (nats/token)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    return save_figure(fig, title, path)


def learning_curves(trials: pd.DataFrame, source: str | Evidence,
                    curves: Sequence[tuple[str, str, list[str], float]],
                    stage_steps: Mapping[str, int], subset: str = "all") -> pd.DataFrame:
    """The validation loss of each (panel, label, cells, width) curve against the optimizer
    steps the model's weights have seen: a stage-2 run's steps start after stage 1's (its weights continue
    a stage-1 model; with stage 1 at 0 steps they start at 0). Seeds are averaged per step. ``source``: the
    store's tracking URI or the sweep's evidence (``metric_source``).
    Columns: panel, label, steps, nats, runs."""
    from experiments.tracking.sweeps import metric_histories

    finished = trials[trials.status == "FINISHED"]
    frames = []
    for panel, label, cells, width in curves:
        runs = finished[finished.cell.isin(cells)]
        if runs.empty:
            continue
        keys = [val_key(subset, width)]
        history = (histories_of(source, runs.run_id.tolist(), keys) if isinstance(source, Evidence)
                   else metric_histories(source, runs.run_id.tolist(), keys))
        offsets = {row.run_id: (stage_steps.get("stage1", 0) if row.stage == "stage2" else 0)
                   for row in runs.itertuples()}
        history = history.assign(steps=history.step + history.run_id.map(offsets))
        per_step = history.groupby("steps").value.agg(["mean", "count"]).reset_index()
        frames.append(pd.DataFrame({"panel": panel, "label": label, "steps": per_step.steps,
                                    "nats": per_step["mean"], "runs": per_step["count"]}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["panel", "label", "steps", "nats", "runs"])


def plot_learning_curves(frame: pd.DataFrame, path: str | Path, title: str) -> Path:
    """One panel per width: each curve's validation loss against the steps its weights have seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(dict.fromkeys(frame.panel))
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(4.2 * max(1, len(panels)), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, curve in frame[frame.panel == panel].groupby("label", sort=False):
            ax.plot(curve.steps, curve.nats, marker="o", markersize=3, label=label)
        ax.set_title(panel)
        ax.set_xlabel("optimizer steps the weights have seen")
        ax.set_ylabel("validation loss (nats/token)")
        ax.legend(fontsize=8)
    return save_figure(fig, title, path)


def write_curves(out_dir: str | Path, name: str, curves: pd.DataFrame | None, title: str) -> list[str]:
    """``<name>_curves.png`` (+ ``.csv``) from ``learning_curves`` and the report's section that shows it;
    nothing without curves."""
    if curves is None or curves.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_learning_curves(curves, out_dir / f"{name}_curves.png", title)
    curves.to_csv(out_dir / f"{name}_curves.csv", index=False, float_format="%.5f")
    return section("Learning curves",
                   f"![learning curves]({name}_curves.png)",
                   "",
                   "Validation loss against the optimizer steps each model's weights have seen (a stage-2 run "
                   "continues a stage-1 model, so its steps start after stage 1's); seeds averaged. Each P_s curve "
                   "starts at its loss before any co-training step: the one-shot model of the pretrained source.")


class ReportFiles(NamedTuple):
    markdown: Path
    csv: Path | None = None
    png: Path | None = None


def log_to_sweep(params: NotebookParams, sweep_run, files: ReportFiles, extra: Sequence[Path] = ()) -> None:
    """Attach a report's files to the MLflow run of the sweep it reads (artifact folder ``reports/<scale>``);
    nothing for a report made from evidence files (no store to attach them to)."""
    from experiments.tracking.store import MlflowClient

    if evidence_of(sweep_run) is not None:
        return

    client = MlflowClient(params.tracking_uri)
    for path in [*files, *extra]:
        if path is not None and Path(path).is_file():
            client.log_artifact(sweep_run.info.run_id, str(path), f"reports/{params.scale}")


def publish_report(params: NotebookParams, sweep_run, write: Callable[..., ReportFiles], *args,
                   extra: Sequence[Path] = ()) -> ReportFiles:
    """The last step of every report's notebook: write the report (``write(params.out_dir, *args)``, the
    artefact module's ``write_report``), show it (its markdown, and its figure where it has one) and attach its
    files and ``extra`` to the sweep's run (``log_to_sweep``)."""
    from IPython.display import Image, Markdown, display  # the notebooks' display: writing reports needs none

    files = write(params.out_dir, *args)
    display(Markdown(files.markdown.read_text()), *([Image(filename=str(files.png))] if files.png else []))
    log_to_sweep(params, sweep_run, files, extra)
    return files


def write_report(out_dir: str | Path, name: str, markdown: str, frame: pd.DataFrame | None = None,
                 figure: Callable[[Path], Path] | None = None) -> ReportFiles:
    """``<out_dir>/<name>.md``, ``.csv`` (floats to 5 decimals) from ``frame`` and ``.png`` from
    ``figure(path)``, each where given."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png = figure(out_dir / f"{name}.png") if figure is not None else None
    csv = None
    if frame is not None:
        csv = out_dir / f"{name}.csv"
        frame.to_csv(csv, index=False, float_format="%.5f")
    md = out_dir / f"{name}.md"
    md.write_text(markdown)
    return ReportFiles(md, csv, png)


# ------------------------------------------------------------------------------------------------
# Studies that start from a Table 1 sweep (ablations, specialisation)


class StudyReport(NamedTuple):
    """How a study started from a Table 1 sweep is reported: ``reports/<scale>/<name>.md`` from ``markdown(cells,
    verdicts, prov, source_sweep, *extra)``, ``.csv`` from ``results_frame(cells, verdicts)`` and ``.png`` from
    ``plot(frame, path, title)`` of that frame, titled ``<title>, scale <scale> (sweep <id>)``."""

    name: str
    title: str
    results_frame: Callable[[dict[str, Cell], list[Verdict]], pd.DataFrame]
    markdown: Callable[..., str]
    plot: Callable[[pd.DataFrame, Path, str], Path]

    def write(self, out_dir, cells: dict[str, Cell], verdicts: list[Verdict], prov: Provenance,
              source_sweep: str, *extra) -> ReportFiles:
        frame = self.results_frame(cells, verdicts)
        title = f"{self.title}, scale {prov.scale} (sweep {prov.sweep_id})"
        return write_report(out_dir, self.name, self.markdown(cells, verdicts, prov, source_sweep, *extra), frame,
                            lambda path: self.plot(frame, path, title))
