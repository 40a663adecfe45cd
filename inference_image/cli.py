"""`python -m inference_image COMMAND` / `linkedge-image COMMAND`.

Imports are local to each command: the serving image has neither the training stack
nor the Docker SDK, and `serve`/`healthcheck` must start fast there.

A user error (a missing file, an unreachable server or Docker engine, a bad option value, ...)
is one line on stderr, ``linkedge-image COMMAND: what is wrong and what to do``, and exit
status 2: commands raise UserError (or one of the package's own errors) and main() prints it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .contract import (
    BUNDLE_DIR,
    DEFAULT_PORT,
    ENV_BUNDLE,
    ENV_PORT,
    MQTT_DEFAULT_PORT,
    PREDICT_PATH,
    READY_PATH,
    SCHEMA_FILE,
    SMOKE_VECTORS_FILE,
)
from .progress import Steps

if TYPE_CHECKING:
    import docker

    from .image.platforms import Platform
    from .training import TrainingParams

PROG = "linkedge-image"
DEFAULT_WHEELHOUSE = Path(os.environ.get("LINKEDGE_WHEELHOUSE", "build/wheelhouse"))
DEFAULT_BASE_IMAGE = "debian:bookworm-slim"
USER_ERROR_STATUS = 2
INTERRUPTED_STATUS = 130
log = logging.getLogger(__name__)


class UserError(RuntimeError):
    """Something the user can fix; the message says what is wrong and what to do."""


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))


def _steps(args: argparse.Namespace, total: int) -> Steps:
    return Steps.for_terminal(total, verbose=args.verbose)


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise UserError(f"{option} is not JSON ({exc}): pass an object such as '{{}}'") from None
    if not isinstance(value, dict):
        raise UserError(f"{option} must be a JSON object, got {type(value).__name__}")
    return value


def _data_dir(args: argparse.Namespace) -> Path:
    from .data import default_data_dir

    data_dir = args.data or default_data_dir()
    if data_dir is None:
        raise UserError(
            "no --data DIR given, LINKEDGE_DATA_DIR is unset and ../shared/aps is absent"
        )
    return Path(data_dir)


def _docker_client(timeout: int = 60) -> docker.DockerClient:
    """A client of a running Docker engine, or UserError saying how to start one."""
    import docker

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, OSError) as exc:  # requests' errors are OSErrors
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise UserError(
            f"cannot reach the Docker engine at {host}: start it (`make docker`) "
            f"or set DOCKER_HOST ({exc})"
        ) from None
    return client


def _require_image(client: docker.DockerClient, image: str) -> None:
    import docker.errors

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise UserError(
            f"image {image} not found: build it first with "
            f"`{PROG} build --bundle DIR --tag {image}`"
        ) from None


def cmd_download(args: argparse.Namespace) -> int:
    from .download import download_official

    paths = download_official(args.out, url=args.url)
    _print_json({name: str(path) for name, path in paths.items()})
    return 0


def _training_params(args: argparse.Namespace) -> TrainingParams:
    from dataclasses import replace

    from .training import TrainingParams

    options = {
        "n_estimators": args.n_estimators,
        "learning_rate": args.learning_rate,
        "max_depth": args.max_depth,
        "seed": args.seed,
        "nthread": args.nthread,
        "repetitions": args.repetitions,
        "outer_folds": args.outer_folds,
    }
    overrides = {key: value for key, value in options.items() if value is not None}
    extra = _json_object(args.params, "--params") if args.params else {}
    try:
        params = replace(TrainingParams(), **{**overrides, **extra})
    except TypeError as exc:
        fields = ", ".join(TrainingParams.__dataclass_fields__)
        raise UserError(f"--params may set only {fields}: {exc}") from None
    _check_training_params(params)
    return params


def _check_training_params(params: TrainingParams) -> None:
    """Types and counts; XGBoost itself checks the ranges of its own parameters."""
    from dataclasses import fields

    for spec in fields(params):
        value = getattr(params, spec.name)
        types = {"float": (int, float), "str": (str,)}.get(str(spec.type), (int,))
        if isinstance(value, bool) or not isinstance(value, types):
            raise UserError(f"training parameter {spec.name} must be {spec.type}, got {value!r}")
    if params.n_estimators < 1:
        raise UserError(f"n_estimators must be at least 1, got {params.n_estimators}")
    if min(params.outer_folds, params.inner_folds) < 2:
        raise UserError("outer_folds and inner_folds must be at least 2")
    if min(params.repetitions, params.bags, params.threshold_repeats) < 1:
        raise UserError("repetitions, bags and threshold_repeats must be at least 1")
    try:
        params.derived  # noqa: B018 - parses the recipe
    except ValueError as exc:
        raise UserError(f"derived_features: {exc}") from None


def cmd_train(args: argparse.Namespace) -> int:
    from .data import find_training_file
    from .train_bundle import train_to_bundle

    steps = _steps(args, 2)
    with steps.step("checking the data and options"):
        data_dir = _data_dir(args)
        find_training_file(data_dir)
        params = _training_params(args)
        if args.out.exists():  # checked now, not after minutes of training
            raise UserError(
                f"{args.out} already exists and bundles are immutable: choose a new --out"
            )
    with steps.step("training and evaluating the model"):
        summary = train_to_bundle(
            data_dir, args.out, params, version=args.version, evaluate=not args.skip_evaluation
        )
    card = summary.bundle.card
    repeated = card["metrics"].get("repeated_cv")
    _print_json(
        {
            "bundle": str(summary.bundle.path),
            "version": summary.bundle.version,
            "bundle_sha256": summary.bundle.sha256,
            "threshold": summary.bundle.threshold,
            "estimate": None
            if repeated is None
            else f"{repeated['cost_ratio_mean']:.4f} ± {repeated['cost_ratio_std']:.4f} "
            f"(mean ± std, {repeated['repetitions']} x {repeated['outer_folds']} nested CV)",
            "metrics": card["metrics"],
            "seconds": summary.seconds,
        }
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """The paired gate: challenger vs champion on the same folds and seeds; 1 when refused."""
    import numpy as np

    from .captured import training_data
    from .contenders import ContenderError, figures_on_plan, load_contender, plan_of
    from .evaluation import CVPlan
    from .gate import GateError, paired_comparison
    from .schema import APS_FEATURES

    steps = _steps(args, 3)
    try:
        with steps.step("reading the champion, the challenger and the data"):
            challenger = load_contender(args.challenger)
            champion = load_contender(args.champion)
            recorded = plan_of(challenger)
            plan = CVPlan(
                args.repetitions or recorded.repetitions,
                args.outer_folds or recorded.outer_folds,
                recorded.seed if args.seed is None else args.seed,
            )
            data, _ = training_data(_data_dir(args), len(APS_FEATURES))
            labels = data.labels.astype(np.float32)  # type: ignore[union-attr]
            features = data.features
        where = f"{plan.repetitions} x {plan.outer_folds} folds, seed {plan.seed}"
        with steps.step(f"the challenger's figures on {where}"):
            challenger_figures = figures_on_plan(challenger, plan, features, labels, data.sha256)
        with steps.step("the champion's figures on the same folds and seeds"):
            champion_figures = figures_on_plan(champion, plan, features, labels, data.sha256)
        comparison = paired_comparison(champion_figures, challenger_figures, args.noise_multiplier)
    except (ContenderError, GateError, ValueError) as exc:
        raise UserError(str(exc)) from None
    _print_json(comparison.as_dict())
    if comparison.refused:
        print(f"{PROG} compare: {comparison.reason()}", file=sys.stderr)
        return 1
    return 0


def _data_files(data_dir: Path) -> list[Path]:
    """What training reads: the official files, then captured segments and their labels."""
    from .captured import captured_files
    from .data import find_test_file, find_training_file

    test_file = find_test_file(data_dir)
    official = [find_training_file(data_dir)] + ([test_file] if test_file else [])
    return official + captured_files(data_dir)


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """The inputs' fingerprint, the release already built from them, and the current one."""
    from .release import current_release, find_release, input_fingerprint

    data_dir = _data_dir(args)
    settings = _json_object(args.settings, "--settings")
    fingerprint = input_fingerprint(_data_files(data_dir), settings)
    _print_json(
        {
            **fingerprint,
            "data_dir": str(data_dir.resolve()),
            "existing": find_release(args.releases, fingerprint["fingerprint"]),
            "current": current_release(args.releases),
        }
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Export the image, list its packages and publish bundle + archive as a release."""
    import tempfile

    from .bundle import load_bundle
    from .image.export import export_images
    from .release import image_packages, input_fingerprint, publish_release
    from .signing import load_private_key

    steps = _steps(args, 4)
    with steps.step("checking the key, bundle, data and image"):  # all before the slow export
        if args.signing_key is not None:
            load_private_key(args.signing_key)
        load_bundle(args.bundle)
        fingerprint = input_fingerprint(
            _data_files(args.data), _json_object(args.settings, "--settings")
        )
        client = _docker_client(timeout=600)
        for image in args.image:
            _require_image(client, image)
        args.releases.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=args.releases) as export_dir:
        with steps.step(f"exporting {', '.join(args.image)}"):
            exported = export_images(args.image, Path(export_dir), client)
        with steps.step("listing the image's Python packages"):
            # The same pinned wheels on every architecture: listed from the first image.
            packages = image_packages(exported[0].image)
        with steps.step(f"publishing the release in {args.releases}"):
            manifest = publish_release(
                args.releases,
                args.bundle,
                Path(export_dir),
                packages,
                fingerprint,
                build_seconds=args.build_seconds,
                signing_key=args.signing_key,
            )
    _print_json(manifest)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write an Ed25519 release-signing key pair (private key 0600) into --out."""
    from .signing import generate_key_pair

    pair = generate_key_pair(args.out)
    _print_json(
        {"private_key": str(pair.private_key), "public_key": str(pair.public_key),
         "key_id": pair.key_id}
    )  # fmt: skip
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign a release directory's manifest.json (completed first for a bare export)."""
    from .release import sign_release

    _print_json(sign_release(args.release, args.signing_key))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .bundle import load_bundle

    bundle = load_bundle(args.bundle)
    _print_json({"bundle": str(bundle.path), "version": bundle.version, "sha256": bundle.sha256})
    return 0


def cmd_channel_publish(args: argparse.Namespace) -> int:
    """Point a channel at a signed release in the depot (next sequence)."""
    from .channels import publish

    _print_json(publish(args.depot, args.channel, args.release, args.signing_key))
    return 0


def cmd_channel_promote(args: argparse.Namespace) -> int:
    """Point --to at the release --from points at (--to's next sequence)."""
    from .channels import promote

    _print_json(promote(args.depot, args.source, args.target, args.signing_key))
    return 0


def cmd_channel_rollback(args: argparse.Namespace) -> int:
    """Point a channel back at its previous release, with a new, higher sequence."""
    from .channels import rollback

    _print_json(rollback(args.depot, args.channel, args.signing_key))
    return 0


def cmd_channel_show(args: argparse.Namespace) -> int:
    from .channels import show

    _print_json(show(args.depot, args.channel))
    return 0


def cmd_fleet_status(args: argparse.Namespace) -> int:
    """Every truck's retained status on the depot's broker against the depot's channels."""
    from .fleet_status import (
        BrokerSettings,
        channel_versions,
        fleet_rows,
        format_table,
        read_statuses,
        summary,
    )
    from .sensor import read_password

    for option, value in (("--stale-after", args.stale_after), ("--wait", args.wait)):
        if value <= 0:
            raise UserError(f"{option} must be positive, not {value:g}")
    channels = channel_versions(args.depot) if args.depot is not None else {}
    password = None if args.password_file is None else read_password(args.password_file)
    settings = BrokerSettings(
        args.broker_host, args.broker_port, args.username, password, args.cafile, args.wait
    )
    records, complete = read_statuses(settings)
    rows = fleet_rows(records, channels, time.time(), args.stale_after)
    if not complete:
        print(
            f"{PROG} fleet status: records were still arriving after {settings.timeout:g} s: "
            "the table may miss trucks",
            file=sys.stderr,
        )
    if not rows:
        print(
            f"{PROG} fleet status: no truck status on the broker: no truck has reported yet, "
            f"or {args.username or 'this user'} may not read linkedge/+/status (use a "
            "depot_observer user)",
            file=sys.stderr,
        )
    if args.json:
        _print_json({"summary": summary(rows), "trucks": rows})
    else:
        print(format_table(rows))
    return 0


def cmd_fleet_report(args: argparse.Namespace) -> int:
    """The fleet report: an HTML page from the fleet status, rollouts and Prometheus."""
    from .fleet_metrics import PrometheusAccess, PrometheusError, read_fleet_metrics
    from .fleet_report import ReportInputs, load_rollouts, render

    inputs = ReportInputs()
    if args.status is not None:
        inputs.status = _json_object(_read_text(args.status, "--status"), "--status")
    if args.rollouts is not None:
        if not args.rollouts.is_dir():
            raise UserError(f"--rollouts {args.rollouts} is not a directory")
        inputs.rollouts = load_rollouts(args.rollouts)
    if args.prometheus:
        password = None
        if args.prometheus_password_file is not None:
            password = _read_text(args.prometheus_password_file, "--prometheus-password-file")
            password = password.strip()
        if args.prometheus_cafile is not None and not args.prometheus_cafile.is_file():
            raise UserError(f"--prometheus-cafile {args.prometheus_cafile} is not a file")
        access = PrometheusAccess(
            args.prometheus,
            user=args.prometheus_user,
            password=password,
            cafile=str(args.prometheus_cafile) if args.prometheus_cafile else None,
        )
        try:
            inputs.metrics = read_fleet_metrics(access)
        except PrometheusError as exc:
            raise UserError(str(exc)) from None
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(inputs))
    _print_json({"report": str(args.out), "bytes": args.out.stat().st_size})
    return 0


