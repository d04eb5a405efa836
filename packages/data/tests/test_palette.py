import numpy as np
import pytest
import torch

from projectable_data import Palette, PaletteConfig, fit_palette


def test_encode_is_the_nearest_centre_and_decode_its_colour():
    palette = Palette(np.random.default_rng(0).uniform(-1, 1, (40, 3)))
    images = torch.rand(5, 3, 8, 8) * 2 - 1
    tokens = palette.encode(images)
    assert tokens.shape == (5, 64) and tokens.dtype == torch.int64
    pixels = images.permute(0, 2, 3, 1).reshape(-1, 3)  # raster order
    brute = torch.cdist(pixels.double(), palette.centres.double()).argmin(-1)
    assert torch.equal(tokens.reshape(-1), brute)
    decoded = palette.decode(tokens)
    assert decoded.shape == images.shape
    torch.testing.assert_close(decoded[2, :, 3, 5], palette.centres[tokens[2, 3 * 8 + 5]])
    assert torch.equal(palette.encode(decoded), tokens)  # centres are fixed points


@pytest.mark.parametrize("size", [2, 64, 512])
def test_cell_search_equals_brute_force(size):
    rng = np.random.default_rng(size)
    centres = np.tanh(rng.normal(0, 0.4, (size, 3)) + rng.choice([-1.5, 0, 1.5], (size, 3)))  # clustered
    palette = Palette(centres)
    images = torch.from_numpy(rng.uniform(-1, 1, (4, 3, 16, 16)).astype(np.float32))
    images[0, :, :4] = torch.tensor([1.0, -1.0, 1.0])[:, None, None]  # cube corners and faces
    images[1] = images[1].round()
    for x in (images, 1.5 * images):  # outside the cube: compared against every centre
        pixels = x.permute(0, 2, 3, 1).reshape(-1, 3).double()
        brute = ((pixels[:, None] - palette.centres.double()[None]) ** 2).sum(-1).argmin(-1)
        assert torch.equal(palette.encode(x).reshape(-1), brute)


def test_round_trip_error_is_bounded(tiny_data):
    items = tiny_data.validation_items()
    images = tiny_data.render(items, "validation")
    error = (tiny_data.decode(tiny_data.palette.encode(images)) - images).abs()
    # 32 colours at 16x16: about 0.15 mean, 0.6 worst per channel; 0.35/1.0 flags a broken fit
    assert error.mean() < 0.35 and error.max() < 1.0


def test_fit_is_deterministic_and_sorted_by_luminance():
    images = torch.rand(16, 3, 8, 8) * 2 - 1
    config = PaletteConfig(size=8, seed=3, n_init=1)
    a, b = fit_palette(images, config), fit_palette(images, config)
    assert a.hash == b.hash and a.size == 8
    luminance = a.centres @ torch.tensor([0.299, 0.587, 0.114])
    assert torch.all(luminance[1:] >= luminance[:-1])


def test_save_load_round_trip_and_hash_check(tmp_path):
    palette = Palette(np.random.default_rng(1).uniform(-1, 1, (16, 3)))
    path = palette.save(tmp_path / "p.npz")
    loaded = Palette.load(path, expected_hash=palette.hash)
    assert torch.equal(loaded.centres, palette.centres) and loaded.hash == palette.hash
    with pytest.raises(ValueError, match="expected"):
        Palette.load(path, expected_hash="0" * 16)
    archive = dict(np.load(path))
    archive["centres"] = archive["centres"] + 0.01  # content no longer matches the stored hash
    np.savez(tmp_path / "tampered.npz", **archive)
    with pytest.raises(ValueError, match="stale or corrupt"):
        Palette.load(tmp_path / "tampered.npz")


def test_bad_inputs_are_value_errors():
    palette = Palette(np.zeros((4, 3)) + np.arange(4)[:, None] / 4)
    with pytest.raises(ValueError, match="square"):
        palette.decode(torch.zeros(1, 10, dtype=torch.int64))
    with pytest.raises(ValueError, match="0..3"):
        palette.decode(torch.full((1, 4), 4))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        palette.encode(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="smaller palette_size"):
        fit_palette(torch.zeros(1, 3, 2, 2), PaletteConfig(size=8))
