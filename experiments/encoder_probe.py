"""Is the ImageNet track's task vector any good? Frozen embeddings of three encoders on the stand-in:
``python -m experiments.encoder_probe scale=cpu`` -> ``reports/<scale>/encoders.{md,csv}``.

Encoders: the SimCLR trained on the stand-in's training renders (the track's default, ``data.encoder=simclr``),
EfficientNet-Lite0 (ImageNet-supervised), and the same SimCLR network untrained (its seeded initialisation);
raw pixels as a reference row. Per encoder, on the fixed validation renders:
  probe_accuracy     digit accuracy of a logistic regression trained on the TRAINING embeddings (standardised)
  probe_accuracy_t   the same on t, the data.task_dim-d standardised / PCA-whitened vector the models see
  spearman           Spearman correlation between pairwise embedding distances (standardised, Euclidean) and
                     pairwise distances of the renders' TRUE SynthMNIST t (18-d), over all validation pairs;
                     its standard error by a bootstrap over images
  r2_<group>         validation R^2 of a ridge regression from the embedding to the true t's coordinates,
                     averaged within each group of App. C.3's coordinates (which parts of t the embedding sees)
The embeddings are the track's own caches (``projectable_data.imagenet_tokens.embed`` under
``dataset_directory``): a Table 2 ``prepare_data`` of the same config has already made the SimCLR ones. Any
further argument is a Hydra override of the Table 2 config (e.g. ``data.simclr_epochs=5``).
"""

from __future__ import annotations

from experiments import telemetry

telemetry.apply()  # an entry point

import argparse
import dataclasses
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from projectable_data.encoders import embed_dataset
from projectable_data.imagenet_tokens import (
    ImageNetTokensConfig,
    dataset_directory,
    embed,
    encoder_summary,
    file_lock,
    fit_task_transform,
    load_image_sets,
    simclr_config,
    standin_items,
)
from projectable_data.simclr import SimCLREncoder, init_simclr
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.preprocessing import StandardScaler

from experiments.config import build_section, code_root, compose, to_container
from experiments.tracking.store import git_commit, machine

ENCODERS = ("simclr", "efficientnet_lite0", "random_simclr", "pixels")
LABELS = {"simclr": "SimCLR (trained on the training renders)", "efficientnet_lite0": "EfficientNet-Lite0 (ImageNet)",
          "random_simclr": "SimCLR network, untrained", "pixels": "raw pixels (reference)"}
# App. C.3's coordinates of t, grouped by what they set
T_GROUPS = {"geometry": range(0, 4), "warp": range(4, 7), "channel_shift": range(7, 10),
            "texture": range(10, 15), "colour": range(15, 18)}
BOOTSTRAP = 100


class Split(NamedTuple):
    embeddings: np.ndarray  # (N, E) float32
    labels: np.ndarray  # (N,) digits
    task: np.ndarray  # (N, 18) the renders' true SynthMNIST t


def encoder_embeddings(config: ImageNetTokensConfig, cache_dir: str) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """{encoder: (train (N, E), val (M, E))} from the track's caches (made here where missing), and the
    images' labels and true t."""
    directory = dataset_directory(config, cache_dir)
    out = {}
    with file_lock(directory / ".lock"):
        train, val = load_image_sets(config, directory)
        for name in ("simclr", "efficientnet_lite0"):
            cfg = dataclasses.replace(config, encoder=name)
            out[name] = (np.asarray(embed(cfg, train.images, "train", directory).embeddings),
                         np.asarray(embed(cfg, val.images, "val", directory, train_images=train.images).embeddings))
        untrained = SimCLREncoder(init_simclr(simclr_config(config)))
        out["random_simclr"] = tuple(
            np.asarray(embed_dataset(untrained, s.images, directory / f"embeddings-{split}", dataset_id=split,
                                     batch_size=256).embeddings) for split, s in (("train", train), ("val", val)))
        out["pixels"] = (train.images.reshape(len(train.images), -1).astype(np.float32),
                         val.images.reshape(len(val.images), -1).astype(np.float32))
    items = standin_items(config)
    return out, {"train": (train.labels, items[0].task), "val": (val.labels, items[1].task)}


