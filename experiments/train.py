"""One ``train(cfg) -> metrics`` for every model of the paper: M_s, M~_s, P_s (co-training the source,
Eq. 2) and P~ (all sizes at once), optionally starting from saved weights.

A run is its run directory: restarted on it, ``train`` resumes from the last checkpoint and continues the
same MLflow run. Hydra (``python -m experiments.train kind=conditional width=0.5 scale=smoke``), the sweep's
trials and the tests all call ``train``.
"""

from __future__ import annotations

from experiments import telemetry

telemetry.apply()  # an entry point: before MLflow is imported

import json
import time
from collections.abc import Mapping
from pathlib import Path

import hydra
import mlflow
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments.config import (
    CONF_DIR,
    ConfigError,
    RunConfig,
    config_differences,
    effective_config,
    parse_run,
    resolve_precision,
)
from experiments.run.checkpoint import latest_checkpoint, load_latest_checkpoint, save_checkpoint
from experiments.run.commands import as_bad_input, refusing_bad_input
from experiments.run.datasets import (
    TrainStream,
    build_data,
    image_tokenizer,
    training_task_mean,
    validation_subsets,
)
from experiments.run.evaluate import (
    STAT_KEYS,
    TRAIN_TOTAL_KEY,
    as_metrics,
    evaluate,
    task_condition_subsets,
    train_key,
)
from experiments.run.grids import image_grid, save_png
from experiments.run.locks import run_dir_lock
from experiments.run.memory import check_fits
from experiments.run.optim import TrainConfig, build_optimizer, lr_at, set_lr
from experiments.run.precision import autocast
from experiments.run.task_vector import apply_task_vector
from experiments.run.trainees import ProjectedTrainee, build_trainee
from experiments.tracking import store as tracking
from experiments.tracking.store import MlflowClient


class TrainHooks:
    """Called by ``train``; the sweep reports checkpoints to Ray Tune, tests interrupt runs."""

    def on_claimed(self, run_dir: Path) -> None:
        """The run directory is this process's (locked, its config checked); nothing is loaded yet."""

    def on_step_end(self, step: int) -> None:
        pass

    def on_checkpoint(self, step: int, folder: Path, metrics: dict[str, float]) -> None:
        pass


# ------------------------------------------------------------------------------------------------
# Named steps of the driver


CONFIG_FILE = "config.json"  # in the run directory: the effective config it was made with


def resolve_init(init_from: str, run_dir: Path, tracking_uri: str) -> Path:
    """A local path, or an MLflow artifact URI (runs:/<id>/model) downloaded into the run directory."""
    if "://" in init_from or init_from.startswith("runs:/"):
        folder = run_dir / "init"
        folder.mkdir(parents=True, exist_ok=True)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=init_from, dst_path=str(folder),
                                                        tracking_uri=tracking_uri))
    return Path(init_from)


def recorded_config(run_dir: Path) -> dict | None:
    """The effective config a run directory was made with (``config.json``), None if it has none; a damaged
    or hand-edited file is refused naming it, what is wrong and how to recover."""
    recorded = run_dir / CONFIG_FILE
    if not recorded.is_file():
        return None
    try:
        config = json.loads(recorded.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        config = err
    if not isinstance(config, dict) or not all(isinstance(v, str) for v in config.values()):
        raise ConfigError(
            f"{recorded} is damaged (not a JSON object of config keys and values: "
            f"{config if isinstance(config, Exception) else type(config).__name__}); nothing was changed. "
            f"It records the config {run_dir} was made with: restore it, or move {run_dir} away and rerun"
        )
    return config


def claim_run_dir(cfg: DictConfig, run_dir: Path) -> None:
    """Record the effective config in a new run directory, or check that an existing one was made with the
    same config; a directory made with another config is never resumed or overwritten. Called under the run
    directory's lock."""
    recorded = run_dir / CONFIG_FILE
    requested = effective_config(cfg)
    config = recorded_config(run_dir)
    if config is not None:
        differences = config_differences(requested, config)
        if differences:
            raise ConfigError(
                f"run directory {run_dir} was made with another config; it differs in "
                f"{'; '.join(differences)}. Nothing was changed. Either start a fresh run with run_dir=<new folder> "
                f"(or leave run_dir unset: its default is keyed by the config), or rerun with the old config "
                f"(recorded in {recorded})"
            )
        return
    if run_dir.is_dir() and any((run_dir / name).exists() for name in ("checkpoints", "final")):
        raise ConfigError(
            f"run directory {run_dir} holds a run without a recorded config (made by an older version), so it "
            f"cannot be checked against this one; pass run_dir=<new folder>, or move it away to rerun"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(recorded, requested, indent=1, sort_keys=True)


def write_json(path: Path, value, **dumps) -> None:
    """Through a temporary file, so that a crash or a full disk never leaves half a file."""
    from projectable.io import write_atomically

    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(value, **dumps)))


