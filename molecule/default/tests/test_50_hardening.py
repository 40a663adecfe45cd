"""Hardening of the running inference container, checked on the simulated truck itself: what the
engine was told (`docker inspect` on the truck) and what the process really gets (`docker exec`
into the container, using the image's own python3).

Non-root, read-only root filesystem, no capabilities at all (effective, permitted, bounding and
ambient sets empty), no-new-privileges, memory and CPU limits, a restart policy, and no way to
the Docker engine: no socket mounted or present, no unix socket of the engine or containerd
reachable (abstract ones included: with host networking they would be shared), nothing answering
on the Docker TCP ports 2375/2376 on any address of the truck.
"""

import json

from conftest import SERVICE, inspect

# Runs inside the inference container (its python3, stdlib only): every way to the engine tried.
PROBE_ENGINE = r"""
import json, os, socket, struct

result = {"unix": {}, "abstract": {}, "tcp": {}, "socket_files": []}
for path in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
             "/var/run/containerd/containerd.sock"):
    if os.path.exists(path):
        result["socket_files"].append(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
            result["unix"][path] = "connected"
        except OSError as e:
            result["unix"][path] = type(e).__name__

# Abstract unix sockets live in the network namespace (shared with the truck under host
# networking): try every one that belongs to docker or containerd.
with open("/proc/net/unix") as f:
    names = {line.split()[-1] for line in f.readlines()[1:] if line.split()[-1].startswith("@")}
for name in sorted(n for n in names if "docker" in n or "containerd" in n):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect("\0" + name[1:])
            result["abstract"][name] = "connected"
        except OSError as e:
            result["abstract"][name] = type(e).__name__

addresses = {"127.0.0.1"}
with open("/proc/net/route") as f:
    for line in f.readlines()[1:]:
        gateway = int(line.split()[2], 16)
        if gateway:
            addresses.add(socket.inet_ntoa(struct.pack("<L", gateway)))
with open("/proc/net/fib_trie") as f:
    lines = f.read().splitlines()
for i, line in enumerate(lines):
    if "/32 host LOCAL" in line:
        addresses.add(lines[i - 1].split()[-1])
for address in sorted(addresses):
    for port in (2375, 2376):
        with socket.socket() as s:
            s.settimeout(1)
            try:
                s.connect((address, port))
                result["tcp"][f"{address}:{port}"] = "connected"
            except OSError as e:
                result["tcp"][f"{address}:{port}"] = type(e).__name__
print(json.dumps(result))
"""


def in_container(host, *argv: str) -> str:
    return host.check_output("docker exec " + " ".join(["%s"] * (len(argv) + 1)), SERVICE, *argv)


def status_fields(host) -> dict:
    text = in_container(host, "cat", "/proc/1/status")
    return {line.split(":")[0]: line.split(":", 1)[1].strip() for line in text.splitlines()}


def test_runs_as_a_non_root_user(host):
    container = inspect(host, SERVICE)
    assert container["Config"]["User"].split(":")[0] not in ("", "0", "root")
    assert in_container(host, "id", "-u") != "0"
    uids = status_fields(host)["Uid"].split()
    assert "0" not in uids, uids  # real, effective, saved and filesystem uid


def test_root_filesystem_is_read_only_with_a_scratch_tmpfs(host):
    hostconfig = inspect(host, SERVICE)["HostConfig"]
    assert hostconfig["ReadonlyRootfs"] is True
    assert host.run("docker exec %s touch /probe", SERVICE).rc != 0
    assert host.run("docker exec %s touch /opt/linkedge/model/probe", SERVICE).rc != 0
    assert host.run("docker exec %s touch /tmp/probe", SERVICE).rc == 0
    mounts = in_container(host, "cat", "/proc/mounts").splitlines()
    root = next(line.split() for line in mounts if line.split()[1] == "/")
    assert "ro" in root[3].split(","), root
    tmp = next(line.split() for line in mounts if line.split()[1] == "/tmp")
    assert tmp[2] == "tmpfs" and {"nosuid", "nodev", "noexec"} <= set(tmp[3].split(",")), tmp


def test_has_no_capabilities_and_no_new_privileges(host):
    hostconfig = inspect(host, SERVICE)["HostConfig"]
    assert hostconfig["CapDrop"] == ["ALL"] and not hostconfig["CapAdd"]
    assert hostconfig["Privileged"] is False
    assert any(opt.startswith("no-new-privileges") for opt in hostconfig["SecurityOpt"] or [])
    fields = status_fields(host)
    for capability_set in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[capability_set], 16) == 0, (capability_set, fields[capability_set])
    assert fields["NoNewPrivs"] == "1"


def test_memory_cpu_and_process_limits_and_restart_policy(host):
    hostconfig = inspect(host, SERVICE)["HostConfig"]
    assert hostconfig["Memory"] > 0
    assert hostconfig["MemorySwap"] == hostconfig["Memory"]  # no swap beyond the limit
    assert hostconfig["NanoCpus"] > 0 or hostconfig["CpuQuota"] > 0
    assert hostconfig["PidsLimit"] and hostconfig["PidsLimit"] > 0
    assert hostconfig["RestartPolicy"]["Name"] in ("unless-stopped", "always")
    # The limits are really applied to the running container's cgroup (cgroup v1 or v2).
    limit = host.run(
        "docker exec %s sh -c %s",
        SERVICE,
        "cat /sys/fs/cgroup/memory.max 2>/dev/null"
        " || cat /sys/fs/cgroup/memory/memory.limit_in_bytes",
    )
    if limit.rc == 0 and limit.stdout.strip().isdigit():
        assert int(limit.stdout.strip()) == hostconfig["Memory"]


def test_cannot_reach_the_docker_engine(host):
    container = inspect(host, SERVICE)
    for mount in container["Mounts"]:
        assert "docker.sock" not in mount["Source"] and "containerd" not in mount["Source"], mount
    assert not any("docker.sock" in bind for bind in container["HostConfig"]["Binds"] or [])
    result = json.loads(in_container(host, "python3", "-c", PROBE_ENGINE))
    print(f"engine probes from inside {SERVICE}: {json.dumps(result)}")
    assert result["socket_files"] == []
    assert all(outcome != "connected" for outcome in result["unix"].values()), result["unix"]
    assert all(outcome != "connected" for outcome in result["abstract"].values()), result
    assert result["tcp"] and all(o != "connected" for o in result["tcp"].values()), result["tcp"]
    # The engine itself listens on no TCP port the container could reach.
    assert ":2375 " not in host.check_output("ss -Hltn") + " "
    assert ":2376 " not in host.check_output("ss -Hltn") + " "
