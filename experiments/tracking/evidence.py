"""Evidence files: what the reports of a finished sweep read, kept beside the reports
(``reports/<scale>/evidence/<sweep id>.parquet``) so that they re-render without the MLflow store that
trained the sweep, on any machine.

One Parquet table per sweep, one row per record; ``record`` says which columns a row fills (``COLUMNS``
documents each, ``SCHEMA_VERSION`` is in the file's metadata and checked on reading):

* ``sweep``  one row: the sweep run's MLflow tags, params, metrics, status and times, as JSON (``detail``).
* ``run``    one row per trial run: its config key, kind, stage, cell, seed, the run and cell it started from,
  precision, steps, wall time, the SHA-256 of its final weights, the commit, the CPU model and flags.
* ``metric`` a run's final value of every metric it logged (what ``sweeps.load_trials`` reads).
* ``curve``  every logged value of its validation metrics (``val/...``) against the step: the learning curves.
* ``image``  its per-image validation losses at the end (``eval/per_image_nats.json``), under every evaluation
  condition it declares: a key ``<subset>/<model>`` is the run's own t (condition ``own``), a key
  ``<subset>-t_<condition>/<model>`` the same images under another t (``permuted``, ``mean``).
* ``extra``  what a report computes from the final weights (``key`` names it, e.g. ``figure4/t1``: Figure 4's
  per-image losses over its t1 grid; ``detail`` holds the evaluation's provenance where the report prints it).

The sweep's driver appends a run's rows as each trial finishes and the sweep row when it starts and ends
(``EvidenceWriter``); ``backfill`` writes the file of a finished sweep from a store afterwards. Everything
reads it through ``load_evidence``; ``merge_evidence`` combines the partial sweeps of one experiment and
refuses to mix precisions or configs.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pandas as pd
from projectable.tokenizer import sha256

from experiments.tracking.sweeps import is_partial, run_width, schema_metrics, schema_per_image

SCHEMA_VERSION = 1
SCHEMA_KEY = b"projectable.evidence.schema"
MAX_BYTES = 2_000_000  # an evidence file is committed beside the reports: a larger one is reported
OWN = "own"  # the condition of a per-image key without a ``-t_<condition>`` suffix: the run's own t
CONDITION_MARK = "-t_"

# column -> (Arrow type, what it holds; the records that fill it)
COLUMNS: dict[str, tuple[str, str]] = {
    "record": ("string", "which record the row is: sweep, run, metric, curve, image or extra"),
    "run_id": ("string", "the trial's MLflow run id (every record but sweep)"),
    "key": ("string", "metric: its MLflow key; curve: the validation metric's key; image: the per-image key as "
                      "logged ('<subset>[-t_<condition>]/<model width key>'); extra: which report's data"),
    "step": ("int64", "curve: the optimizer step of the value (the run's own steps, from 0)"),
    "image": ("int64", "image, extra: index of the validation image"),
    "value": ("float64", "metric: final value; curve: value at step; image, extra: nats/token of that image"),
    "subset": ("string", "image: the validation subset ('all', 'held_out', ...)"),
    "condition": ("string", "image: the task vector the image was scored under: own, permuted, mean, ..."),
    "model": ("string", "image: the model's width key (s1, s1_2, ...); extra: the report's model name"),
    "t1": ("float64", "extra figure4/t1: the value the scale coordinate t1 was set to"),
    "trial": ("string", "run: the Ray Tune trial name"),
    "config_key": ("string", "run: experiments.config.config_key of the run's logged params"),
    "cell_config": ("string", "run: the same key without seed and init_from: equal for every seed of a cell"),
    "kind": ("string", "run: unconditional, conditional or projected"),
    "stage": ("string", "run: the experiment's stage"),
    "cell": ("string", "run: the experiment's cell"),
    "seed": ("int64", "run: the seed"),
    "source_run": ("string", "run: the MLflow run whose final weights it started from ('' if from scratch)"),
    "source_cell": ("string", "run: that run's cell ('' if from scratch)"),
    "precision": ("string", "run: fp32 or bf16 (param train.precision, else train.bf16 true -> bf16)"),
    "steps": ("int64", "run: train.steps"),
    "wall_time_s": ("float64", "run: end minus start of its MLflow run (a resumed run counts its pauses)"),
    "weights_sha256": ("string", "run: '<file>:<sha256>' of each final weights file (model/ artifact), ';'-joined"),
    "commit": ("string", "run: the code's commit that trained it (MLflow's git tag, '-dirty' if so)"),
    "cpu_model": ("string", "run: the CPU that trained it ('unknown' for runs from before it was recorded)"),
    "cpu_flags": ("string", "run: that CPU's flags (avx512_bf16, amx_bf16 decide bf16's speed)"),
    "status": ("string", "run: the MLflow status (FINISHED)"),
    "start_ms": ("int64", "run: MLflow start time, ms since the epoch"),
    "end_ms": ("int64", "run: MLflow end time, ms since the epoch"),
    "detail": ("string", "sweep: JSON of the sweep run (tags, params, metrics, status, times); extra: JSON"),
}
RUN_COLUMNS = ("run_id", "trial", "config_key", "cell_config", "kind", "stage", "cell", "seed", "source_run",
               "source_cell", "precision", "steps", "wall_time_s", "weights_sha256", "commit", "cpu_model",
               "cpu_flags", "status", "start_ms", "end_ms")
WEIGHT_FILES = ("model.safetensors", "projectable.safetensors")  # experiments.run.trainees' final weights


class EvidenceError(ValueError):
    """An evidence file that cannot be read, or evidence files that must not be combined."""


def evidence_path(reports_dir: str | Path, scale: str, sweep_id: str) -> Path:
    """``<reports>/<scale>/evidence/<sweep id>.parquet``."""
    return Path(reports_dir) / scale / "evidence" / f"{sweep_id}.parquet"


def _arrow_schema():
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}
    schema = pa.schema([(name, types[kind]) for name, (kind, _) in COLUMNS.items()])
    return schema.with_metadata({SCHEMA_KEY: str(SCHEMA_VERSION).encode()})


def _conform(rows: pd.DataFrame) -> pd.DataFrame:
    """Every column of the schema, in its order (missing ones empty); an unknown column is a bug."""
    unknown = set(rows.columns) - set(COLUMNS)
    if unknown:
        raise EvidenceError(f"evidence rows with columns outside the schema: {sorted(unknown)}")
    return rows.reindex(columns=list(COLUMNS))


def write_rows(path: str | Path, rows: pd.DataFrame, replace_runs: Iterable[str] = (),
               replace_sweep: bool = False) -> Path:
    """Append ``rows`` to the evidence file at ``path`` (created if missing), first dropping the rows of the
    runs ``replace_runs`` (a run written again) and, with ``replace_sweep``, the sweep row. The file is
    rewritten whole and renamed into place, so a reader never sees half of it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    old = _read_table(path) if path.is_file() else pd.DataFrame(columns=list(COLUMNS))
    drop = old.run_id.isin(set(replace_runs)) | ((old.record == "sweep") & replace_sweep)
    frames = [frame for frame in (old[~drop], _conform(rows)) if not frame.empty]
    table = pd.concat(frames, ignore_index=True) if frames else _conform(rows)
    arrow = pa.Table.from_pandas(_conform(table), schema=_arrow_schema(), preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as tmp:
        pq.write_table(arrow, tmp.name, compression="zstd")
    os.chmod(tmp.name, 0o644)  # a file to commit, not the private temporary one
    os.replace(tmp.name, path)
    if path.stat().st_size > MAX_BYTES:
        print(f"{path}: {path.stat().st_size / 1e6:.1f} MB, more than the {MAX_BYTES / 1e6:.0f} MB an evidence file "
              "is meant to take beside the reports", file=sys.stderr)
    return path


def _read_table(path: Path) -> pd.DataFrame:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
        raise EvidenceError(f"{path}: not a readable evidence file ({err})") from err
    version = (table.schema.metadata or {}).get(SCHEMA_KEY)
    if version is None or int(version) != SCHEMA_VERSION:
        raise EvidenceError(f"{path}: evidence schema {version and version.decode()}, this code reads "
                            f"{SCHEMA_VERSION}; write it again with `python -m experiments.reporting backfill <sweep id>` "
                            "from its store, or read it with the commit that wrote it")
    return table.to_pandas()


# ------------------------------------------------------------------------------------------------
# Reading


class Evidence(NamedTuple):
    """One sweep's evidence, or several merged (``merge_evidence``)."""

    sweeps: list[dict]  # each sweep run: {run_id, tags, params, metrics, status, start_time, end_time}
    runs: pd.DataFrame  # one row per trial run (RUN_COLUMNS)
    metrics: pd.DataFrame  # run_id, key, value: final values
    curves: pd.DataFrame  # run_id, key, step, value
    images: pd.DataFrame  # run_id, key, subset, condition, model, image, value
    extras: pd.DataFrame  # run_id, key, model, t1, image, value, detail

    @property
    def sweep_ids(self) -> list[str]:
        return [sweep["tags"].get("sweep_id", "?") for sweep in self.sweeps]

    @property
    def finished(self) -> bool:
        return all(sweep["status"] == "FINISHED" for sweep in self.sweeps)


def load_evidence(path: str | Path) -> Evidence:
    """The one reader of evidence files: the sweep and its runs' records, split by kind (``COLUMNS``)."""
    path = Path(path)
    if not path.is_file():
        raise EvidenceError(f"{path}: no such evidence file")
    table = _read_table(path)
    sweeps = [json.loads(text) for text in table.loc[table.record == "sweep", "detail"]]
    if len(sweeps) != 1:
        raise EvidenceError(f"{path}: {len(sweeps)} sweep records, expected 1 (a file holds one sweep)")
    of = lambda record, columns: table.loc[table.record == record, list(columns)].reset_index(drop=True)
    runs = of("run", RUN_COLUMNS)
    runs = runs.astype({"seed": "int64", "steps": "int64"}) if not runs.empty else runs
    return Evidence(
        sweeps=sweeps,
        runs=runs,
        metrics=of("metric", ("run_id", "key", "value")),
        curves=of("curve", ("run_id", "key", "step", "value")),
        images=of("image", ("run_id", "key", "subset", "condition", "model", "image", "value")),
        extras=of("extra", ("run_id", "key", "model", "t1", "image", "value", "detail")),
    )


# sweep params that change what a report says: merged sweeps must agree on them
REPORTED_PARAMS = ("experiment.baselines", "experiment.margin")


def merge_evidence(parts: Sequence[Evidence]) -> Evidence:
    """The partial sweeps of one experiment and scale as one: their runs side by side. Refused when they
    are of different experiments or scales, differ in a reported param or a stage's steps, mix
    precisions, train one cell with different configs, or hold the same cell and seed twice."""
    if not parts:
        raise EvidenceError("no evidence to merge")
    sweeps = [sweep for part in parts for sweep in part.sweeps]
    for tag in ("experiment", "scale"):
        if values := _disagreeing(sweeps, "tags", tag):
            raise EvidenceError(f"evidence of sweeps {_ids(sweeps)} is of different {tag}s {values}; "
                                "merge only the partial sweeps of one experiment at one scale")
    for key in sorted({k for sweep in sweeps for k in sweep["params"]}):
        reported = key in REPORTED_PARAMS or (key.startswith("experiment.stages.") and key.endswith(".steps"))
        if reported and (values := _disagreeing(sweeps, "params", key)):
            raise EvidenceError(f"sweeps {_ids(sweeps)} differ in {key} ({values}); their runs are not one "
                                "experiment. Remove the evidence file of the one not meant")
    precisions = [set(part.runs.precision) for part in parts]
    if len(parts) > 1 and any(p != precisions[0] for p in precisions):
        raise EvidenceError(f"sweeps {_ids(sweeps)} were trained in different precisions "
                            f"({[sorted(p) for p in precisions]}); a report never mixes them: rerun one sweep "
                            "in the other's precision, or remove its evidence file")
    runs = pd.concat([part.runs for part in parts], ignore_index=True)
    configs = runs.groupby("cell").cell_config.unique()
    mixed = {cell: list(keys) for cell, keys in configs.items() if len(keys) > 1}
    if mixed:
        raise EvidenceError(f"sweeps {_ids(sweeps)} train the same cell with different configs "
                            f"(cell -> config keys: {mixed}); a report never mixes them. Remove the evidence file "
                            "of the sweep not meant (reports/<scale>/evidence/<sweep id>.parquet), or pick sweeps "
                            "with PROJECTABLE_REPORT_SWEEPS")
    twice = runs[runs.duplicated(["cell", "seed"], keep=False)]
    if len(parts) > 1 and not twice.empty:
        pairs = sorted(set(zip(twice.cell, twice.seed)))
        raise EvidenceError(f"sweeps {_ids(sweeps)} both hold cell and seed {pairs}; keep one evidence file of each")
    join = lambda field: pd.concat([getattr(part, field) for part in parts], ignore_index=True)
    return Evidence(sweeps, runs, join("metrics"), join("curves"), join("images"), join("extras"))


def missing_seeds(evidence: Evidence) -> dict[str, list[int]]:
    """Cell -> the seeds its declaration asks for that ``evidence`` lacks, where any of its sweeps is a partial
    sweep of some seeds (``experiment.seed_subset``); {} for whole sweeps. A cell's seeds: its own ``seeds``, else
    the experiment's override for it, else (a continuation) those of the cell it starts from, else the
    experiment's count, else the scale's (as the sweep's params record them; a count n is seeds 0..n-1)."""
    if not any(is_partial(sweep["params"]) for sweep in evidence.sweeps):
        return {}
    params = evidence.sweeps[0]["params"]
    runs = evidence.runs[evidence.runs.status == "FINISHED"]
    stage_of = dict(zip(runs.cell, runs.stage))

    def own(cell: str) -> str | None:
        for key in (f"experiment.stages.{stage_of.get(cell)}.cells.{cell}.seeds", f"experiment.seed_overrides.{cell}"):
            if key in params:
                return params[key]
        return None

    out = {}
    for cell, group in runs.groupby("cell"):
        sources = [source for source in group.source_cell if source in stage_of]
        value = own(cell) or (own(sources[0]) if sources else None)
        value = value or params.get("experiment.seeds") or params.get("budget.seeds") or "1"
        declared = set(json.loads(value)) if value.strip().startswith("[") else set(range(int(value)))
        if missing := sorted(declared - set(group.seed)):
            out[str(cell)] = missing
    return out


def _disagreeing(sweeps: Sequence[dict], field: str, key: str) -> list[str]:
    """The different values the sweeps' ``field`` (tags or params) holds under ``key``, sorted; [] where they
    agree (a sweep without it counts as None)."""
    values = {sweep[field].get(key) for sweep in sweeps}
    return sorted(map(str, values)) if len(values) > 1 else []


def _ids(sweeps: Sequence[dict]) -> str:
    return ", ".join(sweep["tags"].get("sweep_id", "?") for sweep in sweeps)


def trials_of(evidence: Evidence, per_image: bool = False) -> pd.DataFrame:
    """The runs as ``tracking.sweeps.load_trials`` returns them from the store (tags, status, final
    metrics), with ``per_image`` the ``attach_per_image`` column too."""
    runs = evidence.runs
    metrics = evidence.metrics.pivot_table(index="run_id", columns="key", values="value", aggfunc="last")
    frame = pd.DataFrame({
        "trial": runs.trial, "stage": runs.stage, "cell": runs.cell, "seed": runs.seed.astype(int),
        "kind": runs.kind, "status": runs.status,
        # what the run started from (its lineage, ``reporting.toolkit.lineage_ids``), as the store holds it
        "init_cell": [cell or None for cell in runs.source_cell],
        "init_from": [None if not source else source if "/" in source else f"runs:/{source}/model"
                      for source in runs.source_run],
        "run_id": runs.run_id, "steps": runs.steps.astype(int),
        "start": runs.start_ms, "end": runs.end_ms,
    })
    frame = frame.join(metrics, on="run_id")
    if per_image:
        by_run = {run_id: {key: group.sort_values("image").value.tolist() for key, group in images.groupby("key")}
                  for run_id, images in evidence.images.groupby("run_id")}
        frame = frame.assign(per_image=[by_run.get(run_id) for run_id in frame.run_id])
    return frame.sort_values(["stage", "cell", "seed"]).reset_index(drop=True)


def histories_of(evidence: Evidence, run_ids: Sequence[str], keys: Sequence[str]) -> pd.DataFrame:
    """``tracking.sweeps.metric_histories`` from the curve records: run_id, key, step, value."""
    curves = evidence.curves
    kept = curves[curves.run_id.isin(run_ids) & curves.key.isin(keys)]
    return kept[["run_id", "key", "step", "value"]].astype({"step": "int64"}).reset_index(drop=True)


def sweep_run_of(evidence: Evidence):
    """What the reports read of the sweep's MLflow run (``info``, ``data.tags/params/metrics``), from the
    evidence. Merged sweeps: the sweep ids and the tags that differ joined by ' + ', wall times added, the
    last end time."""
    sweeps = evidence.sweeps
    joined = lambda values: " + ".join(dict.fromkeys(str(v) for v in values))
    tags = {key: joined(sweep["tags"].get(key, "?") for sweep in sweeps)
            for key in dict.fromkeys(k for sweep in sweeps for k in sweep["tags"])}
    params = {key: value for sweep in reversed(sweeps) for key, value in sweep["params"].items()}
    metrics = {key: value for sweep in reversed(sweeps) for key, value in sweep["metrics"].items()}
    if "wall_time_s" in metrics:
        metrics["wall_time_s"] = sum(sweep["metrics"].get("wall_time_s", 0.0) for sweep in sweeps)
    info = SimpleNamespace(run_id=None, start_time=min(s["start_time"] for s in sweeps),
                           end_time=max((s["end_time"] or 0) for s in sweeps) or None,
                           status="FINISHED" if evidence.finished else "RUNNING")
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, params=params, metrics=metrics),
                           evidence=evidence)


