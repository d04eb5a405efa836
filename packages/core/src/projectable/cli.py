"""Command line for what users do without writing code (console script ``projectable``, also
``python -m projectable``): ``generate`` (one-shot generation of Sec. 2.2: a standalone GPT per task vector),
``export-gpt2`` (a ``transformers`` GPT-2 folder that renders alone), ``import-gpt2`` (a GPT-2 folder as our
GPT), ``sample`` (token sequences and an image grid, App. B), ``info``. ``projectable <command> --help`` shows
each command's options, defaults and an example.

Bad input prints one line ``projectable: error: ...`` and exits with status 2, before any work. Outputs are
checked first: an existing output is refused unless ``--overwrite``, a missing parent folder is created, an
unwritable one is refused, a model file must end in .safetensors. Outputs are written under a temporary name
and renamed into place (mode 0666 less the umask), so a failed run leaves an existing output as it was;
success is reported only once the output is on disk. Wherever a model is read, a GPT file or a folder
written by ``export-gpt2`` (or any local GPT-2 folder) will do.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import torch

from projectable import __version__, gpt, projected
from projectable.gpt import GPT, GPTConfig
from projectable.io import config_from_metadata, write_atomically
from projectable.projected import ProjectableGPT, projector_config_from_dict
from projectable.projector import scale_name
from projectable.sampling import check_sampling, sample
from projectable.tokenizer import ImageTokenizer, palette_tokenizer, read_tokenizer, vqvae_tokenizer
from projectable.validation import check_task, free_memory, group_size


def parse_scale(text: str) -> float:
    """'1/8' or '0.125' -> 0.125; must be 1/2^k."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--scale {text!r} is not a number; write it as 1/8 or 0.125") from None
    group_size(value)
    return value


def parse_task(text: str | None, path: str | None) -> torch.Tensor | None:
    """A task vector from ``--task "0.1,0.2"`` (float32) or ``--task-file`` (.npy, .pt, or .txt of numbers).

    Files keep their dtype; the model converts any real dtype to its own and refuses the others.
    """
    if text is not None and path is not None:
        raise ValueError("give the task vector once: --task or --task-file, not both")
    if text is not None:
        try:
            values = [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            raise ValueError(f"--task {text!r} is not a comma-separated list of numbers, e.g. \"0.1,0.2,0.3\"") from None
        if not values:
            raise ValueError("--task is empty; pass a comma-separated list of numbers")
        return torch.tensor(values, dtype=torch.float32)
    if path is None:
        return None
    file = Path(path)
    if not file.exists():
        raise ValueError(f"--task-file {file} does not exist")
    if not file.is_file():
        raise ValueError(f"--task-file {file} is a folder; pass a .npy, .pt or .txt file")
    if file.suffix in (".npy", ".pt"):
        try:
            if file.suffix == ".npy":
                value = _numpy().load(file, allow_pickle=False)
            else:
                value = torch.load(file, weights_only=True)
        except Exception as err:  # a damaged or foreign file: any reader error means "not readable"
            reason = str(err).split(". ")[0][:200]  # torch's own advice (weights_only=False) is unsafe here
            raise ValueError(
                f"--task-file {file} is not a readable {file.suffix} file of numbers ({type(err).__name__}: {reason}); "
                f"write it with {'numpy.save' if file.suffix == '.npy' else 'torch.save'} of one array"
            ) from None
        try:
            return torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"--task-file {file} holds a {type(value).__name__}, not an array of numbers; save one array"
            ) from None
    try:
        rows = [line.replace(",", " ").split() for line in file.read_text().splitlines() if line.strip()]
        task = torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float32)
    except (UnicodeDecodeError, ValueError):
        raise ValueError(
            f"--task-file {file} holds something other than rows of numbers of equal length; write one vector "
            "per line (or use .npy / .pt)"
        ) from None
    if task.shape[0] == 0:
        raise ValueError(f"--task-file {file} is empty; write one vector per line")
    return task[0] if task.shape[0] == 1 else task


def _numpy():
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy ships with almost every torch install
        raise ValueError("reading or writing .npy needs numpy (pip install numpy); use .pt instead") from None
    return numpy


