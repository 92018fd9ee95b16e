"""The disk guard's rule: archive only what had a verdict, and only when it helps."""

from appliance.disk_guard import ModelFiles, plan


def models(*specs):
    return [ModelFiles(f"m{i}", mode, sharpe, pinned, size)
            for i, (mode, sharpe, pinned, size) in enumerate(specs)]


def test_below_the_threshold_nothing_happens():
    assert plan(0.5, 0.8, 1000, models(("rejected", -1.0, False, 10)), 10, 0.2).action == "none"


def test_archives_the_worst_fifth_of_models_with_a_verdict_only():
    pool = models(("candidate", -9.0, False, 100), ("shadow", -9.0, False, 100),
                  ("prod", -9.0, False, 100), ("retired", -5.0, True, 100),
                  ("rejected", 0.5, False, 100), ("rejected", -1.0, False, 100),
                  ("retired", 2.0, False, 100), ("rejected", float("nan"), False, 100),
                  ("rejected", 1.0, False, 100), ("retired", 0.1, False, 100))
    p = plan(0.81, 0.8, 10_000, pool, lake_bytes=10, archive_fraction=0.2)
    # eligible: m4..m9 (6 models: not pinned, had a verdict); 20% rounds up to 2; NaN is worst
    assert p.action == "archive" and p.archive == ("m7", "m5") and p.frees_bytes == 200


def test_when_the_lake_fills_the_disk_models_are_left_alone():
    pool = models(("rejected", -1.0, False, 1_000), ("retired", 0.0, False, 1_000))
    p = plan(0.95, 0.8, 10**12, pool, lake_bytes=10**11, archive_fraction=0.5)
    assert p.action == "trim_lake" and p.archive == ()
    assert "the lake" in p.reason and "would free 1,000 bytes" in p.reason
