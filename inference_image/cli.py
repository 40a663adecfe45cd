"""`python -m inference_image COMMAND` / `linkedge-image COMMAND`.

Imports are local to each command: the serving image has neither the training stack
nor the Docker SDK, and `serve`/`healthcheck` must start fast there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_WHEELHOUSE = Path(os.environ.get("LINKEDGE_WHEELHOUSE", "build/wheelhouse"))


class UsageError(RuntimeError):
    """A command-line argument is wrong; the message says what to pass instead."""


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))


def cmd_download(args: argparse.Namespace) -> int:
    from .download import download_official

    paths = download_official(args.out, url=args.url)
    _print_json({name: str(path) for name, path in paths.items()})
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from .data import default_data_dir
    from .train_bundle import train_to_bundle
    from .training import TrainingParams

    data_dir = args.data or default_data_dir()
    if data_dir is None:
        raise UsageError("no --data DIR given and ../shared/aps does not exist")
    overrides = {
        key: value
        for key, value in {
            "n_estimators": args.n_estimators,
            "learning_rate": args.learning_rate,
            "max_depth": args.max_depth,
            "seed": args.seed,
            "nthread": args.nthread,
        }.items()
        if value is not None
    }
    if args.params:
        try:
            extra = json.loads(args.params)
            params = replace(TrainingParams(), **{**overrides, **extra})
        except (ValueError, TypeError) as exc:
            fields = ", ".join(TrainingParams.__dataclass_fields__)
            raise UsageError(f"--params must be a JSON object of {fields}: {exc}") from exc
    else:
        params = replace(TrainingParams(), **overrides)
    summary = train_to_bundle(
        Path(data_dir), args.out, params, version=args.version, evaluate=not args.skip_evaluation
    )
    card = summary.bundle.card
    _print_json(
        {
            "bundle": str(summary.bundle.path),
            "version": summary.bundle.version,
            "bundle_sha256": summary.bundle.sha256,
            "threshold": summary.bundle.threshold,
            "metrics": card["metrics"],
            "seconds": summary.seconds,
        }
    )
    return 0


def _data_files(data_dir: Path) -> list[Path]:
    from .data import find_test_file, find_training_file

    test_file = find_test_file(data_dir)
    return [find_training_file(data_dir)] + ([test_file] if test_file else [])


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """The inputs' fingerprint, the release already built from them, and the current one."""
    from .data import default_data_dir
    from .release import current_release, find_release, input_fingerprint

    data_dir = args.data or default_data_dir()
    if data_dir is None:
        raise UsageError("no --data DIR given and ../shared/aps does not exist")
    fingerprint = input_fingerprint(_data_files(Path(data_dir)), json.loads(args.settings))
    _print_json(
        {
            **fingerprint,
            "data_dir": str(Path(data_dir).resolve()),
            "existing": find_release(args.releases, fingerprint["fingerprint"]),
            "current": current_release(args.releases),
        }
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    """Export the image, list its packages and publish bundle + archive as a release."""
    import tempfile

    from .image.export import export_image
    from .release import image_packages, input_fingerprint, publish_release

    if args.signing_key is not None:
        _signing_call(_load_signing_key, args.signing_key)  # a missing key fails before export
    fingerprint = input_fingerprint(_data_files(args.data), json.loads(args.settings))
    args.releases.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".export-", dir=args.releases) as export_dir:
        export_image(args.image, Path(export_dir))
        manifest = _signing_call(
            publish_release,
            args.releases,
            args.bundle,
            Path(export_dir),
            image_packages(args.image),
            fingerprint,
            build_seconds=args.build_seconds,
            signing_key=args.signing_key,
        )
    _print_json(manifest)
    return 0


def _load_signing_key(path: Path) -> Any:
    from .signing import load_private_key

    return load_private_key(path)


