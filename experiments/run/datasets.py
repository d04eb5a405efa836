"""Training stream and named validation subsets on top of ``projectable_data.SynthMNISTTokens``.

Training on a finite dataset: ``data.train_pool_size`` sets the pool, ``train.train_fraction`` trains on a
pool that fraction of its size, ``train.train_labels`` keeps only some digits (Table 4's C1/C2 splits).
Every batch stays a deterministic function of the step, so runs resume exactly.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from projectable.tokenizer import ImageTokenizer, palette_tokenizer, vqvae_tokenizer
from projectable_data import Batch, SynthMNISTConfig, SynthMNISTTokens
from projectable_data.imagenet_tokens import ImageNetTokens, ImageNetTokensConfig

# Candidate batches drawn per step when filtering by label; each step owns this many stream positions,
# so filtered steps never share items.
_LABEL_FILTER_DRAWS = 64


def resolve_mnist_root(cfg) -> None:
    """Fill ``data.mnist_root`` where it is null (MNIST found or fetched by ``projectable_data``), on the process
    that composes the config: trials may run where the repository's ../shared is unknown."""
    from omegaconf import OmegaConf
    from projectable_data import resolve_mnist_root as resolve

    if "mnist_root" in cfg.data and cfg.data.mnist_root is None:
        OmegaConf.update(cfg, "data.mnist_root", str(resolve()))


def data_config_class(node) -> type:
    """The dataclass of a ``data`` config section: ``ImageNetTokensConfig`` (the ImageNet track and its
    stand-in; its sections name an image source, ``images``) or ``SynthMNISTConfig``."""
    return ImageNetTokensConfig if "images" in node else SynthMNISTConfig


def build_data(config: SynthMNISTConfig | ImageNetTokensConfig, cache_dir: str | Path,
               train_fraction: float = 1.0) -> SynthMNISTTokens | ImageNetTokens:
    """The dataset; a training fraction below 1 shrinks the finite pool (it requires one)."""
    if isinstance(config, ImageNetTokensConfig):  # the ImageNet track: its training set is always finite
        # imported here: the VQ-VAE stack (projectable_vqvae, vector-quantize-pytorch) loads for this track only
        from experiments.run.image_tokens import build_image_tokens

        return build_image_tokens(config, cache_dir, train_fraction=train_fraction)
    if train_fraction < 1.0:
        if config.train_pool_size is None:
            raise ValueError(
                f"train.train_fraction={train_fraction} needs a finite training set; set data.train_pool_size"
            )
        config = dataclasses.replace(config, train_pool_size=max(1, math.ceil(train_fraction * config.train_pool_size)))
    return SynthMNISTTokens(config, cache_dir=str(cache_dir))


class TrainStream:
    """Batch of step k: ``data.train_batch(k, B)``, or with ``labels`` the first B items of digits in
    ``labels`` among the stream positions owned by step k."""

    def __init__(self, data: SynthMNISTTokens, batch_size: int, labels: tuple[int, ...] | None = None):
        self.data, self.batch_size = data, batch_size
        self.labels = None if labels is None else torch.tensor(sorted(set(labels)), dtype=torch.int64)

    def batch(self, step: int) -> Batch:
        if self.labels is None:
            return self.data.train_batch(step, self.batch_size)
        kept: list[Batch] = []
        count = 0
        for draw in range(_LABEL_FILTER_DRAWS):
            candidate = self.data.train_batch(step * _LABEL_FILTER_DRAWS + draw, self.batch_size)
            mask = torch.isin(candidate.label, self.labels)
            kept.append(Batch(*(x[mask] for x in candidate)))
            count += int(mask.sum())
            if count >= self.batch_size:
                return Batch(*(torch.cat(xs)[: self.batch_size] for xs in zip(*kept)))
        raise ValueError(
            f"train.train_labels={self.labels.tolist()} left fewer than {self.batch_size} items in "
            f"{_LABEL_FILTER_DRAWS} batches; use more labels or a smaller batch"
        )

    def tasks(self, step: int) -> torch.Tensor:
        """(B, D) task vectors of batch ``step``, the same as ``batch(step).task``; without a label filter
        SynthMNIST's are read from its items, without rendering the images."""
        if self.labels is None and isinstance(self.data, SynthMNISTTokens):
            return torch.from_numpy(self.data.train_items(step, self.batch_size).task)
        return self.batch(step).task


def training_task_mean(stream: TrainStream, images: int) -> torch.Tensor:
    """(D,) float32 mean task vector of the training distribution, for the "mean" task condition
    (``evaluate.TASK_CONDITIONS``): the mean over the first ceil(images / B) batches of the run's own training
    stream (its pool, fraction, labels and task overrides), so it is a fixed function of the data config and
    the batch size, the same for every seed of a cell."""
    steps = max(1, math.ceil(images / stream.batch_size))
    total = sum(stream.tasks(step).double().sum(0) for step in range(steps))  # (D,)
    return (total / (steps * stream.batch_size)).float()


def validation_subsets(data: SynthMNISTTokens | ImageNetTokens, subsets: dict) -> dict[str, Batch]:
    """Named eval subsets: of the fixed validation set, or of SynthMNIST's selection set
    (``source=selection``), with task coordinates overridden and/or digits selected."""
    out = {}
    for name, subset in subsets.items():
        batch = _source_batch(data, name, subset)
        if subset.labels is not None:
            mask = torch.isin(batch.label, torch.tensor(subset.labels, dtype=torch.int64))
            if not mask.any():
                raise ValueError(f"validation subset '{name}' keeps no image (labels={subset.labels})")
            batch = Batch(*(x[mask] for x in batch))
        out[name] = batch
    return out


def _source_batch(data: SynthMNISTTokens | ImageNetTokens, name: str, subset) -> Batch:
    """The batch a subset draws from: ``data.validation`` or ``data.selection(size)``, overrides applied."""
    overrides = dict(subset.overrides) or None
    if subset.source == "validation":
        return data.validation(overrides=overrides)
    if not isinstance(data, SynthMNISTTokens):
        raise ValueError(
            f"eval.subsets.{name}: source={subset.source} exists for SynthMNIST only; this run's data is "
            f"{type(data).__name__}, use source=validation"
        )
    try:
        return data.selection(subset.size, overrides=overrides)
    except ValueError as err:
        raise ValueError(f"eval.subsets.{name}: {err}") from err


VQVAE_FILE = "vqvae.safetensors"  # beside a run's final models on the ImageNet track


def image_tokenizer(data: SynthMNISTTokens | ImageNetTokens, folder: Path) -> ImageTokenizer:
    """What turns the data's tokens into pixels, for the run's model files to record (``projectable.tokenizer``):
    SynthMNIST's palette, carried in the files; the ImageNet track's VQ-VAE, written to ``folder`` beside them
    so that the run's models and what decodes them stay together (and reach MLflow's ``model`` artifacts)."""
    if isinstance(data, ImageNetTokens):
        folder.mkdir(parents=True, exist_ok=True)
        data.tokenizer.save(folder / VQVAE_FILE)
        return vqvae_tokenizer(folder / VQVAE_FILE)
    return palette_tokenizer(data.palette.centres.numpy())
