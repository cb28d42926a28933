"""A small client for dagster-webserver's GraphQL API: launch and follow real daemon backfills."""

import hashlib
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    """A free TCP port on loopback, for a webserver of our own."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LAUNCH = """
mutation($p: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $p) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { invalidOutputName }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}"""

STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PythonError { message }
    ... on BackfillNotFoundError { message }
    ... on PartitionBackfill {
      status
      assetBackfillData { assetBackfillStatuses {
        ... on AssetPartitionsStatusCounts {
          numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized numPartitionsFailed
        }
      } }
    }
  }
}"""

# Backfills still running; a launch's key tag (below) is matched client-side (no tag filter in 1.13).
RUNNING = """
{ partitionBackfillsOrError(status: REQUESTED, limit: 1000) {
    __typename
    ... on PartitionBackfills { results { id tags { key value } } }
} }"""
LAUNCH_KEY = "backfill_assets/launch_key"

LOCATIONS = """
{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } }
} } } }"""

LAUNCH_RUN = """
mutation($p: ExecutionParams!) {
  launchRun(executionParams: $p) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

ACTIVE_RUNS = """
query($tags: [ExecutionTag!]) {
  runsOrError(filter: {tags: $tags, statuses: [QUEUED, NOT_STARTED, STARTING, STARTED]}, limit: 1) {
    __typename ... on Runs { results { runId } } ... on PythonError { message }
  }
}"""

RUN_STATUS = """
query($id: ID!) {
  runOrError(runId: $id) { __typename ... on Run { status } ... on PythonError { message } }
}"""

TERMINAL = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class WebserverError(RuntimeError):
    """The webserver is unreachable or answered with an error."""


class WebserverBusy(WebserverError):
    """The webserver took the request but did not answer in time (it may still be working on it)."""


class WebserverUnreachable(WebserverError):
    """Nothing listens at the URL: no webserver runs there (a usage problem, not a failure)."""


@dataclass(frozen=True)
class BackfillProgress:
    status: str
    targeted: int
    materialized: int
    failed: int
    in_progress: int

    @property
    def done(self) -> bool:
        return self.status in TERMINAL


def graphql(
    url: str, query: str, variables: dict[str, Any] | None = None, timeout: float = 30
) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.load(response)
    except urllib.error.HTTPError as exc:  # it answered: say what, not that it is unreachable
        detail = " ".join(exc.read().decode(errors="replace").split())[:500]
        raise WebserverError(
            f"dagster-webserver at {url} answered HTTP {exc.code} {exc.reason}: {detail}"
        ) from exc
    except TimeoutError as exc:
        raise WebserverBusy(f"dagster-webserver at {url} gave no answer within {timeout:.0f} s") from exc
    except (urllib.error.URLError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            raise WebserverBusy(f"dagster-webserver at {url} gave no answer within {timeout:.0f} s") from exc
        if isinstance(reason, ConnectionRefusedError):
            raise WebserverUnreachable(
                f"no dagster-webserver at {url} (connection refused): start one with `make dev`, or "
                "point --url / DAGSTER_WEBSERVER_URL at yours"
            ) from exc
        raise WebserverError(f"cannot reach dagster-webserver at {url}: {reason}") from exc
    except json.JSONDecodeError as exc:
        raise WebserverError(
            f"dagster-webserver at {url} answered with a body that is not JSON: {exc}"
        ) from exc
    if payload.get("errors"):
        raise WebserverError(f"GraphQL error from {url}: {payload['errors'][0].get('message')}")
    return payload["data"]


def wait_until_loaded(url: str, timeout_s: float = 180) -> None:
    """Wait until the webserver answers and every code location has loaded (or one failed to)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            entries = graphql(url, LOCATIONS, timeout=5)["workspaceOrError"].get("locationEntries", [])
        except WebserverError:
            entries = []
        for entry in entries:
            error = entry.get("locationOrLoadError") or {}
            if error.get("__typename") == "PythonError":
                raise WebserverError(f"code location {entry['name']} failed to load: {error['message']}")
        if entries and all(e["loadStatus"] == "LOADED" for e in entries):
            return
        if time.monotonic() > deadline:
            raise WebserverError(f"dagster-webserver at {url} not ready within {timeout_s:.0f} s")
        time.sleep(1)