METRICS_FILE = "metrics.json"  # written once training, evaluation and the final logs are done


def finished_result(run_dir: Path, run: RunConfig) -> dict[str, float] | None:
    """The final metrics of a run directory whose run finished (``metrics.json``) and whose MLflow run is in
    this store, else None. Rerunning a finished run returns them and leaves its MLflow run as it is: no
    second model log, no metrics logged again."""
    path = run_dir / METRICS_FILE
    run_id = tracking.recorded_run_id(run_dir) if path.is_file() else None
    status = tracking.run_status(run.tracking.uri, run_id) if run_id is not None else None
    if status is None:  # not finished, or its MLflow run is not in this store: (re)made by training
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        metrics = None
    if not isinstance(metrics, dict):
        raise ConfigError(f"{path} is damaged (not the JSON object of a finished run's metrics); delete it and "
                          "rerun the same command, which evaluates the final checkpoint again")
    if status != "FINISHED":  # its training finished, its process stopped before the MLflow run ended
        MlflowClient(run.tracking.uri).set_terminated(run_id, "FINISHED")
    print(f"{run_dir} already finished; nothing to do. {tracking.where(run.tracking, run_id)}")
    return metrics


def train_step(trainee, loss_fn, optimizer: torch.optim.Optimizer, batch, step: int, cfg: TrainConfig,
               device: str) -> dict[str, torch.Tensor | float]:
    """One optimizer step over ``cfg.grad_accum`` micro-batches; returns unsynchronised stats."""
    lr = lr_at(step, cfg)
    set_lr(optimizer, lr)
    trainee.module.train()
    optimizer.zero_grad(set_to_none=True)
    micro = cfg.batch_size // cfg.grad_accum
    total, parts = 0.0, {}  # the back-propagated loss; each model's, keyed by its width
    for i in range(cfg.grad_accum):
        tokens = batch.tokens[i * micro : (i + 1) * micro].to(device, non_blocking=True)  # (b, T)
        tasks = batch.task[i * micro : (i + 1) * micro].to(device, non_blocking=True)  # (b, 18)
        with autocast(cfg.precision, device):
            out = loss_fn(tokens, tasks)
        (out.total / cfg.grad_accum).backward()
        total = total + out.total.detach() / cfg.grad_accum
        for width, value in out.parts.items():
            parts[width] = parts.get(width, 0.0) + value.detach() / cfg.grad_accum
    norm = torch.nn.utils.clip_grad_norm_(trainee.module.parameters(), cfg.grad_clip or float("inf"))
    optimizer.step()
    stats = {train_key(width): value for width, value in parts.items()}
    if isinstance(trainee, ProjectedTrainee):
        stats[TRAIN_TOTAL_KEY] = total
    return {**stats, "train/lr": lr, "train/grad_norm": norm}


def run_evaluation(trainee, subsets, run: RunConfig, data, models=None) -> tuple[dict[str, float], dict]:
    """Every model (or those of ``models``, a dict of ``nll_fns``) on every subset."""
    was_training = trainee.module.training
    trainee.module.eval()
    c, h, w = data.image_shape
    models = trainee.nll_fns() if models is None else models
    losses = evaluate(models, subsets, run.eval.batch_size, data.seq_len, c * h * w, run.device)
    trainee.module.train(was_training)
    return as_metrics(losses), losses