def _read_text(path: Path, option: str) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise UserError(f"{option} {path}: {exc.strerror}") from None


def _add_fleet_parser(commands: argparse._SubParsersAction) -> None:
    """`fleet status` (docs/operating-a-fleet.md, Pull mode)."""
    fleet = commands.add_parser("fleet", help="the fleet as the depot's broker sees it")
    actions = fleet.add_subparsers(
        dest="fleet_command", required=True, metavar="ACTION", help="what to show"
    )
    p = actions.add_parser(
        "status", help="every truck's last record, flagged stale, behind, failed or deferred"
    )
    p.add_argument("--broker-host", default="127.0.0.1", help="the depot's MQTT broker")
    p.add_argument("--broker-port", type=int, default=1883, help="its port (default: 1883)")
    p.add_argument("--username", help="a depot_observer user of that broker")
    p.add_argument("--password-file", type=Path, help="file holding that user's password")
    p.add_argument("--cafile", type=Path, help="CA of the broker's TLS certificate (TLS on)")
    p.add_argument("--depot", type=Path, help="depot directory: flag trucks behind a channel")
    p.add_argument(
        "--stale-after",
        type=float,
        default=7200.0,
        help="seconds without a record before a truck is stale (default: 7200, four syncs)",
    )
    p.add_argument(
        "--wait", type=float, default=1.0, help="stop after this long without a new record"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_fleet_status, command="fleet status")

    p = actions.add_parser(
        "report", help="one self-contained HTML page: versions, rollouts, drift, capture, alerts"
    )
    p.add_argument("--out", type=Path, required=True, help="the HTML file to write")
    p.add_argument("--status", type=Path, help="what `fleet status --json` printed, saved")
    p.add_argument(
        "--rollouts", type=Path, help="rollout reports directory (build/rollout-reports)"
    )
    p.add_argument("--prometheus", help="the depot's Prometheus, e.g. http://depot:9090")
    p.add_argument("--prometheus-user", help="a user of the depot's Prometheus (basic auth)")
    p.add_argument(
        "--prometheus-password-file", type=Path, help="a file holding that user's password"
    )
    p.add_argument(
        "--prometheus-cafile", type=Path, help="CA certificate of the depot's HTTPS (PEM)"
    )
    p.set_defaults(func=cmd_fleet_report, command="fleet report")