def _is_gpt2_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def _load_gpt(path: str) -> GPT:
    """A GPT file (``GPT.save``, ``projectable generate``) or a GPT-2 folder (``export-gpt2``, ``save_pretrained``)."""
    file = Path(path)
    if not file.exists():
        raise ValueError(f"no model file at {file}; pass a file written by GPT.save or `projectable generate`, "
                         "or a folder written by `projectable export-gpt2`")
    if file.is_dir():
        if not _is_gpt2_folder(file):
            raise ValueError(f"{file} is a folder without config.json; pass a GPT file or an export-gpt2 folder")
        from projectable.hf import from_gpt2

        return from_gpt2(file)  # our own exports come back with their vocabulary
    if _read_header(path)[0].get("format") == projected.FILE_FORMAT:
        raise ValueError(
            f"{file} is a ProjectableGPT checkpoint (source + projectors), not a standalone model; generate one "
            f"for a task vector first: projectable generate --checkpoint {file} --task \"...\" --out small.safetensors"
        )
    return GPT.load(file)  # a corrupt, truncated or foreign file raises a ValueError naming it


def _model_tokenizer(path: str) -> ImageTokenizer | None:
    """The palette or VQ-VAE a model file records, or that an export folder ships; None if neither."""
    file = Path(path)
    if file.is_dir():
        from projectable.render import PALETTE_FILE, load_palette
        from projectable.vqvae_render import VQVAE_FILE, load_decoder

        if (file / PALETTE_FILE).is_file():
            return palette_tokenizer(load_palette(file / PALETTE_FILE))
        if (file / VQVAE_FILE).is_file():
            return vqvae_tokenizer(load_decoder(file).file)  # checks the file against its vqvae.json
        return None
    return read_tokenizer(file)


def _flag_tokenizer(args) -> ImageTokenizer | None:
    """The tokenizer named by --palette / --decoder, if either is given."""
    if args.palette and args.decoder:
        raise ValueError("give --palette (palette tokens) or --decoder (VQ-VAE tokens), not both")
    if args.palette:
        from projectable.render import load_palette

        return palette_tokenizer(load_palette(args.palette))
    if args.decoder:
        from projectable.vqvae_render import load_decoder

        return vqvae_tokenizer(load_decoder(args.decoder).file)
    return None


def _decoder(tokenizer: ImageTokenizer):
    """The VQ-VAE a tokenizer record names; an export folder's, with the token grid its vqvae.json gives."""
    from projectable.vqvae_render import VQVAE_FILE, VQVAE_INFO, load_decoder

    file = Path(tokenizer.vqvae)
    in_export = file.name == VQVAE_FILE and (file.parent / VQVAE_INFO).is_file()
    return load_decoder(file.parent if in_export else file)


def _check_suffix(path: str, flag: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output name whose suffix says another format than the one written."""
    if Path(path).suffix not in suffixes:
        raise ValueError(f"{flag} {path} must end in {' or '.join(suffixes)} (the format written); rename it")


def _read_header(path: str) -> tuple[dict[str, str], dict[str, int]]:
    """Metadata and tensor sizes of a safetensors file, without loading the tensors."""
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.exists():
        raise ValueError(f"no file at {file}")
    if not file.is_file():
        raise ValueError(f"{file} is a folder; pass a model file")
    try:
        with safe_open(str(file), framework="pt") as f:
            sizes = {}
            for name in f.keys():
                n = 1
                for dim in f.get_slice(name).get_shape():
                    n *= dim
                sizes[name] = n
            return f.metadata() or {}, sizes
    except (OSError, RuntimeError, SafetensorError) as error:
        what = {".npz": "a numpy archive (e.g. a palette)", ".json": "a JSON file (e.g. a palette)",
                ".npy": "a numpy array (e.g. sampled tokens)", ".pt": "a torch file"}.get(file.suffix)
        if what:
            raise ValueError(f"{file} is {what}, not a model file; pass a .safetensors model file or an "
                             "export-gpt2 folder") from None
        raise ValueError(f"{file} is not a readable safetensors file ({error})") from None


# ----------------------------------------------------------------------------------------------------
# Outputs: checked before any work, written under a temporary name, verified after writing.


def _writable_folder(out: Path, flag: str) -> None:
    """The folder that will hold ``out`` exists and is writable, or can be created in one that is."""
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"cannot write {flag} {out}: {ancestor} is a file, not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".projectable-probe-", dir=ancestor)
    except OSError as err:
        raise ValueError(
            f"cannot write {flag} {out}: the folder {ancestor} is not writable ({err.strerror}); choose another path"
        ) from None
    os.close(fd)
    os.unlink(probe)


def check_output_file(path: str, flag: str, overwrite: bool) -> Path:
    """Refuse, before any work, an output file that exists (unless ``overwrite``), a folder, or a path that
    cannot be written. A missing parent folder is fine: it is created when the file is written."""
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"{flag} {out} is a folder; give a file name inside it")
    if out.exists() and not overwrite:
        raise ValueError(f"{flag} {out} already exists; pass --overwrite to replace it, or choose another name")
    _writable_folder(out, flag)
    return out


def check_output_folder(path: str, flag: str, overwrite: bool) -> Path:
    """As ``check_output_file`` for an output folder: an empty existing folder is used, a non-empty one only
    with ``overwrite`` (its content is then replaced as a whole)."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{flag} {out} is a file, not a folder; remove it or choose another folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"{flag} {out} already exists and is not empty; pass --overwrite to replace it, or choose another folder"
        )
    _writable_folder(out, flag)
    return out


