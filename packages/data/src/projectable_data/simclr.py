"""SimCLR (Chen et al., 2020) image embeddings: the ImageNet track's task vectors (Sec. 3.1 uses SimCLRv2).

No SimCLR weights exist offline, so the encoder is trained here, on the track's TRAINING images only:
- two views of every image by random resized crop, horizontal flip, colour jitter (p = 0.8), random grey
  scale and Gaussian blur (``SimCLRAugment``, kornia's augmentations);
- a small CIFAR-style ResNet backbone (a 3x3 stem of stride ``stem_stride`` without pooling, three stages
  of BasicBlocks at widths w, 2w, 4w, strides 1, 2, 2, global average pool) sized for 32-64 px images; its
  pooled (B, 4w) output is the embedding, as in the paper's linear evaluation;
- a two-layer projection head g(h) = W2 relu(BN(W1 h)) to ``projection_dim``;
- the NT-Xent loss (Eq. 1 of the paper) at a temperature: every other view of the 2N in the batch is a
  negative (``nt_xent_loss``, a cross-entropy over the (2N, 2N) cosine similarities).
Library choice: lightly ships the SimCLR loss and transforms but requires torchvision, and PyPI's
torchvision does not import beside the CPU torch this project pins. kornia installs beside it (with
kornia-rs only) and makes the views. pytorch-metric-learning's ``NTXentLoss`` also installs, and agrees
with ``nt_xent_loss`` to float precision, but it materialises a (pairs x negatives) mask: 3-7 s for one
batch of 256 on 2 cores against milliseconds for the five lines here, so the loss is written here and tested
against a float64 loop of Eq. 1. Install kornia with ``projectable-data[simclr]``.

The trained weights are cached by a fingerprint of the config and the training images
(``load_or_train_simclr``): ``<directory>/simclr-<key>.safetensors`` (every tensor, the config as JSON in the
metadata; loading asserts every name and shape) and ``simclr-<key>-train.json`` (the loss curve's ends).
``SimCLREncoder`` plugs a model into ``projectable_data.encoders.embed_dataset`` (embeddings cached by the
encoder's and the images' fingerprints, resumable, with a progress bar).

Images: (B, 3, H, W) uint8 in [0, 255] or float in [-1, 1] (the renders' range), H = W >= 8.
Letters in shape comments: B batch, C channels, H/W height/width, w backbone width, E = 4w embedding size,
P projection size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .encoders import SliceableImages, _hash_module, _to_tensor, data_fingerprint

EXTRA = "projectable-data[simclr]"
FORMAT_VERSION = 1
KIND = "projectable_data.SimCLR"
MIN_SIDE = 8  # the stem and two stages halve the side up to three times


@dataclass(frozen=True)
class SimCLRConfig:
    width: int = 32  # channels of the first stage (then 2w, 4w); the embedding has 4w features
    blocks_per_stage: int = 1  # BasicBlocks per stage (ResNet-20-style CIFAR nets have 3)
    # 2 halves the side before the first stage: measured ~2x cheaper on 32 px (the CIFAR nets use 1)
    stem_stride: int = 2
    projection_dim: int = 64  # output of the projection head, where the loss is taken
    epochs: int = 10  # passes over the training images
    batch_size: int = 256  # images per step (2x views); more negatives per anchor
    lr: float = 2e-3  # AdamW peak learning rate (linear warm-up over 10% of the steps, then cosine to 0)
    weight_decay: float = 1e-4
    temperature: float = 0.5  # NT-Xent tau; 0.5 is the paper's best at small batches (its Table 5)
    crop_scale: tuple[float, float] = (0.2, 1.0)  # area range of the random resized crop (CIFAR setting)
    jitter: float = 0.5  # colour-jitter strength s: brightness, contrast, saturation 0.8 s, hue 0.2 s
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5  # Gaussian blur, sigma in [0.1, 2], kernel ~10% of the image side
    seed: int = 0  # initialisation, training order and augmentations

    def __post_init__(self) -> None:
        for name in ("width", "blocks_per_stage", "projection_dim", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.stem_stride not in (1, 2):
            raise ValueError(f"stem_stride={self.stem_stride}: use 1 or 2")
        if self.batch_size < 2:
            raise ValueError(f"batch_size={self.batch_size} must be >= 2: NT-Xent needs negatives")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        low, high = self.crop_scale
        if not 0 < low <= high <= 1:
            raise ValueError(f"crop_scale={self.crop_scale} must satisfy 0 < low <= high <= 1")
        for name in ("jitter_p", "grayscale_p", "blur_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}={getattr(self, name)} is a probability; use a value in [0, 1]")

    @property
    def embedding_dim(self) -> int:
        return 4 * self.width

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "crop_scale": list(self.crop_scale)}

    @classmethod
    def from_dict(cls, d: dict) -> SimCLRConfig:
        return cls(**{**d, "crop_scale": tuple(d["crop_scale"])})

    @classmethod
    def tiny(cls) -> SimCLRConfig:
        """Tests: seconds on a CPU."""
        return cls(width=4, projection_dim=8, epochs=1, batch_size=16)


def _require(module: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as err:
        raise ImportError(f"the SimCLR encoder needs {module}: pip install -c constraints.txt '{EXTRA}'") from err


# ---- images ----------------------------------------------------------------------------------------------


def to_unit(images: Any) -> torch.Tensor:
    """(B, 3, H, W) uint8 [0, 255] or float [-1, 1] -> float32 in [0, 1]; anything else is an error."""
    if not isinstance(images, torch.Tensor):
        images = _to_tensor(images) if isinstance(images, np.ndarray) else images
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ValueError(f"images must be (B, 3, H, W), got {shape}; channel-last arrays need "
                         ".permute(0, 3, 1, 2)")
    if images.shape[-1] != images.shape[-2] or images.shape[-1] < MIN_SIDE:
        raise ValueError(f"images must be square with side >= {MIN_SIDE}, got {tuple(images.shape[-2:])}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 [0, 255] or float [-1, 1], got dtype {images.dtype}")
    low, high = float(images.min()), float(images.max())
    if low < -1.0 - 1e-4 or high > 1.0 + 1e-4 or not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"float images must lie in [-1, 1], got values in [{low:.3g}, {high:.3g}]; "
                         "pass uint8 [0, 255] pixels or rescale with x / 127.5 - 1")
    return (images.float() + 1.0) / 2.0


def _normalise(unit: torch.Tensor) -> torch.Tensor:
    return unit * 2.0 - 1.0  # [0, 1] -> [-1, 1], the network's input range


class ViewPair(NamedTuple):
    first: torch.Tensor  # (B, 3, H, W) float in [0, 1]
    second: torch.Tensor


class SimCLRAugment:
    """The paper's view distribution (its Sec. 3 and App. A) on (B, 3, S, S) images in [0, 1], by kornia."""

    def __init__(self, cfg: SimCLRConfig, side: int):
        augmentation = _require("kornia.augmentation")
        s, kernel = cfg.jitter, max(3, (side // 10) | 1)  # odd blur kernel, ~10% of the side
        self.side = side
        self.pipeline = nn.Sequential(
            augmentation.RandomResizedCrop((side, side), scale=cfg.crop_scale),
            augmentation.RandomHorizontalFlip(),
            augmentation.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=cfg.jitter_p),
            augmentation.RandomGrayscale(p=cfg.grayscale_p),
            augmentation.RandomGaussianBlur((kernel, kernel), (0.1, 2.0), p=cfg.blur_p),
        )

    @torch.no_grad()
    def __call__(self, unit: torch.Tensor, seed: int) -> ViewPair:
        """Two independent views of every image, a pure function of (images, seed)."""
        if unit.shape[-1] != self.side:
            raise ValueError(f"images of side {unit.shape[-1]} given to an augmentation built for {self.side}")
        devices = [unit.device] if unit.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # kornia draws from torch's global generator
            torch.manual_seed(seed)
            return ViewPair(self.pipeline(unit).clamp(0, 1), self.pipeline(unit).clamp(0, 1))


# ---- the network -----------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """He et al. 2016's two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, H/s, W/s)
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, 4w) pooled features."""

    def __init__(self, cfg: SimCLRConfig):
        super().__init__()
        w = cfg.width
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, cfg.stem_stride, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        blocks, c_in = [], w
        for stage, c_out in enumerate((w, 2 * w, 4 * w)):
            for b in range(cfg.blocks_per_stage):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and b == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # measured ~25% faster convolutions on CPU
        x = self.blocks(self.stem(x))  # (B, 4w, H/(4 stem_stride), W/(4 stem_stride))
        return x.mean(dim=(-2, -1))  # (B, 4w)


class SimCLROutput(NamedTuple):
    embedding: torch.Tensor  # (B, E) backbone features h
    projection: torch.Tensor  # (B, P) z = g(h), where the loss is taken


class SimCLR(nn.Module):
    """Backbone and projection head; ``embed`` is the task-vector encoder (the head is dropped)."""

    def __init__(self, cfg: SimCLRConfig):
        super().__init__()
        self.cfg = cfg
        e = cfg.embedding_dim
        self.backbone = ResNetBackbone(cfg)
        self.head = nn.Sequential(nn.Linear(e, e, bias=False), nn.BatchNorm1d(e), nn.ReLU(),
                                  nn.Linear(e, cfg.projection_dim))
        self.to(memory_format=torch.channels_last)  # 4-d weights only; loading copies into this layout

    @property
    def embedding_dim(self) -> int:
        return self.cfg.embedding_dim

    def forward(self, x: torch.Tensor) -> SimCLROutput:
        """Network input (B, 3, H, W) in [-1, 1] -> (h (B, E), z (B, P))."""
        h = self.backbone(x)
        return SimCLROutput(h, self.head(h))

    @torch.no_grad()
    def embed(self, images: Any) -> torch.Tensor:
        """Images (uint8 or [-1, 1]) -> (B, E) float32 backbone features, in eval mode."""
        self.eval()
        device = next(self.parameters()).device
        return self.backbone(_normalise(to_unit(images).to(device))).float()

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        """safetensors file of every tensor, the config as JSON in the metadata (written atomically)."""
        from safetensors.torch import save_file

        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {**(metadata or {}), "kind": KIND, "format_version": str(FORMAT_VERSION),
                "config": json.dumps(self.cfg.to_dict())}
        tmp = path.with_name(path.name + ".tmp")
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> SimCLR:
        """Rebuild from ``save``: every key present, none extra, every shape equal."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"SimCLR weights {path} not found")
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            if metadata.get("kind") != KIND or "config" not in metadata:
                raise ValueError(f"{path} is not a SimCLR checkpoint of this package (its metadata names "
                                 f"kind={metadata.get('kind')!r}); it was written by another model")
            if metadata.get("format_version") != str(FORMAT_VERSION):
                raise ValueError(f"{path} has format {metadata.get('format_version')}, expected {FORMAT_VERSION}")
            state = {k: f.get_tensor(k) for k in f.keys()}
        model = cls(SimCLRConfig.from_dict(json.loads(metadata["config"])))
        own = model.state_dict()
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise ValueError(f"{path} does not match its config: missing {missing[:6]}, unexpected {extra[:6]}")
        with torch.no_grad():
            for name, target in own.items():
                if state[name].shape != target.shape:
                    raise ValueError(f"{path}: {name} has shape {tuple(state[name].shape)}, "
                                     f"expected {tuple(target.shape)}")
                target.copy_(state[name])
        return model.to(map_location).eval()


