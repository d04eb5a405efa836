"""Command line for what users do without writing code (console script ``projectable``):

    projectable generate --checkpoint projectable.safetensors --task "0.1,0.2,..." --scale 1/8 --out small.safetensors
    projectable export-gpt2 small.safetensors gpt2_dir/
    projectable sample small.safetensors --n 16 --temperature 1 --top-k 40 --seed 0 --out tokens.npy
    projectable info small.safetensors
    projectable --version                  (also: python -m projectable ...)

``generate`` is the one-shot generation of Sec. 2.2 (a standalone GPT for one task vector), ``export-gpt2``
writes it as a ``transformers`` GPT-2 (optional extra ``hf``), ``sample`` draws token sequences (App. B).
Bad input prints one line ``projectable: error: ...`` and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

import torch

from projectable import __version__, gpt, projected
from projectable.gpt import GPT, GPTConfig
from projectable.projected import ProjectableGPT
from projectable.projector import ProjectorConfig, scale_name
from projectable.sampling import sample
from projectable.validation import group_size


def parse_scale(text: str) -> float:
    """'1/8' or '0.125' -> 0.125; must be 1/2^k."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"--scale {text!r} is not a number; write it as 1/8 or 0.125") from None
    group_size(value)
    return value


def parse_task(text: str | None, path: str | None) -> torch.Tensor | None:
    """A task vector from ``--task "0.1,0.2"`` or ``--task-file`` (.npy, .pt, or .txt of numbers) -> float32."""
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
    if file.suffix == ".npy":
        np = _numpy()
        return torch.as_tensor(np.load(file, allow_pickle=False), dtype=torch.float32)
    if file.suffix == ".pt":
        return torch.as_tensor(torch.load(file, weights_only=True), dtype=torch.float32)
    rows = [line.replace(",", " ").split() for line in file.read_text().splitlines() if line.strip()]
    try:
        task = torch.tensor([[float(v) for v in row] for row in rows], dtype=torch.float32)
    except ValueError:
        raise ValueError(f"--task-file {file} holds something other than numbers; write one vector per line") from None
    return task[0] if task.shape[0] == 1 else task


def _numpy():
    try:
        import numpy
    except ImportError:  # pragma: no cover - numpy ships with almost every torch install
        raise ValueError("reading or writing .npy needs numpy (pip install numpy); use .pt instead") from None
    return numpy


def _load_gpt(path: str) -> GPT:
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"no model file at {file}; pass a file written by GPT.save or `projectable generate`")
    return GPT.load(file)  # a corrupt or foreign file raises a ValueError naming it


def _read_header(path: str) -> tuple[dict[str, str], dict[str, int]]:
    """Metadata and tensor sizes of a safetensors file, without loading the tensors."""
    from safetensors import SafetensorError, safe_open

    file = Path(path)
    if not file.is_file():
        raise ValueError(f"no file at {file}")
    try:
        with safe_open(str(file), framework="pt") as f:
            sizes = {}
            for name in f.keys():
                n = 1
                for dim in f.get_slice(name).get_shape():
                    n *= dim
                sizes[name] = n
            return f.metadata() or {}, sizes
    except SafetensorError as error:
        raise ValueError(f"{file} is not a safetensors file ({error})") from None


def _count_params(config: GPTConfig) -> int:
    with torch.device("meta"):
        return GPT(config).num_params()


# ----------------------------------------------------------------------------------------------------
# Subcommands. Each takes the parsed arguments and prints what it did.


def cmd_generate(args) -> None:
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_file():
        raise ValueError(f"no checkpoint at {checkpoint}; pass a file written by ProjectableGPT.save")
    task = parse_task(args.task, args.task_file)
    if task is None:
        raise ValueError("generate needs a task vector: --task \"0.1,0.2,...\" or --task-file FILE")
    model = ProjectableGPT.load(checkpoint).eval()
    if args.scale is None:
        if len(model.config.scales) != 1:
            names = ", ".join(scale_name(s) for s in model.config.scales)
            raise ValueError(f"the checkpoint has projectors for several scales ({names}); choose one with --scale")
        scale = model.config.scales[0]
    else:
        scale = parse_scale(args.scale)
    small = model.generate(task, scale)
    small.save(args.out)
    c = small.config
    print(f"wrote {args.out}: GPT at scale {scale_name(scale)} (width {c.n_embd}, {c.n_layer} layers, "
          f"{small.num_params():,} parameters)")