def run_task_conditions(trainee, subsets, run: RunConfig, data, stream: TrainStream) -> tuple[dict[str, float], dict]:
    """The models that read t on every subset under the other task conditions of ``eval.task_conditions``
    (permuted, mean; ``evaluate.TASK_CONDITIONS``), keyed by the conditioned subset names."""
    readers = trainee.task_readers()
    conditions = tuple(c for c in run.eval.task_conditions if c != "own")
    if not readers or not conditions:
        return {}, {}
    mean = training_task_mean(stream, run.eval.task_mean_images) if "mean" in conditions else None
    overrides = {name: subset.overrides for name, subset in run.eval.subsets.items()}
    varied = task_condition_subsets(subsets, conditions, mean, overrides)
    models = {key: fn for key, fn in trainee.nll_fns().items() if key in readers}
    return run_evaluation(trainee, varied, run, data, models)


def log_samples(trainee, data, subsets, run: RunConfig) -> None:
    """PNG grids of samples of every model (conditional and projected ones from validation tasks)."""
    if run.eval.samples <= 0:
        return
    tasks = next(iter(subsets.values())).task.to(run.device)
    generator = torch.Generator(device=run.device).manual_seed(run.seed)
    folder = Path(run.run_dir) / "samples"
    for name, tokens in trainee.samples(run.eval.samples, tasks, generator).items():
        save_png(image_grid(data.decode(tokens.cpu())), folder / f"{name}.png")
    mlflow.log_artifacts(str(folder), "samples")


def log_final(trainee, losses, metrics: dict[str, float], subsets, run: RunConfig, data=None) -> None:
    """Final weights (loadable by GPT.load / ProjectableGPT.load), per-image losses, and every model as an
    MLflow model linked to its metrics (``experiments.tracking.models``)."""
    folder = Path(run.run_dir) / "final"
    trainee.save(folder, None if data is None else image_tokenizer(data, folder))  # exports then render alone
    mlflow.log_artifacts(str(folder), "model")
    per_image = {key: loss.per_image.tolist() for key, loss in losses.items()}
    mlflow.log_dict(per_image, "eval/per_image_nats.json")
    if run.tracking.log_models:
        from experiments.tracking.models import log_models

        example = next(iter(subsets.values()))
        log_models(trainee, folder, metrics, run.train.steps, example, register=run.tracking.register)


def log_dataset(run: RunConfig, data) -> None:
    """The run's data as an MLflow dataset input: its config and the tokenizer's hash (the palette's content
    hash for SynthMNIST, the VQ-VAE's key for the ImageNet track), so runs on the same tokens share a digest."""
    import dataclasses
    import hashlib

    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    if hasattr(data, "palette"):
        tokenizer = f"palette {data.palette.hash}"
    else:
        from experiments.run.image_tokens import vqvae_key

        tokenizer = f"vqvae {vqvae_key(run.data)}"
    config = json.dumps(dataclasses.asdict(run.data), sort_keys=True, default=str)
    digest = hashlib.sha256(f"{config} {tokenizer}".encode()).hexdigest()[:16]
    source = CodeDatasetSource({"config": config, "tokenizer": tokenizer})
    mlflow.log_input(MetaDataset(source, name=type(run.data).__name__, digest=digest), context="training")


def log_start(cfg: DictConfig, run: RunConfig, trainee, extra_artifacts: Mapping[str, Path]) -> None:
    tracking.log_params(effective_config(cfg))
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config/config.yaml")
    counts = {"num_params/trained": sum(p.numel() for p in trainee.module.parameters() if p.requires_grad)}
    if run.kind == "projected":
        from projectable import GPT
        from projectable.generators import generator_params

        for scale in run.projector.scales:
            # all own parameters of P_s (generator, base weights, small parts), and the t-dependent ones alone
            counts[f"num_params/projector_{scale}"] = trainee.model.num_projector_params(scale)
            own = generator_params(trainee.model.source_config, run.projector, scale)
            counts[f"num_params/generator_task_{scale}"] = own.task
            with torch.device("meta"):  # the standalone model generate(t, s) returns: the same for every generator
                counts[f"num_params/generated_{scale}"] = GPT(trainee.model.small_config(scale)).num_params()
    mlflow.log_metrics({k: float(v) for k, v in counts.items()}, step=0)
    for name, path in extra_artifacts.items():
        if Path(path).exists():
            mlflow.log_artifacts(str(path), name) if Path(path).is_dir() else mlflow.log_artifact(str(path), name)


