"""Exports of VQ-VAE-token models ship their decoder: `export-gpt2 --decoder`, `sample --png --decoder`, the
model card's recipe, and the refusals (missing, damaged or mismatched decoders; projectable_vqvae absent)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from projectable import GPT, GPTConfig
from projectable.cli import main

GRID = 4  # 4 x 4 tokens -> 8 x 8 images through the tiny VQ-VAE (downsampling 2)


def run_error(argv, capsys) -> str:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("projectable: error: ") and err.count("\n") == 1, err
    return err


@pytest.fixture()
def vqvae_file(tmp_path):
    """A tiny VQ-VAE (32 codes) whose codebook is initialised (one k-means pass), saved as VQVAE.save does."""
    vqvae_package = pytest.importorskip("projectable_vqvae", reason="decoding needs projectable-vqvae")
    torch.manual_seed(0)
    vqvae = vqvae_package.VQVAE(vqvae_package.VQVAEConfig.tiny())
    vqvae(torch.randint(0, 256, (16, 3, 2 * GRID, 2 * GRID), dtype=torch.uint8))  # k-means init of the codes
    path = tmp_path / "vqvae-key.safetensors"
    vqvae.save(path)
    return path


def model_file(tmp_path, vocab_size=32, block_size=GRID * GRID, name="m.safetensors") -> Path:
    torch.manual_seed(1)
    path = tmp_path / name
    GPT(GPTConfig.tiny(vocab_size=vocab_size, block_size=block_size)).save(path)
    return path


def test_export_ships_the_decoder_and_sample_renders_through_it(tmp_path, vqvae_file):
    """export -> load the decoder from the folder -> decode sampled tokens -> a PNG grid of the expected size,
    whose pixels are the VQ-VAE's decoding of the sampled tokens."""
    pytest.importorskip("transformers", reason="the GPT-2 export needs the hf extra")
    Image = pytest.importorskip("PIL.Image", reason="PNG writing needs Pillow")
    from projectable.vqvae_render import VQVAE_FILE, VQVAE_INFO, load_decoder
    from projectable_vqvae import VQVAE

    model = model_file(tmp_path)
    export = tmp_path / "gpt2"
    assert main(["export-gpt2", str(model), str(export), "--decoder", str(vqvae_file)]) == 0
    assert (export / VQVAE_FILE).read_bytes() == vqvae_file.read_bytes()  # the tokenizer itself, byte for byte
    info = json.loads((export / VQVAE_INFO).read_text())
    assert info["token_grid"] == [GRID, GRID] and info["image_shape"] == [3, 2 * GRID, 2 * GRID]
    assert info["codebook_size"] == 32 and info["vqvae_config"]["codebook_size"] == 32
    card = (export / "README.md").read_text()
    assert "`vqvae.json`, `vqvae.safetensors`" in card and "from projectable_vqvae import VQVAE" in card

    decoder = load_decoder(export)
    assert decoder.grid == (GRID, GRID) and decoder.file == export / VQVAE_FILE

    png, tokens_file = tmp_path / "grid.png", tmp_path / "t.npy"
    assert main(["sample", str(model), "--n", "4", "--out", str(tokens_file), "--png", str(png),
                 "--decoder", str(export)]) == 0
    tokens = torch.from_numpy(np.load(tokens_file))  # (4, 16)
    grid = np.asarray(Image.open(png))
    upscale = 128 // (2 * GRID)  # small images are enlarged to about 128 px
    assert grid.shape == (2 * 2 * GRID * upscale, 2 * 2 * GRID * upscale, 3)  # 2 x 2 images of 8 x 8
    decoded = VQVAE.load(vqvae_file).decode(tokens.reshape(4, GRID, GRID))  # (4, 3, 8, 8) in [-1, 1]
    expected = ((decoded + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    side = 2 * GRID * upscale
    for i in range(4):
        r, c = divmod(i, 2)
        assert (grid[r * side : (r + 1) * side : upscale, c * side : (c + 1) * side : upscale] == expected[i]).all()
    assert len(np.unique(grid.reshape(-1, 3), axis=0)) > 4  # a decoded picture, not a flat colour

    # a bare VQ-VAE file works as --decoder too (its grid is the model's square one)
    assert main(["sample", str(model), "--n", "2", "--out", str(tmp_path / "t2.npy"),
                 "--png", str(tmp_path / "g2.png"), "--decoder", str(vqvae_file)]) == 0


def test_the_model_cards_vqvae_recipe_renders_samples(tmp_path, vqvae_file):
    """The recipe in the card (and in packages/core/README.md) runs against an exported folder."""
    pytest.importorskip("transformers", reason="the GPT-2 export needs the hf extra")
    Image = pytest.importorskip("PIL.Image", reason="PNG writing needs Pillow")
    from projectable.hf import VQVAE_RENDER_RECIPE

    export = tmp_path / "gpt2"
    assert main(["export-gpt2", str(model_file(tmp_path)), str(export), "--decoder", str(vqvae_file)]) == 0
    assert VQVAE_RENDER_RECIPE.strip() in (export / "README.md").read_text()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert VQVAE_RENDER_RECIPE.strip() in readme  # the README shows the same lines
    script = VQVAE_RENDER_RECIPE.replace('"path/to/this/folder"', repr(str(export)))
    script = script.replace('save("samples.png")', f'save({str(tmp_path / "samples.png")!r})')
    exec(compile(script, "recipe", "exec"), {})  # noqa: S102
    rendered = np.asarray(Image.open(tmp_path / "samples.png"))
    assert rendered.shape == (128, 4 * 128, 3)  # 4 images of 8 x 8 side by side, each enlarged to 128 px


def test_missing_or_damaged_decoders_are_refused_naming_the_file(tmp_path, vqvae_file, capsys):
    pytest.importorskip("transformers", reason="the GPT-2 export needs the hf extra")
    model = model_file(tmp_path)
    out = tmp_path / "t.npy"

    def sample_error(decoder) -> str:
        return run_error(["sample", model, "--out", out, "--png", tmp_path / "g.png", "--decoder", decoder], capsys)

    missing = tmp_path / "nowhere.safetensors"
    assert f"no decoder file at {missing}" in sample_error(missing)
    assert f"no decoder file at {missing}" in run_error(["export-gpt2", model, tmp_path / "e", "--decoder", missing],
                                                        capsys)
    assert not (tmp_path / "e").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"decoder folder {empty} holds no vqvae.safetensors" in sample_error(empty)

    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(vqvae_file.read_bytes()[:200])
    assert str(truncated) in sample_error(truncated) and "damaged or truncated" in sample_error(truncated)
    assert "not a projectable_vqvae checkpoint" in sample_error(model)  # a GPT file is no VQ-VAE

    export = tmp_path / "gpt2"
    assert main(["export-gpt2", str(model), str(export), "--decoder", str(vqvae_file)]) == 0
    weights = bytearray((export / "vqvae.safetensors").read_bytes())
    weights[-1] ^= 0xFF  # still parses as safetensors; only the recorded sha256 tells
    (export / "vqvae.safetensors").write_bytes(bytes(weights))
    assert f"decoder file {export / 'vqvae.safetensors'} differs from the one" in sample_error(export)
    (export / "vqvae.json").write_text("{not json")
    assert f"decoder description {export / 'vqvae.json'} is not readable" in sample_error(export)
    assert not out.exists()  # every refusal came before sampling


def test_a_decoder_that_does_not_fit_the_model_is_refused_saying_what_differs(tmp_path, vqvae_file, capsys):
    pytest.importorskip("transformers", reason="the GPT-2 export needs the hf extra")
    other_vocab = model_file(tmp_path, vocab_size=16, name="v16.safetensors")
    err = run_error(["export-gpt2", other_vocab, tmp_path / "e", "--decoder", vqvae_file], capsys)
    assert "has 32 codes but the model has 16 tokens (vocab_size)" in err and not (tmp_path / "e").exists()
    err = run_error(["sample", other_vocab, "--out", tmp_path / "t.npy", "--png", tmp_path / "g.png",
                     "--decoder", vqvae_file], capsys)
    assert "has 32 codes but the model has 16 tokens" in err

    not_square = model_file(tmp_path, block_size=12, name="t12.safetensors")
    err = run_error(["export-gpt2", not_square, tmp_path / "e", "--decoder", vqvae_file], capsys)
    assert "hold 12 tokens (block_size), not a square grid" in err

    export = tmp_path / "gpt2"
    assert main(["export-gpt2", str(model_file(tmp_path)), str(export), "--decoder", str(vqvae_file)]) == 0
    longer = model_file(tmp_path, block_size=64, name="t64.safetensors")  # an 8 x 8 grid, also square
    err = run_error(["sample", longer, "--out", tmp_path / "t.npy", "--png", tmp_path / "g.png",
                     "--decoder", export], capsys)
    assert "decodes 4 x 4 token grids (16 tokens, per its vqvae.json)" in err and "hold 64 tokens" in err
    err = run_error(["sample", model_file(tmp_path), "--out", tmp_path / "t.npy", "--png", tmp_path / "g.png",
                     "--decoder", export, "--length", "8"], capsys)
    assert "--png decodes whole 4 x 4 token grids; drop --length 8" in err
    assert "not both" in run_error(["export-gpt2", model_file(tmp_path), tmp_path / "e", "--decoder", vqvae_file,
                                    "--palette", tmp_path / "p.json"], capsys)
    assert "records no palette or VQ-VAE" in run_error(["sample", model_file(tmp_path), "--out", tmp_path / "t.npy",
                                                        "--png", tmp_path / "g.png"], capsys)


def test_without_projectable_vqvae_the_error_names_the_package(tmp_path, monkeypatch, capsys):
    (tmp_path / "v.safetensors").write_bytes(b"anything")
    monkeypatch.setitem(sys.modules, "projectable_vqvae", None)  # import fails as if not installed
    err = run_error(["sample", model_file(tmp_path), "--out", tmp_path / "t.npy", "--png", tmp_path / "g.png",
                     "--decoder", tmp_path / "v.safetensors"], capsys)
    assert "needs the package projectable-vqvae" in err and "pip install packages/vqvae" in err


def test_the_core_does_not_import_projectable_vqvae():
    code = ("import sys, projectable, projectable.cli, projectable.hf, projectable.render, projectable.vqvae_render; "
            "assert 'projectable_vqvae' not in sys.modules, 'imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_checkpoint_points_to_its_vqvae_and_generate_then_export_ship_it(tmp_path, vqvae_file, capsys):
    """A run's final folder holds vqvae.safetensors beside projectable.safetensors, which points to it; the
    small model `generate` writes elsewhere points to the same file, and `export-gpt2` ships it with no flag.
    A VQ-VAE changed or moved since is refused, saying so."""
    pytest.importorskip("transformers", reason="the GPT-2 export needs the hf extra")
    import shutil

    from projectable import ProjectableGPT, ProjectorConfig
    from projectable.tokenizer import read_tokenizer, vqvae_tokenizer
    from projectable.vqvae_render import VQVAE_FILE

    final = tmp_path / "run" / "final"
    final.mkdir(parents=True)
    shutil.copyfile(vqvae_file, final / VQVAE_FILE)
    source = GPT(GPTConfig.tiny(vocab_size=32, block_size=GRID * GRID, n_embd=32, n_head=2))
    model = ProjectableGPT(source, ProjectorConfig(task_dim=3, scales=(0.5,)))
    model.save(final / "projectable.safetensors", tokenizer=vqvae_tokenizer(final / VQVAE_FILE))
    out = tmp_path / "elsewhere" / "small.safetensors"
    assert main(["generate", "--checkpoint", str(final / "projectable.safetensors"), "--task", "1,2,3",
                 "--out", str(out)]) == 0
    assert read_tokenizer(out).vqvae == (final / VQVAE_FILE).resolve()
    assert main(["export-gpt2", str(out), str(tmp_path / "gpt2")]) == 0
    assert (tmp_path / "gpt2" / VQVAE_FILE).read_bytes() == vqvae_file.read_bytes()
    assert "vqvae.safetensors" in (tmp_path / "gpt2" / "README.md").read_text()
    (final / VQVAE_FILE).write_bytes(b"changed")
    assert "has changed since (sha256 mismatch)" in run_error(["export-gpt2", out, tmp_path / "again"], capsys)
    (final / VQVAE_FILE).unlink()
    assert "which is missing" in run_error(["export-gpt2", out, tmp_path / "again"], capsys)