def launch_key(params: dict[str, Any]) -> str:
    """The same launch (assets, partitions, title, tags) always has the same key."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:20]


def running_backfill(url: str, key: str, timeout: float = 60) -> str | None:
    """The id of a running backfill launched with `key`, if there is one."""
    found = graphql(url, RUNNING, timeout=timeout)["partitionBackfillsOrError"]
    for backfill in found.get("results", []):
        if {"key": LAUNCH_KEY, "value": key} in backfill["tags"]:
            return str(backfill["id"])
    return None


def launch_backfill(
    url: str,
    assets: list[str],
    ranges: list[tuple[str, str]],
    title: str,
    tags: dict[str, str] | None = None,
    timeout: float = 600,
) -> tuple[str, bool]:
    """Launch an asset backfill of `ranges` (first and last partition key of each box) for every
    asset; return its id and whether it was already running.

    Ranges, not keys: a year of 1,000 tickers is one range, not 252,000 names for the webserver to
    parse. A launch carries a key tag derived from its parameters, so a retried launch (after a
    timeout, a lost answer or a second command) finds the running backfill instead of adding one.
    `timeout` bounds the wait for the answer; a busy webserver gets as long again to show the
    backfill it may still be creating.
    """
    partitions = {"ranges": [{"start": a, "end": b} for a, b in ranges]}
    params: dict[str, Any] = {
        "partitionsByAssets": [
            {"assetKey": {"path": a.split("/")}, "partitions": partitions} for a in assets
        ],
        "title": title,
        "tags": [{"key": k, "value": v} for k, v in sorted((tags or {}).items())],
    }
    key = launch_key(params)
    params["tags"].append({"key": LAUNCH_KEY, "value": key})
    if (running := running_backfill(url, key)) is not None:
        return running, True
    try:
        result = graphql(url, LAUNCH, {"p": params}, timeout=timeout)["launchPartitionBackfill"]
    except WebserverBusy:
        # The webserver may still be creating it: look for it rather than launch a second one.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (running := running_backfill(url, key)) is not None:
                return running, False
            time.sleep(5)
        raise
    if result["__typename"] != "LaunchBackfillSuccess":
        raise WebserverError(f"backfill not launched ({result['__typename']}): {result}")
    return str(result["backfillId"]), False


def launch_run(
    url: str, assets: list[str], tags: dict[str, str], location: str = "backfill_assets"
) -> tuple[str, bool]:
    """Queue one run of the asset job for `assets` with `tags` (e.g. a partition range), as a
    schedule's RunRequest or the UI's Materialize does; the run's id, and whether the same launch
    (same key tag) was already queued or running."""
    key = launch_key({"assets": assets, "tags": sorted(tags.items())})
    tags = {**tags, LAUNCH_KEY: key}
    active = graphql(url, ACTIVE_RUNS, {"tags": [{"key": LAUNCH_KEY, "value": key}]})["runsOrError"]
    if active.get("results"):
        return str(active["results"][0]["runId"]), True
    params = {
        "selector": {
            "repositoryLocationName": location,
            "repositoryName": "__repository__",
            "jobName": "__ASSET_JOB",
            "assetSelection": [{"path": a.split("/")} for a in assets],
        },
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
    }
    result = graphql(url, LAUNCH_RUN, {"p": params}, timeout=600)["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise WebserverError(f"run not launched ({result['__typename']}): {result}")
    return str(result["run"]["runId"]), False


def run_status(url: str, run_id: str) -> str:
    result = graphql(url, RUN_STATUS, {"id": run_id})["runOrError"]
    if result["__typename"] != "Run":
        raise WebserverError(f"run {run_id}: {result.get('message', result['__typename'])}")
    return str(result["status"])


def backfill_progress(url: str, backfill_id: str) -> BackfillProgress:
    result = graphql(url, STATUS, {"id": backfill_id})["partitionBackfillOrError"]
    if result["__typename"] != "PartitionBackfill":
        raise WebserverError(f"backfill {backfill_id}: {result.get('message', result['__typename'])}")
    counts = [s for s in result["assetBackfillData"]["assetBackfillStatuses"] if s]
    return BackfillProgress(
        status=result["status"],
        targeted=sum(s["numPartitionsTargeted"] for s in counts),
        materialized=sum(s["numPartitionsMaterialized"] for s in counts),
        failed=sum(s["numPartitionsFailed"] for s in counts),
        in_progress=sum(s["numPartitionsInProgress"] for s in counts),
    )
