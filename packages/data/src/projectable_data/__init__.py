"""SynthMNIST for Projectable Models (Sec. 3.1, App. C.3): MNIST, renderer, colour palette, token datasets."""

from .dataset import Batch, SynthMNISTConfig, SynthMNISTStream, SynthMNISTTokens
from .download import DEFAULT_MIRRORS, download_mnist
from .mnist import MNIST, MNIST_MD5, MNISTError, load_mnist, resolve_mnist_root
from .palette import Palette, PaletteConfig, fit_palette
from .synthmnist import TASK_DIM, TEXTURE_TYPES, render_synthmnist, render_texture, texture_type
from .tasks import TaskItems, apply_overrides, sample_tasks

__all__ = [
    "Batch",
    "DEFAULT_MIRRORS",
    "MNIST",
    "MNIST_MD5",
    "MNISTError",
    "Palette",
    "PaletteConfig",
    "SynthMNISTConfig",
    "SynthMNISTStream",
    "SynthMNISTTokens",
    "TASK_DIM",
    "TEXTURE_TYPES",
    "TaskItems",
    "apply_overrides",
    "download_mnist",
    "fit_palette",
    "load_mnist",
    "render_synthmnist",
    "render_texture",
    "resolve_mnist_root",
    "sample_tasks",
    "texture_type",
]