def _add_channel_parser(commands: argparse._SubParsersAction) -> None:
    """`channel publish|promote|rollback|show` (docs/channels.md)."""
    channel = commands.add_parser("channel", help="publish, promote, roll back signed channels")
    actions = channel.add_subparsers(
        dest="channel_command", required=True, metavar="ACTION", help="what to do with a channel"
    )
    depot_help = "depot directory (holds releases/ and channels/)"
    key_help = "Ed25519 private key (PEM) the pointer is signed with (the release key)"

    p = actions.add_parser("publish", help="point a channel at a signed release in the depot")
    p.add_argument("--depot", type=Path, required=True, help=depot_help)
    p.add_argument("--channel", required=True, help="channel name, e.g. canary")
    p.add_argument("--release", type=Path, required=True, help="release directory in the depot")
    p.add_argument("--signing-key", type=Path, required=True, help=key_help)
    p.set_defaults(func=cmd_channel_publish, command="channel publish")

    p = actions.add_parser("promote", help="point a channel at another channel's release")
    p.add_argument("--depot", type=Path, required=True, help=depot_help)
    p.add_argument("--from", dest="source", default="canary", help="(default: canary)")
    p.add_argument("--to", dest="target", default="stable", help="(default: stable)")
    p.add_argument("--signing-key", type=Path, required=True, help=key_help)
    p.set_defaults(func=cmd_channel_promote, command="channel promote")

    p = actions.add_parser("rollback", help="point a channel back at its previous release")
    p.add_argument("--depot", type=Path, required=True, help=depot_help)
    p.add_argument("--channel", required=True, help="channel name, e.g. stable")
    p.add_argument("--signing-key", type=Path, required=True, help=key_help)
    p.set_defaults(func=cmd_channel_rollback, command="channel rollback")

    p = actions.add_parser("show", help="print channel pointers and their history")
    p.add_argument("--depot", type=Path, required=True, help=depot_help)
    p.add_argument("--channel", help="one channel (default: every channel)")
    p.set_defaults(func=cmd_channel_show, command="channel show")


