"""Outside-hours bars (BACKFILL_TRADING_HOURS=extended) and where they live.

`bars` keeps regular-hours bars only, as every reader of it expects (labels, checks, gaps, users'
queries written before extended hours existed). Pre-market and after-hours bars go to `bars_outside`,
the same layout, replaced with their (ticker, session) slices in the same transaction, so a partition
re-fetched in regular hours loses its old outside-hours bars too. The view `bars_all` is both, with a
`regular_hours` column saying which is which.
"""

import pandas as pd

from backfill_assets.schemas import BARS_COLUMNS

OUTSIDE = "bars_outside"
ALL_BARS = "bars_all"
VIEW_SQL = (
    f"CREATE OR REPLACE VIEW {ALL_BARS} AS SELECT *, TRUE AS regular_hours FROM bars "
    f"UNION ALL SELECT *, FALSE AS regular_hours FROM {OUTSIDE}"
)


def bars_source(extended: bool, has_outside: bool) -> str:
    """The relation a reader of regular-hours bars (False) or of every bar (True) reads: `bars_all`
    once outside-hours bars exist, else `bars`."""
    return ALL_BARS if extended and has_outside else "bars"


def split_hours(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`frame`'s regular-hours rows and its outside-hours rows (by its `regular_hours` column; none
    means all regular), each in the bars columns."""
    columns = list(BARS_COLUMNS)
    if "regular_hours" not in frame.columns or bool(frame["regular_hours"].all()):
        return frame[columns], frame.iloc[:0][columns]
    flag = frame["regular_hours"].to_numpy(dtype=bool)
    return frame.loc[flag, columns], frame.loc[~flag, columns]
