"""A small character-level GPT trained with DistributedDataParallel, supervised by switchyard.

Run by hand (one rank, CPU):
    RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 /usr/bin/python3 train.py --steps 20

Steps are numbered 1..--steps; a checkpoint at step n holds the state after n steps. The batch of
(step, rank) comes from an RNG seeded by (seed, step, rank) and the model has no dropout, so a run
resumed from a checkpoint computes exactly what an uninterrupted run computes.
"""

import argparse
import io
import math
import os
import random
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

try:
    import switchyard
except ImportError:  # run by hand without PYTHONPATH=sdk/python
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "sdk", "python"))
    import switchyard


# ---------------------------------------------------------------------------------------------
# Text: English-like sentences from a seeded generator (no downloads)
# ---------------------------------------------------------------------------------------------

NOUNS = (
    "cat dog river mountain city engineer teacher garden window machine ship island forest child "
    "king queen farmer storm letter bridge train market village doctor painter clock lamp road "
    "book song winter summer morning evening horse bird tree stone wall door table friend"
).split()
VERBS = (
    "sees finds builds carries watches follows paints opens closes remembers crosses loves "
    "fears visits writes reads moves breaks guards answers"
).split()
ADJECTIVES = (
    "old young quiet bright dark small large green cold warm slow quick gentle strange tired "
    "happy careful distant golden broken"
).split()
ADVERBS = "slowly quickly quietly often never always carefully gladly suddenly rarely".split()
PLACES = "near the river|in the city|under the bridge|across the field|by the window|at dawn|after the storm".split("|")


def _phrase(rng):
    words = ["the"]
    if rng.random() < 0.6:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    return " ".join(words)


def _sentence(rng):
    subject = _phrase(rng)
    parts = [subject[0].upper() + subject[1:]]
    if rng.random() < 0.3:
        parts.append(rng.choice(ADVERBS))
    parts.append(rng.choice(VERBS))
    parts.append(_phrase(rng))
    if rng.random() < 0.4:
        parts.append(rng.choice(PLACES))
    if rng.random() < 0.25:
        parts.append("and " + rng.choice(VERBS) + " " + _phrase(rng))
    return " ".join(parts) + rng.choice([".", ".", ".", "!", "?"])


def make_text(n_chars=300_000, seed=0):
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        paragraph = " ".join(_sentence(rng) for _ in range(rng.randint(3, 7))) + "\n"
        out.append(paragraph)
        size += len(paragraph)
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Model: a minimal GPT
# ---------------------------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.register_buffer("mask", torch.tril(torch.ones(block_size, block_size)).view(1, 1, block_size, block_size))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
        att = att.masked_fill(self.mask[:, :, :t, :t] == 0, float("-inf")).softmax(dim=-1)
        return self.proj((att @ v).transpose(1, 2).contiguous().view(b, t, c))


class Block(nn.Module):
    def __init__(self, n_embd, n_head, block_size):
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size, n_layer, n_embd, n_head, block_size):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, n_embd)
        self.pos = nn.Embedding(block_size, n_embd)
        self.blocks = nn.Sequential(*[Block(n_embd, n_head, block_size) for _ in range(n_layer)])
        self.ln = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size)

    def forward(self, idx, targets):
        t = idx.size(1)
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        logits = self.head(self.ln(self.blocks(x)))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


# ---------------------------------------------------------------------------------------------
# Distributed setup
# ---------------------------------------------------------------------------------------------


def setup_device():
    """(backend, device): nccl on CUDA, hccl on Ascend (torch_npu), else gloo on CPU."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return "nccl", torch.device("cuda", local_rank)
    try:
        import torch_npu  # noqa: F401  (registers the npu device and the hccl backend)

        torch.npu.set_device(local_rank)
        return "hccl", torch.device("npu", local_rank)
    except ImportError:
        pass
    torch.set_num_threads(1)
    return "gloo", torch.device("cpu")


def batch_for(data, step, rank, seed, batch, block, device):
    """The batch of (step, rank): the same on every run with this seed, resumed or not."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + rank)
    ix = torch.randint(len(data) - block - 1, (batch,), generator=g)
    x = torch.stack([data[i : i + block] for i in ix.tolist()])
    y = torch.stack([data[i + 1 : i + 1 + block] for i in ix.tolist()])
    return x.to(device), y.to(device)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--ckpt-every", type=int, default=20)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--batch", type=int, default=16, help="sequences per rank per step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--n-layer", type=int, default=2)
    p.add_argument("--n-embd", type=int, default=64)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--step-sleep", type=float, default=0.0, help="seconds to sleep per step (tests act mid-run)")
    p.add_argument(
        "--die-during-checkpoint",
        type=int,
        default=None,
        metavar="STEP",
        help="test hook: on attempt 1, rank 0 dies (os._exit) halfway through writing the checkpoint of STEP",
    )
    p.add_argument("--eval-final", action="store_true", help="print final_loss on a fixed held-out batch")
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        metavar="N",
        help="every N steps, every rank evaluates 8 held-out batches of 4x the batch (a long step, as real evals are)",
    )
    return p.parse_args()