def _platform(name: str | None) -> Platform:
    """--platform's value (default: this machine's); a UserError naming the known ones."""
    from .image.platforms import host_platform, platform_named

    try:
        return platform_named(name) if name else host_platform()
    except ValueError as exc:
        raise UserError(f"--platform: {exc}") from None


def cmd_wheelhouse(args: argparse.Namespace) -> int:
    from .image.wheelhouse import ensure_wheelhouse, wheelhouse_for

    platform = _platform(args.platform)
    out = wheelhouse_for(args.out, platform)
    with _steps(args, 1).step(f"downloading the pinned {platform.name} wheels into {out}"):
        wheels = ensure_wheelhouse(out, platform=platform)
    _print_json(
        {
            "wheelhouse": str(out),
            "platform": platform.name,
            "wheels": [wheel.name for wheel in wheels],
        }
    )
    return 0


def cmd_base_image(args: argparse.Namespace) -> int:
    from .image.base_image import resolve_base_image

    platform = _platform(args.platform)
    with _steps(args, 1).step(f"resolving the {platform.name} base image {args.name}"):
        name = resolve_base_image(
            _docker_client(timeout=600), args.name, not args.no_pull, platform
        )
    print(name)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .bundle import load_bundle
    from .image.base_image import resolve_base_image
    from .image.build import build_image
    from .image.wheelhouse import ensure_wheelhouse, wheelhouse_for

    platform = _platform(args.platform)
    steps = _steps(args, 4)
    with steps.step("verifying the bundle"):
        load_bundle(args.bundle)
    with steps.step(f"resolving the {platform.name} base image {args.base_image}"):
        client = _docker_client(timeout=3600)  # another architecture builds under QEMU
        base_image = resolve_base_image(client, args.base_image, not args.no_pull, platform)
    wheels = wheelhouse_for(args.wheelhouse, platform)
    with steps.step(f"checking the {platform.name} wheelhouse {wheels}"):
        ensure_wheelhouse(wheels, platform=platform)
    with steps.step(f"building {args.tag} for {platform.name}"):
        built = build_image(
            args.bundle,
            args.tag,
            args.wheelhouse,
            base_image=base_image,
            allow_pull=False,  # resolved above
            client=client,
            use_cache=not args.no_cache,
            platform=platform,
        )
    _print_json(asdict(built))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .image.export import export_images

    steps = _steps(args, 2)
    with steps.step(f"finding {', '.join(args.image)}"):
        client = _docker_client(timeout=600)
        for image in args.image:
            _require_image(client, image)
    with steps.step(f"saving {', '.join(args.image)} into {args.out}"):
        exported = export_images(args.image, args.out, client)
    _print_json([asdict(item) for item in exported] if len(exported) > 1 else asdict(exported[0]))
    return 0


