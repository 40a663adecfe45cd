"""An in-memory Docker engine with the slice of the Docker SDK the module_utils use.

As community.docker tests its module_utils with fakes, the code under test gets a fake client
instead of a connection to an engine. Objects behave like the SDK's: a container object holds a
snapshot of its attrs (``status``, ``name``, ``labels`` read from it) that only ``reload()``
refreshes, and ``containers.get`` returns a new object. Errors are the ones the module_utils catch
(docker_client.NotFound / APIError / ImageNotFound).

What a started container does is its image's ``entrypoint(container)``: a callable returning a
process (anything with ``stop()``), or raising ContainerExited. Tests use it to serve a fake
API on the ports the container's environment names.

Also puts ``collections/`` on sys.path so ``ansible_collections.linkedge.edge`` (a link to the
repository) imports; ``module_utils(name)`` imports one of them.
"""

from __future__ import annotations

import importlib
import io
import itertools
import posixpath
import sys
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from types import ModuleType
from typing import Any

COLLECTIONS = Path(__file__).resolve().parents[2] / "collections"
if str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

MODULE_UTILS = "ansible_collections.linkedge.edge.plugins.module_utils"


def module_utils(name: str) -> ModuleType:
    """plugins/module_utils/<name>.py, imported as the collection's modules import it."""
    return importlib.import_module(f"{MODULE_UTILS}.{name}")


_errors = module_utils("docker_client")
APIError = _errors.APIError
ImageNotFound = _errors.ImageNotFound
NotFound = _errors.NotFound


class ContainerExited(Exception):
    """Raised by an entrypoint: the container's process exited right away."""

    def __init__(self, exit_code: int, logs: str) -> None:
        super().__init__(f"exited with {exit_code}")
        self.exit_code = exit_code
        self.logs = logs


def _digest(text: str) -> str:
    return "sha256:" + sha256(text.encode()).hexdigest()


@dataclass
class FakeImage:
    """An image: ID, tag, config (User, Labels), files by directory, and what it runs."""

    tag: str
    labels: dict[str, str] = field(default_factory=dict)
    user: str = "10001"
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # dir -> {name: bytes}
    entrypoint: Callable[[FakeContainer], Any] | None = None

    @property
    def id(self) -> str:
        return _digest(self.tag)

    @property
    def tags(self) -> list[str]:
        return [self.tag]

    @property
    def attrs(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "RepoTags": [self.tag],
            "Config": {"User": self.user, "Labels": dict(self.labels)},
        }


@dataclass
class _Record:
    """The engine's state of one container."""

    id: str
    name: str
    image: FakeImage
    kwargs: dict[str, Any]
    status: str = "created"
    exit_code: int = 0
    logs: str = ""
    restart_policy: dict[str, Any] = field(default_factory=dict)
    process: Any = None


