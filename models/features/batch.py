"""The batch engine: a feature set over whole candle histories, O(n), one symbol at a time.

Each symbol's candles are cut into chunks of ``CHUNK`` rows that stay in cache (the first one
``FIRST_CHUNK`` rows, so that short histories stay cheap). Indicators see
the chunk's rows; the inputs also hold ``3 * history`` rows before them (NaN before the first
bar), so a lag is a view, and the smoothers carry their last value from chunk to chunk. Every
number depends only on rows at or before its own and on absolute row positions (chunk and
block boundaries are fixed multiples from row 0), so a prefix of a history gives bit-identical
rows to the same rows of the whole history.

Window statistics use blocks of w rows aligned to absolute multiples of w. The window ending at
row b*w + j is the tail of block b-1 after row j plus the head of block b up to row j, and both
partial sums are taken of x - K_b, where K_b is block b's first value. K_b lies inside every
window ending in block b, so |x - K_b| <= 2 sqrt(w) std(window) (Samuelson's inequality): the
sums never cancel more than a factor ~w, and the variance keeps a relative error below ~3 w^2
eps in the worst case (about 1e-15 in practice), with O(n) work and no sliding-window
temporaries. Each partial sum adds only values inside its window; the head and tail sums of
every block come from two matrix products with triangular 0/1 matrices (BLAS does the
additions, in cache).

Smoothers run in blocks of ``_EMA_BLOCK`` rows: one matrix product gives each block's recursion
from a zero start, ``lfilter`` the carries from block to block (a recursion 16 times shorter),
and row j of a block adds carry * (1 - alpha)**(j+1).

Both products always run on whole scratch arrays of one fixed shape, so BLAS takes the same path
for every chunk; rows of a product are independent, so a row's result never depends on how much
history follows it. A non-finite input would leak through 0 * NaN into earlier rows of its
block: such chunks compute with zeros in its place and mark the windows (or, for smoothers, the
rows from it on) that hold it. Inputs are finite and well below 1e150 otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import lfilter

from .spec import FLAT_REL, N_COLUMNS, Bar, FeatureSet, flat_windows

CHUNK = 12_288
"""Rows per chunk: every temporary stays under 128 KiB (glibc's mmap threshold), so numpy's
allocations are recycled from the heap instead of page-faulting fresh memory each time."""
FIRST_CHUNK = 1_024


def chunks(n: int) -> list[tuple[int, int, int]]:
    """(first row, end row, capacity) of each chunk of n rows: fixed absolute boundaries, and
    each chunk's scratch shape fixed by its capacity whatever n is."""
    out, a = [], 0
    while a < n:
        size = FIRST_CHUNK if a == 0 else CHUNK
        out.append((a, min(a + size, n), size))
        a += size
    return out
_EMA_BLOCK = 16


def as_ohlcv(ohlcv: np.ndarray) -> np.ndarray:
    a = np.asarray(ohlcv, dtype=np.float64)
    if a.ndim not in (2, 3) or a.shape[-1] != N_COLUMNS:
        raise ValueError(f"expected an (n, {N_COLUMNS}) or (n, symbols, {N_COLUMNS}) array, "
                         f"got shape {a.shape}")
    return a


def _sub_block(w: int) -> int:
    """Prefix sums run as matrix products over sub-blocks of this many values."""
    if w <= 24:
        return w
    return next((s for s in range(24, 7, -1) if w % s == 0), w)


class _Windows:
    """Window sums over blocks of w values, with scratch arrays kept from chunk to chunk.

    Every matrix product runs on the whole scratch array, whatever the chunk's length, so its
    shape never changes and each row's result never depends on how long the history is.
    """

    def __init__(self, w: int, capacity: int, buffers: np.ndarray) -> None:
        """``buffers``: (5, >= 2 * (capacity + w)) scratch shared by every window length."""
        self.w, self.s = w, _sub_block(w)
        nb = -(-capacity // w)
        self.k = np.empty(nb)
        views = buffers[:, :2 * nb * w].reshape(5, 2, nb, w)
        self.dev = views[0]  # x - K_b and its square
        self.tail = views[1]  # block b as deviations from K_{b+1}, and its square
        self.heads, self.tails = views[2], views[3]
        self.both = views[4].reshape(2, -1)
        i = np.arange(self.s)
        self.upper = (i[:, None] <= i).astype(np.float64)  # x @ upper: sums of i <= j
        self.lower = (i[:, None] >= i).astype(np.float64)  # x @ lower: sums of i >= j

    def load(self, xs: np.ndarray, skip: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sums of x - K and (x - K)^2 over the windows ending at xs[skip:], and x - K there.

        xs[0] starts a block; skip >= w. K is the first value of the window's last block.
        """
        w, m = self.w, len(xs)
        nb = -(-m // w)
        full, rest = divmod(m, w)
        blocks = xs[:full * w].reshape(full, w)
        k, dev, tail = self.k, self.dev, self.tail
        k[:full] = blocks[:, 0]
        np.subtract(blocks, k[:full, None], out=dev[0, :full])
        if rest:
            k[full] = xs[full * w]
            np.subtract(xs[full * w:], k[full], out=dev[0, full, :rest])
            dev[0, full, rest:] = 0.0
        np.multiply(dev[0, :nb], dev[0, :nb], out=dev[1, :nb])
        np.subtract(blocks[:nb - 1], k[1:nb, None], out=tail[0, :nb - 1])
        np.multiply(tail[0, :nb - 1], tail[0, :nb - 1], out=tail[1, :nb - 1])
        bad = None
        if not np.isfinite(xs.sum()):
            # A product with a 0 coefficient would carry NaN to earlier rows: compute with
            # zeros instead and mark the windows holding a non-finite value afterwards.
            bad = ~np.isfinite(xs)
            for a in (dev[:, :nb], tail[:, :nb - 1]):
                np.copyto(a, 0.0, where=~np.isfinite(a))
        self._partial_sums(dev, self.upper, self.heads, 1)
        self._partial_sums(tail, self.lower, self.tails, -1)
        heads, tails = self.heads.reshape(2, -1), self.tails.reshape(2, -1)
        tails[:, ::w] = 0.0  # a window ending on a block's last row has no tail
        both = self.both[:, :m - skip]
        np.add(heads[:, skip:m], tails[:, skip - w + 1:m - w + 1], out=both)
        if bad is not None:
            ends = np.concatenate([[0], np.cumsum(bad)])
            both[:, (ends[skip + 1:] - ends[skip - w + 1:m - w + 1]) > 0] = np.nan
        return both[0], both[1], dev[0].reshape(-1)[skip:m]

    def _partial_sums(self, values: np.ndarray, triangle: np.ndarray, out: np.ndarray,
                      direction: int) -> None:
        """Prefix (direction 1) or suffix (-1) sums within each block of ``values``."""
        s = self.s
        np.matmul(values.reshape(-1, s), triangle, out=out.reshape(-1, s))
        parts = self.w // s
        if parts > 1:  # add the totals of the block's earlier (later) sub-blocks
            sub = out.reshape(2, -1, parts, s)
            order = range(parts) if direction > 0 else range(parts - 1, -1, -1)
            edge = s - 1 if direction > 0 else 0
            carry = None
            for i in order:
                total = sub[:, :, i, edge].copy()
                if carry is not None:
                    sub[:, :, i] += carry[..., None]
                    total += carry
                carry = total


class _Ema:
    """A smoother over blocks of ``_EMA_BLOCK`` rows: one matrix product gives every block's
    recursion from a zero start, ``lfilter`` the carries between blocks. The product always
    runs on the whole scratch array (a fixed shape), as in ``_Windows``."""

    def __init__(self, capacity: int) -> None:
        self.nb = -(-capacity // _EMA_BLOCK)
        self.x = np.zeros((self.nb, _EMA_BLOCK))
        self.z = np.empty((self.nb, _EMA_BLOCK))
        self.carry = np.empty((self.nb, _EMA_BLOCK))
        self.weights: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def _weights(self, alpha: float) -> tuple[np.ndarray, np.ndarray]:
        got = self.weights.get(alpha)
        if got is None:
            beta, i = 1.0 - alpha, np.arange(_EMA_BLOCK)
            lag = (i - i[:, None]).astype(np.float64)
            matrix = np.where(lag >= 0, alpha * beta ** np.maximum(lag, 0), 0.0)
            got = self.weights[alpha] = (matrix, beta ** (i + 1.0))
        return got

    def run(self, x: np.ndarray, alpha: float, carry: float, out: np.ndarray) -> None:
        """out[t] = alpha x[t] + (1 - alpha) out[t-1], with out[-1] = carry."""
        n = len(x)
        nb = -(-n // _EMA_BLOCK)
        first_bad = None
        if not np.isfinite(x.sum()):
            first_bad = int(np.argmax(~np.isfinite(x)))
        if n == self.x.size and first_bad is None and x.flags.c_contiguous:
            blocks = x.reshape(self.x.shape)  # a full chunk: the product reads it in place
        else:
            blocks = self.x
            flat = blocks.reshape(-1)
            flat[:n] = x
            flat[n:nb * _EMA_BLOCK] = 0.0
            if first_bad is not None:
                flat[:n][~np.isfinite(x)] = 0.0
        matrix, powers = self._weights(alpha)
        np.matmul(blocks, matrix, out=self.z)
        carries = np.empty(nb)
        carries[0] = carry
        if nb > 1:
            carries[1:] = lfilter([1.0], [1.0, -powers[-1]], self.z[:nb - 1, -1],
                                  zi=[powers[-1] * carry])[0]
        np.multiply(carries[:, None], powers, out=self.carry[:nb])
        np.add(self.z.reshape(-1)[:n], self.carry.reshape(-1)[:n], out=out)
        if first_bad is not None:  # from there on, the plain recursion (NaN stays NaN)
            prev = out[first_bad - 1] if first_bad else carry
            out[first_bad:] = lfilter([alpha], [1.0, alpha - 1.0], x[first_bad:],
                                      zi=[(1.0 - alpha) * prev])[0]


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

    def _windows(self, name: str, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Sums of deviations, of squared deviations, and the deviation of the current value,
        for the windows ending at the chunk's rows; and w."""
        _check(1 <= w <= self.history, f"window {w} needs history >= {w}")
        x = self.inputs[name]
        # From the last block boundary (absolute multiple of w) at least w before the chunk.
        first = self.start - w - (self.origin + self.start) % w
        capacity = self.capacity
        windows = self.scratch.get(("windows", w, capacity))
        if windows is None:
            buffers = self.scratch.get(("window buffers", capacity))
            if buffers is None:
                size = 2 * (capacity + 3 * self.history)
                buffers = self.scratch["window buffers", capacity] = np.zeros((5, size))
            assert isinstance(buffers, np.ndarray)
            windows = self.scratch["windows", w, capacity] = _Windows(w, capacity + 2 * w,
                                                                        buffers)
        assert isinstance(windows, _Windows)
        s1, s2, dev = windows.load(x[first:], self.start - first)
        return s1, s2, dev, w

    def std(self, name: str, w: int, ddof: int) -> np.ndarray:
        s1, s2, _, w = self._windows(name, w)
        m2 = s1 * s1
        m2 *= -1.0 / w
        m2 += s2
        np.maximum(m2, 0.0, out=m2)
        m2 *= 1.0 / (w - ddof)
        return np.sqrt(m2, out=m2)

    def zscore(self, name: str, w: int, ddof: int) -> np.ndarray:
        s1, s2, dev, w = self._windows(name, w)
        mean_dev = s1 * (1.0 / w)
        s1 *= mean_dev
        s2 -= s1  # the sum of squared deviations from the window mean
        z = dev - mean_dev
        inv_std = np.divide(w - ddof, s2, out=s1)
        np.sqrt(inv_std, out=inv_std)
        z *= inv_std
        # Flat windows: std <= FLAT_REL |mean| implies, as the current value x lies in the
        # window, a sum of squares <= (w - ddof) (FLAT_REL x (1 + 1e-6))^2; the exact rule then
        # runs on the windows under that bound for the chunk's largest |x|.
        current = self.inputs[name][self.start:]
        largest = max(float(current.max(initial=0.0)), -float(current.min(initial=0.0)))
        bound = (w - ddof) * (FLAT_REL * (1.0 + 1e-6) * largest) ** 2
        suspects = np.flatnonzero(s2 <= bound)
        if suspects.size:
            std = np.sqrt(np.maximum(s2[suspects], 0.0) / (w - ddof))
            mean = current[suspects] - dev[suspects] + mean_dev[suspects]
            z[suspects[flat_windows(std, mean)]] = 0.0
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


def run_symbol(fs: FeatureSet, bars: np.ndarray, out: np.ndarray) -> SymbolState:
    """Features of one symbol's (n, 7) candles into ``out`` (features, n); its final state."""
    n = len(bars)
    history = 3 * fs.history
    carries: dict[str, float] = {}
    scratch: dict[tuple[object, ...], object] = {}
    tail = np.full((len(fs.input_names), fs.history), np.nan)
    buffer = np.empty((N_COLUMNS, min(n, CHUNK) + history + 1))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for a, b, capacity in chunks(n):
            # The row before each chunk row is its predecessor; the first bar is its own.
            lo = a - history - 1
            cols = buffer[:, :b - lo]
            if lo < 0:
                cols[:, :-lo] = np.nan
                cols[:, -lo - 1] = bars[0]
                cols[:, -lo:] = bars[:b].T
            else:
                cols[:] = bars[lo:b].T
            inputs = dict(fs.inputs(Bar(cols[:, 1:]), Bar(cols[:, :-1])))
            if lo < 0:
                for values in inputs.values():
                    values[:history] = np.nan  # before the first bar
            series = BatchSeries(inputs, a - history, history, capacity, carries, scratch,
                                 fs.history)
            for j, v in enumerate(fs.evaluate(series)):
                out[j, a:b] = v
            if b == n:
                keep = min(n, fs.history)
                for j, name in enumerate(fs.input_names):
                    tail[j, fs.history - keep:] = inputs[name][len(inputs[name]) - keep:]
    out[:, :fs.warmup] = np.nan
    return SymbolState(tail, carries, bars[-1].copy() if n else np.full(N_COLUMNS, np.nan), n)


def compute(fs: FeatureSet, ohlcv: np.ndarray) -> np.ndarray:
    """Features of every bar: (n, 7) → (n, features), (n, symbols, 7) → (n, symbols, features).

    Rows < ``fs.warmup`` are NaN. The result is a transposed view of one contiguous
    (features, n) array per symbol: each feature's column is contiguous.
    """
    bars = as_ohlcv(ohlcv)
    f = len(fs.names)
    if bars.ndim == 2:
        out = np.empty((f, len(bars)))
        run_symbol(fs, bars, out)
        return out.T
    n, symbols, _ = bars.shape
    out3 = np.empty((symbols, f, n))
    for s in range(symbols):
        run_symbol(fs, bars[:, s], out3[s])
    return out3.transpose(2, 0, 1)