def parse_image_key(key: str) -> tuple[str, str, str]:
    """'<subset>[-t_<condition>]/<model>' -> (subset, condition, model); a plain subset is the own t."""
    subset, _, model = key.rpartition("/")
    if not subset:
        raise EvidenceError(f"per-image key {key!r} is not '<subset>/<model>'")
    subset, mark, condition = subset.partition(CONDITION_MARK)
    return subset, (condition if mark else OWN), model


# ------------------------------------------------------------------------------------------------
# Writing, from the store (through the same renaming of pre-schema metric names as ``tracking.sweeps``)


def precision_of(params: Mapping[str, str]) -> str:
    """fp32 or bf16: the ``train.precision`` param where a run logged one, else ``train.bf16`` (absent is
    its default, False)."""
    if params.get("train.precision"):
        return str(params["train.precision"])
    return "bf16" if str(params.get("train.bf16", "False")).lower() in ("true", "1") else "fp32"


def cell_config_key(params: Mapping[str, str]) -> str:
    """The config key of a run's params without its seed and starting weights: every seed of one cell shares it."""
    from experiments.config import config_key

    return config_key({k: v for k, v in params.items() if k not in ("seed", "init_from")})


def sweep_record(run) -> pd.DataFrame:
    """The sweep row of an MLflow sweep run."""
    detail = {"run_id": run.info.run_id, "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")},
              "params": dict(run.data.params), "metrics": dict(run.data.metrics), "status": run.info.status,
              "start_time": run.info.start_time, "end_time": run.info.end_time}
    return pd.DataFrame([{"record": "sweep", "detail": json.dumps(detail, sort_keys=True)}])


