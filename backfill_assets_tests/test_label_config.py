"""Label-set configuration: the shipped defaults, and bad entries refused with the bad value named."""

from pathlib import Path

import pytest

from backfill_assets.labels.config import LabelConfigError, load_label_sets, parse_label_set
from backfill_assets_tests.conftest import BIN, run


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "label_sets.yaml"
    path.write_text(body)
    return path


def test_the_shipped_file_defines_the_three_default_sets() -> None:
    sets = load_label_sets()
    assert [(s.name, s.kind) for s in sets] == [
        ("enhanced_triple_barrier", "triple_barrier"),
        ("vol_scaled_return", "vol_scaled_return"),
        ("mfe_mae", "mfe_mae"),
    ]
    assert [s.table for s in sets] == [
        "labels_enhanced_triple_barrier",
        "labels_vol_scaled_return",
        "labels_mfe_mae",
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            "- {name: a, kind: triple_barrier, horizon: -5}",
            "entry 1 (a): horizon=-5 must be a whole number >= 1",
        ),
        ("- {name: a, kind: triple_barrier, horizon: 2.5}", "horizon=2.5 must be a whole number"),
        ("- {name: a, kind: zigzag}", "unknown kind 'zigzag'"),
        ("- {name: a, kind: mfe_mae}\n- {name: a, kind: mfe_mae}", "duplicate label set name 'a'"),
        ("- {name: a, kind: mfe_mae, horizn: 5}", "unknown setting 'horizn'"),
        ("- {name: 'x; DROP TABLE bars', kind: mfe_mae}", "name='x; DROP TABLE bars' must match"),
        ("- {name: a, kind: triple_barrier, pt: 0, sl: 0}", "pt and sl are both 0"),
        ("- {name: a, kind: triple_barrier, sl: .nan}", "sl=nan must be a finite number"),
        ("- {name: a, kind: triple_barrier, tie_rule: coin}", "tie_rule='coin'"),
        ("- {name: a, kind: mfe_mae, cross_session: 'no'}", "cross_session='no' must be true or false"),
    ],
    ids=[
        "negative-H",
        "fractional-H",
        "unknown-kind",
        "duplicate",
        "typo",
        "sql-name",
        "no-barrier",
        "nan",
        "tie-rule",
        "not-bool",
    ],  # fmt: skip
)
def test_bad_entries_are_refused(tmp_path: Path, entries: str, message: str) -> None:
    with pytest.raises(LabelConfigError) as info:
        load_label_sets(write(tmp_path, "label_sets:\n" + entries + "\n"))
    assert message in str(info.value)


def test_unreadable_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(LabelConfigError, match="cannot be read"):
        load_label_sets(tmp_path / "missing.yaml")
    with pytest.raises(LabelConfigError, match="top-level `label_sets:` list"):
        load_label_sets(write(tmp_path, "sets: []\n"))


@pytest.mark.slow
def test_definitions_fail_to_load_on_a_bad_label_file(project_env: dict[str, str], tmp_path: Path) -> None:
    bad = write(tmp_path, "label_sets:\n- {name: tb, kind: triple_barrier, horizon: 0}\n")
    env = {**project_env, "BACKFILL_LABEL_SETS": str(bad)}
    result = run([str(BIN / "dagster"), "definitions", "validate", "-m", "backfill_assets.definitions"], env)
    assert result.returncode != 0 and "horizon=0 must be a whole number >= 1" in result.stdout + result.stderr


def test_trading_hours_of_a_label_set_is_validated_and_versioned() -> None:
    extended = parse_label_set({"name": "x", "kind": "mfe_mae", "trading_hours": "extended"}, "label_sets[0]")
    regular = parse_label_set({"name": "x", "kind": "mfe_mae"}, "label_sets[0]")
    assert extended.trading_hours == "extended" and "trading_hours" not in regular.parameters("1Min")
    assert extended.version("1Min") != regular.version("1Min")
    with pytest.raises(LabelConfigError, match="trading_hours='overnight'; expected regular or extended"):
        parse_label_set({"name": "x", "kind": "mfe_mae", "trading_hours": "overnight"}, "label_sets[0]")
