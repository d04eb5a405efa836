from pathlib import Path

import pytest
import torch


def repo_root() -> Path:
    """Walk up from this file to the checkout (CI clones it anywhere, with shared/ beside it)."""
    here = Path(__file__).resolve()
    for candidate in here.parents:
        if (candidate / "packages" / "data" / "pyproject.toml").is_file():
            return candidate
    raise RuntimeError(f"no checkout above {here}")


MNIST_ROOT = repo_root().parent / "shared" / "data" / "mnist"


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if not (MNIST_ROOT / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.fail(f"MNIST expected at {MNIST_ROOT} (<repo>/../shared/data/mnist)")
    return MNIST_ROOT


@pytest.fixture(scope="session")
def tiny_config(mnist_root):
    from projectable_data import SynthMNISTConfig

    return SynthMNISTConfig(
        resolution=16,
        palette_size=32,
        mnist_root=str(mnist_root),
        seed=0,
        val_size=64,
        palette_fit_images=256,
    )


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthmnist-cache")


@pytest.fixture(scope="session")
def tiny_data(tiny_config, synth_cache):
    from projectable_data import SynthMNISTTokens

    torch.set_num_threads(1)
    return SynthMNISTTokens(tiny_config, cache_dir=synth_cache)
