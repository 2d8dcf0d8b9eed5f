"""The sampler's CPU steps: tiles of rows through torch GEMMs and the fused C cell.

:func:`batchcast.forecast.sampling.sample_paths` unrolls the context and precomputes what is
the same for every path of a series; this module runs horizon steps ``1 .. P-1`` over a
chunk's rows when the fused cell (:mod:`batchcast.forecast.native`) is available:

* **Tiles.** The chunk's rows go through each step in tiles of ``tile_rows`` (chosen by
  :mod:`batchcast.forecast.tuning`), so a tile's gate buffer stays in cache between its
  GEMMs and its cell pass. Rows are padded to a multiple of :data:`TILE_QUANTUM` and tiles
  are quantum-aligned, so every row goes through the same GEMM blocks and the same row-by-row
  kernel code whatever the tile: tiling changes speed only, never a bit of output.
* **Per step and tile:** layer 0's gates start as the series' path-independent gates
  (gathered), then GEMMs accumulate the recurrent part and the lags that read sampled values;
  layers above start from their bias. A GEMM that accumulates (beta = 1) runs ~10% faster
  here than one that overwrites. The cell then updates c and h in place, and the last
  layer's cell also computes the distribution head into an argument-major buffer.
* **Draws** stay chunk-wide, after every tile of the step: the generator's unit of work is
  the chunk, never the tile (``draw`` callback).
* Everything a tile touches (views of the state, the kernel's pointer arguments) is built
  once per chunk, not per step: Python overhead is a few percent of a step at these sizes.
* ``precision="bf16"``: the GEMMs in bfloat16, state, addends and draws in fp32 (:class:`_Bf16`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from batchcast.forecast.native import Extra, LstmKernel

__all__ = ["TILE_QUANTUM", "LayerWeights", "run_steps", "tiles"]

# Every GEMM of the fused path runs on a multiple of this many rows starting at a multiple of
# it, so a row sits at the same position within MKL's row blocks (heights 4, 6, 8, 12, 16,
# 24 all divide 48) whatever the tile: measured, MKL computes the rows of a 2- or 3-row
# block tail 1 ulp differently from the same rows inside a full block.
TILE_QUANTUM = 48


class LayerWeights(Protocol):
    """One LSTM layer, transposed for ``x @ W`` (gate order i, f, g, o), biases summed."""

    w_ih_t: torch.Tensor  # (D, 4H)
    w_hh_t: torch.Tensor  # (H, 4H)
    bias: torch.Tensor  # (4H,)


def tiles(num_rows: int, tile_rows: int) -> list[tuple[int, int]]:
    """Row ranges ``(r0, r1)`` of ``num_rows`` (a multiple of :data:`TILE_QUANTUM`), each a
    multiple of the quantum long (``tile_rows`` rounded down, at least one quantum)."""
    size = max(TILE_QUANTUM, tile_rows // TILE_QUANTUM * TILE_QUANTUM)
    return [(r0, min(r0 + size, num_rows)) for r0 in range(0, num_rows, size)]


@dataclass
class Chunk:
    """One chunk's sampler state and what its steps read, as ``sample_paths`` prepared it.

    Attributes:
        h, c: per layer, (N, H) state of the chunk's N rows (row ``b * S + k``: path k of b).
        scaled: (P, N) draws so far divided by the scale (what later steps read as lags).
        fixed_gates: (P-1, B, 4H) layer 0's path-independent gates per step and series.
        sampled_cols: per step k, the rows of ``scaled`` its sampled lags read.
        paths: S, rows per series.
    """

    h: list[torch.Tensor]
    c: list[torch.Tensor]
    scaled: torch.Tensor
    fixed_gates: torch.Tensor
    sampled_cols: Sequence[torch.Tensor]
    paths: int


@dataclass
class _Tile:
    """Views and kernel arguments of one tile, built once per chunk."""

    r0: int
    r1: int
    gates: torch.Tensor  # (t, 4H) view of the shared gate buffer
    series: torch.Tensor  # (t,) each row's series
    lags: torch.Tensor  # (max lags, t): this tile's columns of the gathered lags
    h: list[torch.Tensor]  # per layer, (t, H) views
    c: list[torch.Tensor]
    cell: list[tuple[object, ...]]  # per layer, the fp32 kernel's arguments
    head: Extra  # the last layer's extras, aimed at this tile's rows of the head buffer


def run_steps(
    model: torch.nn.Module,
    kernel: LstmKernel,
    layers: Sequence[LayerWeights],
    chunk: Chunk,
    tile_rows: int,
    precision: str,
    draw: Callable[[torch.Tensor, int], None],
) -> None:
    """Steps ``1 .. P-1`` of one chunk, tile by tile; ``draw(raw, k)`` draws step k for all
    rows from the head's (N, A) output (a transposed view of an argument-major buffer) and
    stores it where ``chunk.scaled`` and the caller's samples see it.

    ``chunk.h`` and ``chunk.c`` are padded to whole quanta here; the caller's tensors are
    not updated (it reads only the draws).
    """
    n, hidden = chunk.h[0].shape
    padded = -(-n // TILE_QUANTUM) * TILE_QUANTUM
    device = chunk.scaled.device
    h = [torch.nn.functional.pad(x, (0, 0, 0, padded - n)) for x in chunk.h]
    c = [torch.nn.functional.pad(x, (0, 0, 0, padded - n)) for x in chunk.c]
    series_count = chunk.fixed_gates.shape[1]
    row_series = (torch.arange(padded, device=device) // chunk.paths).clamp_(max=series_count - 1)
    head = model.head
    assert isinstance(head, torch.nn.Linear)
    # Head outputs stored argument-major, (A, rows): the likelihood's domain_map then reads
    # each argument as a contiguous column (softplus on a stride-3 view costs ~7x more here).
    raw_t = torch.empty(head.out_features, padded, device=device)
    # (max lags, rows), lag-major: gathered as whole rows of ``scaled``; a tile's GEMM reads
    # its columns transposed (measured: 7 us a step where a row-major gather took 144).
    lags = torch.zeros(max(len(x) for x in chunk.sampled_cols), padded, device=device)
    ranges = tiles(padded, tile_rows)
    gates = torch.empty(max(r1 - r0 for r0, r1 in ranges), 4 * hidden, device=device)
    plan = [_tile(r0, r1, gates, row_series, lags, h, c, head, raw_t) for r0, r1 in ranges]
    bf = None
    if precision == "bf16":
        bf = _Bf16(layers, h, gates.shape[0], plan, kernel.scratch_rows)
    w_lag_t = layers[0].w_ih_t
    for k in range(1, len(chunk.sampled_cols)):
        cols = chunk.sampled_cols[k]
        m = len(cols)
        if m:
            lags[:m, :n].copy_(chunk.scaled.index_select(0, cols))  # once per step
        fixed = chunk.fixed_gates[k - 1]
        for tile in plan:
            if bf is not None:
                bf.step(kernel, tile, fixed, w_lag_t[:m], m)
            else:
                _fp32_step(kernel, layers, tile, fixed, w_lag_t[:m], m)
        draw(raw_t[:, :n].t(), k)


def _fp32_step(
    kernel: LstmKernel,
    layers: Sequence[LayerWeights],
    tile: _Tile,
    fixed: torch.Tensor,
    w_lag: torch.Tensor,
    m: int,
) -> None:
    g = tile.gates
    torch.index_select(fixed, 0, tile.series, out=g)
    g.addmm_(tile.h[0], layers[0].w_hh_t)
    if m:
        g.addmm_(tile.lags[:m].t(), w_lag)
    kernel.f32(*tile.cell[0])
    for layer in range(1, len(layers)):
        w = layers[layer]
        torch.addmm(w.bias, tile.h[layer - 1], w.w_ih_t, out=g)
        g.addmm_(tile.h[layer], w.w_hh_t)
        kernel.f32(*tile.cell[layer])


def _tile(
    r0: int,
    r1: int,
    gates: torch.Tensor,
    row_series: torch.Tensor,
    lags: torch.Tensor,
    h: list[torch.Tensor],
    c: list[torch.Tensor],
    head: torch.nn.Linear,
    raw_t: torch.Tensor,
) -> _Tile:
    t, hidden = r1 - r0, h[0].shape[1]
    g = gates[:t]
    extra = _head_extra(head, raw_t, r0)
    hs, cs = [x[r0:r1] for x in h], [x[r0:r1] for x in c]
    cell: list[tuple[object, ...]] = []
    for layer in range(len(h)):
        aim = ctypes.byref(extra) if layer == len(h) - 1 else None
        ptrs = (cs[layer].data_ptr(), hidden, hs[layer].data_ptr(), hidden, 0, 0)
        cell.append((t, hidden, g.data_ptr(), 4 * hidden, aim, *ptrs))
    return _Tile(r0, r1, g, row_series[r0:r1], lags[:, r0:r1], hs, cs, cell, extra)


def _head_extra(head: torch.nn.Linear, raw_t: torch.Tensor, r0: int) -> Extra:
    """The kernel's head arguments for the tile that starts at chunk row ``r0``: it writes
    ``raw_t[a, r0 + r]`` for its row r. The weights (A, H) are nn.Linear's, contiguous."""
    if not head.weight.is_contiguous() or head.bias is None:
        raise ValueError("the head must be a contiguous nn.Linear with a bias")
    return Extra(
        head_w=head.weight.data_ptr(),
        head_b=head.bias.data_ptr(),
        nargs=head.out_features,
        head_out=raw_t.data_ptr() + r0 * raw_t.element_size(),
        head_stride=raw_t.shape[1],
    )