def pairwise(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, N) Euclidean distances."""
    x = np.asarray(x, dtype=np.float64)
    squares = (x * x).sum(1)
    return np.sqrt(np.maximum(squares[:, None] + squares[None] - 2 * x @ x.T, 0.0))


def distance_spearman(embedding: np.ndarray, task: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """(Spearman rho of pairwise embedding vs true-t distances over all pairs, bootstrap SE over images)."""
    d_e, d_t = pairwise(embedding), pairwise(task)
    n = len(task)
    upper = np.triu_indices(n, 1)
    rho = float(spearmanr(d_e[upper], d_t[upper]).statistic)
    rng, draws = np.random.default_rng(seed), []
    for _ in range(BOOTSTRAP):
        index = rng.choice(n, n)
        a, b = np.triu_indices(n, 1)
        keep = index[a] != index[b]  # a resampled image paired with itself says nothing
        a, b = index[a[keep]], index[b[keep]]
        draws.append(spearmanr(d_e[a, b], d_t[a, b]).statistic)
    return rho, float(np.std(draws, ddof=1))


def probe(train: np.ndarray, train_labels: np.ndarray, val: np.ndarray, val_labels: np.ndarray) -> float:
    """Validation accuracy of a logistic regression on standardised features fit on the training ones."""
    scaler = StandardScaler().fit(train)
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(train), train_labels)
    return float((model.predict(scaler.transform(val)) == val_labels).mean())


def t_r2(train: np.ndarray, train_task: np.ndarray, val: np.ndarray, val_task: np.ndarray) -> dict[str, float]:
    """Validation R^2 per t coordinate of a ridge regression from the embedding (its penalty chosen by
    leave-one-out on the training embeddings), averaged per group."""
    scaler = StandardScaler().fit(train)
    ridge = RidgeCV(alphas=np.logspace(-2, 5, 15)).fit(scaler.transform(train), train_task)
    predicted = ridge.predict(scaler.transform(val))
    r2 = 1 - ((predicted - val_task) ** 2).sum(0) / ((val_task - val_task.mean(0)) ** 2).sum(0)  # (18,)
    return {f"r2_{group}": float(np.mean(r2[list(index)])) for group, index in T_GROUPS.items()}


def evaluate(config: ImageNetTokensConfig, embeddings: dict, targets: dict) -> pd.DataFrame:
    (train_labels, train_task), (val_labels, val_task) = targets["train"], targets["val"]
    rows = []
    for name in ENCODERS:
        train, val = embeddings[name]
        transform = fit_task_transform(train, min(config.task_dim, train.shape[1]))
        accuracy = probe(train, train_labels, val, val_labels)
        scaler = StandardScaler().fit(train)
        rho, rho_se = distance_spearman(scaler.transform(val), val_task)
        rows.append({"encoder": name, "description": LABELS[name], "dim": train.shape[1],
                     "probe_accuracy": accuracy,
                     "probe_accuracy_se": float(np.sqrt(accuracy * (1 - accuracy) / len(val_labels))),
                     "probe_accuracy_t": probe(transform(train), train_labels, transform(val), val_labels),
                     "spearman": rho, "spearman_se": rho_se,
                     **t_r2(train, train_task, val, val_task)})
    return pd.DataFrame(rows)


def reading(frame: pd.DataFrame, batch_size: int, simclr_log: dict | None) -> list[str]:
    """Sentences drawn from the numbers: each comparison with its size against two standard errors (of the
    two rows taken as independent, which overstates the error of a difference on the same images)."""
    row = frame.set_index("encoder")
    lines = []

    def compare(metric: str, a: str, b: str, what: str, points: bool) -> str:
        da = row.loc[a, metric] - row.loc[b, metric]
        se = float(np.hypot(row.loc[a, f"{metric}_se"], row.loc[b, f"{metric}_se"]))
        size = f"{100 * da:+.1f} points" if points else f"{da:+.3f}"
        verdict = "beyond" if abs(da) > 2 * se else "within"
        return f"{what}: {size} ({verdict} two standard errors, {2 * se * (100 if points else 1):.{1 if points else 3}f})"

    comparisons = [
        ("probe_accuracy", "random_simclr", "Digit probe, trained SimCLR minus the same network untrained", True),
        ("probe_accuracy", "efficientnet_lite0", "Digit probe, SimCLR minus EfficientNet-Lite0", True),
        ("spearman", "random_simclr", "Distance correlation with the true t, trained minus untrained SimCLR", False),
        ("spearman", "efficientnet_lite0", "Distance correlation with the true t, SimCLR minus EfficientNet-Lite0",
         False),
    ]
    lines += ["- " + compare(metric, "simclr", other, what, points) + "." for metric, other, what, points in comparisons]
    best = row["spearman"].drop("pixels").idxmax()
    lines.append(f"- Of the three encoders, `{best}` embeds distances closest to the true t's "
                 f"(rho {row.loc[best, 'spearman']:.3f}); raw pixels give {row.loc['pixels', 'spearman']:.3f}.")
    for group, coords in (("colour", "t15-t17"), ("geometry", "t0-t3")):
        r2 = {k: row.loc[k, f"r2_{group}"] for k in ("simclr", "efficientnet_lite0", "random_simclr")}
        change = "less" if r2["simclr"] < r2["random_simclr"] else "more"
        lines.append(f"- {group.capitalize()} ({coords}) is linearly recoverable with R^2 {r2['simclr']:.2f} from "
                     f"SimCLR, {r2['efficientnet_lite0']:.2f} from EfficientNet-Lite0 and {r2['random_simclr']:.2f} "
                     f"from the untrained network: training made it {change} visible.")
    if simclr_log:
        chance = math.log(2 * batch_size - 1)
        lines.append(f"- SimCLR's NT-Xent fell from {simclr_log['first_epoch_loss']:.2f} (first epoch) to "
                     f"{simclr_log['last_epoch_loss']:.2f} (last) in {simclr_log['steps']} steps, against "
                     f"{chance:.2f} for views told apart at chance (log of the 2N - 1 = {2 * batch_size - 1} others).")
    lines.append("- What the loss asks for is telling each render's two views from the other renders'. Its views "
                 "jitter colour and grey out, which pushes the network to discount colour (t15-t17), and the "
                 "renders can be told apart by their texture without the digit: neither the digit probe nor the "
                 "distance to the true t is what it is trained for.")
    return lines


def markdown(frame: pd.DataFrame, config: ImageNetTokensConfig, prov: dict, simclr_log: dict | None) -> str:
    table = ["| encoder | dim | digit probe acc. | probe acc. on t | Spearman(dist, true-t dist) | R^2 geometry | "
             "R^2 warp | R^2 channel shift | R^2 texture | R^2 colour |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in frame.itertuples():
        table.append(f"| {r.description} | {r.dim} | {r.probe_accuracy:.3f} +- {r.probe_accuracy_se:.3f} | "
                     f"{r.probe_accuracy_t:.3f} | {r.spearman:.3f} +- {r.spearman_se:.3f} | {r.r2_geometry:.2f} | "
                     f"{r.r2_warp:.2f} | {r.r2_channel_shift:.2f} | {r.r2_texture:.2f} | {r.r2_colour:.2f} |")
    sim = simclr_config(config)
    trained = (f"SimCLR: width {sim.width} ({sim.embedding_dim}-d), {sim.epochs} epochs of batch {sim.batch_size} "
               f"over the {config.train_size} training renders, temperature {sim.temperature}, lr {sim.lr}")
    if simclr_log:
        trained += (f"; NT-Xent {simclr_log['first_epoch_loss']:.3f} (first epoch) -> "
                    f"{simclr_log['last_epoch_loss']:.3f} (last), {simclr_log['steps']} steps, "
                    f"trained in {simclr_log['seconds']:.0f} s")
    return "\n".join([
        f"# Encoders of the ImageNet track, scale {prov['scale']}: linear probes on the stand-in",
        "",
        "**Stand-in, not ImageNet**: SynthMNIST renders "
        f"({config.image_side}x{config.image_side}, digit labels; {config.train_size} training, {config.val_size} "
        "validation). Each render's TRUE SynthMNIST t is known here (never used as a task vector by the track), "
        "so the embeddings can be compared with it.",
        "",
        "## What was measured",
        "- digit probe: logistic regression (scikit-learn, standardised features) trained on the training "
        "embeddings, accuracy on the validation renders (+- binomial SE); 'on t': the same on the "
        f"{config.task_dim}-d standardised, PCA-whitened task vector the models are conditioned on.",
        "- Spearman: rank correlation between the pairwise Euclidean distances of the (standardised) embeddings "
        f"and those of the true 18-d t over all {config.val_size * (config.val_size - 1) // 2} validation pairs "
        f"(+- SE from {BOOTSTRAP} bootstrap resamples of the images).",
        "- R^2: validation R^2 of a ridge regression from the embedding to each true t coordinate, averaged "
        "per group of App. C.3 (geometry t0-t3, warp t4-t6, channel shift t7-t9, texture t10-t14, colour t15-t17).",
        "- The reading compares two rows' difference with two standard errors of the rows taken as independent "
        "(the rows share the images, so this overstates the error of their difference).",
        "",
        "## Results",
        *table,
        "",
        f"- {trained}.",
        "- The untrained row is the same network at its seeded initialisation (BatchNorm at its initial "
        "statistics); raw pixels are a reference, not an encoder.",
        "",
        "## Reading",
        *reading(frame, simclr_config(config).batch_size, simclr_log),
        "",
        "## Provenance",
        f"- command: `{prov['command']}`",
        f"- commit: `{prov['commit']}`",
        f"- machine: {prov['machine']}",
        f"- wall time: {prov['wall_time_s']:.0f} s (including any embedding or SimCLR training not yet cached)",
        f"- scale: {prov['scale']}; data config: {prov['data']}",
        "",
    ])


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the Table 2 config, e.g. scale=cpu")
    parser.add_argument("--out", default=None, help="report directory (default: reports/<scale>)")
    args = parser.parse_args(argv)
    tick = time.perf_counter()
    cfg = compose(["experiment=table2", *args.overrides])
    config = build_section(ImageNetTokensConfig, cfg.data, "data")
    if config.images != "standin":
        raise SystemExit("the probe compares embeddings with the stand-in's true t: use data.images=standin")
    torch.set_num_threads(os.cpu_count() or 1)
    cache = to_container(cfg.paths)["cache"]
    embeddings, targets = encoder_embeddings(config, cache)
    frame = evaluate(config, embeddings, targets)
    train_images = load_image_sets(config, dataset_directory(config, cache))[0].images
    simclr_log = encoder_summary(dataclasses.replace(config, encoder="simclr"), train_images,
                                 dataset_directory(config, cache))["train"]
    scale = str(cfg.budget.name)
    prov = {"command": "python -m experiments.encoder_probe " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
            "commit": git_commit(code_root()), "machine": machine(), "wall_time_s": time.perf_counter() - tick,
            "scale": scale, "data": f"train_size={config.train_size}, val_size={config.val_size}, seed={config.seed}"}
    out = Path(args.out) if args.out else code_root() / "reports" / scale
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "encoders.csv", index=False, float_format="%.4f")
    (out / "encoders.md").write_text(markdown(frame, config, prov, simclr_log))
    print(frame.to_string(index=False))
    print(f"wrote {out / 'encoders.md'} in {prov['wall_time_s']:.0f} s")
    return out / "encoders.md"


if __name__ == "__main__":
    main()
