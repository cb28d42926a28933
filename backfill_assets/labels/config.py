"""Label sets from configuration: each entry of `label_sets.yaml` becomes one asset `labels/<name>`.

Every value is checked when definitions load; an error names the file, the entry and the bad value.
"""

import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

KINDS = ("triple_barrier", "vol_scaled_return", "mfe_mae")
TIE_RULES = ("open", "stop_loss", "take_profit")  # kernel codes 0, 1, 2
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
DEFAULT_FILE = Path(__file__).resolve().parents[2] / "label_sets.yaml"
# Bumped whenever the meaning of a stored label changes for the same parameters (a kernel's rule,
# the warm-up): it is part of every set's version, so Dagster marks every label partition stale.
DEFINITIONS_VERSION = 2
KEYS = {
    "name", "kind", "horizon", "pt", "sl", "span", "min_trgt", "tie_rule", "cross_session",
    "scale_by_trgt", "trading_hours", "description",
}  # fmt: skip


class LabelConfigError(ValueError):
    """A label-set configuration that cannot define assets."""


@dataclass(frozen=True)
class LabelSet:
    """One label set. `horizon` and `span` count bars; pt/sl multiply trgt = sigma * sqrt(horizon)."""

    name: str
    kind: str
    horizon: int = 60
    pt: float = 1.0
    sl: float = 1.0
    span: int = 100
    min_trgt: float = 0.0
    tie_rule: str = "open"
    cross_session: bool = True
    scale_by_trgt: bool = False
    trading_hours: str = "regular"  # extended: computed over bars_all (pre-market and after-hours too)
    description: str = ""

    @property
    def table(self) -> str:
        return f"labels_{self.name}"

    @property
    def tie_code(self) -> int:
        return TIE_RULES.index(self.tie_rule)

    def parameters(self, timeframe: str) -> dict[str, Any]:
        """Everything a stored label value depends on (not the name or the description)."""
        values = {k: v for k, v in asdict(self).items() if k not in ("name", "description")}
        if self.trading_hours == "regular":  # the default: versions made before it existed still hold
            del values["trading_hours"]
        return values | {"timeframe": timeframe, "definitions": DEFINITIONS_VERSION}

    def version(self, timeframe: str) -> str:
        """A short hash of `parameters`: the asset's code_version and the label table's stamp."""
        canonical = json.dumps(self.parameters(timeframe), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _number(where: str, key: str, value: Any, *, integer: bool, minimum: float) -> Any:
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value < minimum:
        kind = "a whole number" if integer else "a finite number"
        raise LabelConfigError(f"{where}: {key}={value!r} must be {kind} >= {minimum:g}")
    return value if integer else float(value)


def parse_label_set(entry: Any, where: str) -> LabelSet:
    if not isinstance(entry, dict):
        raise LabelConfigError(f"{where}: expected a mapping of settings, got {entry!r}")
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise LabelConfigError(f"{where}: unknown setting {unknown[0]!r}; expected some of {sorted(KEYS)}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise LabelConfigError(f"{where}: name={name!r} must match {NAME_PATTERN.pattern}")
    where = f"{where} ({name})"
    kind = entry.get("kind")
    if kind not in KINDS:
        raise LabelConfigError(f"{where}: unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    values: dict[str, Any] = {"name": name, "kind": kind}
    for key, integer, minimum in (("horizon", True, 1), ("span", True, 2), ("pt", False, 0),
                                  ("sl", False, 0), ("min_trgt", False, 0)):  # fmt: skip
        if key in entry:
            values[key] = _number(where, key, entry[key], integer=integer, minimum=minimum)
    for key in ("cross_session", "scale_by_trgt"):
        if key in entry:
            if not isinstance(entry[key], bool):
                raise LabelConfigError(f"{where}: {key}={entry[key]!r} must be true or false")
            values[key] = entry[key]
    if "trading_hours" in entry:
        if entry["trading_hours"] not in ("regular", "extended"):
            raise LabelConfigError(
                f"{where}: trading_hours={entry['trading_hours']!r}; expected regular or extended"
            )
        values["trading_hours"] = entry["trading_hours"]
    if "tie_rule" in entry:
        if entry["tie_rule"] not in TIE_RULES:
            raise LabelConfigError(f"{where}: tie_rule={entry['tie_rule']!r}; expected one of {TIE_RULES}")
        values["tie_rule"] = entry["tie_rule"]
    values["description"] = str(entry.get("description", ""))
    label_set = LabelSet(**values)
    if kind == "triple_barrier" and label_set.pt == 0 and label_set.sl == 0:
        raise LabelConfigError(f"{where}: pt and sl are both 0; a triple barrier needs at least one")
    return label_set


def load_label_sets(path: Path | None = None) -> tuple[LabelSet, ...]:
    """Label sets from `path`, else BACKFILL_LABEL_SETS, else the project's label_sets.yaml."""
    path = path or Path(os.environ.get("BACKFILL_LABEL_SETS") or DEFAULT_FILE)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise LabelConfigError(f"label sets file {str(path)!r} cannot be read: {exc}") from None
    entries = document.get("label_sets") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise LabelConfigError(f"{path}: expected a top-level `label_sets:` list")
    sets = [parse_label_set(entry, f"{path.name} entry {i + 1}") for i, entry in enumerate(entries)]
    seen: set[str] = set()
    for label_set in sets:
        if label_set.name in seen:
            raise LabelConfigError(f"{path.name}: duplicate label set name {label_set.name!r}")
        seen.add(label_set.name)
    return tuple(sets)