def _write_file(out: Path, write) -> None:
    """``write(tmp)`` then rename to ``out`` (parents created); fails unless ``out`` is on disk afterwards."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, write)
    if not out.is_file() or out.stat().st_size == 0:
        raise ValueError(f"writing {out} failed: the file is missing or empty after writing")


def _write_folder(out: Path, write, expected: tuple[str, ...]) -> None:
    """``write(tmp_folder)`` then move it to ``out``, replacing an existing ``out`` only once it succeeded."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.partial")
    try:
        write(tmp)
        missing = [name for name in expected if not (tmp / name).is_file()]
        if missing:
            raise ValueError(f"writing {out} failed: {', '.join(missing)} missing after writing")
        if out.is_dir():
            old = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.old")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old)
        else:
            os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _count_params(config: GPTConfig) -> int:
    with torch.device("meta"):
        return GPT(config).num_params()


# ----------------------------------------------------------------------------------------------------
# Subcommands. Each takes the parsed arguments and prints what it did.


def batch_outputs(out: str, rows: int) -> list[str]:
    """One output name per task vector: ``out`` itself for one, ``<stem>-<i><suffix>`` for several."""
    if rows == 1:
        return [out]
    path, digits = Path(out), len(str(rows - 1))
    return [str(path.with_name(f"{path.stem}-{i:0{digits}d}{path.suffix}")) for i in range(rows)]


def cmd_generate(args) -> None:
    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        raise ValueError(f"no checkpoint at {checkpoint}; pass a file written by ProjectableGPT.save")
    if checkpoint.is_file() and _read_header(str(checkpoint))[0].get("format") == gpt.FILE_FORMAT:
        raise ValueError(f"{checkpoint} is a standalone GPT already; sample or export it directly (projectable "
                         "sample / export-gpt2); generate reads a ProjectableGPT checkpoint")
    task = parse_task(args.task, args.task_file)
    if task is None:
        raise ValueError("generate needs a task vector: --task \"0.1,0.2,...\" or --task-file FILE")
    _check_suffix(args.out, "--out", (".safetensors",))
    scale = None if args.scale is None else parse_scale(args.scale)
    tokenizer = _flag_tokenizer(args)
    model = ProjectableGPT.load(checkpoint).eval()
    if scale is None:
        if len(model.config.scales) != 1:
            names = ", ".join(scale_name(s) for s in model.config.scales)
            raise ValueError(f"the checkpoint has projectors for several scales ({names}); choose one with --scale")
        scale = model.config.scales[0]
    model.check_scale(scale)
    check_task(task, model.config.task_dim)
    tasks = task.reshape(-1, model.config.task_dim)  # (B, task_dim): one small model per row
    tokenizer = tokenizer or read_tokenizer(checkpoint)  # the checkpoint's palette or VQ-VAE travels on
    if tokenizer is not None and tokenizer.centres is not None:
        from projectable.tokenizer import check_palette

        check_palette(tokenizer.centres, model.source_config.vocab_size)
    outs = [check_output_file(name, "--out", args.overwrite) for name in batch_outputs(args.out, len(tasks))]
    for row, out in zip(tasks, outs):
        small = model.generate(row, scale)
        _write_file(out, lambda tmp, small=small: small.save(tmp, tokenizer=tokenizer))
        _read_header(str(out))  # what was written reads back
        c = small.config
        print(f"wrote {out}: GPT at scale {scale_name(scale)} (width {c.n_embd}, {c.n_layer} layers, "
              f"{small.num_params():,} parameters" + (f", its {tokenizer.kind}" if tokenizer else "") + ")")