def init_simclr(cfg: SimCLRConfig) -> SimCLR:
    """The untrained network of ``cfg`` (seeded by cfg.seed): where training starts, and the random baseline."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return SimCLR(cfg)


# ---- the loss --------------------------------------------------------------------------------------------


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (Eq. 1 of Chen et al. 2020): for each of the 2N views, -log softmax over the other 2N - 1 views'
    cosine similarities / temperature, at its partner; averaged over all 2N anchors. (N, P) each -> scalar."""
    if z1.shape != z2.shape or z1.ndim != 2 or len(z1) < 2:
        raise ValueError(f"need two (N, P) projections of equal shape, N >= 2, got {tuple(z1.shape)}, "
                         f"{tuple(z2.shape)}")
    n = len(z1)
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2N, P) on the unit sphere
    logits = (z @ z.T) / temperature  # (2N, 2N) cosine similarities / tau
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))  # a view is not its own negative
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)  # view i <-> view i + N
    return F.cross_entropy(logits, partner)


# ---- training --------------------------------------------------------------------------------------------


class SimCLRTrainLog(NamedTuple):
    steps: int
    epochs: int
    losses: list[float]  # NT-Xent of every step
    seconds: float


def view_seed(seed: int, step: int) -> int:
    """The augmentation seed of one training step (independent of every other step's)."""
    return int(np.random.SeedSequence([int(seed), 21, int(step)]).generate_state(1)[0])


