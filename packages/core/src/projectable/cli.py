"""Command line for what users do without writing code (console script ``projectable``):

    projectable generate --checkpoint projectable.safetensors --task "0.1,0.2,..." --scale 1/8 --out small.safetensors
    projectable export-gpt2 small.safetensors gpt2_dir/ [--palette palette.json | --decoder vqvae.safetensors]
    projectable sample small.safetensors --n 16 --temperature 1 --top-k 40 --seed 0 --out tokens.npy
    projectable sample small.safetensors --out tokens.npy --png grid.png --decoder gpt2_dir/
    projectable info small.safetensors
    projectable --version                  (also: python -m projectable ...)

``generate`` is the one-shot generation of Sec. 2.2 (a standalone GPT for one task vector), ``export-gpt2``
writes it as a ``transformers`` GPT-2 (optional extra ``hf``), ``sample`` draws token sequences (App. B).
Bad input prints one line ``projectable: error: ...`` and exits with status 2, before any work. Outputs are
checked first: an existing output is refused unless ``--overwrite``, a missing parent folder is created, an
unwritable one is refused. Outputs are written under a temporary name and renamed into place, so a failed
run leaves an existing output as it was; success is reported only once the output is on disk.
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
from projectable.validation import check_task, group_size


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


def _load_gpt(path: str) -> GPT:
    file = Path(path)
    if not file.exists():
        raise ValueError(f"no model file at {file}; pass a file written by GPT.save or `projectable generate`")
    return GPT.load(file)  # a corrupt, truncated or foreign file raises a ValueError naming it


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


def cmd_generate(args) -> None:
    checkpoint = Path(args.checkpoint)
    if not checkpoint.exists():
        raise ValueError(f"no checkpoint at {checkpoint}; pass a file written by ProjectableGPT.save")
    task = parse_task(args.task, args.task_file)
    if task is None:
        raise ValueError("generate needs a task vector: --task \"0.1,0.2,...\" or --task-file FILE")
    scale = None if args.scale is None else parse_scale(args.scale)
    model = ProjectableGPT.load(checkpoint).eval()
    if scale is None:
        if len(model.config.scales) != 1:
            names = ", ".join(scale_name(s) for s in model.config.scales)
            raise ValueError(f"the checkpoint has projectors for several scales ({names}); choose one with --scale")
        scale = model.config.scales[0]
    model.check_scale(scale)
    check_task(task, model.config.task_dim)
    out = check_output_file(args.out, "--out", args.overwrite)
    small = model.generate(task, scale)
    _write_file(out, small.save)
    _read_header(str(out))  # what was written reads back
    c = small.config
    print(f"wrote {out}: GPT at scale {scale_name(scale)} (width {c.n_embd}, {c.n_layer} layers, "
          f"{small.num_params():,} parameters)")


def cmd_export_gpt2(args) -> None:
    from projectable.hf import save_gpt2

    try:  # a command line prints its own one-line summary
        from transformers.utils import logging

        logging.disable_progress_bar()
    except ImportError:
        pass  # save_gpt2 raises the informative error
    from projectable.render import PALETTE_FILE, load_palette, palette_json

    if args.palette and args.decoder:
        raise ValueError("give --palette (palette tokens) or --decoder (VQ-VAE tokens), not both")
    model = _load_gpt(args.model)
    extra = {PALETTE_FILE: palette_json(load_palette(args.palette))} if args.palette else {}
    if args.decoder:
        from projectable.vqvae_render import VQVAE_FILE, export_files, load_decoder

        decoder = load_decoder(args.decoder)
        extra = export_files(decoder, model.config)  # refuses a decoder that does not fit the model
    out = check_output_folder(args.outdir, "outdir", args.overwrite)
    _write_folder(out, lambda tmp: save_gpt2(model, tmp, extra_files=extra),
                  ("config.json", "model.safetensors", *extra))
    V = model.config.vocab_size
    print(f"wrote GPT-2 to {out}: vocabulary {V + 1} (token {V} starts every sequence), "
          f"{model.config.block_size} positions" + (f", its VQ-VAE decoder in {VQVAE_FILE}" if args.decoder else ""))


def free_memory() -> int | None:
    """Linux's MemAvailable in bytes (None elsewhere)."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


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
    if out.suffix not in (".npy", ".pt"):
        raise ValueError(f"--out {out} must end in .npy or .pt")
    task = parse_task(args.task, args.task_file)
    model = _load_gpt(args.model)
    if task is not None and not model.config.conditional:
        raise ValueError("this model is unconditional (task_dim=0) and takes no task vector; drop --task")
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
    """tokens (N, T) -> ((N, H, W, 3) uint8 images, grid upscale), from --palette or --decoder; checked
    against the model before any sampling."""
    if bool(args.palette) == bool(args.decoder):
        raise ValueError(
            "--png needs one of --palette (palette tokens: a palette.json beside an export, or the data cache's "
            "palette .npz) or --decoder (VQ-VAE tokens: a VQ-VAE file or an export folder holding vqvae.safetensors)"
        )
    if args.palette:
        from projectable.render import load_palette, tokens_to_images

        palette = load_palette(args.palette)
        if len(palette) != config.vocab_size:
            raise ValueError(f"--palette has {len(palette)} colours but the model has {config.vocab_size} tokens")
        return lambda tokens: (tokens_to_images(tokens, palette), 4)
    from projectable.vqvae_render import decode_images, fit_grid, load_decoder

    decoder = load_decoder(args.decoder)
    grid = fit_grid(decoder, config)
    if args.length is not None and args.length != grid[0] * grid[1]:
        raise ValueError(f"--png decodes whole {grid[0]} x {grid[1]} token grids; drop --length {args.length}")
    side = decoder.vqvae.cfg.downsampling * grid[0]
    return lambda tokens: (decode_images(decoder, tokens, grid), max(1, 64 // side))  # at least 64 px an image


def cmd_info(args) -> None:
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


# ----------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="projectable", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def add_task(p):
        group = p.add_mutually_exclusive_group()
        group.add_argument("--task", help='task vector as comma-separated numbers, e.g. "0.1,0.2,0.3"')
        group.add_argument("--task-file", help="task vector(s) in .npy, .pt or .txt (one vector per line)")

    def add_overwrite(p):
        p.add_argument("--overwrite", action="store_true", help="replace an existing output (refused otherwise)")

    p = sub.add_parser("generate", help="one-shot generation of a standalone small GPT for a task vector")
    p.add_argument("--checkpoint", required=True, help="ProjectableGPT.save file")
    add_task(p)
    p.add_argument("--scale", help="target width / source width, e.g. 1/8 or 0.125 (default: the only one)")
    p.add_argument("--out", required=True, help="output .safetensors (GPT.save format)")
    add_overwrite(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export-gpt2", help="write a GPT file as a transformers GPT2LMHeadModel directory")
    p.add_argument("model", help="GPT.save file")
    p.add_argument("outdir", help="output directory (save_pretrained)")
    p.add_argument("--palette", default=None, help="palette (.json or the data cache's .npz) saved beside as palette.json")
    p.add_argument("--decoder", default=None,
                   help="VQ-VAE file (projectable_vqvae) whose tokens the model learnt, saved beside as vqvae.safetensors")
    add_overwrite(p)
    p.set_defaults(func=cmd_export_gpt2)

    p = sub.add_parser("sample", help="sample token sequences from a GPT file")
    p.add_argument("model", help="GPT.save file")
    p.add_argument("--n", type=int, default=16, help="number of sequences")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--length", type=int, default=None, help="tokens per sequence (default: block_size)")
    add_task(p)
    p.add_argument("--out", required=True, help="output tokens, .npy or .pt, shape (n, length)")
    p.add_argument("--png", default=None, help="also an image grid of the samples (needs --palette or --decoder, "
                   "and Pillow)")
    p.add_argument("--palette", default=None, help="palette.json or palette .npz that turns tokens into colours")
    p.add_argument("--decoder", default=None, help="VQ-VAE file, or an export folder holding vqvae.safetensors, that "
                   "decodes tokens into images (needs projectable-vqvae)")
    add_overwrite(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("info", help="print the config and parameter counts of a model or checkpoint file")
    p.add_argument("file")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, ImportError, OSError) as error:  # OSError: a disk that fills up or fails mid-write
        message = " ".join(str(error).split())  # one line
        print(f"projectable: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
