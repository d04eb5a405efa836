"""The pre-declared equivalence check of bf16 against fp32 training (``conf/experiment/precision_check.yaml``):
for each compared pair of cells, |loss(bf16) - loss(fp32)| + t(0.975, df) x SE < margin by ``claims.equivalent``,
paired by seed (seed i of both precisions starts from the same initialisation and data stream: the seed is the
lineage both cells share) and over the validation images. Reads the sweep's evidence file alone.

    python -m experiments.reporting.precision_check reports/cpu/evidence/<sweep id>.parquet [reports/cpu]
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from experiments.reporting import claims, toolkit
from experiments.run.evaluate import val_key, width_key
from experiments.tracking.evidence import Evidence, load_evidence

NAME = "precision_check"


def cell_of(evidence: Evidence, cell: str, width: float) -> claims.Cell | None:
    """The final validation loss of a cell's finished runs (model of ``width``, own task vectors, subset
    'all'), one lineage per seed, with per-image losses for the paired SE."""
    runs = evidence.runs[(evidence.runs.cell == cell) & (evidence.runs.status == "FINISHED")].sort_values("seed")
    if runs.empty:
        return None
    metrics = evidence.metrics.set_index(["run_id", "key"]).value
    images = evidence.images[(evidence.images.subset == "all") & (evidence.images.condition == "own")
                             & (evidence.images.model == width_key(width))]
    means, ses, per_image = [], [], []
    for run_id in runs.run_id:
        means.append(float(metrics[(run_id, val_key("all", width))]))
        ses.append(float(metrics[(run_id, val_key("all", width, "nats_se"))]))
        per_image.append(images[images.run_id == run_id].sort_values("image").value.tolist())
    lineages = [f"seed{seed}" for seed in runs.seed]
    return claims.combine_runs(means, ses, per_image if all(per_image) else None, lineages)


def verdicts(evidence: Evidence, pairs: Mapping[str, Mapping], margin: float) -> list[claims.Verdict]:
    """One equivalence verdict per compared model (``experiment.pairs``: name -> label, fp32 cell, bf16 cell,
    width)."""
    return [claims.equivalent("bf16 training is equivalent to fp32", f"{pair.get('label', name)}: bf16 vs fp32",
                              cell_of(evidence, pair["bf16"], float(pair["width"])),
                              cell_of(evidence, pair["fp32"], float(pair["width"])), margin)
            for name, pair in pairs.items()]


def step_times(evidence: Evidence) -> pd.DataFrame:
    """Median seconds per optimizer step of each cell (wall time of its runs over their steps, evaluation,
    checkpoints and start included), and its precision."""
    runs = evidence.runs[evidence.runs.status == "FINISHED"]
    per_run = runs.assign(s_per_step=runs.wall_time_s / runs.steps)
    return (per_run.groupby(["cell", "precision"], as_index=False)
            .agg(runs=("run_id", "size"), steps=("steps", "first"), s_per_step=("s_per_step", "median"),
                 wall_time_s=("wall_time_s", "sum")))


def frame(results: list[claims.Verdict], pairs: Mapping[str, Mapping], evidence: Evidence,
          margin: float) -> pd.DataFrame:
    rows = []
    for name, verdict in zip(pairs, results):
        fp32 = cell_of(evidence, pairs[name]["fp32"], float(pairs[name]["width"]))
        bf16 = cell_of(evidence, pairs[name]["bf16"], float(pairs[name]["width"]))
        rows.append({"model": pairs[name].get("label", name), "fp32": fp32.mean if fp32 else float("nan"),
                     "bf16": bf16.mean if bf16 else float("nan"), "seeds": min(fp32.seeds, bf16.seeds) if fp32 and bf16
                     else 0, "difference": verdict.difference, "t_se": verdict.t_se, "df": verdict.df,
                     "bound": abs(verdict.difference) + verdict.t_se, "margin": margin,
                     "equivalent": verdict.held})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, times: pd.DataFrame, evidence: Evidence, path: Path,
             results: Sequence[claims.Verdict]) -> str:
    """reports/<scale>/precision_check.md: the verdicts ``results`` (one per compared model, ``verdicts``) as
    ``table`` (``frame``) holds them, the time per step, and where the runs come from."""
    sweep = evidence.sweeps[0]
    runs = evidence.runs
    adopted = bool(table.equivalent.fillna(False).all()) and len(table) > 0
    lines = [
        "# bf16 against fp32 training: the pre-declared equivalence check",
        "",
        "Rule (`experiments/conf/experiment/precision_check.yaml`, fixed before the runs): bf16 is equivalent for "
        "a model when |loss(bf16) - loss(fp32)| + t(0.975, df) x SE < margin, seed i of both precisions paired as "
        "one lineage; the cpu scale adopts bf16 only if every model is equivalent.",
        "",
        toolkit.claim_rule_line(results),
        "",
        "| model | fp32 | bf16 | seeds | bf16 - fp32 | t x SE | df | abs(diff) + t x SE | margin | equivalent |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        lines.append(f"| {row.model} | {row.fp32:.4f} | {row.bf16:.4f} | {row.seeds} | {row.difference:+.4f} | "
                     f"{row.t_se:.4f} | {row.df:.1f} | {row.bound:.4f} | {row.margin:g} | "
                     f"{'yes' if row.equivalent else 'no' if row.equivalent is False else 'not tested'} |")
    verdict = "bf16 is adopted for the cpu scale" if adopted else "the check fails; the cpu scale keeps fp32"
    lines += ["", f"**Verdict: {verdict}.**", "",
              "## Time per step (wall time of each run over its steps; evaluation, checkpoints and start included)",
              "",
              "Wall times include whatever else ran on the machine while each run trained, so they compare the "
              "precisions only where both ran under the same load; `benchmarks/precision.py` compares them step by "
              "step, alternating.",
              "", "| cell | precision | runs | steps | s/step (median) | wall time, all runs (s) |",
              "|---|---|---|---|---|---|"]
    for row in times.itertuples():
        lines.append(f"| {row.cell} | {row.precision} | {row.runs} | {row.steps} | {row.s_per_step:.3f} | "
                     f"{row.wall_time_s:.0f} |")
    bf16_units = lambda flags: ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in str(flags).split())
    machines = sorted({f"{model} ({bf16_units(flags) or 'no bf16 units'})"
                       for model, flags in zip(runs.cpu_model, runs.cpu_flags)})
    lines += ["", "## Provenance", "",
              f"- sweep `{sweep['tags'].get('sweep_id', '?')}` ({sweep.get('status')}), evidence `{path.name}`",
              f"- commits: {', '.join(sorted(set(runs.commit)))}",
              f"- machine: {'; '.join(machines)}",
              f"- sweep wall time: {sweep.get('metrics', {}).get('wall_time_s', float('nan')):.0f} s",
              ""]
    return "\n".join(lines)


def declared(scale: str) -> tuple[dict, float]:
    """The compared pairs and the margin, as the experiment's config declares them."""
    from experiments.config import compose, to_plain

    cfg = compose(["experiment=precision_check", f"scale={scale}"])
    return to_plain(cfg.experiment.pairs), float(cfg.experiment.margin)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    path = Path(argv[0])
    out_dir = Path(argv[1]) if len(argv) > 1 else path.parent.parent
    evidence = load_evidence(path)
    pairs, margin = declared(evidence.sweeps[0]["tags"].get("scale", "cpu"))
    results = verdicts(evidence, pairs, margin)
    table = frame(results, pairs, evidence, margin)
    files = toolkit.write_report(out_dir, NAME, markdown(table, step_times(evidence), evidence, path, results), table)
    print(files.markdown.read_text())


if __name__ == "__main__":
    main(sys.argv[1:])