def _learning_rate(cfg: SimCLRConfig, step: int, total: int) -> float:
    warmup = max(1, total // 10)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train_simclr(model: SimCLR, images: SliceableImages, *, device: str | torch.device = "cpu",
                 progress: bool = True) -> SimCLRTrainLog:
    """Contrastive training of ``model`` on ``images`` (model.cfg: epochs, batch, schedule, views); in place."""
    cfg = model.cfg
    n = len(images)
    if n < 2:
        raise ValueError(f"SimCLR needs at least 2 training images, got {n}")
    first = to_unit(_to_tensor(images[0:1]))  # checks shape and range before any training
    augment = SimCLRAugment(cfg, first.shape[-1])
    batch = min(cfg.batch_size, n)
    per_epoch = n // batch
    total = cfg.epochs * per_epoch
    model.to(device).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses: list[float] = []
    tick = time.perf_counter()
    bar = tqdm(total=total, disable=not progress, desc="simclr", unit="step", leave=False)
    try:
        for epoch in range(cfg.epochs):
            order = np.random.default_rng([cfg.seed, 22, epoch]).permutation(n)
            for i in range(per_epoch):
                step = epoch * per_epoch + i
                index = np.sort(order[i * batch : (i + 1) * batch])  # sorted: memory maps read forward
                unit = to_unit(_to_tensor(images[index])).to(device)  # (b, 3, H, W) in [0, 1]
                views = augment(unit, view_seed(cfg.seed, step))
                for group in optimiser.param_groups:
                    group["lr"] = _learning_rate(cfg, step, total)
                z1 = model(_normalise(views.first)).projection  # (b, P)
                z2 = model(_normalise(views.second)).projection
                loss = nt_xent_loss(z1, z2, cfg.temperature)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
    finally:
        bar.close()
    model.eval()
    return SimCLRTrainLog(total, cfg.epochs, losses, time.perf_counter() - tick)