def _read_json_from_image(client: docker.DockerClient, image: str, name: str) -> Any:
    """BUNDLE_DIR/NAME in the image, decoded; UserError when the image has no such file."""
    import docker.errors

    from .image.export import read_file_from_image

    path = f"{BUNDLE_DIR}/{name}"
    try:
        return json.loads(read_file_from_image(client, image, path))
    except docker.errors.NotFound:
        raise UserError(f"{image} has no {path}: it is not a LinkEdge serving image") from None


def cmd_smoke(args: argparse.Namespace) -> int:
    """Start the image, check health and every smoke vector over HTTP, stop it."""
    from .image.smoke import check_smoke_vectors, start_service

    steps = _steps(args, 3)
    with steps.step(f"reading the smoke vectors of {args.image}"):
        client = _docker_client()
        _require_image(client, args.image)
        smoke = _read_json_from_image(client, args.image, SMOKE_VECTORS_FILE)
        features = _read_json_from_image(client, args.image, SCHEMA_FILE)["features"]
    with steps.step("starting the container"):
        service = start_service(args.image, client)
    try:
        with steps.step(f"checking {len(smoke)} smoke vectors"):
            mismatches = check_smoke_vectors(service.base_url, smoke, features)
    finally:
        service.stop()
    _print_json(
        {
            "image": args.image,
            "cold_start_seconds": service.cold_start_seconds,
            "smoke_vectors": len(smoke),
            "mismatches": mismatches,
        }
    )
    return 1 if mismatches else 0


