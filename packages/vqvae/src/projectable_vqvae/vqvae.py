"""VQ-VAE image tokenizer of App. C.2 (Van den Oord et al., 2017).

64x64 RGB images -> 32x32 grids of tokens from a 512-entry codebook (the ImageNet data of Sec. 3.1 and
Table 2). Any input whose side is even works: 32x32 inputs give 16x16 tokens.

Letters used in shape comments: B batch, C channels, H/W image height/width, h/w token grid, D code dim.

Choices the paper leaves open, made here and kept configurable:
- Padding. Encoder convs use padding 1 (3x3 kernels), so the stride-2 layer halves each side exactly
  (64 -> 32). The first decoder layer (kernel 3, stride 2) uses padding 1 and output_padding 1:
  (32 - 1) * 2 - 2 + 3 + 1 = 64, an exact inverse of the encoder's resolution change; the other
  transposed convs use padding (kernel - 1) // 2, which keeps the size.
- Activations. Leaky ReLU (slope `leaky_slope`) after every encoder layer but the last, whose output is
  the pre-quantisation latent and stays linear (`encoder_final_activation` switches it on). Leaky ReLU
  after every decoder layer but the last; the last (3, 1, 1) layer is linear by default
  (`output_activation="none"`; `"tanh"` bounds it to [-1, 1]). A linear output keeps the L2 loss's
  gradient alive near saturated pixels; `decode` clamps to [-1, 1] in either case.
- Quantiser. `vector_quantize_pytorch.VectorQuantize` with EMA codebook updates (the VQ-VAE paper's
  App. A.1 variant, so the codebook term of the loss is replaced by the EMA update), commitment weight
  beta = 0.2, straight-through gradients (the library's default, the rotation trick, is off unless
  `rotation_trick=True`), k-means initialisation on the first batch and dead-code replacement, both of
  which keep far more of the 512 codes in use.
- Pixels are floats in [-1, 1]; uint8 images in [0, 255] are accepted and mapped by x / 127.5 - 1.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from vector_quantize_pytorch import VectorQuantize

FORMAT_VERSION = 1
RANGE_TOLERANCE = 1e-4  # float images may overshoot [-1, 1] by rounding (x / 127.5 - 1 in half precision)


@dataclass(frozen=True)
class VQVAEConfig:
    in_channels: int = 3  # RGB
    encoder_channels: tuple[int, ...] = (32, 64, 64)  # App. C.2 encoder depths; the last is the code dim D
    encoder_strides: tuple[int, ...] = (
        2,
        1,
        1,
    )  # App. C.2 encoder strides: one halving, 64 -> 32 tokens a side
    # App. C.2 decoder (depth, kernel, stride); the last depth must equal in_channels
    decoder_layers: tuple[tuple[int, int, int], ...] = ((64, 3, 2), (64, 3, 1), (32, 3, 1), (3, 1, 1))
    codebook_size: int = 512  # paper: 512 discrete values per token
    commitment_weight: float = 0.2  # paper: beta = 0.2
    ema_decay: float = 0.99  # EMA codebook decay of Van den Oord et al. (2017), App. A.1
    kmeans_init: bool = True  # initialise codes by k-means on the first batch: fewer dead codes
    kmeans_iters: int = 10
    dead_code_threshold: float = 2.0  # replace codes whose EMA usage falls below this (0 disables)
    rotation_trick: bool = False  # False: the straight-through estimator of the VQ-VAE paper
    leaky_slope: float = 0.01  # not given in the paper; PyTorch's and JAX's default slope
    encoder_final_activation: bool = False  # leaky ReLU on the pre-quantisation latent too
    output_activation: str = "none"  # "none" (linear last layer) or "tanh"

    def __post_init__(self) -> None:
        # JSON round trips turn tuples into lists; normalise so configs compare equal.
        object.__setattr__(self, "encoder_channels", tuple(int(c) for c in self.encoder_channels))
        object.__setattr__(self, "encoder_strides", tuple(int(s) for s in self.encoder_strides))
        object.__setattr__(
            self, "decoder_layers", tuple(tuple(int(v) for v in layer) for layer in self.decoder_layers)
        )
        if len(self.encoder_channels) != len(self.encoder_strides) or not self.encoder_channels:
            raise ValueError(
                f"encoder_channels {self.encoder_channels} and encoder_strides {self.encoder_strides} must be "
                "non-empty and of equal length; give one stride per encoder layer"
            )
        if any(s < 1 for s in self.encoder_strides):
            raise ValueError(f"encoder_strides must be >= 1, got {self.encoder_strides}")
        if any(len(layer) != 3 for layer in self.decoder_layers) or not self.decoder_layers:
            raise ValueError(
                f"decoder_layers must be a non-empty tuple of (depth, kernel, stride), got {self.decoder_layers}"
            )
        if self.decoder_layers[-1][0] != self.in_channels:
            raise ValueError(
                f"the last decoder layer has depth {self.decoder_layers[-1][0]} but images have "
                f"{self.in_channels} channels; set its depth to in_channels"
            )
        if self.upsampling != self.downsampling:
            raise ValueError(
                f"decoder strides multiply to {self.upsampling} but encoder strides to {self.downsampling}; "
                "make them equal so decode(encode(x)) has the input's size"
            )
        if self.codebook_size < 2 or self.codebook_size > 65535:
            raise ValueError(
                f"codebook_size must be in [2, 65535] (tokens are cached as uint16), got {self.codebook_size}"
            )
        if self.output_activation not in ("none", "tanh"):
            raise ValueError(f"output_activation must be 'none' or 'tanh', got {self.output_activation!r}")

    @property
    def downsampling(self) -> int:
        """Image side / token-grid side."""
        out = 1
        for s in self.encoder_strides:
            out *= s
        return out

    @property
    def upsampling(self) -> int:
        out = 1
        for _, _, s in self.decoder_layers:
            out *= s
        return out

    @property
    def code_dim(self) -> int:
        return self.encoder_channels[-1]

    def token_shape(self, image_size: int) -> tuple[int, int]:
        """Token grid (h, w) for square images of side image_size."""
        if image_size % self.downsampling:
            raise ValueError(
                f"image side {image_size} is not divisible by the encoder's downsampling {self.downsampling}; "
                "crop or resize the images"
            )
        return (image_size // self.downsampling, image_size // self.downsampling)

    @classmethod
    def paper(cls) -> VQVAEConfig:
        """App. C.2 exactly (the defaults)."""
        return cls()

    @classmethod
    def tiny(cls) -> VQVAEConfig:
        """A few-thousand-parameter variant with the paper's layout, for tests and smoke runs."""
        return cls(
            encoder_channels=(8, 16, 16),
            decoder_layers=((16, 3, 2), (16, 3, 1), (8, 3, 1), (3, 1, 1)),
            codebook_size=32,
            kmeans_iters=2,
        )

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VQVAEConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown VQVAEConfig fields {sorted(unknown)}; the file was written by a newer version"
            )
        return cls(**d)


