"""SynthMNIST renderer (Sec. 3.1, App. C.3): a texture made from the task vector t, an MNIST digit on top.

An image is a deterministic function of (t, digit image, flip). Everything is vectorised over the batch.

Coordinates of t (App. C.3), with sc(z) := 2 + 18 z:
    t0        rotation angle 2*pi*t0
    t1        scale sc(t1)
    t2, t3    rotation centre (x, y)
    t4, t5    warp amplitudes a = relu(a_bar - 0.3) / 0.7 with a_bar = t4 (x), t5 (y)
    t6        warp frequency s_x = s_y = sc(t6)
    t7..t9    per-channel shift of R, G, B relative to each other
    t10..t12  texture type = argmax(t10, t11, t12): cos(x~), cos(rho~), cos(10 g t13 + 2 t14)
    t13, t14  parameters of the third texture, g = cos(x~/3) cos(y~/3)
    t15..t17  colour (0.5 + 1.5 t15, 0.5 + 1.5 t16, 0.5 + 1.5 t17), then clip to [-1, 1]

Letters in shape comments: B batch, C channels (3), H, W image height and width.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F

TASK_DIM = 18
RENDER_SIZE = 32  # the paper's resolution; smaller ones are area-downsampled from it
RESOLUTIONS = (32, 16, 8)
TEXTURE_TYPES = ("stripes", "rings", "cells")  # cos(x~), cos(rho~), cos(10 g t13 + 2 t14)
WARP_ALPHA = 0.3
COLOUR_BETA, COLOUR_GAMMA = 0.5, 1.5
# Bump when the image a task vector produces changes: palettes and pools cached on disk are keyed by it.
RENDERER_VERSION = 2


@contextmanager
def one_thread():
    """Run tensor work on one thread. SynthMNIST batches are small elementwise work: a second OpenMP
    thread gains little, and when the other core is busy (another process, a training step) its wait
    turns milliseconds into tens of milliseconds (measured: 32 images 1 ms on one thread, 50-85 ms on two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sc(z: torch.Tensor) -> torch.Tensor:
    """Scale map of App. C.3: sc(z) = 2 + 18 z."""
    return 2.0 + 18.0 * z


def texture_type(tasks: torch.Tensor) -> torch.Tensor:
    """(B,) int64 index into TEXTURE_TYPES: which of t10, t11, t12 is largest (ties go to the first)."""
    return torch.as_tensor(tasks)[..., 10:13].argmax(dim=-1)


def _as_tasks(tasks) -> torch.Tensor:
    tasks = torch.as_tensor(tasks, dtype=torch.float32)
    if tasks.ndim != 2 or tasks.shape[1] != TASK_DIM:
        raise ValueError(
            f"task vectors must have shape (B, {TASK_DIM}), got {tuple(tasks.shape)}; "
            "stack them into one (B, 18) array (use t[None] for a single task)."
        )
    return tasks


def render_texture(tasks, size: int = RENDER_SIZE) -> torch.Tensor:
    """Texture of App. C.3 for each task vector: (B, 18) -> (B, 3, size, size) float32 in [-1, 1]."""
    t = _as_tasks(tasks)
    col = lambda i: t[:, i, None, None]  # (B, 1, 1), broadcasts against the (H, W) pixel grid

    # Choice: pixel centres in unit image coordinates, x to the right and y downwards, both in [0, 1], so
    # that the rotation centre (t2, t3) ranges over the whole image.
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(centres, centres, indexing="ij")  # (H, W) each
    dx, dy = x - col(2), y - col(3)  # (B, H, W) relative to the rotation centre

    # Rotation by 2*pi*t0 about (t2, t3); the origin of the transformed coordinates is the centre.
    angle = 2.0 * math.pi * col(0)
    cos_a, sin_a = torch.cos(angle), torch.sin(angle)
    u = cos_a * dx + sin_a * dy  # (B, H, W)
    v = -sin_a * dx + cos_a * dy

    # Scale sc(t1) multiplies the coordinates: larger t1, finer texture (period 2*pi / sc image widths).
    scale = sc(col(1))
    x_t, y_t = scale * u, scale * v  # (B, H, W)

    # Warp x -> x + a_x cos(s_x x), y -> y + a_y cos(s_y y). Choice: applied last, to the rotated and
    # scaled coordinates, so the same x appears on both sides and a is a phase in radians of the texture
    # (at most 1). Applying it before scaling instead lets a displace by a whole image width; then ~22% of
    # random tasks alias into noise at 32x32 (against ~5% here), at odds with the paper's low losses.
    amp_x = torch.relu(col(4) - WARP_ALPHA) / (1.0 - WARP_ALPHA)
    amp_y = torch.relu(col(5) - WARP_ALPHA) / (1.0 - WARP_ALPHA)
    freq = sc(col(6))
    x_t = x_t + amp_x * torch.cos(freq * x_t)  # x~
    y_t = y_t + amp_y * torch.cos(freq * y_t)  # y~

    # Texture profiles; the argument of the cosine is selected per image, then shifted per channel.
    kind = texture_type(t)[:, None, None]  # (B, 1, 1)
    rho_t = torch.sqrt(x_t * x_t + y_t * y_t)  # distance to the origin in transformed coordinates
    g = torch.cos(x_t / 3.0) * torch.cos(y_t / 3.0)
    cells = 10.0 * g * col(13) + 2.0 * col(14)
    argument = torch.where(kind == 0, x_t, torch.where(kind == 1, rho_t, cells))  # (B, H, W)

    # Channel shift: choice: R, G, B are the same profile with its argument shifted by 2*pi*t7, 2*pi*t8,
    # 2*pi*t9, i.e. each channel's pattern is displaced relative to the others (a full period at t = 1).
    phase = 2.0 * math.pi * t[:, 7:10, None, None]  # (B, C, 1, 1)
    texture = torch.cos(argument[:, None] + phase)  # (B, C, H, W)

    colour = COLOUR_BETA + COLOUR_GAMMA * t[:, 15:18, None, None]  # (B, C, 1, 1)
    return (texture * colour).clamp_(-1.0, 1.0)


def digit_alpha(digits, flips=None, size: int = RENDER_SIZE) -> torch.Tensor:
    """MNIST digits (B, 28, 28) uint8 -> coverage (B, 1, size, size) in [0, 1], centred, optionally mirrored."""
    # a copy: MNIST arrays are read-only and slices may be strided
    digits = torch.from_numpy(np.array(digits, copy=True))
    if digits.ndim != 3 or digits.shape[1:] != (28, 28):
        raise ValueError(f"digits must have shape (B, 28, 28), got {tuple(digits.shape)}; pass MNIST images.")
    alpha = digits.to(torch.float32) / 255.0 if digits.dtype == torch.uint8 else digits.to(torch.float32)
    if flips is not None:
        flips = torch.as_tensor(np.asarray(flips), dtype=torch.bool)
        if flips.shape != (digits.shape[0],):
            raise ValueError(f"flips must have shape ({digits.shape[0]},), got {tuple(flips.shape)}.")
        alpha = torch.where(flips[:, None, None], alpha.flip(-1), alpha)  # horizontal mirror
    pad = (size - 28) // 2
    return F.pad(alpha, (pad, size - 28 - pad, pad, size - 28 - pad))[:, None]  # (B, 1, H, W)


def downsample(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Area (box-filter) downsampling of (B, C, 32, 32) renders to (B, C, resolution, resolution)."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution={resolution} is not supported; use one of {RESOLUTIONS}.")
    factor = images.shape[-1] // resolution
    return images if factor == 1 else F.avg_pool2d(images, factor)


def render_synthmnist(tasks, digits, flips=None, resolution: int = RENDER_SIZE) -> torch.Tensor:
    """SynthMNIST images (App. C.3): (B, 18) tasks, (B, 28, 28) digits, (B,) flips -> (B, 3, R, R) in [-1, 1].

    The texture is rendered at 32x32 and the digit laid over it. Choice (the paper does not say how the
    digit is overlaid): the digit is white, alpha-blended with its MNIST intensity as coverage, centred
    with 2 pixels of margin as MNIST digits sit in 28x28. `flips[i]` mirrors digit i horizontally; the
    training split sets it with p = 0.5, validation never. Resolutions 16 and 8 are area-downsampled.
    Runs on one thread (see `one_thread`); parallelise across processes, e.g. DataLoader workers.
    """
    tasks = _as_tasks(tasks)
    if len(digits) != tasks.shape[0]:
        raise ValueError(
            f"got {tasks.shape[0]} task vectors but {len(digits)} digits; pass one digit per task."
        )
    with one_thread():
        texture = render_texture(tasks)  # (B, C, 32, 32)
        alpha = digit_alpha(digits, flips)  # (B, 1, 32, 32)
        images = torch.lerp(texture, torch.ones_like(texture), alpha)
        return downsample(images, resolution)
