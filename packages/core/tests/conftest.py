import pytest
import torch
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_source() -> GPT:
    return GPT(GPTConfig.tiny(n_embd=32, n_head=2, n_layer=2, vocab_size=16, block_size=12))


@pytest.fixture
def make_projectable():
    """Factory: a ProjectableGPT over ``source`` whose generators really depend on the task."""
    return build_projectable


def build_projectable(source: GPT, task_dim: int = 3, scales=(0.5, 0.25), **kw) -> ProjectableGPT:
    model = ProjectableGPT(source, ProjectorConfig(task_dim=task_dim, rank=4, scales=scales, **kw))
    # Push the generator away from its near-constant initialisation so that tasks really differ.
    with torch.no_grad():
        for name, param in model.generators.named_parameters():
            if name.endswith("w2"):
                param.normal_(0, 0.3)
    return model