def run_records(client, run, scratch: str | Path) -> pd.DataFrame:
    """Every record of one finished trial run (run, metric, curve, image), its artifacts fetched into
    ``scratch``."""
    tags, params, run_id = run.data.tags, run.data.params, run.info.run_id
    model = Path(client.download_artifacts(run_id, "model", str(scratch)))
    weights = ";".join(f"{name}:{sha256(model / name)}" for name in WEIGHT_FILES if (model / name).is_file())
    init = tags.get("init_from", "")
    source = init.removeprefix("runs:/").split("/")[0] if init.startswith("runs:/") else init
    commit = tags.get("mlflow.source.git.commit", "unknown") + ("-dirty" if tags.get("git_dirty") == "true" else "")
    row = {
        "record": "run", "run_id": run_id, "trial": tags.get("trial", run.info.run_name),
        "config_key": _config_key(params), "cell_config": cell_config_key(params), "kind": tags.get("kind"),
        "stage": tags.get("stage"), "cell": tags.get("cell"), "seed": int(tags.get("seed", 0)),
        "source_run": source, "source_cell": tags.get("init_cell", ""), "precision": precision_of(params),
        "steps": int(float(params.get("train.steps", "nan"))),
        "wall_time_s": ((run.info.end_time or run.info.start_time) - run.info.start_time) / 1000,
        "weights_sha256": weights, "commit": commit, "cpu_model": tags.get("cpu_model", "unknown"),
        "cpu_flags": tags.get("cpu_flags", ""), "status": run.info.status,
        "start_ms": run.info.start_time, "end_ms": run.info.end_time,
    }
    # pre-schema metric names are written under the schema's (tracking.sweeps.schema_metrics): schema key -> logged key
    logged = schema_metrics({key: key for key in run.data.metrics}, run_width(run))
    metrics = [{"record": "metric", "run_id": run_id, "key": key, "value": float(run.data.metrics[old])}
               for key, old in sorted(logged.items())]
    curves = [{"record": "curve", "run_id": run_id, "key": key, "step": m.step, "value": m.value}
              for key, old in sorted(logged.items()) if key.startswith("val/")
              for m in client.get_metric_history(run_id, old)]
    images = []
    try:
        path = client.download_artifacts(run_id, "eval/per_image_nats.json", str(scratch))
        per_image = schema_per_image(json.loads(Path(path).read_text()), run_width(run))
    except Exception:  # noqa: BLE001 - a run from before per-image losses were logged
        per_image = {}
    for key, losses in sorted(per_image.items()):
        subset, condition, width = parse_image_key(key)
        images += [{"record": "image", "run_id": run_id, "key": key, "subset": subset, "condition": condition,
                    "model": width, "image": i, "value": float(v)} for i, v in enumerate(losses)]
    return pd.DataFrame([row, *metrics, *curves, *images])


