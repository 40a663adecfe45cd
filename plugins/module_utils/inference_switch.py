# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Make an image the serving inference container without a failed request or a broken version.

(1) When a container is serving, a candidate from the new image is started on 127.0.0.1 with a
    free port and must become ready and reproduce its smoke vectors; the serving container is
    not touched. (2) Handover: the serving container is renamed <name>-previous (replacing an
    older one) and keeps serving; the new <name> starts beside it on the same port (host network,
    SO_REUSEPORT; restart policy "no" until it passed) and is checked through its own check
    port. Only then is the old one retired:
    restart policy "no", graceful stop (in-flight requests finish; with the kernel setting
    net.ipv4.tcp_migrate_req=1 connections still queued on it move to the new server). A failure
    in (2) removes the new container and renames the old one back; it never stopped serving.

An interrupted switch (power cut, killed module) is repaired by the next run: a lone running
<name>-previous is renamed back to <name>; a <name>-previous still running beside a current
<name> is retired.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import time
from pathlib import Path

from ansible_collections.linkedge.edge.plugins.module_utils.container_spec import (
    check_address,
    create_kwargs,
    desired_spec,
    grpc_address,
    is_current,
    model_labels,
)
from ansible_collections.linkedge.edge.plugins.module_utils.contract import (
    LABEL_BUNDLE_SHA256,
    LABEL_MODEL_VERSION,
    TokenFileError,
    candidate_name,
    previous_name,
    read_token_file,
)
from ansible_collections.linkedge.edge.plugins.module_utils.docker_client import (
    DockerException,
    NotFound,
)
from ansible_collections.linkedge.edge.plugins.module_utils.image_files import (
    ImageFileError,
    smoke_vectors_from_image,
)
from ansible_collections.linkedge.edge.plugins.module_utils.inference_http import (
    NotReady,
    base_url,
    check_smoke_vectors,
    served_model_version,
    wait_ready,
)

MIGRATE_REQ_SYSCTL = Path("/proc/sys/net/ipv4/tcp_migrate_req")


def handover_warning() -> str | None:
    """Why a handover may reset a few connections on this host, or None."""
    try:
        value = MIGRATE_REQ_SYSCTL.read_text().strip()
    except OSError:
        return (
            "this kernel has no net.ipv4.tcp_migrate_req (Linux >= 5.14): connections queued on "
            "the old server when it stops are reset; clients should retry"
        )
    if value != "0":
        return None
    return (
        "net.ipv4.tcp_migrate_req is 0: connections queued on the old server when it stops are "
        "reset instead of moving to the new one; set it to 1 (the inference_service role does)"
    )


class SwitchFailed(Exception):
    """The new version cannot serve; the message says why."""


