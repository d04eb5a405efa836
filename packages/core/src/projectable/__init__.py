"""Projectable Models: one-shot generation of small task-specialised Transformers from a large one."""

from projectable.gpt import GPT, GPTConfig, KVCache
from projectable.metrics import bits_per_dim, mean_and_stderr
from projectable.projected import CoTrainLoss, ProjectableGPT
from projectable.projector import ProjectorConfig, scale_name
from projectable.sampling import sample

__all__ = [
    "GPT",
    "GPTConfig",
    "KVCache",
    "CoTrainLoss",
    "ProjectableGPT",
    "ProjectorConfig",
    "bits_per_dim",
    "mean_and_stderr",
    "sample",
    "scale_name",
]
__version__ = "0.1.0"