def cmd_export_gpt2(args) -> None:
    from projectable.hf import save_gpt2

    try:  # a command line prints its own one-line summary
        from transformers.utils import logging

        logging.disable_progress_bar()
    except ImportError:
        pass  # save_gpt2 raises the informative error
    model = _load_gpt(args.model)
    out = save_gpt2(model, args.outdir)
    V = model.config.vocab_size
    print(f"wrote GPT-2 to {out}: vocabulary {V + 1} (token {V} starts every sequence), "
          f"{model.config.block_size} positions")


def cmd_sample(args) -> None:
    model = _load_gpt(args.model)
    task = parse_task(args.task, args.task_file)
    if task is not None and not model.config.conditional:
        raise ValueError("this model is unconditional (task_dim=0) and takes no task vector; drop --task")
    if task is None and model.config.conditional:
        raise ValueError(
            f"this model is conditional and needs a task vector of size {model.config.task_dim}: "
            "pass --task or --task-file"
        )
    out = Path(args.out)
    if out.suffix not in (".npy", ".pt"):
        raise ValueError(f"--out {out} must end in .npy or .pt")
    generator = torch.Generator().manual_seed(args.seed)
    tokens = sample(model, n=args.n, task=task, temperature=args.temperature, top_k=args.top_k,
                    generator=generator, length=args.length)
    if out.suffix == ".npy":
        _numpy().save(out, tokens.numpy())
    else:
        torch.save(tokens, out)
    print(f"sampled tokens of shape {tuple(tokens.shape)} -> {out}")


def cmd_info(args) -> None:
    meta, sizes = _read_header(args.file)
    fmt = meta.get("format")
    if fmt == gpt.FILE_FORMAT:
        config = GPTConfig(**json.loads(meta["config"]))
        dense = sum(n for name, n in sizes.items() if ".attn." in name or ".mlp." in name)
        print(f"projectable GPT ({'conditional' if config.conditional else 'unconditional'})")
        print(f"config: {json.dumps(json.loads(meta['config']))}")
        print(f"parameters: {sum(sizes.values()):,} (dense operators {dense:,}, other {sum(sizes.values()) - dense:,})")
    elif fmt == projected.FILE_FORMAT:
        source = GPTConfig(**json.loads(meta["source_config"]))
        pcfg = json.loads(meta["projector_config"])
        projector = ProjectorConfig(**{**pcfg, "scales": tuple(pcfg["scales"])})
        print("ProjectableGPT checkpoint (source + projectors)")
        print(f"source config: {meta['source_config']}")
        print(f"projector config: {meta['projector_config']}")
        print(f"source parameters: {sum(n for k, n in sizes.items() if k.startswith('source.')):,}")
        for scale in projector.scales:
            key = f"1_{group_size(scale)}"
            own = sum(n for k, n in sizes.items() if k.startswith((f"generators.{key}.", f"small_parts.{key}.")))
            small = _count_params(GPTConfig(**{**json.loads(meta["source_config"]), "task_dim": 0}).scaled(scale))
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

    p = sub.add_parser("generate", help="one-shot generation of a standalone small GPT for a task vector")
    p.add_argument("--checkpoint", required=True, help="ProjectableGPT.save file")
    add_task(p)
    p.add_argument("--scale", help="target width / source width, e.g. 1/8 or 0.125 (default: the only one)")
    p.add_argument("--out", required=True, help="output .safetensors (GPT.save format)")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("export-gpt2", help="write a GPT file as a transformers GPT2LMHeadModel directory")
    p.add_argument("model", help="GPT.save file")
    p.add_argument("outdir", help="output directory (save_pretrained)")
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
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("info", help="print the config and parameter counts of a model or checkpoint file")
    p.add_argument("file")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, ImportError) as error:
        message = " ".join(str(error).split())  # one line
        print(f"projectable: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
