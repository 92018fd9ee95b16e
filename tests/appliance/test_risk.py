from appliance.risk import sustained_above


def test_usage_must_stay_above_for_the_whole_window():
    samples = [(t, 0.95) for t in range(0, 301, 30)]
    assert sustained_above(samples, now=300, threshold=0.9, window_s=300)
    assert not sustained_above(samples[1:], now=300, threshold=0.9, window_s=300)  # too short
    dip = samples[:5] + [(150, 0.5)] + samples[6:]
    assert not sustained_above(dip, now=300, threshold=0.9, window_s=300)
    assert not sustained_above([], now=300, threshold=0.9, window_s=300)


def test_old_dips_outside_the_window_do_not_count():
    samples = [(0, 0.1)] + [(t, 0.99) for t in range(60, 700, 60)]
    assert sustained_above(samples, now=660, threshold=0.9, window_s=300)