def cmd_export_gpt2(args) -> None:
    from projectable.hf import save_gpt2

    try:  # a command line prints its own one-line summary
        from transformers.utils import logging

        logging.disable_progress_bar()
    except ImportError:
        pass  # save_gpt2 raises the informative error
    tokenizer = _flag_tokenizer(args)
    model = _load_gpt(args.model)
    recorded = tokenizer is None
    tokenizer = tokenizer or _model_tokenizer(args.model)  # what the trained model's file records
    palette = decoder = None
    if tokenizer is not None and tokenizer.centres is not None:
        from projectable.tokenizer import check_palette

        palette = check_palette(tokenizer.centres, model.config.vocab_size)
    elif tokenizer is not None:
        from projectable.vqvae_render import fit_grid

        decoder = _decoder(tokenizer)
        fit_grid(decoder, model.config)  # refuses a decoder that does not fit the model, before writing
    out = check_output_folder(args.outdir, "outdir", args.overwrite)
    shipped = {"palette": ("palette.json",), "vqvae": ("vqvae.safetensors", "vqvae.json")}
    expected = shipped[tokenizer.kind] if tokenizer else ()
    _write_folder(out, lambda tmp: save_gpt2(model, tmp, palette=palette, decoder=decoder),
                  ("config.json", "model.safetensors", *expected))
    V = model.config.vocab_size
    if tokenizer is None:
        what = ("; the model records no palette or VQ-VAE, so the card's recipe cannot render it: pass --palette "
                "or --decoder")
    else:
        what = f", its {tokenizer.kind} ({'from the model file' if recorded else 'as given'}) in {expected[0]}"
    print(f"wrote GPT-2 to {out}: vocabulary {V + 1} (token {V} starts every sequence), "
          f"{model.config.block_size} positions" + what)


def cmd_import_gpt2(args) -> None:
    from projectable.hf import from_gpt2

    source = Path(args.folder)
    if not _is_gpt2_folder(source):
        raise ValueError(f"{source} is not a GPT-2 folder (no config.json); pass a folder written by "
                         "save_pretrained or `projectable export-gpt2`")
    _check_suffix(args.out, "--out", (".safetensors",))
    tokenizer = _flag_tokenizer(args)
    out = check_output_file(args.out, "out", args.overwrite)
    model = from_gpt2(source, start_token_id=args.start_token_id, vocab_size=args.vocab_size, dropout=args.dropout,
                      allow_gelu_approximation=args.allow_gelu_approximation)
    tokenizer = tokenizer or _model_tokenizer(str(source))
    _write_file(out, lambda tmp: model.save(tmp, tokenizer=tokenizer))
    c = model.config
    print(f"wrote {out}: GPT (vocabulary {c.vocab_size}, {c.block_size} positions, width {c.n_embd}, "
          f"{c.n_layer} layers, {model.num_params():,} parameters)" + (f", its {tokenizer.kind}" if tokenizer else ""))


def check_sampling_memory(config: GPTConfig, n: int, length: int) -> None:
    """Refuse an ``--n`` whose KV cache (keys and values of every layer and position, fp32) and logits cannot
    fit the free memory, before the first token is drawn."""
    needed = 4 * n * (2 * config.n_layer * length * config.n_embd + 2 * config.vocab_size + length)
    free = free_memory()
    if free is not None and needed > free:
        raise ValueError(
            f"--n {n} samples of {length} tokens need about {needed / 2**30:.1f} GiB (their KV cache), but this "
            f"machine has {free / 2**30:.1f} GiB free; sample fewer at a time (several runs with other --seed)"
        )