def _check_can_listen(host: str, port: int) -> None:
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn does
            probe.bind((host, port))
    except (OSError, OverflowError) as exc:  # in use, no such address, port out of range
        reason = getattr(exc, "strerror", None) or exc
        raise UserError(
            f"cannot listen on {host}:{port} ({reason}): stop what uses it or pass another "
            "--port or --host"
        ) from None


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving.server import run, run_from_env

    if args.bundle is None and args.port is None:
        run_from_env()  # the container's entrypoint: everything from LINKEDGE_* variables
        return 0
    bundle = args.bundle or Path(os.environ.get(ENV_BUNDLE, BUNDLE_DIR))
    port = args.port or DEFAULT_PORT
    _check_can_listen(args.host, port)  # else gunicorn retries for 5 s and logs each try
    try:
        run(bundle, host=args.host, port=port, workers=args.workers)
    except ValueError as exc:  # run() checks every setting before gunicorn starts
        raise UserError(str(exc)) from exc
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when the local server is ready (the image's HEALTHCHECK), 1 when not."""
    import urllib.request

    port = args.port or int(os.environ.get(ENV_PORT, str(DEFAULT_PORT)))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{READY_PATH}", timeout=2) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


def _server_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UserError(f"--url must be an http:// or https:// address, got {url!r}")
    return url.rstrip("/")


def _read_token(token_file: Path) -> str:
    from .contract import TokenFileError, read_token_file

    try:
        return read_token_file(token_file, setting="--token-file")
    except TokenFileError as exc:  # unreadable, empty or malformed
        raise UserError(str(exc)) from None


def _decode_body(body: bytes) -> Any:
    """JSON when the body is JSON, else its text."""
    try:
        return json.loads(body or b"null")
    except ValueError:
        return body.decode(errors="replace")


def _post_json(server: str, path: str, payload: object, token: str | None) -> tuple[int, Any]:
    """POST JSON to SERVER + PATH (with ``Authorization: Bearer`` when a token is given);
    (HTTP status, decoded body), or UserError when the server cannot be reached."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        server + path, data=json.dumps(payload).encode(), method="POST"
    )
    request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _decode_body(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decode_body(exc.read())
    except OSError as exc:  # URLError (refused, unknown host), a timeout, a reset
        reason = getattr(exc, "reason", exc)
        raise UserError(
            f"cannot reach the server at {server} ({reason}): start one "
            f"(`{PROG} serve --bundle DIR`) or pass the right --url"
        ) from None


def _answer_text(body: Any, limit: int = 300) -> str:
    """An error answer on one line: its "error" field, else its text, shortened."""
    text = body.get("error", body) if isinstance(body, dict) else body
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def cmd_send(args: argparse.Namespace) -> int:
    """POST rows of an APS CSV file to a running server's /predict and print the answers."""
    from .data import load_aps_csv
    from .schema import APS_FEATURES
    from .smoke_vectors import to_json_inputs

    server = _server_url(args.url)
    token = None if args.token_file is None else _read_token(args.token_file)
    if args.rows < 1 or args.skip < 0:
        raise UserError(
            f"--rows must be at least 1 and --skip at least 0: {args.rows}, {args.skip}"
        )
    dataset = load_aps_csv(args.csv)
    rows = dataset.features[args.skip : args.skip + args.rows]
    if not len(rows):
        raise UserError(f"--skip {args.skip} leaves no row of {args.csv} ({dataset.rows} rows)")
    instances = [dict(zip(APS_FEATURES, to_json_inputs(row), strict=True)) for row in rows]
    status, body = _post_json(server, PREDICT_PATH, {"instances": instances}, token)
    if status in (401, 403):
        raise UserError(f"{server} answered {status} ({_answer_text(body)}): pass --token-file")
    if status != 200:  # the server's fault, not the user's: status 1
        print(f"{PROG} send: {server} answered {status}: {_answer_text(body)}", file=sys.stderr)
        return 1
    if not isinstance(body, dict) or not isinstance(body.get("predictions"), list):
        raise UserError(f"{server}{PREDICT_PATH} answered without predictions: is it LinkEdge?")
    predictions = body["predictions"]
    flagged = [i for i, p in enumerate(predictions) if p["label"] == "pos"]
    print(
        f"model {body['model_version']} on {len(instances)} rows of {dataset.source.name}: "
        f"{len(flagged)} pos, {len(instances) - len(flagged)} neg"
    )
    shown = sorted(set(range(min(args.show, len(predictions)))) | set(flagged[: args.show]))
    for index in shown:
        prediction = predictions[index]
        print(
            f"  row {args.skip + index + 1:>5}: {prediction['label']}  "
            f"p={prediction['probability']:.5f}"
        )
    return 0


def cmd_sensor(args: argparse.Namespace) -> int:
    """Publish CSV rows as features messages on a truck's MQTT bus; report (and with
    --wait-answers, check) what came back."""
    from .sensor import SensorConfig, run_sensor

    if args.out is not None and not args.out.parent.is_dir():
        raise UserError(f"--out {args.out}: no such directory {args.out.parent}")
    config = SensorConfig(
        host=args.host,
        port=args.port,
        truck=args.truck,
        username=args.username,
        password_file=args.password_file,
        rows=args.rows,
        rate=args.rate,
        count=args.count,
        batch=args.batch,
        qos=args.qos,
        wait_answers=args.wait_answers,
        timeout=args.timeout,
        id_prefix=args.id_prefix,
        client_id=args.client_id,
    )
    report = run_sensor(config)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    _print_json(report)
    if args.wait_answers and (report["lost"] or report["duplicated"]):
        return 1  # the service's fault, not the user's
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show numbered steps and log details"
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="what to do (COMMAND -h: options)"
    )

    p = commands.add_parser("download", help="fetch the official UCI archive and verify it")
    p.add_argument("--out", type=Path, required=True, help="directory for the two CSV files")
    p.add_argument("--url", default=None, help="archive URL (default: the UCI archive)")
    p.set_defaults(func=cmd_download)

    p = commands.add_parser("train", help="train, evaluate and write a model bundle")
    p.add_argument("--data", type=Path, help="APS data directory (default: ../shared/aps)")
    p.add_argument("--out", type=Path, required=True, help="new bundle directory")
    p.add_argument("--version", help="model version (default: derived from the model)")
    p.add_argument("--n-estimators", type=int, help="boosting rounds")
    p.add_argument("--learning-rate", type=float, help="boosting learning rate")
    p.add_argument("--max-depth", type=int, help="tree depth")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--nthread", type=int, help="XGBoost threads while training")
    p.add_argument("--repetitions", type=int, help="repetitions of the nested CV estimate")
    p.add_argument("--outer-folds", type=int, help="outer folds of the nested CV estimate")
    p.add_argument("--params", help='JSON training overrides, e.g. {"n_estimators": 100}')
    p.add_argument(
        "--skip-evaluation",
        action="store_true",
        help="skip the repeated nested CV cost estimate (faster; the card says so)",
    )
    p.set_defaults(func=cmd_train)

    p = commands.add_parser(
        "compare", help="paired gate: a challenger vs the champion on the same CV folds"
    )
    p.add_argument(
        "--challenger",
        required=True,
        help="bundle directory, model_card.json, or JSON training parameters",
    )
    p.add_argument(
        "--champion",
        required=True,
        help="bundle directory, model_card.json, or JSON training parameters",
    )
    p.add_argument("--data", type=Path, help="APS data directory (default: ../shared/aps)")
    p.add_argument("--repetitions", type=int, help="default: the challenger's card, else 5")
    p.add_argument("--outer-folds", type=int, help="default: the challenger's card, else 5")
    p.add_argument("--seed", type=int, help="fold and model seed (default: the challenger's)")
    p.add_argument(
        "--noise-multiplier",
        type=float,
        default=2.0,
        help="refuse when worse by more than this many standard errors of the paired "
        "differences (default: %(default)s)",
    )
    p.set_defaults(func=cmd_compare)

    p = commands.add_parser("fingerprint", help="fingerprint the build inputs; find releases")
    p.add_argument("--data", type=Path, help="APS data directory (default: ../shared/aps)")
    p.add_argument("--settings", default="{}", help="JSON of the settings that shape the build")
    p.add_argument("--releases", type=Path, required=True, help="releases directory")
    p.set_defaults(func=cmd_fingerprint)

    p = commands.add_parser("publish", help="export an image and publish it as a release")
    p.add_argument("--releases", type=Path, required=True, help="releases directory")
    p.add_argument("--bundle", type=Path, required=True, help="the bundle the image serves")
    p.add_argument(
        "--image",
        required=True,
        action="append",
        help="the serving image (name:tag) to publish; repeat it for each architecture's image "
        "of the same bundle (one release, an image per architecture)",
    )
    p.add_argument("--data", type=Path, required=True, help="APS data directory it was built from")
    p.add_argument("--settings", default="{}", help="JSON of the settings that shaped the build")
    p.add_argument("--build-seconds", type=float, help="build time to record in the manifest")
    p.add_argument(
        "--signing-key", type=Path, help="Ed25519 private key: sign manifest.json (keygen)"
    )
    p.set_defaults(func=cmd_publish)

    p = commands.add_parser("keygen", help="create an Ed25519 release-signing key pair")
    p.add_argument("--out", type=Path, required=True, help="directory for the two key files")
    p.set_defaults(func=cmd_keygen)

    p = commands.add_parser("sign", help="sign a release directory's manifest.json")
    p.add_argument("--release", type=Path, required=True, help="release (or export) directory")
    p.add_argument("--signing-key", type=Path, required=True, help="Ed25519 private key (PEM)")
    p.set_defaults(func=cmd_sign)

    _add_channel_parser(commands)
    _add_fleet_parser(commands)

    p = commands.add_parser("verify", help="check a bundle's checksums")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    p.set_defaults(func=cmd_verify)

    p = commands.add_parser("wheelhouse", help="download the image's pinned wheels")
    p.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_WHEELHOUSE,
        help="wheel directory (default: %(default)s; another platform's wheels go into its "
        "subdirectory, e.g. arm64/)",
    )
    p.add_argument(
        "--platform",
        help="linux/amd64 or linux/arm64 (default: this machine's; another one's runs under "
        "QEMU, which the builder sets up)",
    )
    p.set_defaults(func=cmd_wheelhouse)

    p = commands.add_parser("base-image", help="make sure a base image exists locally")
    p.add_argument(
        "--name",
        default=DEFAULT_BASE_IMAGE,
        help="image to use (default: %(default)s; falls back to a local debootstrap build when "
        "a pull fails, or with --no-pull when this Debian image is absent)",
    )
    p.add_argument("--no-pull", action="store_true", help="never try a registry")
    p.add_argument(
        "--platform",
        help="linux/amd64 or linux/arm64 (default: this machine's; another one's runs under "
        "QEMU, which the builder sets up)",
    )
    p.set_defaults(func=cmd_base_image)

    p = commands.add_parser("build", help="build the serving image from a bundle")
    p.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    p.add_argument("--tag", required=True, help="image name:tag")
    p.add_argument(
        "--base-image",
        default=DEFAULT_BASE_IMAGE,
        help="base image (falls back to a local debootstrap build when unavailable)",
    )
    p.add_argument("--no-pull", action="store_true", help="never try a registry")
    p.add_argument(
        "--wheelhouse",
        type=Path,
        default=DEFAULT_WHEELHOUSE,
        help="wheel directory, filled when wheels are missing (default: %(default)s)",
    )
    p.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    p.add_argument(
        "--platform",
        help="linux/amd64 or linux/arm64 (default: this machine's; another one's runs under "
        "QEMU, which the builder sets up)",
    )
    p.set_defaults(func=cmd_build)

    p = commands.add_parser("export", help="docker save the image with sha256 and model card")
    p.add_argument(
        "--image",
        required=True,
        action="append",
        help="image name:tag to export; repeat it for each architecture's image of one bundle",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for the archive and card")
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("smoke", help="run the image and check its smoke vectors")
    p.add_argument("--image", required=True, help="image name:tag to run")
    p.set_defaults(func=cmd_smoke)

    p = commands.add_parser("serve", help="serve a bundle with gunicorn (no Docker)")
    p.add_argument(
        "--bundle",
        type=Path,
        help=f"model bundle directory (default: ${ENV_BUNDLE} or {BUNDLE_DIR})",
    )
    p.add_argument("--port", type=int, help=f"TCP port (default: {DEFAULT_PORT})")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--workers", type=int, help="default: one per available core")
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("healthcheck", help="exit 0 when the local server is ready")
    p.add_argument("--port", type=int, help=f"server port (default: ${ENV_PORT} or {DEFAULT_PORT})")
    p.set_defaults(func=cmd_healthcheck)

    p = commands.add_parser("send", help="send CSV rows to a server's /predict")
    p.add_argument(
        "--url", default=f"http://127.0.0.1:{DEFAULT_PORT}", help="server (default: %(default)s)"
    )
    p.add_argument("--csv", type=Path, required=True, help="APS CSV file (labeled or not)")
    p.add_argument("--rows", type=int, default=10, help="rows to send")
    p.add_argument("--show", type=int, default=10, help="print this many rows and flagged ones")
    p.add_argument("--skip", type=int, default=0, help="rows of the file to skip first")
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the API token, when the server requires one (LINKEDGE_API_TOKEN_FILE)",
    )
    p.set_defaults(func=cmd_send)

    p = commands.add_parser(
        "sensor", help="publish CSV rows as features messages on a truck's MQTT bus"
    )
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker (default: %(default)s)")
    p.add_argument(
        "--port", type=int, default=MQTT_DEFAULT_PORT, help="broker port (default: %(default)s)"
    )
    p.add_argument("--truck", required=True, help="the truck id in the topics")
    p.add_argument("--username", help="broker user")
    p.add_argument("--password-file", type=Path, help="file holding the broker user's password")
    p.add_argument("--rows", type=Path, required=True, help="APS CSV file (labeled or not)")
    p.add_argument(
        "--rate", type=float, help="messages per second (default: as fast as the broker takes)"
    )
    p.add_argument("--count", type=int, help="messages to send (default: every row once)")
    p.add_argument("--batch", type=int, default=1, help="rows per message (default: 1)")
    p.add_argument("--qos", type=int, default=1, choices=(0, 1), help="default: 1")
    p.add_argument(
        "--wait-answers",
        action="store_true",
        help="subscribe to predictions and errors; report answered, lost, duplicated, latency",
    )
    p.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for answers (default: 30)"
    )
    p.add_argument("--id-prefix", help="message ids are PREFIX-N (default: random)")
    p.add_argument("--client-id", help="MQTT client id (default: random)")
    p.add_argument("--out", type=Path, help="also write the report (JSON) to this file")
    p.set_defaults(func=cmd_sensor)
    return parser