def main():
    args = parse_args()
    backend, device = setup_device()
    dist.init_process_group(backend=backend, init_method="env://")
    rank, world = dist.get_rank(), dist.get_world_size()
    if rank == 0:
        print(f"world {world}, backend {backend}, device {device.type}, torch {torch.__version__}", flush=True)

    text = make_text()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    split = int(0.9 * len(data))
    train_data, val_data = data[:split], data[split:]

    torch.manual_seed(args.seed)
    model = GPT(len(chars), args.n_layer, args.n_embd, args.n_head, args.block).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)

    start = 1
    resume = switchyard.resume_path()
    if resume:
        state = torch.load(os.path.join(resume, "state.pt"), map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"] + 1
        print("rank %d resumed from %s at step %d" % (rank, resume, state["step"]), flush=True)

    ddp = DDP(model, device_ids=[device.index] if device.type != "cpu" else None)
    tokens_per_step = args.batch * args.block
    step, mean_loss = start - 1, float("nan")
    for step in range(start, args.steps + 1):
        began = time.perf_counter()
        x, y = batch_for(train_data, step, rank, args.seed, args.batch, args.block, device)
        loss = ddp(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        reduced = loss.detach().clone()
        dist.all_reduce(reduced)
        mean_loss = reduced.item() / world
        compute_s = time.perf_counter() - began

        switchyard.step(step, loss=mean_loss, tokens=tokens_per_step, compute_s=compute_s)
        print("step %d/%d loss %.4f" % (step, args.steps, mean_loss), flush=True)

        dying = args.die_during_checkpoint == step and os.environ.get("SWITCHYARD_ATTEMPT") == "1"
        if step % args.ckpt_every == 0 or dying:
            if rank == 0:
                save_checkpoint(model, optimizer, step, args, chars, dying)
            dist.barrier()
        if args.eval_every and step % args.eval_every == 0:
            val = evaluate(model, val_data, step, rank, args, device)
            dist.all_reduce(val)
            print("eval at step %d: val_loss %.4f" % (step, val.item() / world), flush=True)
        if args.step_sleep:
            time.sleep(args.step_sleep)

    if args.eval_final:
        model.eval()
        with torch.no_grad():
            x, y = batch_for(val_data, 0, 0, args.seed + 1, 64, args.block, device)
            final = model(x, y).item()
        print("final_loss %.8f" % final, flush=True)
        switchyard.done(step, final_loss=final)
    else:
        switchyard.done(step)
    if step < start:  # resumed at the final step: this attempt trained nothing, so it has no training loss
        print("nothing left to train: resumed at step %d of %d" % (step, args.steps), flush=True)
    else:
        print("final loss %.4f after step %d" % (mean_loss, step), flush=True)
    dist.destroy_process_group()
    return 0


def evaluate(model, val_data, step, rank, args, device):
    """Mean loss over 8 held-out batches (no gradients, no change to training): the tensor, for an all-reduce."""
    model.eval()
    with torch.no_grad():
        losses = [
            model(*batch_for(val_data, step * 8 + k, rank, args.seed + 2, args.batch * 4, args.block, device)).item()
            for k in range(8)
        ]
    model.train()
    return torch.tensor(sum(losses) / len(losses))


def save_checkpoint(model, optimizer, step, args, chars, dying):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "args": vars(args), "vocab": chars}
    with switchyard.checkpoint(step) as d:
        path = os.path.join(d, "state.pt")
        if dying:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            with open(path, "wb") as f:
                f.write(buffer.getvalue()[: buffer.tell() // 2])
                f.flush()
            print("test hook: dying during the checkpoint of step %d" % step, file=sys.stderr, flush=True)
            os._exit(1)
        torch.save(state, path)


if __name__ == "__main__":
    sys.exit(main())
