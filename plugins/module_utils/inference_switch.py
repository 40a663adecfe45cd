# Copyright (c) LinkEdge developers
# SPDX-License-Identifier: Apache-2.0
"""Make an image the serving inference container without ever leaving a broken one serving.

(1) When a container is serving, a candidate from the new image is started on 127.0.0.1 with an
    ephemeral port and must become ready and reproduce its smoke vectors; the serving container
    is not touched. (2) The serving container is renamed <name>-previous (replacing an older
    one), the new <name> is created, the old one stopped and the new one started on the real
    port, then checked the same way. A failure in (2) removes the new container and puts the
    previous one back under <name>, running again.
"""

from __future__ import annotations

import time

from ansible_collections.linkedge.edge.plugins.module_utils.constants import (
    LABEL_BUNDLE_SHA256,
    LABEL_MODEL_VERSION,
    candidate_name,
    previous_name,
)
from ansible_collections.linkedge.edge.plugins.module_utils.container_spec import (
    create_kwargs,
    desired_spec,
    is_current,
    model_labels,
    published_binding,
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
        current = self.get(self.name)
        previous = self.get(previous_name(self.name))
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
            return dict(
                result,
                changed=False,
                outcome="unchanged",
                container_id=current.id,
                reason=f"{self.name} already runs {image.id} with these settings",
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
        mismatches = check_smoke_vectors(url, vectors[0], vectors[1])
        if mismatches:
            raise SwitchFailed(
                f"{container.name} answers its smoke vectors wrongly: " + "; ".join(mismatches[:3])
            )
        self.step(f"{container.name} reproduces {len(vectors[0])} smoke vectors")
        return ready_at

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
            host, port = published_binding(container)
            self.step(f"started candidate {name} on port {port}")
            ready_at = self._verify(
                container, base_url(host, port), vectors, result["model_version"]
            )
            result["candidate_cold_start_seconds"] = _seconds(ready_at - started)
            return None
        except (NotReady, SwitchFailed, DockerException) as exc:
            return f"candidate {name} failed, {self.name} was not touched: {exc}"
        finally:
            container.remove(force=True)
            self.step(f"removed candidate {name}")

    # -- phase 2 -------------------------------------------------------------------------------
    def _switch(
        self, spec: dict, image, vectors, current, previous, serving: bool, result: dict
    ) -> dict:
        old_policy = None
        if current is not None:
            if previous is not None:
                previous.remove(force=True)
                self.step(f"removed older {previous.name}")
            current.rename(previous_name(self.name))
            old_policy = current.attrs["HostConfig"].get("RestartPolicy") or {"Name": "no"}
            current.update(restart_policy={"Name": "no"})  # never restarted beside the new one
            self.step(f"renamed {self.name} to {previous_name(self.name)}")
        gap_started = new = None
        try:
            new = self.client.containers.create(
                **create_kwargs(spec, image, self.params["image"], self.name, self.name)
            )
            if serving:
                gap_started = time.monotonic()
                current.stop(timeout=self.params["stop_timeout"])
                self.step(f"stopped {previous_name(self.name)}")
            started = time.monotonic()
            new.start()
            new.reload()
            ready_at = self._verify(
                new, base_url(*published_binding(new)), vectors, result["model_version"]
            )
        except (NotReady, SwitchFailed, DockerException) as exc:
            if new is not None:
                new.remove(force=True)
                self.step(f"removed the failed {self.name}")
            gap = self._restore(current, serving, old_policy, gap_started)
            after = "the previous container serves again" if serving else "nothing was serving"
            return dict(
                result,
                changed=True,
                outcome="rolled_back",
                rolled_back=True,
                container_id=current.id if current is not None else None,
                serving_gap_seconds=gap,
                reason=f"{self.name} from the new image failed: {exc}; {after}",
            )
        if current is not None and not self.params["keep_previous"]:
            current.remove(force=True)
            self.step(f"removed {previous_name(self.name)} (keep_previous=false)")
        return dict(
            result,
            changed=True,
            outcome="updated",
            container_id=new.id,
            cold_start_seconds=_seconds(ready_at - started),
            serving_gap_seconds=_seconds(ready_at - gap_started) if serving else None,
            reason=None,
        )

    def _restore(
        self, current, serving: bool, old_policy: dict | None, gap_started: float | None
    ) -> float | None:
        """Put the previous container back under the service name; the serving gap."""
        if current is None:
            return None
        try:
            current.rename(self.name)
            current.update(restart_policy=old_policy)
            self.step(f"renamed {previous_name(self.name)} back to {self.name}")
            current.reload()
            if serving and current.status != "running":
                current.start()
                current.reload()
            if serving:
                wait_ready(
                    base_url(*published_binding(current)),
                    self.params["ready_timeout"],
                    gone=lambda: self._exited(current),
                )
                self.step(f"{self.name} serves the previous version again")
        except (NotReady, DockerException) as exc:
            raise RollbackFailed(
                f"the new version failed and putting {current.name} back failed too: {exc}; "
                f"recover by hand: docker rename {current.name} {self.name} && "
                f"docker start {self.name}"
            ) from exc
        return _seconds(time.monotonic() - gap_started) if gap_started else None