# --- user errors: one line, exit 2 -----------------------------------------------------------


# The package's own error types, whose messages say what to do: (module, class) pairs, imported
# only when an error is being reported (several modules need the Docker SDK or cryptography,
# which the serving image lacks).
_PACKAGE_ERRORS = (
    ("inference_image.bundle", "BundleError"),
    ("inference_image.data", "DataFormatError"),
    ("inference_image.sensor", "SensorError"),
    ("inference_image.download", "DownloadError"),
    ("inference_image.predictor", "PredictorError"),
    ("inference_image.signing", "SigningError"),
    ("inference_image.release", "ReleaseError"),
    ("inference_image.channels", "ChannelError"),
    ("inference_image.fleet_status", "FleetStatusError"),
    ("inference_image.image.wheelhouse", "WheelhouseError"),
    ("inference_image.image.base_image", "BaseImageError"),
    ("inference_image.image.architecture", "ArchitectureError"),
    ("inference_image.image.build", "ImageBuildError"),
    ("inference_image.image.export", "ExportError"),
    ("inference_image.image.smoke", "SmokeTestError"),
)


def _package_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [UserError]
    for module, name in _PACKAGE_ERRORS:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:
            continue
    return tuple(found)


def _docker_error_message(exc: BaseException) -> str | None:
    errors = sys.modules.get("docker.errors")  # not imported: not a Docker error
    if errors is None or not isinstance(exc, errors.DockerException):
        return None
    if isinstance(exc, errors.ImageNotFound):
        return f"image not found ({exc.explanation}): build or pull it first"
    if isinstance(exc, errors.APIError):
        return f"the Docker engine refused: {exc.explanation or exc}"
    return f"Docker: {exc}"