class VQVAEOutput(NamedTuple):
    reconstruction: torch.Tensor  # (B, C, H, W), unclamped decoder output
    tokens: torch.Tensor  # (B, h, w) int64
    loss: torch.Tensor  # scalar: reconstruction + beta * commitment
    reconstruction_loss: torch.Tensor  # scalar: mean squared error per subpixel
    commitment_loss: torch.Tensor  # scalar: beta * ||z_e - sg(e)||^2 (already weighted)


def check_images(images: torch.Tensor, in_channels: int = 3) -> None:
    """Refuse anything but (B, C, H, W) uint8 images or finite float images in [-1, 1], naming the problem."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != in_channels:
        raise ValueError(
            f"images must have shape (B, {in_channels}, H, W), got {tuple(images.shape)}; "
            "channel-last arrays need images.permute(0, 3, 1, 2)"
        )
    if 0 in images.shape:
        raise ValueError(f"images have shape {tuple(images.shape)}: an empty batch or image; pass at least one pixel")
    if images.dtype == torch.uint8:
        return
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 in [0, 255] or float in [-1, 1], got dtype {images.dtype}")
    finite = torch.isfinite(images)
    if not finite.all():
        raise ValueError(
            f"images contain {int((~finite).sum())} NaN or inf values; float images must be finite, in [-1, 1]"
        )
    low, high = (float(v) for v in torch.aminmax(images))
    if low < -1.0 - RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
        hint = (
            "they look like [0, 255] pixels: pass uint8, or x / 127.5 - 1"
            if high > 2.0
            else "rescale them to [-1, 1] (x * 2 - 1 for [0, 1] pixels), or pass uint8 in [0, 255]"
        )
        raise ValueError(f"float images must lie in [-1, 1], got values in [{low:.4g}, {high:.4g}]; {hint}")


def to_model_range(images: torch.Tensor, in_channels: int = 3) -> torch.Tensor:
    """Check (B, C, H, W) images (``check_images``) and return them as float32 in [-1, 1] (uint8 is mapped by
    x / 127.5 - 1)."""
    check_images(images, in_channels)
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    return images.float()


class Encoder(nn.Module):
    """App. C.2 encoder: 3x3 convs with leaky ReLU; (32, 2), (64, 1), (64, 1)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = cfg.in_channels
        n = len(cfg.encoder_channels)
        for i, (out_ch, stride) in enumerate(zip(cfg.encoder_channels, cfg.encoder_strides)):
            layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1))
            if i < n - 1 or cfg.encoder_final_activation:
                layers.append(nn.LeakyReLU(cfg.leaky_slope))
            in_ch = out_ch
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, D, h, w)