class RollbackFailed(Exception):
    """The previous version could not be put back; the message says how to recover."""


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class InferenceSwitch:
    def __init__(self, client, params: dict) -> None:
        self.client = client
        self.params = params
        self.name = params["name"]
        self.started = time.monotonic()
        self.steps: list[str] = []
        self.token: str | None = None
        self.repaired = False  # an interrupted switch was undone

    def step(self, text: str) -> None:
        self.steps.append(f"{time.monotonic() - self.started:7.3f}s {text}")

    def get(self, name: str):
        try:
            return self.client.containers.get(name)
        except NotFound:
            return None

    def remove(self, name: str) -> None:
        container = self.get(name)
        if container is not None:
            container.remove(force=True)
            self.step(f"removed {name}")

    # -- entry point ---------------------------------------------------------------------------
    def run(self, image, check_mode: bool) -> dict:
        """The module result; failing the task on a rollback is left to the module."""
        spec = desired_spec(self.params, image)
        try:
            self.token = read_token(self.params.get("api_token_file"))
        except SwitchFailed:
            if not check_mode:  # in check mode the role may not have written it yet
                raise
        # A new token needs a new container (the server reads it at start): part of the spec.
        spec["api_token_sha256"] = (
            hashlib.sha256(self.token.encode()).hexdigest() if self.token else None
        )
        current = self.get(self.name)
        previous = self.get(previous_name(self.name))
        if not check_mode:
            current, previous = self._repair(current, previous)
        labels = model_labels(image)
        result = {
            "image_id": image.id,
            "model_version": labels.get(LABEL_MODEL_VERSION),
            "bundle_sha256": labels.get(LABEL_BUNDLE_SHA256),
            "rolled_back": False,
            "reason": None,
            "serving_gap_seconds": None,
            "cold_start_seconds": None,
            "smoke_vectors_checked": 0,
        }
        if current is not None and is_current(current, spec):
            self._describe_previous(result, previous)
            finished = previous is not None and previous.status == "running"
            if finished and not check_mode:
                self._retire(previous)
            return dict(
                result,
                changed=finished or self.repaired,
                outcome="unchanged",
                container_id=current.id,
                reason=f"{self.name} already runs {image.id} with these settings"
                + (
                    f"; retired {previous.name}, left running by an interrupted switch"
                    if finished
                    else ""
                ),
            )
        self._describe_previous(result, current)
        if check_mode:
            return dict(
                result,
                changed=True,
                outcome="updated",
                container_id=None,
                reason="check mode: would switch",
            )
        vectors = self._smoke_vectors(image) if self.params["smoke_check"] else None
        result["smoke_vectors_checked"] = len(vectors[0]) if vectors else 0
        serving = current is not None and current.status == "running"
        if serving:
            failure = self._candidate(spec, image, vectors, result)
            if failure:
                return dict(
                    result,
                    changed=False,
                    outcome="rolled_back",
                    rolled_back=True,
                    container_id=current.id,
                    reason=failure,
                )
        return self._switch(spec, image, vectors, current, previous, serving, result)

    def _describe_previous(self, result: dict, container) -> None:
        image_id = container.attrs.get("Image") if container is not None else None
        labels = (container.attrs["Config"].get("Labels") or {}) if container is not None else {}
        result["previous_image_id"] = image_id
        result["previous_model_version"] = labels.get(LABEL_MODEL_VERSION)

    def _smoke_vectors(self, image) -> tuple[list, list]:
        try:
            return smoke_vectors_from_image(self.client, image.id)
        except ImageFileError as exc:
            raise SwitchFailed(f"cannot read the smoke vectors of {image.id}: {exc}") from exc

    # -- checks --------------------------------------------------------------------------------
    def _exited(self, container) -> str | None:
        container.reload()
        if container.status not in ("exited", "dead"):
            return None
        code = container.attrs["State"].get("ExitCode")
        logs = container.logs(tail=10).decode("utf-8", "replace").strip()
        return f"{container.name} exited with code {code}; last log lines: {logs[-800:]}"

    def _verify(self, container, url: str, vectors, expected_version) -> float:
        """Wait until ready; with smoke vectors, check the served version and every vector.
        The monotonic time it became ready; NotReady or SwitchFailed."""
        wait_ready(url, self.params["ready_timeout"], gone=lambda: self._exited(container))
        ready_at = time.monotonic()
        self.step(f"{container.name} ready on {url}")
        if vectors is None:
            return ready_at
        served = served_model_version(url)
        if expected_version and served != expected_version:
            raise SwitchFailed(
                f"{container.name} serves model {served}, its image says {expected_version}"
            )
        mismatches = check_smoke_vectors(url, vectors[0], vectors[1], token=self.token)
        if mismatches:
            raise SwitchFailed(
                f"{container.name} answers its smoke vectors wrongly: " + "; ".join(mismatches[:3])
            )
        self.step(f"{container.name} reproduces {len(vectors[0])} smoke vectors")
        return ready_at

    def _check_grpc_listens(self, container) -> None:
        """SwitchFailed unless a ready container with a gRPC port accepts connections on it (a
        ready server has started its gRPC side; an image without one ignores the setting)."""
        address = grpc_address(container)
        if address is None:
            return
        try:
            socket.create_connection(address, timeout=2).close()
        except OSError as exc:
            raise SwitchFailed(
                f"{container.name} does not serve gRPC on port {address[1]} ({exc}); build the "
                "image with a LinkEdge version that serves gRPC, or set grpc_port to null"
            ) from None
        self.step(f"{container.name} listens for gRPC on port {address[1]}")

    # -- phase 1 -------------------------------------------------------------------------------
    def _candidate(self, spec: dict, image, vectors, result: dict) -> str | None:
        """None when a candidate of the new image serves correctly, else why not."""
        name = candidate_name(self.name)
        self.remove(name)
        container = self.client.containers.create(
            **create_kwargs(spec, image, self.params["image"], name, self.name, candidate=True)
        )
        try:
            container.start()
            started = time.monotonic()
            container.reload()
            host, port = check_address(container)
            self.step(f"started candidate {name} on port {port}")
            ready_at = self._verify(
                container, base_url(host, port), vectors, result["model_version"]
            )
            self._check_grpc_listens(container)
            result["candidate_cold_start_seconds"] = _seconds(ready_at - started)
            return None
        except (NotReady, SwitchFailed, DockerException) as exc:
            return f"candidate {name} failed, {self.name} was not touched: {exc}"
        finally:
            container.remove(force=True)
            self.step(f"removed candidate {name}")

    # -- repair --------------------------------------------------------------------------------
    def _repair(self, current, previous) -> tuple:
        """Undo what an interrupted switch left: <name>-previous running while <name> is
        missing or not running means the old version is the one serving; it gets its name
        back (a never-started new container is removed)."""
        if previous is None or previous.status != "running":
            return current, previous
        if current is not None and current.status == "running":
            return current, previous  # both serve: retired once <name> is confirmed current
        if current is not None:
            current.remove(force=True)
            self.step(f"removed {self.name}, left not running by an interrupted switch")
        self.repaired = True
        previous.rename(self.name)
        previous.update(restart_policy={"Name": self.params["restart_policy"]})
        previous.reload()
        self.step(f"renamed {previous_name(self.name)} back to {self.name} (interrupted switch)")
        return previous, None

    def _discard(self, container) -> None:
        """Stop gracefully, then remove: a serving container that joined the truck's MQTT
        group answers what it took and ends its broker session (a killed one would leave a
        session that keeps receiving its share of the features)."""
        with contextlib.suppress(DockerException):  # removed by force below either way
            container.stop(timeout=self.params["stop_timeout"])
        container.remove(force=True)

    def _retire(self, container) -> None:
        """Never restarted again, then a graceful stop (gunicorn finishes in-flight requests)."""
        container.update(restart_policy={"Name": "no"})
        container.stop(timeout=self.params["stop_timeout"])
        self.step(f"retired {container.name} (restart policy no, stopped)")

    # -- phase 2 -------------------------------------------------------------------------------
    def _switch(
        self, spec: dict, image, vectors, current, previous, serving: bool, result: dict
    ) -> dict:
        if current is not None:
            if previous is not None:
                previous.remove(force=True)
                self.step(f"removed older {previous.name}")
            current.rename(previous_name(self.name))
            self.step(f"renamed {self.name} to {previous_name(self.name)} (still serving)")
        new = None
        try:
            create = create_kwargs(spec, image, self.params["image"], self.name, self.name)
            # Not restarted by a reboot until it passed its checks: a power cut before that
            # brings back only the old version (the next run then repairs the names).
            create["restart_policy"] = {"Name": "no"}
            new = self.client.containers.create(**create)
            started = time.monotonic()
            new.start()
            new.reload()
            ready_at = self._verify(
                new, base_url(*check_address(new)), vectors, result["model_version"]
            )
            new.update(restart_policy={"Name": spec["restart_policy"]})
            self.step(f"{self.name} restart policy {spec['restart_policy']}")
        except (NotReady, SwitchFailed, DockerException) as exc:
            if new is not None:
                self._discard(new)
                self.step(f"removed the failed {self.name}")
            self._restore(current)
            after = (
                "the previous container never stopped serving"
                if serving
                else ("nothing was serving")
            )
            return dict(
                result,
                changed=True,
                outcome="rolled_back",
                rolled_back=True,
                container_id=current.id if current is not None else None,
                serving_gap_seconds=0.0 if serving else None,
                reason=f"{self.name} from the new image failed: {exc}; {after}",
            )
        if current is not None:
            overlap_started = time.monotonic()
            self._retire(current)
            if serving:
                result["handover_seconds"] = _seconds(time.monotonic() - overlap_started)
            if not self.params["keep_previous"]:
                current.remove(force=True)
                self.step(f"removed {previous_name(self.name)} (keep_previous=false)")
        return dict(
            result,
            changed=True,
            outcome="updated",
            container_id=new.id,
            cold_start_seconds=_seconds(ready_at - started),
            serving_gap_seconds=0.0 if serving else None,
            reason=None,
        )

    def _restore(self, current) -> None:
        """Give the previous container its name back; it kept serving (or was not running)."""
        if current is None:
            return
        try:
            current.rename(self.name)
            self.step(f"renamed {previous_name(self.name)} back to {self.name}")
        except DockerException as exc:
            raise RollbackFailed(
                f"the new version failed and renaming {current.name} back failed too: {exc}; "
                f"it still serves; fix the name by hand: docker rename {current.name} {self.name}"
            ) from exc


def read_token(path: str | None) -> str | None:
    """The API's bearer token from the file the container gets, or None without one."""
    if not path:
        return None
    try:
        return read_token_file(path)
    except TokenFileError as exc:
        raise SwitchFailed(
            f"{exc}; write the token there first (the inference_service role "
            "does, from inference_service_api_token)"
        ) from exc
