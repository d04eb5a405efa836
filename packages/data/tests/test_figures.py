import json

import numpy as np
from PIL import Image

from projectable_data.figures import figure3, main


def test_figure3_grid_of_renders_and_quantised(tiny_data, tmp_path):
    tasks = np.random.default_rng(0).random((3, 18), dtype=np.float32)
    out = figure3(tiny_data, tasks, tmp_path / "fig.png", upscale=2, gap=1)
    image = np.asarray(Image.open(out))
    assert image.shape == (2 * (32 + 1) + 1, 3 * (32 + 1) + 1, 3)
    top, bottom = image[1:33, 1:33], image[34:66, 1:33]
    assert (top != bottom).any()  # quantisation shows
    assert len(np.unique(bottom.reshape(-1, 3), axis=0)) <= tiny_data.vocab_size


def test_cli_writes_png_for_given_tasks(tiny_config, synth_cache, tmp_path):
    (tmp_path / "tasks.json").write_text(json.dumps(np.full((2, 18), 0.5).tolist()))
    out = main(
        [
            "--out", str(tmp_path / "fig3.png"), "--tasks", str(tmp_path / "tasks.json"),
            "--resolution", "16", "--palette-size", "32", "--palette-fit-images", "256", "--num", "64",
            "--mnist-root", tiny_config.mnist_root, "--cache-dir", str(synth_cache), "--upscale", "1",
        ]
    )  # fmt: skip
    assert Image.open(out).size == (2 * 18 + 2, 2 * 18 + 2)
