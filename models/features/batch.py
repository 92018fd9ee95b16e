"""The batch engine: a feature set over whole candle histories, O(n), a chunk of rows at a time.

Each symbol's candles are cut into chunks of ``CHUNK`` rows that stay in cache (the first one
``FIRST_CHUNK`` rows, so that short histories stay cheap); several symbols go chunk by chunk,
each in turn, so that a chunk of candles is read from memory once. Indicators see the chunk's
rows; the inputs also hold ``3 * history`` rows before them (NaN before the first bar), so a
lag is a view, and the smoothers carry their last value from chunk to chunk. A candle column is
copied out of the history only when the feature set's inputs read it. Every number depends only
on rows at or before its own and on absolute row positions (chunk and block boundaries are
fixed multiples from row 0), so a prefix of a history gives bit-identical rows to the same rows
of the whole history.

Window statistics use blocks of w rows aligned to absolute multiples of w. The window ending at
row b*w + j is the tail of block b-1 after row j plus the head of block b up to row j, and both
partial sums are taken of x - K_b, where K_b is block b's first value. K_b lies inside every
window ending in block b, so |x - K_b| <= 2 sqrt(w) std(window) (Samuelson's inequality): the
sums never cancel more than a factor ~w, and the variance keeps a relative error below ~3 w^2
eps in the worst case (about 1e-15 in practice), with O(n) work and no sliding-window
temporaries. Each sum adds only values inside its window, so a spike outside it leaves no
residue. BLAS does the additions, in cache: for w <= ``_BAND_MAX`` one product of each block
pair (block b-1 then block b, as deviations from K_b) with a band of 0/1 gives the w window
sums ending in block b; longer windows take prefix sums of the heads and suffix sums of the
tails over sub-blocks of ~8 rows (two products with triangles), the totals of the block's other
sub-blocks added to one value of each first. The matrices carry the statistic's scale (1/w for
a mean), so no pass over the sums is spent on it.

Smoothers run in blocks of ``_EMA_BLOCK`` rows: one matrix product gives each block's recursion
from a zero start, lfilter's kernel the carries from block to block (a recursion 16 times
shorter), and row j of a block adds carry * (1 - alpha)**(j+1).

All products run on whole scratch arrays of one fixed shape, so BLAS takes the same path for
every chunk (and stays on one thread: no product exceeds ``_PRODUCT_MAX`` multiply-adds);
rows of a product are independent, so a row's result never depends on how much history follows
it. A non-finite input would leak through 0 * NaN into earlier rows of its block: such chunks
compute with zeros in its place and mark the windows (or, for smoothers, the rows from it on)
that hold it. Inputs are finite and well below 1e150 otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from .spec import FLAT_REL, N_COLUMNS, Bar, FeatureSet, flat_windows

try:  # lfilter's kernel: the public function spends ~15 us a call checking its arguments
    from scipy.signal._sigtools import _linear_filter
except ImportError:  # pragma: no cover - a SciPy that moved it
    _linear_filter = None

CHUNK = 20_480
"""Rows per chunk: long enough that numpy's per-call costs are small against the work, short
enough that a chunk's arrays stay in the last-level cache (a temporary is 160 KiB: glibc
serves it from the heap once the first such block is freed, as it raises its mmap threshold)."""
FIRST_CHUNK = 1_024
_EMA_BLOCK = 16
_BAND_MAX = 24
"""Windows up to this length are summed by one band product per block pair (2w products a
value); longer ones by triangles over sub-blocks (~2 * 8 a value)."""
_PRODUCT_MAX = 600_000
"""Most multiply-adds in one BLAS product (rows x inner x columns): OpenBLAS runs small
products on the calling thread, larger ones on all cores, which on a shared box costs several
times what it saves."""


def chunks(n: int) -> list[tuple[int, int, int]]:
    """(first row, end row, capacity) of each chunk of n rows: fixed absolute boundaries, and
    each chunk's scratch shape fixed by its capacity whatever n is."""
    out, a = [], 0
    while a < n:
        size = FIRST_CHUNK if a == 0 else CHUNK
        out.append((a, min(a + size, n), size))
        a += size
    return out


def as_ohlcv(ohlcv: np.ndarray) -> np.ndarray:
    a = np.asarray(ohlcv, dtype=np.float64)
    if a.ndim not in (2, 3) or a.shape[-1] != N_COLUMNS:
        raise ValueError(f"expected an (n, {N_COLUMNS}) or (n, symbols, {N_COLUMNS}) array, "
                         f"got shape {a.shape}")
    return a