def _signing_call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """FUNCTION(*ARGS, **KWARGS) with key and signature errors reported as usage errors."""
    from .signing import SigningError

    try:
        return function(*args, **kwargs)
    except SigningError as exc:
        raise UsageError(str(exc)) from exc


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write an Ed25519 release-signing key pair (private key 0600) into --out."""
    from .signing import generate_key_pair

    pair = _signing_call(generate_key_pair, args.out)
    _print_json(
        {"private_key": str(pair.private_key), "public_key": str(pair.public_key),
         "key_id": pair.key_id}
    )  # fmt: skip
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    """Sign a release directory's manifest.json (written from image.json for a bare export)."""
    from .release import sign_release

    _print_json(_signing_call(sign_release, args.release, args.signing_key))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from .bundle import load_bundle

    bundle = load_bundle(args.bundle)
    _print_json({"bundle": str(bundle.path), "version": bundle.version, "sha256": bundle.sha256})
    return 0


def cmd_wheelhouse(args: argparse.Namespace) -> int:
    from .image.wheelhouse import ensure_wheelhouse

    wheels = ensure_wheelhouse(args.out)
    _print_json({"wheelhouse": str(args.out), "wheels": [wheel.name for wheel in wheels]})
    return 0


def cmd_base_image(args: argparse.Namespace) -> int:
    import docker

    from .image.base_image import resolve_base_image

    print(resolve_base_image(docker.from_env(), args.name, allow_pull=not args.no_pull))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .image.build import build_image

    built = build_image(
        args.bundle,
        args.tag,
        args.wheelhouse,
        base_image=args.base_image,
        allow_pull=not args.no_pull,
        use_cache=not args.no_cache,
    )
    _print_json(asdict(built))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from .image.export import export_image

    _print_json(asdict(export_image(args.image, args.out)))
    return 0


def cmd_smoke(args: argparse.Namespace) -> int:
    """Start the image, check health and every smoke vector over HTTP, stop it."""
    import docker

    from .image.export import MODEL_CARD_IN_IMAGE, read_file_from_image
    from .image.smoke import check_smoke_vectors, start_service

    client = docker.from_env()
    smoke = json.loads(
        read_file_from_image(
            client, args.image, MODEL_CARD_IN_IMAGE.replace("model_card", "smoke_vectors")
        )
    )
    features = json.loads(
        read_file_from_image(
            client, args.image, MODEL_CARD_IN_IMAGE.replace("model_card", "schema")
        )
    )["features"]
    service = start_service(args.image, client)
    try:
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