def cmd_sample(args) -> None:
    out = Path(args.out)
    _check_suffix(args.out, "--out", (".npy", ".pt"))
    if args.png:
        _check_suffix(args.png, "--png", (".png",))
    task = parse_task(args.task, args.task_file)
    model = _load_gpt(args.model)
    flag = "--task" if args.task is not None else "--task-file"
    if task is not None and not model.config.conditional:
        raise ValueError(f"this model is unconditional (task_dim=0) and takes no task vector; drop {flag}")
    if task is None and model.config.conditional:
        raise ValueError(
            f"this model is conditional and needs a task vector of size {model.config.task_dim}: "
            "pass --task or --task-file"
        )
    checked = check_sampling(model.config, args.n, args.temperature, args.top_k, args.length)
    if task is not None:
        check_task(task, model.config.task_dim, batch=args.n)
    check_sampling_memory(model.config, checked.n, checked.length)
    render = None
    if args.png:
        render = _png_renderer(args, model.config)
        check_output_file(args.png, "--png", args.overwrite)
    elif args.palette or args.decoder:
        raise ValueError("--palette and --decoder render the samples: add --png grid.png, or drop them")
    check_output_file(args.out, "--out", args.overwrite)
    generator = torch.Generator().manual_seed(args.seed)
    tokens = sample(model, n=args.n, task=task, temperature=args.temperature, top_k=args.top_k,
                    generator=generator, length=args.length)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append .npy to the temporary name
            if out.suffix == ".npy":
                _numpy().save(f, tokens.numpy())
            else:
                torch.save(tokens, f)

    _write_file(out, write)
    print(f"sampled tokens of shape {tuple(tokens.shape)} -> {out}")
    if render is not None:
        from projectable.render import save_grid_png

        images, upscale = render(tokens.numpy())
        _write_file(Path(args.png), lambda tmp: save_grid_png(images, tmp, upscale=upscale))
        print(f"image grid of {len(images)} samples -> {args.png}")


def _png_renderer(args, config: GPTConfig):
    """tokens (N, T) -> ((N, H, W, 3) uint8 images, grid upscale), from --palette or --decoder, else from what
    the model file records; checked against the model before any sampling."""
    tokenizer = _flag_tokenizer(args) or _model_tokenizer(args.model)
    if tokenizer is None:
        raise ValueError(
            f"--png needs to know what the tokens are: {args.model} records no palette or VQ-VAE; pass --palette "
            "(palette tokens: a palette.json beside an export, or the data cache's palette .npz) or --decoder "
            "(VQ-VAE tokens: a VQ-VAE file or an export folder holding vqvae.safetensors)"
        )
    if tokenizer.centres is not None:
        from projectable.render import tokens_to_images
        from projectable.tokenizer import check_palette

        palette = check_palette(tokenizer.centres, config.vocab_size, what="--palette")
        return lambda tokens: (tokens_to_images(tokens, palette), None)
    from projectable.vqvae_render import decode_images, fit_grid

    decoder = _decoder(tokenizer)
    grid = fit_grid(decoder, config)
    if args.length is not None and args.length != grid[0] * grid[1]:
        raise ValueError(f"--png decodes whole {grid[0]} x {grid[1]} token grids; drop --length {args.length}")
    return lambda tokens: (decode_images(decoder, tokens, grid), None)  # save_grid_png: about 128 px an image