class Decoder(nn.Module):
    """App. C.2 decoder: transposed convs with leaky ReLU; (64, 3, 2), (64, 3, 1), (32, 3, 1), (3, 1, 1)."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = cfg.code_dim
        n = len(cfg.decoder_layers)
        for i, (out_ch, kernel, stride) in enumerate(cfg.decoder_layers):
            # out = (in - 1) * stride - 2 * padding + kernel + output_padding = in * stride for odd kernels
            if kernel % 2 == 0:
                raise ValueError(
                    f"decoder layer {i} has even kernel {kernel}; use an odd kernel so it can "
                    "upsample exactly by its stride"
                )
            padding, output_padding = (kernel - 1) // 2, stride - 1
            layers.append(
                nn.ConvTranspose2d(
                    in_ch, out_ch, kernel, stride=stride, padding=padding, output_padding=output_padding
                )
            )
            if i < n - 1:
                layers.append(nn.LeakyReLU(cfg.leaky_slope))
            elif cfg.output_activation == "tanh":
                layers.append(nn.Tanh())
            in_ch = out_ch
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, D, h, w) -> (B, C, H, W)


class VQVAE(nn.Module):
    """The VQ-VAE of App. C.2: encoder, 512-code vector quantiser (beta = 0.2), decoder, L2 loss."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = VectorQuantize(
            dim=cfg.code_dim,
            codebook_size=cfg.codebook_size,
            decay=cfg.ema_decay,
            commitment_weight=cfg.commitment_weight,
            kmeans_init=cfg.kmeans_init,
            kmeans_iters=cfg.kmeans_iters,
            threshold_ema_dead_code=cfg.dead_code_threshold,
            rotation_trick=cfg.rotation_trick,
            accept_image_fmap=True,  # takes (B, D, h, w), returns (B, h, w) indices
        )
        self.decoder = Decoder(cfg)

    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        x = to_model_range(images, self.cfg.in_channels)
        h, w = x.shape[-2:]
        d = self.cfg.downsampling
        if h % d or w % d:
            raise ValueError(
                f"image size {h}x{w} is not divisible by the encoder's downsampling {d}; crop or resize the images"
            )
        return x.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def forward(self, images: torch.Tensor) -> VQVAEOutput:
        """Loss of the VQ-VAE objective (Van den Oord et al., 2017, Eq. 3) with EMA codebook updates."""
        x = self._check_images(images)  # (B, C, H, W) in [-1, 1]
        z = self.encoder(x)  # (B, D, h, w)
        quantized, tokens, commit = self.quantizer(z)  # (B, D, h, w), (B, h, w), scalar
        recon = self.decoder(quantized)  # (B, C, H, W)
        recon_loss = F.mse_loss(recon, x)
        return VQVAEOutput(recon, tokens, recon_loss + commit, recon_loss, commit)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> (B, H/2, W/2) int64 tokens (nearest code of each latent vector)."""
        x = self._check_images(images)
        was_training = self.training
        self.eval()  # no EMA update, no dead-code replacement while tokenising
        try:
            _, tokens, _ = self.quantizer(self.encoder(x))
        finally:
            self.train(was_training)
        return tokens.long()

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h, w) integer tokens -> (B, C, 2h, 2w) images in [-1, 1]."""
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3:
            shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(
                f"tokens must be a (B, h, w) integer tensor, got {shape}; reshape flat sequences "
                "with tokens.view(B, h, w)"
            )
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}; use tokens.long()")
        tokens = tokens.long().to(self.device)
        if tokens.numel() and (tokens.min() < 0 or tokens.max() >= self.cfg.codebook_size):
            raise ValueError(
                f"tokens must lie in [0, {self.cfg.codebook_size}), got range "
                f"[{int(tokens.min())}, {int(tokens.max())}]; they come from a different codebook"
            )
        codes = self.quantizer.get_output_from_indices(tokens)  # (B, D, h, w)
        was_training = self.training
        self.eval()
        try:
            images = self.decoder(codes)
        finally:
            self.train(was_training)
        return images.clamp(-1.0, 1.0)

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """decode(encode(images)), in [-1, 1]."""
        return self.decode(self.encode(images))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- persistence --------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """safetensors file holding every parameter and codebook buffer, config JSON in the metadata."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        metadata = {
            "config": json.dumps(self.cfg.to_dict()),
            "format_version": str(FORMAT_VERSION),
            "kind": "projectable_vqvae.VQVAE",
        }
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_file(state, str(path), metadata=metadata)
        mask = os.umask(0)  # safetensors creates files 0600 whatever the umask: give the mode open() would
        os.umask(mask)
        os.chmod(path, 0o666 & ~mask)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> VQVAE:
        """Rebuild from `save`: every key present, none extra, every shape and dtype equal."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no VQ-VAE checkpoint at {path}; train one and call model.save(path)")
        damaged = "the file is damaged or truncated: delete it, then train and save the VQ-VAE again"
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                if metadata.get("kind") != "projectable_vqvae.VQVAE" or "config" not in metadata:
                    raise ValueError(
                        f"{path} is not a projectable_vqvae checkpoint (metadata {sorted(metadata)})"
                    )
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, RuntimeError) as err:
            raise ValueError(f"VQ-VAE checkpoint {path} is not a readable safetensors file ({err}); {damaged}") from err
        try:
            cfg = VQVAEConfig.from_dict(json.loads(metadata["config"]))
        except (TypeError, ValueError) as err:  # json.JSONDecodeError is a ValueError
            raise ValueError(f"VQ-VAE checkpoint {path} has an invalid config in its metadata ({err}); {damaged}") from err
        model = cls(cfg)
        load_state_strict(model, state, source=str(path))
        return model.to(map_location)


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "state") -> None:
    """Copy `state` into `model` key by key; any missing, extra or mis-shaped tensor is an error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(
            f"{source} does not match the model: missing {missing[:8]}, unexpected {extra[:8]}; "
            "it was saved from a different architecture or config"
        )
    for name, target in own.items():
        value = state[name]
        if value.shape != target.shape:
            raise ValueError(
                f"{source}: {name} has shape {tuple(value.shape)}, model expects {tuple(target.shape)}"
            )
        if value.dtype != target.dtype:
            raise ValueError(f"{source}: {name} has dtype {value.dtype}, model expects {target.dtype}")
    with torch.no_grad():
        for name, target in own.items():
            target.copy_(state[name])