def _config_key(params: Mapping[str, str]) -> str:
    from experiments.config import config_key

    return config_key(dict(params))


# extra evidence a report computes from a finished run's final weights: (tracking uri, MLflow run, cache
# folder for downloaded weights and data) -> rows of record 'extra' (none for runs it does not need);
# declared per experiment by the reports (``experiments.reporting.evidence.EXTRAS``), each with the record
# keys it writes as its ``keys`` attribute (``add_missing_extras``)
ExtraEvidence = Callable[[str, object, Path], pd.DataFrame]


class EvidenceWriter:
    """Writes one sweep's evidence file as it runs: ``trial_done(name)`` appends a finished trial's records,
    ``finish()`` every finished run not yet written and the sweep's final record."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_id: str, path: str | Path, cache: str | Path,
                 extras: Sequence[ExtraEvidence] = ()):
        self.tracking_uri, self.experiment, self.sweep_id = tracking_uri, experiment, sweep_id
        self.path, self.cache, self.extras = Path(path), Path(cache), list(extras)

    def _client_and_exp(self):
        from experiments.tracking.store import MlflowClient

        client = MlflowClient(self.tracking_uri)
        return client, client.get_experiment_by_name(self.experiment).experiment_id

    def _sweep_run(self, client, exp_id):
        found = client.search_runs([exp_id], f"tags.sweep_id = '{self.sweep_id}' and tags.role = 'sweep'")
        if not found:
            raise EvidenceError(f"no sweep {self.sweep_id} in {self.tracking_uri} (experiment {self.experiment})")
        return found[0]

    def _finished_trials(self, client, exp_id, trial: str | None = None) -> list:
        query = f"tags.sweep_id = '{self.sweep_id}' and attributes.status = 'FINISHED'"
        if trial is not None:
            query += f" and tags.trial = '{trial}'"
        runs = client.search_runs([exp_id], query, max_results=10000)
        return [run for run in runs if run.data.tags.get("role") != "sweep"]

    def _append(self, client, runs: Sequence) -> None:
        if not runs:
            return
        frames = []
        with tempfile.TemporaryDirectory() as scratch:
            for run in runs:
                folder = Path(scratch) / run.info.run_id
                folder.mkdir()
                frames.append(run_records(client, run, folder))
                frames += [extra(self.tracking_uri, run, self.cache) for extra in self.extras]
        write_rows(self.path, pd.concat(frames, ignore_index=True), replace_runs=[r.info.run_id for r in runs])

    def start(self) -> None:
        """The sweep's record as it starts (or resumes); its runs follow."""
        client, exp_id = self._client_and_exp()
        write_rows(self.path, sweep_record(self._sweep_run(client, exp_id)), replace_sweep=True)

    def trial_done(self, trial: str) -> None:
        client, exp_id = self._client_and_exp()
        self._append(client, self._finished_trials(client, exp_id, trial))

    def finish(self) -> Path:
        """The finished runs not in the file yet (trials of an earlier, interrupted session) and the sweep's
        final record (status, end time, wall time)."""
        client, exp_id = self._client_and_exp()
        written = set(load_evidence(self.path).runs.run_id) if self.path.is_file() else set()
        self._append(client, [run for run in self._finished_trials(client, exp_id) if run.info.run_id not in written])
        return write_rows(self.path, sweep_record(self._sweep_run(client, exp_id)), replace_sweep=True)


