"""The tutorial of packages/core/README.md as a script: co-train a source and its projector on SynthMNIST
(Eq. 2), generate a small model for one task vector, check it against the projected forward, render samples
as a PNG and export a transformers GPT-2 folder that renders alone. Writes into the working directory:
samples.png, small.safetensors, small-gpt2/.

    python examples/tutorial.py            # 300 steps (a few minutes on two CPU cores)
    python examples/tutorial.py --steps 30

Needs packages/core with its hf and png extras and packages/data (see packages/core/README.md, Install). The
lines below the argument parsing are the README's, verbatim (a test checks it).
"""

import argparse

import torch
from projectable import GPT, GPTConfig, ProjectableGPT, ProjectorConfig, sample
from projectable.hf import save_gpt2
from projectable.render import save_grid_png, tokens_to_images
from projectable.tokenizer import palette_tokenizer
from projectable_data import SynthMNISTConfig, SynthMNISTTokens
from tqdm import trange

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--steps", type=int, default=300, help="co-training steps (default: 300)")
steps = parser.parse_args().steps

# 8 x 8 SynthMNIST images over a 16-colour palette (the paper: 32 x 32 over 512 colours, Sec. 3.1)
data = SynthMNISTTokens(SynthMNISTConfig(resolution=8, palette_size=16, palette_fit_images=128, val_size=16))
# the source's vocabulary and sequence length come from the data: one token per colour, one per pixel
config = GPTConfig.tiny(vocab_size=data.vocab_size, block_size=data.seq_len, n_embd=32, n_head=2)
model = ProjectableGPT(GPT(config), ProjectorConfig(task_dim=data.task_dim, rank=4, scales=(1/2,)))
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)

torch.manual_seed(0)
for step in (bar := trange(steps, desc="co-training", mininterval=1)):
    batch = data.train_batch(step, batch_size=16)    # tokens (16, 64), task vectors (16, 18)
    loss = model.loss(batch.tokens, batch.task)      # Eq. 2: P_1/2's loss + w_src * the source's
    optimizer.zero_grad(set_to_none=True)
    loss.total.backward()
    optimizer.step()
    bar.set_postfix(source=f"{loss.source.item():.3f}", projected=f"{loss.projected[1/2].item():.3f}")

model.eval()
validation = data.validation()
task = validation.task[0]                         # the task vector t of one validation image
small = model.generate(task, scale=1/2)           # a standalone GPT of width 16 for t, in one shot
with torch.no_grad():                             # it computes what the projected forward computes
    torch.testing.assert_close(small(validation.tokens[:4]),
                               model.projected_logits(validation.tokens[:4], task, scale=1/2))

centres = data.palette.centres.numpy()            # (16, 3) RGB in [-1, 1]: token k is colour k
samples = sample(small, n=16, generator=torch.Generator().manual_seed(0))   # (16, 64) tokens
save_grid_png(tokens_to_images(samples.numpy(), centres), "samples.png")    # 4 x 4 grid, 128 px an image
small.save("small.safetensors", tokenizer=palette_tokenizer(centres))      # the file records its palette
save_gpt2(small, "small-gpt2", palette=centres)   # = projectable export-gpt2 small.safetensors small-gpt2/