def _sub_block(w: int) -> int:
    """Sub-block length for the triangles of a long window: a divisor of w near 8 (OpenBLAS's
    small kernels are fastest there), else w itself."""
    return next((s for s in (8, 12, 6, 16, 10, 9, 7, 14, 15, 5, 18, 20, 21, 24) if w % s == 0
                 and s < w), w)


_ONE = np.ones(1)


def _first_order(a: np.ndarray, x: np.ndarray, start: float) -> np.ndarray:
    """y[i] = decay * y[i-1] + x[i], with y[-1] = start; ``a`` is [1, -decay]."""
    zi = np.array([-a[1] * start])
    if _linear_filter is not None:
        return _linear_filter(_ONE, a, x, -1, zi)[0]
    return lfilter(_ONE, a, x, zi=zi)[0]  # pragma: no cover


class _Windows:
    """Sums over the windows of w values ending in one chunk (see the module docstring), on
    scratch arrays of one fixed shape; windows of every length share one pool of them."""

    def __init__(self, w: int, rows: int, pool: np.ndarray) -> None:
        """``rows``: the most values ``load`` is given; ``pool``: at least ``_Windows.size``
        floats, shared with the other windows of a chunk (one is loaded and used at a time)."""
        self.w = w
        self.nb = nb = -(-rows // w)
        self.k = np.zeros(nb)
        self.band = w <= _BAND_MAX
        views = iter(np.split(pool[:_Windows.size(nb * w)], np.cumsum([4, 2, 2, 1]) * nb * w))
        if self.band:
            # Row b: block b-1 then block b as deviations from K_b; then their squares.
            self.dev = next(views).reshape(2, nb, 2 * w)
            step = max(1, _PRODUCT_MAX // (2 * w * w))
            self.row_blocks = [slice(lo, lo + step) for lo in range(0, nb, step)]
        else:
            # [head, tail] x [deviation, square]: block b from K_b, and from K_{b+1}.
            self.dev = next(views).reshape(2, 2, nb, w)
        self.sums = next(views).reshape(2, nb, w)
        self.tails = next(views).reshape(2, nb, w)
        self.spare = next(views).reshape(nb, w)
        self.current = next(views).reshape(nb, w)
        self.matrices: dict[tuple[float, float], tuple[np.ndarray, ...]] = {}

    @staticmethod
    def size(values: int) -> int:
        """Floats of scratch for windows over ``values`` values (rounded up to blocks)."""
        return 10 * values

    def _matrices(self, scales: tuple[float, float]) -> tuple[np.ndarray, ...]:
        """The products' matrices, one per statistic, times its scale."""
        got = self.matrices.get(scales)
        if got is None:
            w = self.w
            scale = np.array(scales)[:, None, None]
            if self.band:  # column j sums row entries j+1 .. j+w: window j of block b
                i, j = np.arange(2 * w)[:, None], np.arange(w)
                got = (((i > j) & (i <= j + w)) * scale,)
            else:  # prefix sums, suffix sums, and (sub-blocks) the sums before / after
                s = _sub_block(w)
                i, j = np.arange(s)[:, None], np.arange(s)
                p, q = np.arange(w // s)[:, None], np.arange(w // s)
                got = ((i <= j) * scale, (i >= j) * scale, (p < q).astype(np.float64),
                       (p > q).astype(np.float64))
            self.matrices[scales] = got
        return got

    def load(self, xs: np.ndarray, scales: tuple[float, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Scaled sums of x - K and of (x - K)^2 over the windows ending at xs[w:], the
        deviation x - K there, and K: each (blocks, w), block-aligned, flat index i being row
        w + i of xs (K one per block). xs[0] starts a block; rows past the end of xs are
        padding. ``scales``: the two sums' factors."""
        w, m = self.w, len(xs)
        xs = np.ascontiguousarray(xs)  # (inputs are; a definition's own may not be)
        nb, full = -(-m // w), m // w
        rest = m - full * w
        k, dev = self.k, self.dev
        blocks = xs[:full * w].reshape(full, w)
        k[:full] = blocks[:, 0]
        if rest:
            k[full] = xs[full * w]
        if self.band:
            # Overlapping rows xs[(b-1)w : (b+1)w], a view (cheaper than as_strided's).
            pairs = np.ndarray((full - 1, 2 * w), np.float64, xs, strides=(8 * w, 8))
            np.subtract(pairs, k[1:full, None], out=dev[0, 1:full])
            if rest:
                np.subtract(blocks[-1], k[full], out=dev[0, full, :w])
                np.subtract(xs[full * w:], k[full], out=dev[0, full, w:w + rest])
                dev[0, full, w + rest:] = 0.0
            used, current = dev[:, :nb], dev[0, 1:nb, w:]
            devs, squares = used[0], used[1]
        else:
            np.subtract(blocks, k[:full, None], out=dev[0, 0, :full])
            if rest:
                np.subtract(xs[full * w:], k[full], out=dev[0, 0, full, :rest])
                dev[0, 0, full, rest:] = 0.0
            np.subtract(blocks[:nb - 1], k[1:nb, None], out=dev[1, 0, :nb - 1])
            used, current = dev[:, :, :nb], self.current[:nb - 1]
            devs, squares = used[:, 0], used[:, 1]
            np.copyto(current, dev[0, 0, 1:nb])  # before the triangles add to it
        np.multiply(devs, devs, out=squares)
        bad = None
        if not math.isfinite(np.add.reduce(xs)):
            # A product with a 0 coefficient would carry NaN to earlier rows: compute with
            # zeros instead and mark the windows holding a non-finite value afterwards.
            bad = ~np.isfinite(xs)
            np.copyto(used, 0.0, where=~np.isfinite(used))
        sums = self.sums
        if self.band:
            band = self._matrices(scales)[0]
            for rows in self.row_blocks:
                np.matmul(dev[:, rows], band, out=sums[:, rows])
        else:
            self._triangles(nb, scales)
        out = sums[:, 1:nb]
        if bad is not None:
            ends = np.concatenate([[0], np.cumsum(bad)])
            held = (ends[w + 1:m + 1] - ends[1:m - w + 1]) > 0
            out.reshape(2, -1)[:, :m - w][:, held] = np.nan
        return out[0], out[1], current, k[1:nb]

    def _triangles(self, nb: int, scales: tuple[float, float]) -> None:
        """Window sums for w > _BAND_MAX: prefix sums of the heads, suffix sums of the tails,
        over sub-blocks of s values. What a sub-block's sums lack (the totals of the block's
        sub-blocks before it, for a head; after it, for a tail) is first added to its first
        (last) value, which every one of its prefix (suffix) sums includes."""
        w, dev, sums, tails = self.w, self.dev, self.sums, self.tails
        upper, lower, before, after = self._matrices(scales)
        s = upper.shape[-1]
        if s < w:
            parts = w // s
            totals = (dev.reshape(-1, s) @ np.ones(s)).reshape(2, 2, self.nb, parts)
            sub = dev.reshape(2, 2, self.nb, parts, s)
            sub[0, ..., 0] += totals[0] @ before
            sub[1, ..., s - 1] += totals[1] @ after
        np.matmul(dev[0].reshape(2, -1, s), upper, out=sums.reshape(2, -1, s))
        np.matmul(dev[1].reshape(2, -1, s), lower, out=tails.reshape(2, -1, s))
        # The window ending at row j of block b: head of block b to j, tail of block b-1 from
        # j+1 (none for j = w-1: block b-1's suffix from its row 0 is set to zero).
        tails[:, :, 0] = 0.0
        head, tail = sums.reshape(2, -1), tails.reshape(2, -1)
        head[:, w:nb * w] += tail[:, 1:(nb - 1) * w + 1]


class _Ema:
    """A smoother over blocks of ``_EMA_BLOCK`` rows: one matrix product gives every block's
    recursion from a zero start, the carries between blocks a first-order recursion. The
    product always runs on the whole scratch array (a fixed shape), as in ``_Windows``."""

    def __init__(self, capacity: int) -> None:
        self.nb = -(-capacity // _EMA_BLOCK)
        self.x = np.zeros((self.nb, _EMA_BLOCK))
        self.z = np.empty((self.nb, _EMA_BLOCK))
        self.weights: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _weights(self, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The block product's matrix, the carries' recursion [1, -(1 - alpha)**16], and
        (1 - alpha)**(j+1) for row j of a block, repeated over the whole scratch."""
        got = self.weights.get(alpha)
        if got is None:
            beta, i = 1.0 - alpha, np.arange(_EMA_BLOCK)
            lag = (i - i[:, None]).astype(np.float64)
            matrix = np.where(lag >= 0, alpha * beta ** np.maximum(lag, 0), 0.0)
            powers = beta ** (i + 1.0)
            got = self.weights[alpha] = (matrix, np.array([1.0, -powers[-1]]),
                                         np.tile(powers, self.nb))
        return got

    def run(self, x: np.ndarray, alpha: float, carry: float, out: np.ndarray) -> None:
        """out[t] = alpha x[t] + (1 - alpha) out[t-1], with out[-1] = carry."""
        self._blocks(x, alpha, carry, out)
        if len(x) and not math.isfinite(out[-1]) and not math.isfinite(x.sum()):
            # A non-finite x leaks through 0 * NaN into earlier rows of its block: again with
            # zeros in its place, then the plain recursion from it on (NaN stays NaN).
            first_bad = int(np.argmax(~np.isfinite(x)))
            self._blocks(np.where(np.isfinite(x), x, 0.0), alpha, carry, out)
            prev = out[first_bad - 1] if first_bad else carry
            out[first_bad:] = lfilter([alpha], [1.0, alpha - 1.0], x[first_bad:],
                                      zi=[(1.0 - alpha) * prev])[0]

    def _blocks(self, x: np.ndarray, alpha: float, carry: float, out: np.ndarray) -> None:
        n = len(x)
        nb = -(-n // _EMA_BLOCK)
        if n == self.x.size and x.flags.c_contiguous:
            blocks = x.reshape(self.x.shape)  # a full chunk: the product reads it in place
        else:
            blocks = self.x
            flat = blocks.reshape(-1)
            flat[:n] = x
            flat[n:nb * _EMA_BLOCK] = 0.0
        matrix, recursion, tiled = self._weights(alpha)
        z = self.z
        np.matmul(blocks, matrix, out=z)
        carries = np.empty(nb)
        carries[0] = carry
        if nb > 1:
            carries[1:] = _first_order(recursion, z[:nb - 1, -1], carry)
        # + carry * powers, as flat arrays: broadcasting over rows of 16 costs three times as
        # much (and BLAS's rank-one update goes multi-threaded at this size).
        spread = carries.repeat(_EMA_BLOCK)[:n]
        spread *= tiled[:n]
        np.add(z.reshape(-1)[:n], spread, out=out)


class _Columns:
    """One chunk's candle columns, each copied out of the history (and transposed) when an
    input first reads it: rows ``lo - 1 .. b - 1``, NaN before the first bar, whose own
    predecessor is itself."""

    def __init__(self, bars: np.ndarray, lo: int, b: int, buffer: np.ndarray) -> None:
        self.bars, self.lo, self.b = bars, lo, b
        self.buffer = buffer[:, :b - lo]
        self.ready = [False] * N_COLUMNS

    def __call__(self, j: int) -> np.ndarray:
        col = self.buffer[j]
        if not self.ready[j]:
            self.ready[j] = True
            lo, b, bars = self.lo, self.b, self.bars
            if lo < 0:
                col[:-lo - 1] = np.nan
                col[-lo - 1] = bars[0, j]
                col[-lo:] = bars[:b, j]
            else:
                col[:] = bars[lo:b, j]
        return col


def _column(j: int) -> property:
    def get(bar: _LazyBar) -> np.ndarray:
        col = bar.chunk(j)
        return col[:-1] if bar.previous else col[1:]
    return property(get)


class _LazyBar(Bar):
    """``Bar`` over a chunk's ``_Columns``: the chunk's rows, or (``previous``) the rows
    before them."""

    __slots__ = ("chunk", "previous")
    (open_time, open, high, low, close, volume, turnover) = map(_column, range(N_COLUMNS))

    def __init__(self, chunk: _Columns, previous: bool) -> None:
        self.chunk, self.previous = chunk, previous  # no Bar.__init__: columns come on demand


class BatchSeries:
    """``Series`` over one chunk of one symbol.

    ``inputs`` hold ``start`` rows of history (NaN before the first bar) and then the chunk's
    ``rows`` rows; ``origin`` is the absolute row of index 0. Scratch arrays live in ``scratch``
    and smoother carries in ``carries``, both kept from chunk to chunk.
    """

    def __init__(self, inputs: dict[str, np.ndarray], origin: int, start: int, capacity: int,
                 carries: dict[str, float], scratch: dict[tuple[object, ...], object],
                 history: int) -> None:
        self.inputs = inputs
        self.capacity = capacity  # the chunk's full size: fixes the scratch shapes
        self.origin = origin
        self.start = start
        self.rows = len(next(iter(inputs.values()))) - start
        self.carries = carries
        self.scratch = scratch
        self.history = history
        self.used: set[str] = set()

    def __call__(self, name: str) -> np.ndarray:
        return self.inputs[name][self.start:]

    def lag(self, name: str, k: int) -> np.ndarray:
        _check(0 < k < self.history, f"lag {k} needs history > {k}")
        return self.inputs[name][self.start - k:self.start - k + self.rows]

    def _windows(self, name: str, w: int, scales: tuple[float, float]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, slice, np.ndarray]:
        """``_Windows.load`` over the windows ending at the chunk's rows (block-aligned
        arrays), the slice of their flat index that is the chunk's rows, and a spare array of
        their shape."""
        _check(1 <= w <= self.history, f"window {w} needs history >= {w}")
        x = self.inputs[name]
        # From the last block boundary (absolute multiple of w) at least w before the chunk.
        first = self.start - w - (self.origin + self.start) % w
        windows = self.scratch.get(("windows", w, self.capacity))
        if windows is None:
            pool = self.scratch.get(("window pool", self.capacity))
            if pool is None:  # for any window up to the history
                pool = self.scratch["window pool", self.capacity] = np.zeros(
                    _Windows.size(self.capacity + 3 * self.history))
            assert isinstance(pool, np.ndarray)
            windows = _Windows(w, self.capacity + 2 * w, pool)
            self.scratch["windows", w, self.capacity] = windows
        assert isinstance(windows, _Windows)
        mean, square, dev, k = windows.load(x[first:], scales)
        lo = self.start - first - w
        return mean, square, dev, k, slice(lo, lo + self.rows), windows.spare[:len(k)]

    def std(self, name: str, w: int, ddof: int) -> np.ndarray:
        # Scaled so that the variance is square - mean^2.
        mean, square, _, _, rows, _ = self._windows(
            name, w, (1.0 / math.sqrt(w * (w - ddof)), 1.0 / (w - ddof)))
        np.multiply(mean, mean, out=mean)
        np.subtract(square, mean, out=square)
        np.maximum(square, 0.0, out=square)
        return np.sqrt(square.reshape(-1)[rows])

    def zscore(self, name: str, w: int, ddof: int) -> np.ndarray:
        # mean: of x - K over the window; square: of (x - K)^2; dev: x - K at the window's end.
        mean, square, dev, k, rows, spare = self._windows(name, w, (1.0 / w, 1.0 / w))
        np.multiply(mean, mean, out=spare)
        np.subtract(square, spare, out=square)
        np.sqrt(square, out=square)  # the population std
        np.subtract(dev, mean, out=mean)  # x - its window's mean
        z = np.divide(mean.reshape(-1)[rows], square.reshape(-1)[rows])
        if ddof:
            z *= math.sqrt((w - ddof) / w)
        # Flat windows: std <= FLAT_REL |mean| implies (Samuelson) |mean| <= |K| (1 + 1e-9),
        # so the exact rule runs on the windows with a population std under that bound for
        # the chunk's largest |K|.
        bound = FLAT_REL * (1.0 + 1e-6) * max(float(k.max()), -float(k.min()))
        suspects = np.flatnonzero(square.reshape(-1)[rows] <= bound)
        if suspects.size:
            std = square.reshape(-1)[rows][suspects] * math.sqrt(w / (w - ddof))
            current = self.inputs[name][self.start:][suspects]
            z[suspects[flat_windows(std, current - mean.reshape(-1)[rows][suspects])]] = 0.0
        return z

    def window(self, name: str, w: int) -> np.ndarray:
        _check(1 <= w <= self.history, f"window {w} needs history >= {w}")
        x = self.inputs[name][self.start - w + 1:self.start + self.rows]
        return sliding_window_view(x, w)

    def ema(self, key: str, x: np.ndarray, alpha: float) -> np.ndarray:
        _check(key not in self.used, f"smoother {key!r} used twice")
        self.used.add(key)
        ema = self.scratch.get(("ema", self.capacity))
        if ema is None:
            ema = self.scratch["ema", self.capacity] = _Ema(self.capacity)
        assert isinstance(ema, _Ema)
        out = np.empty(self.rows)
        if key in self.carries:
            ema.run(x, alpha, self.carries[key], out)
        elif self.rows:  # the first bar seeds the smoother
            ema.run(x, alpha, float(x[0]), out)
            out[0] = x[0]
        self.carries[key] = float(out[-1]) if self.rows else np.nan
        return out


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"feature definition: {what}")


@dataclass
class SymbolState:
    """What the live engine needs to continue a history: its last ``history`` input values
    (oldest first), the smoothers' last values, the last candle and the number of candles."""

    inputs: np.ndarray
    carries: dict[str, float]
    last: np.ndarray
    count: int


class _SymbolRun:
    """One symbol's pass over its candles, a chunk at a time; ``scratch`` and ``buffer`` may be
    shared by symbols run in turn (nothing in them outlives a chunk but fixed-shape scratch)."""

    def __init__(self, fs: FeatureSet, bars: np.ndarray, out: np.ndarray,
                 scratch: dict[tuple[object, ...], object], buffer: np.ndarray) -> None:
        self.fs, self.bars, self.out, self.scratch, self.buffer = fs, bars, out, scratch, buffer
        self.carries: dict[str, float] = {}
        self.tail = np.full((len(fs.input_names), fs.history), np.nan)

    def chunk(self, a: int, b: int, capacity: int) -> None:
        """Features of rows a..b-1 into ``out`` (chunks in order)."""
        fs, n = self.fs, len(self.bars)
        history = 3 * fs.history
        # The row before each chunk row is its predecessor; the first bar is its own.
        lo = a - history - 1
        columns = _Columns(self.bars, lo, b, self.buffer)
        inputs = dict(fs.inputs(_LazyBar(columns, False), _LazyBar(columns, True)))
        if lo < 0:
            for values in inputs.values():
                values[:history] = np.nan  # before the first bar
        series = BatchSeries(inputs, a - history, history, capacity, self.carries, self.scratch,
                             fs.history)
        for j, v in enumerate(fs.columns(series)):
            self.out[j, a:b] = v  # each indicator's arrays go before the next one runs
        if b == n:
            keep = min(n, fs.history)
            for j, name in enumerate(fs.input_names):
                self.tail[j, fs.history - keep:] = inputs[name][len(inputs[name]) - keep:]

    def finish(self) -> SymbolState:
        self.out[:, :self.fs.warmup] = np.nan
        n = len(self.bars)
        last = self.bars[-1].copy() if n else np.full(N_COLUMNS, np.nan)
        return SymbolState(self.tail, self.carries, last, n)


def _buffer(fs: FeatureSet, n: int) -> np.ndarray:
    return np.empty((N_COLUMNS, min(n, CHUNK) + 3 * fs.history + 1))


def run_symbol(fs: FeatureSet, bars: np.ndarray, out: np.ndarray) -> SymbolState:
    """Features of one symbol's (n, 7) candles into ``out`` (features, n); its final state."""
    run = _SymbolRun(fs, bars, out, {}, _buffer(fs, len(bars)))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for a, b, capacity in chunks(len(bars)):
            run.chunk(a, b, capacity)
    return run.finish()


def compute(fs: FeatureSet, ohlcv: np.ndarray) -> np.ndarray:
    """Features of every bar: (n, 7) → (n, features), (n, symbols, 7) → (n, symbols, features).

    Rows < ``fs.warmup`` are NaN. The result is a transposed view of one contiguous
    (features, n) array per symbol: each feature's column is contiguous. Several symbols go
    chunk by chunk, every symbol in turn, so that each chunk of candles is read from memory
    once.
    """
    bars = as_ohlcv(ohlcv)
    f = len(fs.names)
    if bars.ndim == 2:
        out = np.empty((f, len(bars)))
        run_symbol(fs, bars, out)
        return out.T
    n, symbols, _ = bars.shape
    out3 = np.empty((symbols, f, n))
    scratch: dict[tuple[object, ...], object] = {}
    buffer = _buffer(fs, n)
    runs = [_SymbolRun(fs, bars[:, s], out3[s], scratch, buffer) for s in range(symbols)]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for a, b, capacity in chunks(n):
            for run in runs:
                run.chunk(a, b, capacity)
    for run in runs:
        run.finish()
    return out3.transpose(2, 0, 1)
