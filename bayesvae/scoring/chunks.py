r"""Chunking: which (sample, point) pairs are scored together, so memory stays bounded.

A chunk is a block of ``s`` samples of ``n`` consecutive points with :math:`s\,n \le`
``chunk_size``: samples first (``s = min(S, chunk_size)``), then as many points as fit. The
order of the blocks is fixed, so a seed fixes every result for a given ``chunk_size``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from bayesvae.scoring.records import GlobalDraw, ImportanceChunk

if TYPE_CHECKING:
    from bayesvae.scoring.scorer import TraceScorer

__all__ = [
    "DEFAULT_ELEMENTS",
    "default_chunk_size",
    "block_shape",
    "row_blocks",
    "iter_importance_chunks",
]

#: Default budget, in tensor elements of the data's width, of one chunk (about 32 MiB per
#: float32 tensor of that width; a chunk's peak is a small multiple of it).
DEFAULT_ELEMENTS = 2**23


def default_chunk_size(data_dim: int) -> int:
    """(sample, point) pairs per chunk: :data:`DEFAULT_ELEMENTS` over ``max(data_dim, 512)``."""
    return max(1, DEFAULT_ELEMENTS // max(int(data_dim), 512))


def block_shape(num_samples: int, num_data: int, chunk_size: int) -> tuple[int, int]:
    """``(samples, points)`` of one block: ``min(S, chunk_size)`` samples, then as many points as fit."""
    s = min(num_samples, chunk_size)
    n = min(num_data, max(1, chunk_size // s))
    return s, n


def row_blocks(num_data: int, size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """Consecutive row numbers ``0..N-1`` in blocks of at most ``size`` (LongTensors)."""
    for start in range(0, num_data, size):
        yield torch.arange(start, min(start + size, num_data), device=device)


def iter_importance_chunks(
    scorer: TraceScorer,
    num_samples: int,
    draw: GlobalDraw,
    *,
    chunk_size: int | None = None,
    return_samples: bool = False,
) -> Iterator[tuple[slice, ImportanceChunk]]:
    """Yield ``(sample_slice, chunk)`` blocks covering all samples of every point.

    Points are visited in blocks of consecutive rows; within a block, the samples in blocks
    of at most ``chunk_size // rows`` (so a block holds at most ``chunk_size`` pairs). The
    order is fixed, so a seed fixes the result for a given ``chunk_size``.

    Parameters
    ----------
    scorer : TraceScorer
        The model/guide pair on its data.
    num_samples : int
        :math:`S`, draws per point.
    draw : GlobalDraw
        The global sites' values, replayed into every block.
    chunk_size : int, optional
        Largest number of (sample, point) pairs per block (:func:`default_chunk_size`).
    return_samples : bool, default False
        Keep the local latent values in each chunk.

    Yields
    ------
    slice, ImportanceChunk
        The samples the chunk covers and its (s, n) local terms.
    """
    chunk = chunk_size or default_chunk_size(scorer.x.shape[1])
    s_block, n_block = block_shape(num_samples, scorer.num_data, chunk)
    for rows in row_blocks(scorer.num_data, n_block, scorer.x.device):
        for s0 in range(0, num_samples, s_block):
            s1 = min(s0 + s_block, num_samples)
            yield slice(s0, s1), scorer.score(rows, s1 - s0, draw, return_samples=return_samples)