# ---- cache and encoder -----------------------------------------------------------------------------------


def simclr_key(cfg: SimCLRConfig, images: SliceableImages, dataset_id: str = "") -> str:
    """16 hex digits over the config and the training images: the trained weights' name."""
    text = json.dumps({"version": FORMAT_VERSION, "config": cfg.to_dict(),
                       "images": data_fingerprint(images, dataset_id)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TrainedSimCLR(NamedTuple):
    model: SimCLR
    path: Path  # the safetensors file
    log: dict  # steps, epochs, first and last loss, mean loss of the last epoch, seconds


def load_or_train_simclr(cfg: SimCLRConfig, images: SliceableImages, directory: str | Path, *,
                         dataset_id: str = "", device: str | torch.device = "cpu",
                         progress: bool = True) -> TrainedSimCLR:
    """The SimCLR of (cfg, images): loaded from ``directory`` if trained before, else trained and saved."""
    directory = Path(directory)
    key = simclr_key(cfg, images, dataset_id)
    path, log_path = directory / f"simclr-{key}.safetensors", directory / f"simclr-{key}-train.json"
    if path.is_file() and log_path.is_file():
        model = SimCLR.load(path, map_location=device)
        if model.cfg != cfg:
            raise ValueError(f"{path} holds a SimCLR of config {model.cfg}, not {cfg}; delete it")
        return TrainedSimCLR(model, path, json.loads(log_path.read_text()))
    directory.mkdir(parents=True, exist_ok=True)
    model = init_simclr(cfg)
    result = train_simclr(model, images, device=device, progress=progress)
    per_epoch = result.steps // result.epochs
    log = {"steps": result.steps, "epochs": result.epochs, "train_images": len(images),
           "first_loss": result.losses[0], "last_loss": result.losses[-1],
           "first_epoch_loss": float(np.mean(result.losses[:per_epoch])),
           "last_epoch_loss": float(np.mean(result.losses[-per_epoch:])), "seconds": round(result.seconds, 1)}
    model.save(path, {"key": key})
    log_path.write_text(json.dumps(log, indent=1))
    return TrainedSimCLR(model.eval(), path, log)


class SimCLREncoder:
    """``ImageEncoder`` of a SimCLR's backbone: (B, 3, H, W) images -> (B, 4w) features."""

    def __init__(self, model: SimCLR, device: str | torch.device = "cpu"):
        self.model = model.to(device).eval()
        self.dim = model.embedding_dim
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(f"simclr:{json.dumps(self.model.cfg.to_dict(), sort_keys=True)}".encode())
            _hash_module(h, self.model)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images).cpu()  # (B, E)
