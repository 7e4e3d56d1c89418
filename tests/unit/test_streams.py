"""The WARP fits' random-stream tags: one value per stream, but for the one coincidence streams.py documents."""

from __future__ import annotations

from recspark.models.warp import streams


def test_every_stream_has_its_own_tag_but_the_documented_pair():
    tags = {name: value for name, value in vars(streams).items() if name.isupper()}
    by_value: dict[int, list[str]] = {}
    for name, value in tags.items():
        by_value.setdefault(value, []).append(name)
    shared = sorted(sorted(names) for names in by_value.values() if len(names) > 1)
    assert shared == [["NIGHTLY_USER_FEATURE_REGROW", "USER_INIT"]]
    assert len(tags) == 6