def cmd_info(args) -> None:
    if _is_gpt2_folder(Path(args.file)):
        model = _load_gpt(args.file)
        tokenizer = _model_tokenizer(args.file)
        print("GPT-2 folder (transformers), read as a projectable GPT (unconditional)")
        print(f"config: {model.config}")
        print(f"parameters: {model.num_params():,}")
        print(f"renders with: {_describe(tokenizer)}")
        return
    meta, sizes = _read_header(args.file)
    fmt = meta.get("format")
    if fmt == gpt.FILE_FORMAT:
        config = config_from_metadata(meta, "config", args.file, lambda c: GPTConfig(**c))
        dense = sum(n for name, n in sizes.items() if ".attn." in name or ".mlp." in name)
        print(f"projectable GPT ({'conditional' if config.conditional else 'unconditional'})")
        print(f"config: {meta['config']}")
        print(f"parameters: {sum(sizes.values()):,} (dense operators {dense:,}, other {sum(sizes.values()) - dense:,})")
    elif fmt == projected.FILE_FORMAT:
        source = config_from_metadata(meta, "source_config", args.file, lambda c: GPTConfig(**c))
        projector = config_from_metadata(meta, "projector_config", args.file, projector_config_from_dict)
        if projector.reads_source:
            print("ProjectableGPT checkpoint (source + projectors)")
        else:
            print("ProjectableGPT checkpoint (projectors with base weights of their own, no source)")
        print(f"generator: {projector.generator}")
        print(f"source config: {meta['source_config']}")
        print(f"projector config: {meta['projector_config']}")
        if projector.reads_source:
            print(f"source parameters: {sum(n for k, n in sizes.items() if k.startswith('source.')):,}")
        else:
            print(f"source parameters: none (the {projector.generator} generator reads no source; its config "
                  "sets the shapes)")
        for scale in projector.scales:
            key = f"1_{group_size(scale)}"
            own = sum(n for k, n in sizes.items() if k.startswith((f"generators.{key}.", f"small_parts.{key}.")))
            small = _count_params(replace(source, task_dim=0).scaled(scale))
            print(f"scale {scale_name(scale)}: projector parameters {own:,}; generated model "
                  f"(width {round(source.n_embd * scale)}) {small:,} parameters")
    else:
        raise ValueError(
            f"{args.file} is neither a projectable GPT nor a ProjectableGPT checkpoint (format={fmt!r})"
        )
    print(f"renders with: {_describe(read_tokenizer(args.file))}")


def _describe(tokenizer: ImageTokenizer | None) -> str:
    if tokenizer is None:
        return "nothing recorded (pass --palette or --decoder to sample --png and export-gpt2)"
    if tokenizer.centres is not None:
        return f"a palette of {len(tokenizer.centres)} colours"
    return f"the VQ-VAE {tokenizer.vqvae}"


# ----------------------------------------------------------------------------------------------------


DESCRIPTION = """\
Projectable Models from the command line: generate a standalone small GPT for a task vector from a trained
ProjectableGPT checkpoint in one shot (Sec. 2.2), sample it, render samples as a PNG, and move models to and
from Hugging Face transformers' GPT-2. Bad input prints one line "projectable: error: ..." and exits with
status 2 before any work; existing outputs are kept unless --overwrite."""

