"""``bench inference``'s paired measurement: the ONNX / framework ratio comes from alternating
blocks of calls, so a change of load during the run weighs on both sides (never asserts time)."""

from __future__ import annotations

from benchmarks.inference import PAIR_BLOCK, WARMUP_CALLS, _paired_ms


def test_paired_calls_alternate_in_blocks_and_time_every_call():
    order: list[str] = []
    calls = 3 * PAIR_BLOCK + 7  # a last, shorter block on each side
    first, second = _paired_ms(lambda: order.append("a"), lambda: order.append("b"), calls)
    assert first.shape == second.shape == (calls,)
    assert (first >= 0).all() and (second >= 0).all()
    measured = order[2 * WARMUP_CALLS:]
    assert measured.count("a") == measured.count("b") == calls
    runs = [measured[0]]
    lengths = [0]
    for side in measured:
        if side != runs[-1]:
            runs.append(side)
            lengths.append(0)
        lengths[-1] += 1
    assert runs == ["a", "b"] * 4
    assert lengths == [PAIR_BLOCK] * 6 + [7, 7]