def cmd_serve(args: argparse.Namespace) -> int:
    from .serving.server import run, run_from_env

    if args.bundle is None and args.port is None:
        run_from_env()  # the container's entrypoint: everything from LINKEDGE_* variables
        return 0
    bundle = args.bundle or Path(os.environ.get("LINKEDGE_BUNDLE", "/opt/linkedge/model"))
    run(bundle, host=args.host, port=args.port or 8080, workers=args.workers)
    return 0


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """Exit 0 when the local server is ready (the image's HEALTHCHECK)."""
    import urllib.request

    port = args.port or int(os.environ.get("LINKEDGE_PORT", "8080"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as resp:
            return 0 if resp.status == 200 else 1
    except OSError as exc:
        print(f"not ready: {exc}", file=sys.stderr)
        return 1


def _post_with_token(url: str, payload: object, token_file: Path) -> tuple[int, object]:
    """POST JSON with ``Authorization: Bearer`` and the token read from ``token_file``."""
    import urllib.error
    import urllib.request

    from .serving.auth import read_token_file

    try:
        token = read_token_file(token_file).decode("ascii")
    except ValueError as exc:  # unreadable, empty or malformed: a one-line error, exit 2
        raise UsageError(str(exc).replace("LINKEDGE_API_TOKEN_FILE", "--token-file")) from None
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def cmd_send(args: argparse.Namespace) -> int:
    """POST rows of an APS CSV file to a running server's /predict and print the answers."""
    from .data import load_aps_csv
    from .image.smoke import http_json
    from .schema import APS_FEATURES
    from .smoke_vectors import to_json_inputs

    dataset = load_aps_csv(args.csv)
    rows = dataset.features[args.skip : args.skip + args.rows]
    instances = [dict(zip(APS_FEATURES, to_json_inputs(row), strict=True)) for row in rows]
    url = f"{args.url.rstrip('/')}/predict"
    if args.token_file is None:
        status, body = http_json(url, {"instances": instances})
    else:
        status, body = _post_with_token(url, {"instances": instances}, args.token_file)
    if status != 200:
        print(f"server answered {status}: {body}", file=sys.stderr)
        return 1
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linkedge-image", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    commands = parser.add_subparsers(dest="command", required=True)

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
    p.add_argument("--params", help='JSON training overrides, e.g. {"n_estimators": 100}')
    p.add_argument(
        "--skip-evaluation",
        action="store_true",
        help="skip the nested out-of-fold cost estimate (faster; the card says so)",
    )
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("fingerprint", help="fingerprint the build inputs; find releases")
    p.add_argument("--data", type=Path, help="APS data directory (default: ../shared/aps)")
    p.add_argument("--settings", default="{}", help="JSON of the settings that shape the build")
    p.add_argument("--releases", type=Path, required=True, help="releases directory")
    p.set_defaults(func=cmd_fingerprint)

    p = commands.add_parser("publish", help="export an image and publish it as a release")
    p.add_argument("--releases", type=Path, required=True)
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--settings", default="{}")
    p.add_argument("--build-seconds", type=float)
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

    p = commands.add_parser("verify", help="check a bundle's checksums")
    p.add_argument("--bundle", type=Path, required=True)
    p.set_defaults(func=cmd_verify)

    p = commands.add_parser("wheelhouse", help="download the image's pinned wheels")
    p.add_argument("--out", type=Path, default=DEFAULT_WHEELHOUSE)
    p.set_defaults(func=cmd_wheelhouse)

    p = commands.add_parser("base-image", help="make sure a base image exists locally")
    p.add_argument("--name", default="debian:bookworm-slim")
    p.add_argument("--no-pull", action="store_true", help="never try a registry")
    p.set_defaults(func=cmd_base_image)

    p = commands.add_parser("build", help="build the serving image from a bundle")
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--tag", required=True, help="image name:tag")
    p.add_argument(
        "--base-image",
        default="debian:bookworm-slim",
        help="base image (falls back to a local debootstrap build when unavailable)",
    )
    p.add_argument("--no-pull", action="store_true", help="never try a registry")
    p.add_argument("--wheelhouse", type=Path, default=DEFAULT_WHEELHOUSE)
    p.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    p.set_defaults(func=cmd_build)

    p = commands.add_parser("export", help="docker save the image with sha256 and model card")
    p.add_argument("--image", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_export)

    p = commands.add_parser("smoke", help="run the image and check its smoke vectors")
    p.add_argument("--image", required=True)
    p.set_defaults(func=cmd_smoke)

    p = commands.add_parser("serve", help="serve a bundle with gunicorn (no Docker)")
    p.add_argument("--bundle", type=Path)
    p.add_argument("--port", type=int)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--workers", type=int, help="default: one per available core")
    p.set_defaults(func=cmd_serve)

    p = commands.add_parser("healthcheck", help="exit 0 when the local server is ready")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_healthcheck)

    p = commands.add_parser("send", help="send CSV rows to a server's /predict")
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--csv", type=Path, required=True)
    p.add_argument("--rows", type=int, default=10, help="rows to send")
    p.add_argument("--show", type=int, default=10, help="print this many rows and flagged ones")
    p.add_argument("--skip", type=int, default=0)
    p.add_argument(
        "--token-file",
        type=Path,
        help="file holding the API token, when the server requires one (LINKEDGE_API_TOKEN_FILE)",
    )
    p.set_defaults(func=cmd_send)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from .errors import user_errors

    try:
        return int(args.func(args))
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