def fit(trainee, optimizer, data, run: RunConfig, start: int, run_id: str, hooks: TrainHooks,
        stream: TrainStream, subsets: dict) -> dict[str, float]:
    """The training loop: step, log, evaluate, checkpoint; then samples and final weights."""
    cfg = run.train
    # train.task_vector=mean: one constant t in every batch and subset from here on (run/task_vector.py)
    overrides = {name: subset.overrides for name, subset in run.eval.subsets.items()}
    stream, subsets, _ = apply_task_vector(cfg.task_vector, stream, subsets, overrides, run.eval.task_mean_images)
    loss_fn = torch.compile(trainee.loss) if cfg.compile else trainee.loss
    metrics: dict[str, float] = {}
    losses = None
    tick, tokens_seen = time.perf_counter(), 0
    if start == 0 and run.eval.at_start:  # the learning curve's first point: before any step (for P_s, the
        start_metrics, _ = run_evaluation(trainee, subsets, run, data)  # one-shot model of the pretrained source)
        mlflow.log_metrics(start_metrics, step=0)
    for step in tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=Path(run.run_dir).name,
                     mininterval=10.0):
        stats = train_step(trainee, loss_fn, optimizer, stream.batch(step), step, cfg, run.device)
        done = step + 1
        tokens_seen += cfg.batch_size * data.seq_len
        if done % cfg.log_every == 0 or done in (1, cfg.steps):  # step 1: the starting loss
            now = time.perf_counter()
            logged = {k: float(v) for k, v in stats.items()}
            logged["train/tokens_per_s"] = tokens_seen / max(now - tick, 1e-9)
            mlflow.log_metrics(logged, step=done)
            tick, tokens_seen = now, 0
        if done % run.eval.every == 0 or done == cfg.steps:
            metrics, losses = run_evaluation(trainee, subsets, run, data)
            mlflow.log_metrics(metrics, step=done)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            folder = save_checkpoint(run.run_dir, done, trainee.module, optimizer, run_id)
            hooks.on_checkpoint(done, folder, metrics)
        hooks.on_step_end(done)
    if losses is None:  # resumed after the last step: nothing left to train, evaluate once more
        metrics, losses = run_evaluation(trainee, subsets, run, data)
        mlflow.log_metrics(metrics, step=cfg.steps)
    # does each model use t? its final loss under other task vectors, beside its own (kept in the metrics and
    # in the per-image losses)
    conditioned_metrics, conditioned = run_task_conditions(trainee, subsets, run, data, stream)
    if conditioned_metrics:
        mlflow.log_metrics(conditioned_metrics, step=cfg.steps)
    metrics, losses = {**metrics, **conditioned_metrics}, {**losses, **conditioned}
    log_samples(trainee, data, subsets, run)
    log_final(trainee, losses, metrics, subsets, run, data)
    return metrics


def train(cfg: DictConfig, hooks: TrainHooks | None = None,
          extra_artifacts: Mapping[str, Path] | None = None) -> dict[str, float]:
    """Train what ``cfg.kind`` names, evaluate it on the validation subsets, log everything to MLflow.

    Returns the final validation metrics ``{"val/<subset>/<model>/<stat>": value}``.
    """
    cfg, precision_reason = resolve_precision(cfg)
    run = parse_run(cfg)
    hooks = hooks or TrainHooks()
    run_dir = Path(run.run_dir)
    if run.device == "cuda" and not torch.cuda.is_available():  # here, not at parse: a driver plans GPU runs
        raise ConfigError("device=cuda but this machine has no CUDA device torch can use; set device=cpu")
    tracking.check_reachable(run.tracking.uri)
    with run_dir_lock(run_dir):  # one process per run directory, until its MLflow run has ended
        claim_run_dir(cfg, run_dir)
        finished = finished_result(run_dir, run)
        if finished is not None:
            return finished
        return train_claimed(cfg, run, hooks, extra_artifacts, precision_reason)