class _Bf16:
    """bf16 GEMM operands: weights in bf16, a bf16 copy of each layer's h written by the
    kernel next to its fp32 state, GEMM outputs in bf16 widened and added to fp32 addends
    (layer 0's path-independent gates and sampled lags; the biases) inside the kernel.

    Layer ``l >= 1`` multiplies ``[h_{l-1} | h_l]`` (one K = 2H GEMM, one bf16 rounding of
    its output); layer 0's recurrent GEMM reads the first half of layer 1's buffer.
    Every view and kernel argument of a tile is built once per chunk (:class:`_Bf16Tile`),
    as the fp32 path's are: at 400-row tiles, building them each step cost ~5% of a step.
    """

    def __init__(
        self,
        layers: Sequence[LayerWeights],
        h: list[torch.Tensor],
        most: int,
        plan: Sequence[_Tile],
        scratch_rows: int,
    ) -> None:
        hidden, device = h[0].shape[1], h[0].device
        self.hidden = hidden
        w0 = layers[0].w_hh_t.to(torch.bfloat16)
        # w[l] = [W_ih; W_hh] of layer l >= 1; layer 0 has w0 and the addend.
        self.w = [w0] + [
            torch.cat((w.w_ih_t, w.w_hh_t)).to(torch.bfloat16).contiguous() for w in layers[1:]
        ]
        # x[l] = [h_{l-1} | h_l] in bf16 for l >= 1; x[0] holds h_0 alone when there is one layer.
        self.x: list[torch.Tensor] = []
        for layer in range(len(layers)):
            if layer == 0:
                self.x.append(h[0].to(torch.bfloat16) if len(layers) == 1 else torch.empty(0))
            else:
                self.x.append(torch.cat((h[layer - 1], h[layer]), dim=1).to(torch.bfloat16))
        self.out16 = torch.empty(most, 4 * hidden, dtype=torch.bfloat16, device=device)
        self.add = torch.empty(most, 4 * hidden, device=device)
        self.scratch = torch.empty(scratch_rows, 4 * hidden, device=device)  # the kernel's
        self.num_layers = len(layers)
        # Layer 0 adds the gathered fixed gates and lags (always at ``self.add``), layers
        # above their bias; the last layer also computes the head at the tile's rows.
        addends = [Extra(add=self.add.data_ptr(), add_stride=4 * hidden)]
        addends += [Extra(add=w.bias.data_ptr(), add_stride=0) for w in layers[1:]]
        self.tiles = {tile.r0: self._tile(tile, addends) for tile in plan}

    def _h16(self, layer: int) -> tuple[torch.Tensor, int]:
        """Where layer ``layer``'s bf16 h lives: (buffer view of its columns, row stride)."""
        hd = self.hidden
        if layer + 1 < self.num_layers:
            return self.x[layer + 1][:, :hd], 2 * hd
        if layer == 0:
            return self.x[0], hd
        return self.x[layer][:, hd:], 2 * hd

    def _tile(self, tile: _Tile, addends: Sequence[Extra]) -> _Bf16Tile:
        """One tile's GEMM operands, kernel arguments (each layer's ``addends`` entry, the
        head added on the last) and the copies between layers."""
        hd, r0, r1, t = self.hidden, tile.r0, tile.r1, tile.r1 - tile.r0
        inputs: list[torch.Tensor] = []
        cells: list[tuple[object, ...]] = []
        copies: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        extras: list[Extra] = []
        for layer in range(self.num_layers):
            dst, stride = self._h16(layer)
            # layer 0's GEMM reads its own bf16 h; a layer above reads [h_{l-1} | h_l]
            inputs.append(dst[r0:r1] if layer == 0 else self.x[layer][r0:r1])
            extra = self._with_head(layer, tile, addends[layer])
            extras.append(extra)
            cells.append(
                (
                    t, hd, self.out16.data_ptr(), 4 * hd, ctypes.byref(extra),
                    tile.c[layer].data_ptr(), hd, tile.h[layer].data_ptr(), hd,
                    dst[r0:r1].data_ptr(), stride, self.scratch.data_ptr(),
                )
            )  # fmt: skip
            # a middle layer's h is also the recurrent half of its own next input
            copies.append(
                (self.x[layer][r0:r1, hd:], dst[r0:r1])
                if layer > 0 and layer + 1 < self.num_layers
                else None
            )
        return _Bf16Tile(self.out16[:t], self.add[:t], inputs, cells, copies, extras)

    def _with_head(self, layer: int, tile: _Tile, extra: Extra) -> Extra:
        """``extra`` plus the head, when ``layer`` is the last one."""
        if layer + 1 < self.num_layers:
            return extra
        both = Extra.from_buffer_copy(tile.head)
        both.add, both.add_stride = extra.add, extra.add_stride
        return both

    def step(
        self, kernel: LstmKernel, tile: _Tile, fixed: torch.Tensor, w_lag: torch.Tensor, m: int
    ) -> None:
        """One step of every layer on one tile."""
        bt = self.tiles[tile.r0]
        # Layer 0: bf16 recurrent GEMM; fixed gates and lags gathered in fp32 (the lags' GEMM
        # must not round through bf16).
        torch.mm(bt.inputs[0], self.w[0], out=bt.out16)
        torch.index_select(fixed, 0, tile.series, out=bt.add)
        if m:
            bt.add.addmm_(tile.lags[:m].t(), w_lag)
        kernel.bf16(*bt.cells[0])
        for layer in range(1, self.num_layers):
            torch.mm(bt.inputs[layer], self.w[layer], out=bt.out16)
            kernel.bf16(*bt.cells[layer])
            pair = bt.copies[layer]
            if pair is not None:
                pair[0].copy_(pair[1])


@dataclass
class _Bf16Tile:
    """One tile's bf16 views, built once per chunk: the GEMM output and fp32 addend, each
    layer's GEMM input and kernel arguments, the bf16 h copied into a middle layer's own next
    input, and the ``Extra`` structures the arguments point at (held here)."""

    out16: torch.Tensor
    add: torch.Tensor
    inputs: list[torch.Tensor]
    cells: list[tuple[object, ...]]
    copies: list[tuple[torch.Tensor, torch.Tensor] | None]
    extras: list[Extra]