class FakeContainer:
    """docker.models.containers.Container: attrs is a snapshot, refreshed by reload()."""

    def __init__(self, engine: FakeDockerClient, container_id: str) -> None:
        self._engine = engine
        self.id = container_id
        self.attrs: dict[str, Any] = {}
        self.reload()

    # -- read from the snapshot, as the SDK does --------------------------------------------
    @property
    def name(self) -> str:
        return self.attrs["Name"].lstrip("/")

    @property
    def status(self) -> str:
        return self.attrs["State"]["Status"]

    @property
    def labels(self) -> dict[str, str]:
        return self.attrs["Config"].get("Labels") or {}

    @property
    def environment(self) -> dict[str, str]:
        """The container's Env as a dict (not an SDK attribute: for entrypoints and tests)."""
        pairs = self.attrs["Config"].get("Env") or []
        return dict(pair.split("=", 1) for pair in pairs)

    @property
    def volumes(self) -> dict[str, dict[str, str]]:
        """The create() volumes {host path: {"bind": ..., "mode": ...}} (not SDK either)."""
        return dict(self._record().kwargs.get("volumes") or {})

    def _record(self) -> _Record:
        return self._engine._record(self.id)

    # -- the SDK's methods ------------------------------------------------------------------
    def reload(self) -> None:
        record = self._record()
        kwargs = record.kwargs
        env = kwargs.get("environment") or {}
        self.attrs = {
            "Id": record.id,
            "Name": "/" + record.name,
            "Image": record.image.id,
            "State": {
                "Status": record.status,
                "Running": record.status == "running",
                "ExitCode": record.exit_code,
            },
            "Config": {
                "Image": kwargs.get("image"),
                "User": kwargs.get("user", record.image.user),
                "Labels": dict(kwargs.get("labels") or {}),
                "Env": [f"{key}={value}" for key, value in env.items()],
            },
            "HostConfig": {
                "RestartPolicy": dict(record.restart_policy),
                "NetworkMode": kwargs.get("network_mode", "default"),
            },
        }

    def start(self) -> None:
        record = self._record()
        self._engine.log("start", record.name)
        if record.status == "running":
            return
        record.status = "running"
        entrypoint = record.image.entrypoint
        try:
            record.process = entrypoint(self) if entrypoint is not None else None
        except ContainerExited as exc:
            record.status, record.exit_code, record.logs = "exited", exc.exit_code, exc.logs

    def stop(self, timeout: int | None = None) -> None:
        record = self._record()
        self._engine.log("stop", record.name)
        self._engine._halt(record, exit_code=0)

    def rename(self, name: str) -> None:
        record = self._record()
        self._engine.log("rename", record.name, name)
        if any(other.name == name for other in self._engine._records.values()):
            raise APIError(f'Conflict: the container name "/{name}" is already in use')
        record.name = name

    def update(self, **kwargs: Any) -> dict:
        record = self._record()
        self._engine.log("update", record.name, kwargs)
        if "restart_policy" in kwargs:
            record.restart_policy = dict(kwargs["restart_policy"])
        return {"Warnings": []}

    def remove(self, force: bool = False, **_kwargs: Any) -> None:
        record = self._record()
        self._engine.log("remove", record.name)
        if record.status == "running" and not force:
            raise APIError(f"cannot remove running container {record.name}: stop it first")
        self._engine._halt(record, exit_code=137)
        del self._engine._records[record.id]

    def logs(self, tail: int | str = "all", **_kwargs: Any) -> bytes:
        lines = self._record().logs.splitlines()
        if tail != "all":
            lines = lines[-int(tail) :]
        return "\n".join(lines).encode()

    def get_archive(self, path: str) -> tuple[Any, dict]:
        """A tar of the directory `path` of the container's image (the SDK's chunk stream)."""
        record = self._record()
        files = record.image.files.get(path.rstrip("/"))
        if files is None:
            raise NotFound(f"Could not find the file {path} in container {record.name}")
        top = posixpath.basename(path.rstrip("/"))
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            directory = tarfile.TarInfo(top)
            directory.type = tarfile.DIRTYPE
            archive.addfile(directory)
            for name, data in files.items():
                info = tarfile.TarInfo(f"{top}/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        data = buffer.getvalue()
        chunks = iter([data[i : i + 4096] for i in range(0, len(data), 4096)])
        return chunks, {"name": top, "mode": 0o40000755}


class _Containers:
    def __init__(self, engine: FakeDockerClient) -> None:
        self._engine = engine

    def get(self, container_id: str) -> FakeContainer:
        for record in self._engine._records.values():
            if container_id in (record.name, record.id) or (
                len(container_id) >= 12 and record.id.startswith(container_id)
            ):
                return FakeContainer(self._engine, record.id)
        raise NotFound(f"No such container: {container_id}")

    def create(self, image: str, command: Any = None, **kwargs: Any) -> FakeContainer:
        resolved = self._engine.images.get(image)
        name = kwargs.get("name") or f"fake_{next(self._engine._ids)}"
        if any(record.name == name for record in self._engine._records.values()):
            raise APIError(f'Conflict: the container name "/{name}" is already in use')
        record = _Record(
            id=sha256(f"container-{next(self._engine._ids)}".encode()).hexdigest(),
            name=name,
            image=resolved,
            kwargs=dict(kwargs, image=image, command=command),
            restart_policy=dict(kwargs.get("restart_policy") or {"Name": "no"}),
        )
        self._engine._records[record.id] = record
        self._engine.log("create", name, record.kwargs)
        return FakeContainer(self._engine, record.id)

    def list(self, all: bool = False, filters: dict | None = None) -> list[FakeContainer]:
        name = (filters or {}).get("name")
        return [
            FakeContainer(self._engine, record.id)
            for record in self._engine._records.values()
            if (all or record.status == "running") and (name is None or name in record.name)
        ]


class _Images:
    def __init__(self, engine: FakeDockerClient) -> None:
        self._engine = engine
        self._images: dict[str, FakeImage] = {}

    def add(self, image: FakeImage) -> FakeImage:
        self._images[image.id] = image
        return image

    def get(self, name: str) -> FakeImage:
        for image in self._images.values():
            if name in (image.id, image.tag) or image.id.startswith(f"sha256:{name}"):
                return image
        raise ImageNotFound(f"No such image: {name}")

    def list(self) -> list[FakeImage]:
        return list(self._images.values())


class FakeDockerClient:
    """docker.DockerClient over an in-memory engine; ``calls`` logs every state change as
    (action, container name, ...)."""

    def __init__(self) -> None:
        self._records: dict[str, _Record] = {}
        self._ids = itertools.count(1)
        self.calls: list[tuple] = []
        self.containers = _Containers(self)
        self.images = _Images(self)

    def ping(self) -> bool:
        return True

    def log(self, *call: Any) -> None:
        self.calls.append(call)

    def calls_on(self, name: str) -> list[tuple]:
        """The state changes made to the container that had `name` at the time."""
        return [call for call in self.calls if call[1] == name]

    def names(self) -> dict[str, str]:
        """{container name: status} of every container."""
        return {record.name: record.status for record in self._records.values()}

    def close(self) -> None:
        """Stop every container's process (test teardown)."""
        for record in list(self._records.values()):
            self._halt(record, exit_code=137)

    def _record(self, container_id: str) -> _Record:
        try:
            return self._records[container_id]
        except KeyError:
            raise NotFound(f"No such container: {container_id}") from None

    @staticmethod
    def _halt(record: _Record, exit_code: int) -> None:
        if record.process is not None:
            record.process.stop()
            record.process = None
        if record.status == "running":
            record.status, record.exit_code = "exited", exit_code
