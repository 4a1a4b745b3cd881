"""The pairing study's arithmetic, on hand-made results (the study itself times real searches)."""

from __future__ import annotations

import math
import statistics

from research.studies.pairing_study import spread, table


def test_spread_is_the_sd_of_log_speedups_and_the_table_shows_both_ways() -> None:
    results = [{"blocked": b, "paired": p} for b, p in ((6.0, 6.3), (6.6, 6.2), (5.4, 6.25))]
    assert math.isclose(spread([6.0, 6.6, 5.4]), statistics.stdev(math.log(s) for s in (6.0, 6.6, 5.4)))
    text = table(results)
    assert f"| blocked (the gate today) | 3 | 6.00x | {100 * spread([6.0, 6.6, 5.4]):.1f}% |" in text
    assert f"| paired rounds | 3 | 6.25x | {100 * spread([6.3, 6.2, 6.25]):.1f}% |" in text
