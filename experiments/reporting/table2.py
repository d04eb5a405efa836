"""Table 2 (ImageNet track) from tracked runs: M~_s vs P_s at s = 1, 1/2, 1/4, 1/8 beside the paper's numbers,
claim verdicts by the rules of ``experiments.reporting.claims``, what data the runs saw (the stand-in or ImageNet) and
what running on ImageNet takes; writes ``reports/<scale>/table2.{md,csv,png}``. ``analysis/table2.py``
calls these functions step by step."""

from __future__ import annotations

import pandas as pd

from experiments.reporting import paper_table, toolkit
from experiments.reporting.claims import Verdict
from experiments.reporting.paper_table import PaperTable, TableCells, Written
from experiments.reporting.task_use import TaskUse
from experiments.reporting.toolkit import SCALES, Provenance, ReportFiles, fmt_cell, section

# Table 2 of the paper, ImageNet validation loss (nats/token; statistical error ~0.001 for M~_s, ~0.002 for P_s).
PAPER_TABLE2: dict[tuple[str, float], float] = {
    ("Mc", 1.0): 2.176, ("Mc", 0.5): 2.211, ("Mc", 0.25): 2.264, ("Mc", 0.125): 2.332,
    ("P", 0.5): 2.210, ("P", 0.25): 2.246, ("P", 0.125): 2.297,
}
IMAGENET_REQUIREMENTS = """\
Running Table 2 on ImageNet itself takes:
- the official "Downsampled ImageNet 64x64" npz release (`train_data_batch_1.npz` .. `train_data_batch_10.npz`,
  `val_data.npz`, ~12 GB) from image-net.org, in one directory;
- task vectors for its 1.28M + 50k images: EfficientNet-Lite0 at 112 px costs ~74 ms/image one image at a
  time on 2 CPU cores, and ~9 ms/image batched (the stand-in's 3,584 images took about half a minute of the
  71 s data preparation), so ~3-4 hours on 2 cores (extrapolated); on one GPU minutes (estimated, not
  measured here); or SimCLRv2
  embeddings made elsewhere, given as `data.encoder=precomputed data.encoder_path=<dir with train.npz and
  val.npz>` (ids = image positions, float32 rows; format in projectable_data.encoders);
- the VQ-VAE (App. C.2, 512 codes) trained on ImageNet and every image tokenised once (~2.6 GB of tokens);
- the GPT runs: the paper's 24-layer source runs at 55-71 ms/step on an H200 (bf16, B=32, T=1024;
  measured separately, not in this report's runs), so
  200k steps are 3-4 GPU-hours per source run and the whole table (5 stage-1 and 4 stage-2 runs) roughly
  1-2 GPU-days; the `gpu` scale (8 layers, width 256, 2k + 1k steps) is estimated at about an hour of one
  H100/H200 including the data preparation.
Command: `nox -s reproduce_table2 -- scale=gpu data.images=imagenet64 data.imagenet_root=/path/to/imagenet64
data.train_size=null data.palette_fit_images=100000 data.tokenizer_steps=20000
data.encoder_device=cuda` (on a GPU machine; the tokenizer settings there are a suggestion, not tuned)."""


Table2Cells = TableCells


def verdicts_of(table: TableCells, margin: float) -> list[Verdict]:
    """The paper's claims that Table 2 bears on: P_s < M~_s for s <= 1/2, the gap grows as s shrinks, and the
    co-trained source loses nothing against M_1 continued alone."""
    get = table.cells.get
    return [*paper_table.p_beats_mc(get), *paper_table.gap_grows_claims(get),
            *paper_table.source_claims(table, margin, {"P": "source of P_s (mean of all its runs) vs control"})]


# The table as data: its declared cells (conf/experiment/table2.yaml), the paper's numbers (3 decimals), what it
# shows and claims; the learning curves: per s, P_s beside M~_s; at s = 1 the co-trained source beside M_1 and
# the control, and M~_1.
SPEC = PaperTable("table2", PAPER_TABLE2, claims=verdicts_of, shown=("Mc", "P"), digits=3,
                  curves_at_full=("M", "Mc"), count_column="runs", paper_title="paper (ImageNet)")

table2_cells, table2_verdicts, results_frame = SPEC.cells, SPEC.verdicts, SPEC.results_frame
curve_specs, task_use_of, plot = SPEC.curve_specs, SPEC.task_use, SPEC.plot


def _runs_each(table: TableCells) -> str:
    """How many runs each P_s cell averages, as the protocol line says it: "2 runs each", "1-2 runs each"."""
    runs = sorted({cell.seeds for s in SCALES[1:] if (cell := table.cells.get(("P", s))) is not None}) or [0]
    count = str(runs[0]) if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
    return f"{count} run{'' if count == '1' else 's'} each"


def markdown(table: TableCells, verdicts: list[Verdict], prov: Provenance, margin: float, summary: dict | None,
             trials: pd.DataFrame, uses: list[TaskUse] = ()) -> str:
    """reports/<scale>/table2.md, without its learning curves."""
    stand_in = bool(summary and summary.get("stand_in"))
    title = "ImageNet STAND-IN (SynthMNIST renders)" if stand_in else "ImageNet 64x64"
    steps1, steps2 = paper_table.stage_steps(prov)
    intro = [
        f"{paper_table.OURS} Paper: Table 2 of Zhmoginov et al. (ImageNet 64x64, 32x32 tokens of 512 codes, SimCLRv2 "
        "task vectors, 24-layer source; statistical error ~0.001 for M~_s, ~0.002 for P_s). The s = 1 cell of P_s "
        "is the co-trained source (mean over all P_s runs, every width and seed).",
    ]
    sections = [
        f"Unconditional M_1 (stage 1, the source every P_s starts from): {fmt_cell(table.cells.get(('M', 1.0)))}. "
        f"Control, M_1 continued alone for the stage-2 steps: {fmt_cell(table.control)}.",
        "",
        *section("Data", *toolkit.data_lines(summary)),
        *section(
            "Protocol",
            f"- Stage 1: M~_s from scratch at s = 1, 1/2, 1/4, 1/8 and the unconditional M_1, {steps1} steps.",
            f"- Stage 2: P_1/2, P_1/4, P_1/8 ({_runs_each(table)}) start from stage 1's M_1 and keep tuning it for "
            f"{steps2} steps (Eq. 2, w_src = 1); the control continues M_1 alone as long.",
            toolkit.baselines_line(table.baselines, steps1, steps2),
        ),
    ]
    written = Written(verdicts, prov, trials, uses=uses)
    return paper_table.markdown(SPEC, table, f"# Table 2 at scale `{prov.scale}`: validation loss (nats/token), "
                                f"{title}", intro, sections, written,
                                closing=section("Running on ImageNet", IMAGENET_REQUIREMENTS))


def write_report(out_dir, table: TableCells, verdicts: list[Verdict], prov: Provenance, margin: float,
                 summary: dict | None, trials: pd.DataFrame, curves: pd.DataFrame | None = None,
                 uses: list[TaskUse] = ()) -> ReportFiles:
    """table2.md, .csv, .png, table2_task_use.csv and table2_curves.{png,csv}."""
    stand_in = " (stand-in data)" if summary and summary.get("stand_in") else ""
    return paper_table.render(SPEC, out_dir, table, markdown(table, verdicts, prov, margin, summary, trials, uses),
                              Written(verdicts, prov, trials, curves, uses),
                              f"Table 2{stand_in}, scale {prov.scale} (sweep {prov.sweep_id})")
