"""GaLore (Zhao et al. 2024, "Memory-Efficient LLM Training by Gradient Low-Rank Projection") as an optax
GradientTransformation: full-parameter training with Adam moments kept in a rank-r projection of each gradient.

Each weight is seen as its [inputs, outputs] matrix G (m x n, `input_dims` says how many leading dims are
inputs). Every `update_every` steps the basis P is refreshed from the current gradient's top-r left singular
vectors (m x r) when m <= n, else its top-r right ones (n x r), so the smaller side is projected; they come
from a randomized SVD (`_basis`, seeded by `seed` and the step) since XLA:CPU's exact one is far too slow. In
between, Adam runs on R = P^T G (r x n) or G P (m x r), and the normalised step is projected back (P N or N P^T)
and multiplied by `scale`. As in the reference implementation (galore_torch), the moments are kept across a
basis refresh. A matrix whose smaller side is <= r gains nothing from projecting and, like vectors (norms,
biases), gets plain Adam: with r >= every matrix's smaller side GaLore is AdamW exactly.

State per projected matrix: P (small side x r) + two r x (large side) moments, against Adam's two m x n.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class GaloreState(NamedTuple):
  count: jax.Array  # updates taken (int32)
  mu: Any  # first moments: projected shape for projected matrices, else the param's
  nu: Any  # second moments, same shapes
  proj: Any  # the basis P per projected matrix; a [0] placeholder for the rest


def _plan(leaf, n_in: int, rank: int) -> tuple[int, int, str]:
  """(m, n, side): side 'left' projects the input side (m <= n), 'right' the output side, '' = plain Adam."""
  if leaf.ndim < 2:
    return 0, 0, ""
  m, n = math.prod(leaf.shape[:n_in]), math.prod(leaf.shape[n_in:])
  if min(m, n) <= rank:
    return m, n, ""
  return m, n, "left" if m <= n else "right"


def _orthonormal(y: jax.Array) -> jax.Array:
  """Orthonormal columns spanning y's (Cholesky-QR, twice for stability): only matmuls, a k x k Cholesky and a
  triangular solve, all fast on every backend (XLA:CPU's QR and SVD are not)."""
  for _ in range(2):
    gram = y.T @ y
    gram = gram + 1e-6 * jnp.trace(gram) / gram.shape[0] * jnp.eye(gram.shape[0], dtype=gram.dtype)
    chol = jnp.linalg.cholesky(gram)
    y = jax.scipy.linalg.solve_triangular(chol, y.T, lower=True).T
  return y


def _basis(g_mn: jax.Array, side: str, rank: int, key: jax.Array, oversample: int = 8,
           power_iters: int = 2) -> jax.Array:
  """The top-`rank` left (side 'left', m x r) or right (n x r) singular vectors of g, by randomized subspace
  iteration (Halko, Martinsson & Tropp 2011) and a Rayleigh-Ritz step: the exact SVD's basis up to the
  iteration's error, at a small fraction of XLA:CPU's jnp.linalg.svd time (232 s for one 1024 x 2816 matrix
  on the shared 2-core machine; docs/memory.md)."""
  a = g_mn if side == "left" else g_mn.T  # the basis spans a's columns: a is [small, large]
  k = min(rank + oversample, a.shape[0])
  q = _orthonormal(a @ jax.random.normal(key, (a.shape[1], k), a.dtype))
  for _ in range(power_iters):
    q = _orthonormal(a @ (a.T @ q))
  b = q.T @ a  # [k, large]
  _, vecs = jnp.linalg.eigh(b @ b.T)  # ascending eigenvalues
  return q @ vecs[:, ::-1][:, :rank]


def scale_by_galore_adam(rank: int, update_every: int, scale: float = 0.25, b1: float = 0.9, b2: float = 0.999,
                         eps: float = 1e-8,
                         input_dims: Callable[[Any, jax.Array], int] = lambda path, leaf: 1,
                         seed: int = 0) -> optax.GradientTransformation:
  """Adam's normalised step (optax.scale_by_adam's formulas) computed in each matrix's rank-r GaLore space."""
  if rank < 1 or update_every < 1:
    raise ValueError(f"galore: rank ({rank}) and update_every ({update_every}) must be >= 1")

  def plans(params):
    return jax.tree_util.tree_map_with_path(lambda path, p: _plan(p, input_dims(path, p), rank), params)

  def init(params):
    def moments(path, p):
      m, n, side = _plan(p, input_dims(path, p), rank)
      shape = p.shape if not side else ((rank, n) if side == "left" else (m, rank))
      return jnp.zeros(shape, jnp.float32 if side else p.dtype)

    def basis(path, p):
      m, n, side = _plan(p, input_dims(path, p), rank)
      return jnp.zeros(((m if side == "left" else n), rank) if side else (0,), jnp.float32)

    return GaloreState(count=jnp.zeros((), jnp.int32), mu=jax.tree_util.tree_map_with_path(moments, params),
                       nu=jax.tree_util.tree_map_with_path(moments, params),
                       proj=jax.tree_util.tree_map_with_path(basis, params))

  def update(updates, state, params=None):
    del params
    count = optax.safe_int32_increment(state.count)
    refresh = state.count % update_every == 0
    leaf_plans = jax.tree.leaves(plans(updates), is_leaf=lambda x: isinstance(x, tuple))
    grads, treedef = jax.tree.flatten(updates)
    out_u, out_mu, out_nu, out_p = [], [], [], []
    refresh_key = jax.random.fold_in(jax.random.PRNGKey(seed), state.count)
    for i, (g, (m, n, side), mu, nu, p) in enumerate(zip(
        grads, leaf_plans, treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu),
        treedef.flatten_up_to(state.proj))):
      if side:
        g_mn = g.reshape(m, n).astype(jnp.float32)
        p = jax.lax.cond(refresh, lambda: _basis(g_mn, side, rank, jax.random.fold_in(refresh_key, i)), lambda: p)
        r = p.T @ g_mn if side == "left" else g_mn @ p
      else:
        r = g
      mu = (1 - b1) * r + b1 * mu
      nu = (1 - b2) * (r * r) + b2 * nu
      mu_hat = mu / (1 - b1 ** count).astype(mu.dtype)
      nu_hat = nu / (1 - b2 ** count).astype(nu.dtype)
      step = mu_hat / (jnp.sqrt(nu_hat) + eps)
      if side:
        step = (p @ step if side == "left" else step @ p.T).reshape(g.shape).astype(g.dtype) * scale
      out_u.append(step)
      out_mu.append(mu)
      out_nu.append(nu)
      out_p.append(p)
    unflat = lambda leaves: jax.tree.unflatten(treedef, leaves)
    return unflat(out_u), GaloreState(count=count, mu=unflat(out_mu), nu=unflat(out_nu), proj=unflat(out_p))

  return optax.GradientTransformation(init, update)


def galore_adamw(learning_rate: optax.ScalarOrSchedule, *, rank: int, update_every: int, scale: float,
                 b1: float, b2: float, eps: float, weight_decay: float, mask: Any = None,
                 input_dims: Callable[[Any, jax.Array], int] = lambda path, leaf: 1,
                 seed: int = 0) -> optax.GradientTransformation:
  """GaLore-Adam with decoupled weight decay, composed as optax.adamw is (moments -> decay -> -lr)."""
  return optax.chain(scale_by_galore_adam(rank, update_every, scale, b1, b2, eps, input_dims, seed),
                     optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))
