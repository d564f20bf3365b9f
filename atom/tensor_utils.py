"""Small tensor helpers shared across the package."""
from __future__ import annotations

import torch


def pack_selected(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Packs the True entries of each row of `mask (B, N)` to the left of a (B, M) index array.

    Used to evaluate a batched field only where needed: `values = f(x[b, packed])`, then
    `out[rows, cols] = values[rows, slots]`. Padding entries repeat index 0 (evaluated, dropped).

    Returns:
        rows, cols: (S,) positions of the S True entries.
        slots: (S,) where each lands in its packed row.
        packed: (B, M) int64 column indices, M = the largest row count (at least 1).
    """
    rows, cols = mask.nonzero(as_tuple=True)
    slots = mask.cumsum(1)[rows, cols] - 1
    width = int(slots.max()) + 1 if slots.numel() else 1
    packed = torch.zeros(mask.shape[0], width, dtype=torch.int64, device=mask.device)
    packed[rows, slots] = cols
    return rows, cols, slots, packed


def full_precision(device: torch.device | str) -> torch.autocast:
    """Autocast switched off on `device`'s kind, for geometry that bf16 / fp16 would spoil
    (camera projections, ray directions: their matmuls are on autocast's lower-precision list).
    Inputs must be cast to float32 inside."""
    return torch.autocast(torch.device(device).type, enabled=False)
