"""Build an experiment's data caches once, on the driver, before its sweep:
``python -m experiments.prepare_data experiment=table2 scale=cpu``.

For the ImageNet track (``data=imagenet``) that is the image set (or the stand-in's renders), the VQ-VAE,
the token caches and the encoder embeddings (``experiments.run.image_tokens``); with them on disk every
trial only loads them. Trials build
what is missing themselves too (a file lock makes concurrent ones wait), but one process with every core
does it faster. Prints the data summary (stand-in or not, VQ-VAE PSNR and codebook use, embeddings).
"""

from __future__ import annotations

from experiments import telemetry

telemetry.apply()  # an entry point: before MLflow is imported

import json
import os
import time

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.config import CONF_DIR, build_section, to_plain
from experiments.run.commands import as_bad_input, refusing_bad_input
from experiments.run.datasets import build_data, data_config_class


def data_configs(cfg: DictConfig) -> list:
    """The distinct data configs of the experiment's cells (the root's when no experiment is selected)."""
    base = to_plain(cfg.data)
    found = [base]
    experiment = to_plain(cfg.get("experiment")) or {}
    for stage in (experiment.get("stages") or {}).values():
        for cell in stage["cells"].values():
            data = {k.split(".", 1)[1]: v for k, v in (cell.get("overrides") or {}).items() if k.startswith("data.")}
            if data and {**base, **data} not in found:
                found.append({**base, **data})
    return [build_section(data_config_class(node), node, "data") for node in found]


def prepare(cfg: DictConfig, threads: int | None = None) -> list[dict]:
    """Build (or load) the dataset of every distinct data config; returns their summaries."""
    torch.set_num_threads(threads or os.cpu_count() or 1)
    cache = OmegaConf.to_container(cfg.paths, resolve=True)["cache"]
    summaries = []
    for config in data_configs(cfg):
        tick = time.perf_counter()
        with as_bad_input("data"):
            data = build_data(config, cache)
        summary = dict(getattr(data, "summary", {}) or {})
        summary["seconds"] = round(time.perf_counter() - tick, 1)
        summaries.append(summary)
        print(json.dumps(summary, indent=1))
    return summaries


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with refusing_bad_input():
        prepare(cfg)


if __name__ == "__main__":
    from experiments.run.commands import run_hydra_command

    run_hydra_command(main)
