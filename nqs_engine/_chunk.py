"""`chunked_map` (`jax.lax.map` over fixed-size chunks, the last one padded) and the
row buckets that let calls of nearby sizes share one compiled program."""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp


def chunked_map(f: Callable[[Any], Any], xs: Any, batch_size: int) -> Any:
    r"""`jax.lax.map(f, xs, batch_size=batch_size)` without a separate remainder program.

    `lax.map` evaluates the $n \bmod b$ leftover rows in a second, unrolled `vmap`
    whose result it concatenates to the scanned chunks. XLA's GPU backend can
    fuse all of `f` into that concatenation and spend many minutes compiling it
    (seen: 9.5 min for the plain risk on an H100). Here the rows are padded to a
    multiple of $b$ by repeating the last row (a valid input, so checks inside
    `f` still hold), mapped in whole chunks, and the padding is dropped.

    **Example:**

    >>> import jax.numpy as jnp
    >>> from nqs_engine._chunk import chunked_map
    >>> chunked_map(lambda x: 2 * x, jnp.arange(5.0), batch_size=2).tolist()
    [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    leaves = jax.tree_util.tree_leaves(xs)
    n = leaves[0].shape[0]
    b = max(1, min(int(batch_size), n))
    pad = (-n) % b
    if pad == 0:
        return jax.lax.map(f, xs, batch_size=b)

    def extend(x):
        x = jnp.asarray(x)
        return jnp.concatenate([x, jnp.broadcast_to(x[-1:], (pad, *x.shape[1:]))])

    out = jax.lax.map(f, jax.tree_util.tree_map(extend, xs), batch_size=b)
    return jax.tree_util.tree_map(lambda y: y[:n], out)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _round_up(n: int, bits: int = 5) -> int:
    """The smallest m * 2**e >= n with m <= 2**bits: at most 1/2**(bits-1) above n."""
    e = max(0, int(n).bit_length() - bits)
    return -(-int(n) // (1 << e)) << e


def bucket_rows(n: int, chunk: int | None = None) -> tuple[int, int]:
    r"""How many rows to pad `n` configurations to, and the `chunked_map` batch size.

    Every distinct array shape is its own XLA program (about 2 s to compile the
    risk on a CPU), so calls with 100, 101 and 120 configurations would each
    compile. Rounding the row count up to one of few sizes lets them share one
    program. Up to 64 rows, the next power of two; beyond, the number of rows (or,
    past `chunk` rows, of chunks) rounds up to $m\,2^e$ with $m \le 32$, so the
    padding costs at most $1/16$ of the work (besides filling the last chunk, as
    `chunked_map` does anyway). With `chunk=None` the rows are not chunked and the
    batch size is the row count.

    **Example:**

    >>> from nqs_engine._chunk import bucket_rows
    >>> bucket_rows(5, chunk=2048), bucket_rows(1000, chunk=2048), bucket_rows(3000, chunk=2048)
    ((8, 8), (1024, 1024), (4096, 2048))
    >>> bucket_rows(1_000_000, chunk=2048)   # 489 chunks -> 496: 1.4% padding
    (1015808, 2048)
    """
    n = int(n)
    if n <= 0:
        return n, 1
    chunk = None if chunk is None else max(1, int(chunk))
    if chunk is None or n <= chunk:
        size = _next_pow2(n) if n <= 64 else _round_up(n)
        size = size if chunk is None else min(size, chunk)
        return size, size
    return _round_up(-(-n // chunk)) * chunk, chunk


def pad_rows(x: Any, size: int, axis: int = 0) -> Any:
    """`x` with its last row along `axis` repeated up to `size` rows (a valid input).

    **Example:**

    >>> import jax.numpy as jnp
    >>> from nqs_engine._chunk import pad_rows
    >>> pad_rows(jnp.array([1.0, 2.0]), 4).tolist()
    [1.0, 2.0, 2.0, 2.0]
    """
    x = jnp.asarray(x)
    n = x.shape[axis]
    if size <= n or n == 0:
        return x
    last = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
    shape = list(x.shape)
    shape[axis] = size - n
    return jnp.concatenate([x, jnp.broadcast_to(last, tuple(shape))], axis=axis)
