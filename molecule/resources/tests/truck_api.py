"""Shared by the scenarios' tests: a release directory, and HTTP to a simulated truck's API
made on the truck itself (`docker exec -i <truck> python3 -`), where the API listens on
127.0.0.1."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

# Runs on the truck (stdlib only): one request; prints {"status", "body"} (JSON bodies decoded,
# others as text, e.g. /metrics); the optional 4th argument is sent as a bearer token.
HTTP_CLIENT = r"""
import json, sys, urllib.error, urllib.request
method, url = sys.argv[1], sys.argv[2]
data = sys.stdin.buffer.read() if method == "POST" else None
req = urllib.request.Request(url, data=data, method=method)
if data is not None:
    req.add_header("Content-Type", "application/json")
if len(sys.argv) > 4:
    req.add_header("Authorization", "Bearer " + sys.argv[4])
try:
    with urllib.request.urlopen(req, timeout=float(sys.argv[3])) as r:
        status, body = r.status, r.read()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read()
except OSError as e:
    status, body = 0, json.dumps(str(e)).encode()
try:
    decoded = json.loads(body or b"null")
except ValueError:
    decoded = body.decode("utf-8", "replace")
print(json.dumps({"status": status, "body": decoded}))
"""


class Release:
    """A release directory written by scripts/molecule-releases.sh."""

    def __init__(self, path: Path):
        self.path = path
        self.name = path.name
        self.manifest = json.loads((path / "manifest.json").read_text())
        self.model_version = self.manifest["version"]
        self.image_id = self.manifest["image_id"]
        self.smoke_vectors = json.loads((path / "bundle" / "smoke_vectors.json").read_text())
        self.features = json.loads((path / "bundle" / "schema.json").read_text())["features"]


def truck_http(
    truck: str,
    method: str,
    path: str,
    payload=None,
    timeout: float = 10.0,
    token: str | None = None,
    check: bool = True,
):
    """(status, body) of one request from inside `truck` to its API on 127.0.0.1:8080. When
    `docker exec` itself fails: CalledProcessError with `check`, else (0, its stderr)."""
    done = subprocess.run(
        [
            "docker",
            "exec",
            "-i",
            truck,
            "python3",
            "-c",
            HTTP_CLIENT,
            method,
            f"http://127.0.0.1:8080{path}",
            str(timeout),
            *([token] if token else []),
        ],
        input=json.dumps(payload).encode() if payload is not None else b"",
        capture_output=True,
        check=check,
        timeout=timeout + 30,
    )
    if done.returncode != 0:
        return 0, done.stderr.decode(errors="replace")
    answer = json.loads(done.stdout)
    return answer["status"], answer["body"]


def served_release(truck: str, releases: list[Release], timeout: float = 5.0) -> Release:
    """The release the truck serves, checked on a real /predict: the request holds every given
    release's smoke vectors; the answer must name one of them and give exactly that release's
    answers for its own vectors (a complete version, model and bundle together)."""
    records = [
        dict(zip(release.features, vector["inputs"], strict=True))
        for release in releases
        for vector in release.smoke_vectors
    ]
    status, body = truck_http(truck, "POST", "/predict", {"instances": records}, timeout)
    assert status == 200, f"/predict on {truck} answered {status}: {body}"
    by_version = {release.model_version: release for release in releases}
    release = by_version.get(body["model_version"])
    assert release is not None, f"{truck} serves {body['model_version']}, not {list(by_version)}"
    start = 0
    for earlier in releases[: releases.index(release)]:
        start += len(earlier.smoke_vectors)
    got = body["predictions"][start : start + len(release.smoke_vectors)]
    for answer, vector in zip(got, release.smoke_vectors, strict=True):
        assert answer["label"] == vector["label"], (truck, answer, vector)
        assert abs(answer["probability"] - vector["probability"]) <= 1e-6, (truck, answer, vector)
    status, meta = truck_http(truck, "GET", "/v2/models/aps-classifier", timeout=timeout)
    assert status == 200 and meta["versions"][0] == release.model_version, meta
    return release


def truck_ip(truck: str, network: str) -> str:
    """The simulated truck's address on the scenario's network (reachable from the host)."""
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}", truck],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)[network]["IPAddress"]


class Playbooks:
    """Runs playbooks/<name> (the root site.yml, or an absolute path) on a scenario's inventory,
    from the project, with the rollout report callback writing to <ephemeral>/rollout-reports."""

    def __init__(self, project: Path, ephemeral: Path) -> None:
        self.project = project
        self.inventory = ephemeral / "inventory"
        self.reports = ephemeral / "rollout-reports"

    def command(self, name: str, *args: str) -> tuple[list[str], dict[str, str]]:
        import os

        env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=str(self.project / "collections"),
            ANSIBLE_CALLBACKS_ENABLED="linkedge.edge.rollout_report",
            LINKEDGE_ROLLOUT_REPORT_DIR=str(self.reports),
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_NOCOLOR="1",
        )
        if Path(name).is_absolute():
            path = Path(name)  # a scenario's own playbook
        elif name == "site.yml":
            path = self.project / name
        else:
            path = self.project / "playbooks" / name
        return ["ansible-playbook", str(path), "-i", str(self.inventory), *args], env

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """In the background; its output (stdout and stderr together) in .stdout."""
        command, env = self.command(name, *args)
        return subprocess.Popen(
            command, env=env, cwd=self.project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )

    def run(self, name: str, *args: str, timeout: float = 900) -> tuple[int, float, dict, str]:
        """(rc, seconds, the run's rollout report or {}, output)."""
        import time

        command, env = self.command(name, *args)
        latest = self.reports / "latest.json"
        before = latest.stat().st_mtime if latest.exists() else None
        started = time.monotonic()
        proc = subprocess.run(
            command, env=env, cwd=self.project, capture_output=True, text=True, timeout=timeout
        )
        seconds = time.monotonic() - started
        report = {}
        if latest.exists() and latest.stat().st_mtime != before:
            report = json.loads(latest.read_text())
        print(f"\n{name} {' '.join(args)}: rc={proc.returncode} in {seconds:.1f} s")
        return proc.returncode, seconds, report, proc.stdout + proc.stderr


def save_figures(scenario: str, figures: dict, project: Path, ephemeral: Path) -> None:
    """A scenario's measured figures: <ephemeral>/<scenario>-figures.json for the run, and
    <project>/build/figures/<scenario>.json (with time and commit), which scripts/figures.py
    renders into docs/figures.md."""
    import subprocess
    import time

    def git(*args: str) -> str:
        run = subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True)
        return run.stdout.strip()

    text = json.dumps(figures, indent=1, sort_keys=True)
    print(f"\nFIGURES: {text}")
    (ephemeral / f"{scenario}-figures.json").write_text(text)
    record = {
        "scenario": scenario,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git": {
            "commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain")),
        },
        "figures": figures,
    }
    (project / "build" / "figures").mkdir(parents=True, exist_ok=True)
    (project / "build" / "figures" / f"{scenario}.json").write_text(
        json.dumps(record, indent=1) + "\n"
    )