EXAMPLES = """\
examples:
  projectable generate --checkpoint runs/<sweep>/<trial>/final/projectable.safetensors --task-file task.npy --scale 1/8 --out small.safetensors
  projectable sample small.safetensors --n 16 --out tokens.npy --png samples.png
  projectable export-gpt2 small.safetensors small-gpt2/
  projectable import-gpt2 small-gpt2/ again.safetensors
  projectable info small.safetensors

`projectable COMMAND --help` shows a command's options, defaults and an example."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; wraps option help as usual."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="projectable", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, summary, example):
        return sub.add_parser(name, help=summary, description=summary, epilog=f"example:\n  {example}",
                              formatter_class=_Formatter)

    def add_task(p, what):
        group = p.add_mutually_exclusive_group()
        group.add_argument("--task", metavar="NUMBERS",
                           help='one task vector as comma-separated numbers, e.g. "0.1,0.2,0.3" (default: none)')
        group.add_argument("--task-file", metavar="FILE", help=f"{what} in .npy, .pt or .txt (one vector per line) "
                           "(default: none)")

    def add_tokenizer(p, what):
        p.add_argument("--palette", metavar="FILE", default=None,
                       help=f"palette tokens: a palette.json (K rows of [r, g, b] in [-1, 1]) or the data cache's "
                       f"palette .npz; {what} (default: the palette the model file records)")
        p.add_argument("--decoder", metavar="PATH", default=None,
                       help=f"VQ-VAE tokens: a projectable_vqvae.VQVAE.save file or an export folder holding "
                       f"vqvae.safetensors; {what} (default: the VQ-VAE the model file records)")

    def add_overwrite(p):
        p.add_argument("--overwrite", action="store_true", help="replace an existing output (default: refuse)")

    p = command("generate", "one-shot generation of a standalone small GPT per task vector (Sec. 2.2)",
                "projectable generate --checkpoint final/projectable.safetensors --task \"0.1,0.5,0.2\" "
                "--scale 1/8 --out small.safetensors")
    p.add_argument("--checkpoint", required=True, metavar="FILE",
                   help="ProjectableGPT.save file, e.g. a run's final/projectable.safetensors (required)")
    add_task(p, "task vector(s), one small model per row (several rows: --out small.safetensors writes "
                "small-0.safetensors, small-1.safetensors, ...)")
    p.add_argument("--scale", help="target width / source width, e.g. 1/8 or 0.125 (default: the checkpoint's "
                   "only scale)")
    p.add_argument("--out", required=True, metavar="FILE", help="output .safetensors in GPT.save format (required)")
    add_tokenizer(p, "recorded in the output so that sample --png and export-gpt2 render it")
    add_overwrite(p)
    p.set_defaults(func=cmd_generate)

    p = command("export-gpt2", "write a GPT as a transformers GPT2LMHeadModel folder that renders alone",
                "projectable export-gpt2 small.safetensors small-gpt2/")
    p.add_argument("model", help="GPT.save file (e.g. written by generate) or an export folder")
    p.add_argument("outdir", help="output folder (save_pretrained's files, README.md model card, palette or VQ-VAE)")
    add_tokenizer(p, "shipped beside the model with the card's render recipe")
    add_overwrite(p)
    p.set_defaults(func=cmd_export_gpt2)

    p = command("import-gpt2", "read a local GPT-2 folder (transformers) as a projectable GPT file",
                "projectable import-gpt2 small-gpt2/ small.safetensors")
    p.add_argument("folder", help="a GPT2LMHeadModel folder (save_pretrained, or written by export-gpt2)")
    p.add_argument("out", help="output .safetensors in GPT.save format")
    p.add_argument("--start-token-id", type=int, default=None, metavar="ID",
                   help="token whose embedding starts every sequence (default: the config's bos_token_id)")
    p.add_argument("--vocab-size", type=int, default=None, metavar="V",
                   help="keep the first V tokens (default: what export-gpt2 recorded, else the whole vocabulary)")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout rate, needed when GPT-2's three rates differ (default: GPT-2's common rate)")
    p.add_argument("--allow-gelu-approximation", action="store_true",
                   help="accept a tanh-approximate GELU (released GPT-2 checkpoints); our blocks use the exact "
                   "GELU, so logits then differ slightly (default: refuse)")
    add_tokenizer(p, "recorded in the output")
    add_overwrite(p)
    p.set_defaults(func=cmd_import_gpt2)

    p = command("sample", "sample token sequences from a GPT (and an image grid of them)",
                "projectable sample small.safetensors --n 16 --temperature 1 --top-k 40 --seed 0 "
                "--out tokens.npy --png samples.png")
    p.add_argument("model", help="GPT.save file (e.g. written by generate) or an export folder")
    p.add_argument("--n", type=int, default=16, help="number of sequences (default: 16)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature, > 0 (default: 1.0)")
    p.add_argument("--top-k", type=int, default=None, metavar="K",
                   help="sample among the K most likely tokens only (default: all tokens)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed draws the same samples "
                   "(default: 0)")
    p.add_argument("--length", type=int, default=None, help="tokens per sequence (default: block_size)")
    add_task(p, "task vector of a conditional model, or one per sample (n rows)")
    p.add_argument("--out", required=True, metavar="FILE", help="output tokens, .npy or .pt, shape (n, length) "
                   "(required)")
    p.add_argument("--png", default=None, metavar="FILE",
                   help="also an image grid of the samples, about 128 px an image (needs Pillow; default: none)")
    add_tokenizer(p, "turns tokens into pixels for --png")
    add_overwrite(p)
    p.set_defaults(func=cmd_sample)

    p = command("info", "print the config, parameter counts and renderer of a model, checkpoint or export folder",
                "projectable info final/projectable.safetensors")
    p.add_argument("file", help="GPT file, ProjectableGPT checkpoint, or export folder")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        try:
            args.func(args)
        except (ValueError, TypeError, ImportError, OSError) as error:  # OSError: a disk that fills up or fails mid-write
            if isinstance(error, BrokenPipeError):
                raise
            message = " ".join(str(error).split())  # one line
            print(f"projectable: error: {message}", file=sys.stderr)
            return 2
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`projectable info x | head -1`): stop quietly, as cat does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush would report the closed pipe again
        return 141  # 128 + SIGPIPE, the shell's status for a command stopped by a closed pipe
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