def add_missing_extras(tracking_uri: str, path: str | Path, cache: str | Path,
                       extras: Sequence[ExtraEvidence]) -> list[str]:
    """Append to the evidence file at ``path`` the extra records its runs lack, from the store that still holds
    their weights: each extra (its ``keys`` attribute names the record keys it writes) runs on every run of the
    file that has none of those keys, e.g. an extra a report added after the sweep ran. The rest of the file
    is left as it is. Returns the keys written."""
    from experiments.tracking.store import MlflowClient

    evidence = load_evidence(path)
    have = set(zip(evidence.extras.run_id, evidence.extras.key))
    client, frames = MlflowClient(tracking_uri), []
    for run_id in evidence.runs.run_id[evidence.runs.status == "FINISHED"]:
        todo = [extra for extra in extras if not any((run_id, key) in have for key in getattr(extra, "keys", ()))]
        if todo:
            run = client.get_run(run_id)
            frames += [extra(tracking_uri, run, Path(cache)) for extra in todo]
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return []
    rows = pd.concat(frames, ignore_index=True)
    write_rows(path, rows)
    return sorted(set(rows.key))


def backfill(tracking_uri: str, experiment: str, sweep_id: str, reports_dir: str | Path, cache: str | Path,
             extras: Mapping[str, Sequence[ExtraEvidence]] | None = None) -> Path:
    """Write (again) the evidence file of a sweep already in a store, every finished run of it, with the
    extra evidence ``extras[<the sweep's experiment>]``."""
    from experiments.tracking.store import MlflowClient

    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise EvidenceError(f"no experiment {experiment} in {tracking_uri}")
    sweeps = client.search_runs([found.experiment_id], f"tags.sweep_id = '{sweep_id}' and tags.role = 'sweep'")
    if not sweeps:
        raise EvidenceError(f"no sweep {sweep_id} in {tracking_uri} (experiment {experiment}); list them in the "
                            "MLflow UI (nox -s mlflow_ui) or with `mlflow runs list`")
    path = evidence_path(reports_dir, sweeps[0].data.tags["scale"], sweep_id)
    path.unlink(missing_ok=True)
    wanted = (extras or {}).get(sweeps[0].data.tags.get("experiment"), ())
    writer = EvidenceWriter(tracking_uri, experiment, sweep_id, path, cache, wanted)
    writer.start()
    return writer.finish()
