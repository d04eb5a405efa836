import pytest
import torch
from projectable import GPT, GPTConfig, bits_per_dim, sample


@pytest.mark.parametrize("top_k", [None, 3])
def test_cached_sampling_equals_uncached(tiny_source, top_k):
    model = tiny_source.double()
    a = sample(model, 4, temperature=0.9, top_k=top_k, generator=torch.Generator().manual_seed(1))
    b = sample(model, 4, temperature=0.9, top_k=top_k, generator=torch.Generator().manual_seed(1), use_cache=False)
    assert a.shape == (4, 12) and a.dtype == torch.long
    assert torch.equal(a, b)


def test_sampling_conditional_and_generated_models(tiny_source, make_projectable):
    cond = GPT(GPTConfig.tiny(task_dim=3)).double()
    g = lambda: torch.Generator().manual_seed(2)
    task = torch.rand(3, dtype=torch.float64)
    assert torch.equal(sample(cond, 3, task=task, generator=g()), sample(cond, 3, task=task, generator=g(), use_cache=False))
    small = make_projectable(tiny_source).generate(torch.rand(3), 0.25).double()
    assert torch.equal(sample(small, 3, generator=g()), sample(small, 3, generator=g(), use_cache=False))


def test_top_k_restricts_support(tiny_source):
    tokens = sample(tiny_source, 64, top_k=1, length=1)
    assert tokens.unique().numel() == 1  # greedy: every sample takes the argmax


def test_sampling_bad_input(tiny_source):
    with pytest.raises(ValueError, match="temperature"):
        sample(tiny_source, 2, temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        sample(tiny_source, 2, top_k=0)
    with pytest.raises(ValueError, match="task vector"):
        sample(GPT(GPTConfig.tiny(task_dim=3)), 2)


def test_bits_per_dim():
    # 1024 tokens of a 32x32 RGB image, ln(2) nats per token -> 1024 bits over 3072 sub-pixels.
    assert bits_per_dim(torch.log(torch.tensor(2.0)).item(), 1024, 32 * 32 * 3) == pytest.approx(1 / 3)
