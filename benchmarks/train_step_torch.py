"""The references of benchmarks/train_step.py: jaxllm's architecture hand-written in PyTorch, transformers'
LlamaForCausalLM with the same config, and their train step (AdamW with jaxllm's betas, eps, decay mask and
clipping, f32 cross-entropy). Imported by train_step.py's torch workers only.
"""
from __future__ import annotations

import time


def torch_model(s: dict, vocab: int):
  """The jaxllm architecture written the way a PyTorch user would write it."""
  import torch
  import torch.nn.functional as F
  from torch import nn

  class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
      super().__init__()
      self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
      return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

  def rope(x, cos, sin):  # x [B, H, L, Dh], half-split layout like jaxllm / HF Llama
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

  class Block(nn.Module):
    def __init__(self):
      super().__init__()
      d, f = s["d_model"], s["mlp"]
      self.h, self.k, self.dh = s["n_heads"], s["n_kv_heads"], d // s["n_heads"]
      self.attn_norm, self.mlp_norm = RMSNorm(d), RMSNorm(d)
      self.q = nn.Linear(d, self.h * self.dh, bias=False)
      self.kp = nn.Linear(d, self.k * self.dh, bias=False)
      self.v = nn.Linear(d, self.k * self.dh, bias=False)
      self.o = nn.Linear(self.h * self.dh, d, bias=False)
      self.gate, self.up, self.down = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False), nn.Linear(f, d, bias=False)

    def forward(self, x, cos, sin):
      b, l, _ = x.shape
      y = self.attn_norm(x)
      q = rope(self.q(y).view(b, l, self.h, self.dh).transpose(1, 2), cos, sin)
      k = rope(self.kp(y).view(b, l, self.k, self.dh).transpose(1, 2), cos, sin)
      v = self.v(y).view(b, l, self.k, self.dh).transpose(1, 2)
      a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
      x = x + self.o(a.transpose(1, 2).reshape(b, l, -1))
      y = self.mlp_norm(x)
      return x + self.down(F.silu(self.gate(y)) * self.up(y))

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      d, dh = s["d_model"], s["d_model"] // s["n_heads"]
      self.embed = nn.Embedding(vocab, d)
      self.layers = nn.ModuleList([Block() for _ in range(s["n_layers"])])
      self.norm, self.lm_head = RMSNorm(d), nn.Linear(d, vocab, bias=False)
      angles = torch.arange(s["seq"]).float()[:, None] / 10000.0 ** (torch.arange(0, dh, 2).float() / dh)
      self.register_buffer("cos", angles.cos(), persistent=False)
      self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, tokens):
      x = self.embed(tokens)
      for layer in self.layers:
        x = layer(x, self.cos, self.sin)
      return self.lm_head(self.norm(x))

  return Model()


def hf_model(s: dict, vocab: int):
  from transformers import LlamaConfig, LlamaForCausalLM

  cfg = LlamaConfig(vocab_size=vocab, hidden_size=s["d_model"], intermediate_size=s["mlp"],
                    num_hidden_layers=s["n_layers"], num_attention_heads=s["n_heads"],
                    num_key_value_heads=s["n_kv_heads"], head_dim=s["d_model"] // s["n_heads"],
                    max_position_embeddings=s["seq"], rms_norm_eps=1e-6, rope_theta=10000.0,
                    tie_word_embeddings=False, attention_bias=False, attn_implementation="sdpa")
  return LlamaForCausalLM(cfg)


def torch_matmul_peak(n: int, repeats: int = 5) -> float:
  import torch
  a = torch.ones(n, n)
  torch.mm(a, a)
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    torch.mm(a, a)
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def make_torch_row(row: str, s: dict, args, lm_batches: list[dict]):
  """-> (run(n_steps) -> seconds, info, last_loss) for a torch row; `lm_batches` are train_step's numpy batches."""
  import numpy as np
  import torch
  import torch.nn.functional as F

  torch.manual_seed(0)
  model = hf_model(s, s["vocab"]) if row == "hf_eager" else torch_model(s, s["vocab"])
  for name, p in model.named_parameters():  # jaxllm's init: N(0, 0.02) matrices, unit norms
    if p.ndim >= 2:
      torch.nn.init.normal_(p, std=0.02)
  model.train()
  forward = (lambda t: model(input_ids=t).logits) if row == "hf_eager" else model

  def loss_fn(tokens, targets):
    logits = forward(tokens)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))

  if row == "torch_compile":
    loss_fn = torch.compile(loss_fn)
  # jaxllm's optimizer: AdamW(b1 .9, b2 .95, eps 1e-8), decay 0.1 on matrices but not embeddings / head, clip 1.0
  decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n and "lm_head" not in n]
  no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n and "lm_head" not in n)]
  opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=3e-4, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if args.torch_fused else {}))
  batches = [{k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in b.items() if k in ("tokens", "targets")}
             for b in lm_batches]
  box = {"i": 0, "loss": float("nan")}

  def run(n: int) -> float:
    start = time.perf_counter()
    loss = None
    for _ in range(n):
      b = batches[box["i"] % len(batches)]
      loss = loss_fn(b["tokens"], b["targets"])
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
      opt.step()
      opt.zero_grad(set_to_none=True)
      box["i"] += 1
    box["loss"] = float(loss.detach())
    return time.perf_counter() - start

  info = {"params": sum(p.numel() for p in model.parameters()), "device": "cpu", "torch": torch.__version__,
          "torch_threads": torch.get_num_threads()}
  return run, info, lambda: box["loss"]