def _xgboost_error_message(exc: BaseException) -> str | None:
    core = sys.modules.get("xgboost.core")  # not imported: not an XGBoost error
    if core is None or not isinstance(exc, core.XGBoostError):
        return None
    return f"XGBoost refused the training parameters: {exc}"


def _os_error_message(exc: OSError) -> str:
    import urllib.error

    if isinstance(exc, urllib.error.URLError):
        return f"cannot reach {exc.reason}"
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return exc.strerror or str(exc)


def user_error_message(exc: BaseException) -> str | None:
    """What to print for an error the user can fix; None for anything else (a bug)."""
    library_message = _docker_error_message(exc) or _xgboost_error_message(exc)
    if library_message is not None:
        return library_message
    if isinstance(exc, _package_errors()):
        return str(exc)
    if isinstance(exc, OSError):  # a missing or unreadable file, a full disk, the network
        return _os_error_message(exc)
    return None


def one_line(message: str) -> str:
    """MESSAGE's first line, plus its last when it has more (e.g. a log tail's error)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return "failed"
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0].rstrip(':')}: {lines[-1]} (-v shows all {len(lines)} lines)"


def _report(command: str, message: str) -> None:
    if "\n" in message.strip():
        log.info("%s", message)  # the full text with -v
    print(f"{PROG} {command}: {one_line(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _report(args.command, "interrupted")
        return INTERRUPTED_STATUS
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            raise  # a bug: the traceback is what its report needs
        _report(args.command, message)
        return USER_ERROR_STATUS
