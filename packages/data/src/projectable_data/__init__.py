"""SynthMNIST for Projectable Models (Sec. 3.1, App. C.3): MNIST, renderer, colour palette, token datasets."""

from .dataset import Batch, SynthMNISTConfig, SynthMNISTStream, SynthMNISTTokens
from .download import DEFAULT_MIRRORS, download_mnist

# ImageNet track (Sec. 3.1, Table 2/4): loader, label splits and image-embedding task vectors.
from .efficientnet import EfficientNetLite0, EfficientNetLiteConfig, load_efficientnet_lite0  # noqa: E402
from .encoders import (  # noqa: E402
    EfficientNetLite0Encoder,
    EmbeddingTable,
    ImageEncoder,
    TaskVectorConfig,
    data_fingerprint,
    embed_dataset,
    load_precomputed_embeddings,
    save_embeddings,
    task_vectors,
)
from .imagenet import (  # noqa: E402
    ClassMapping,
    ImageNet64,
    ImageNet64Config,
    LabelSplitConfig,
    TaskSplit,
    in_c1,
    read_class_mapping,
    split_dataset,
    task_split,
    write_batch_file,
)
from .mnist import MNIST, MNIST_MD5, MNISTError, load_mnist, resolve_mnist_root
from .palette import Palette, PaletteConfig, fit_palette
from .synthmnist import TASK_DIM, TEXTURE_TYPES, render_synthmnist, render_texture, texture_type
from .tasks import TaskItems, apply_overrides, sample_tasks

__all__ = [
    "ClassMapping",
    "EfficientNetLite0",
    "EfficientNetLite0Encoder",
    "EfficientNetLiteConfig",
    "EmbeddingTable",
    "ImageEncoder",
    "ImageNet64",
    "ImageNet64Config",
    "LabelSplitConfig",
    "TaskSplit",
    "TaskVectorConfig",
    "data_fingerprint",
    "embed_dataset",
    "in_c1",
    "load_efficientnet_lite0",
    "load_precomputed_embeddings",
    "read_class_mapping",
    "save_embeddings",
    "split_dataset",
    "task_split",
    "task_vectors",
    "write_batch_file",
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