def train_claimed(cfg: DictConfig, run: RunConfig, hooks: TrainHooks,
                  extra_artifacts: Mapping[str, Path] | None, precision_reason: str = "") -> dict[str, float]:
    """``train`` in a run directory this process holds: set up (every bad input refused before a step),
    resume or start the MLflow run, fit, end the run."""
    run_dir = Path(run.run_dir)
    torch.set_num_threads(run.threads)
    torch.manual_seed(run.seed)
    hooks.on_claimed(run_dir)

    with as_bad_input("data"):
        data = build_data(run.data, run.paths.cache, run.train.train_fraction)
    if (data.vocab_size, data.seq_len) != (run.model.vocab_size, run.model.block_size):
        raise ConfigError(
            f"model.vocab_size={run.model.vocab_size}, model.block_size={run.model.block_size} but the data has "
            f"{data.vocab_size} colours and {data.seq_len} tokens per image; keep the model's interpolations "
            "${data.palette_size} and ${square:${data.resolution}}"
        )
    with as_bad_input("eval.subsets"):
        subsets = validation_subsets(data, run.eval.subsets)
    with as_bad_input("train.train_labels"):
        stream = TrainStream(data, run.train.batch_size, run.train.train_labels)
    with as_bad_input("model"):
        check_fits(run, data.task_dim)  # before any weight is allocated or downloaded
    init = None
    if latest_checkpoint(run_dir) is None and run.init_from is not None:  # a resumed run has its weights
        with as_bad_input(f"init_from={run.init_from}"):
            init = resolve_init(run.init_from, run_dir, run.tracking.uri)
    with as_bad_input(f"init_from={run.init_from}" if init is not None else "model"):
        trainee = build_trainee(run.kind, run.width, run.model, run.projector, data.task_dim, run.device, init)
    optimizer = build_optimizer(trainee.module, run.train)
    with as_bad_input("resume"):
        resumed = load_latest_checkpoint(run_dir, trainee.module, optimizer)
    if resumed is not None:
        start, run_id = resumed
    else:
        start, run_id = 0, tracking.recorded_run_id(run_dir)
    tags = {**tracking.source_tags("experiments/train.py"), "kind": run.kind, "width": str(run.width),
            "seed": str(run.seed), "precision": run.train.precision, "precision_reason": precision_reason,
            **{f"model/{key}": role for key, role in trainee.roles().items()}, **tracking.cpu_tags(),
            **run.tracking.tags}
    if run.kind == "projected":
        tags["scales"] = ",".join(str(s) for s in run.projector.scales)
        tags["generator"] = run.projector.generator
    run_id = tracking.start_run(run.tracking, run_dir, run_id, run.tracking.run_name or run_dir.name, tags)
    print(f"{'resuming' if start else 'starting'} {run_dir} at step {start} in {run.train.precision} "
          f"({precision_reason}); {tracking.where(run.tracking, run_id)}")
    failed = True
    try:
        if start == 0:
            if run.init_from is not None:
                mlflow.set_tag("init_from", run.init_from)
            log_start(cfg, run, trainee, extra_artifacts or {})
            log_dataset(run, data)
        metrics = fit(trainee, optimizer, data, run, start, run_id, hooks, stream, subsets)
        write_json(run_dir / METRICS_FILE, metrics, indent=1)
        failed = False
        print(f"finished {run_dir}; {tracking.where(run.tracking, run_id)}")
        return metrics
    finally:
        tracking.end_run(failed)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hydra_dir = Path(HydraConfig.get().runtime.output_dir) / ".hydra"
    with refusing_bad_input():
        metrics = train(cfg, extra_artifacts={"hydra": hydra_dir})
    print(final_losses(metrics))


def final_losses(metrics: Mapping[str, float]) -> str:
    """The command line's closing summary: every final validation loss of ``train``'s metrics with its
    standard error, one line each, ``val/all/s1_4/nats_per_token: 1.2345 +- 0.0067``."""
    nats, se = f"/{STAT_KEYS['nats']}", f"/{STAT_KEYS['nats_se']}"
    return "\n".join(f"{key}: {value:.4f} +- {metrics[key.removesuffix(nats) + se]:.4f}"
                     for key, value in sorted(metrics.items()) if key.startswith("val/") and key.endswith(nats))


if __name__ == "__main__":
    from experiments.run.commands import run_hydra_command

    run_hydra_command(main)
