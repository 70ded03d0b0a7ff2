"""Cold start: each function module's import time (`python -X importtime`) as a ratio to `import boto3`
alone in the same environment, and package sizes (functions, layers, the dependency layer as pip
installs it for the Lambda platform)."""

from __future__ import annotations

import io
import os
import shutil
import statistics
import subprocess  # noqa: S404 - runs this interpreter and pip, with fixed arguments
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
FUNCTIONS = REPO / "functions"
CORE_LAYER = REPO / "layers" / "core"
DEPS_REQUIREMENTS = REPO / "layers" / "deps" / "requirements.txt"
TARGET = 1.2  # DESIGN.md: each function's import time <= 1.2 x `import boto3`


def lambda_env(function_dir: Path) -> dict[str, str]:
    """What the Lambda runtime gives the function (tracing on, as the template sets), nothing of ours."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join([str(function_dir), str(CORE_LAYER / "python")]),
        "PYTHONDONTWRITEBYTECODE": "1",  # as a zip without .pyc; also keeps the shared tree clean
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_LAMBDA_FUNCTION_NAME": f"bench-{function_dir.name}",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
        "POWERTOOLS_SERVICE_NAME": "gdpr-compliance",
        "POWERTOOLS_METRICS_NAMESPACE": "GdprCompliance",
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_LOGGER_LOG_EVENT": "false",
    }
    return env


def import_microseconds(module: str, env: dict[str, str], cwd: Path) -> tuple[int, dict[str, int]]:
    """Cumulative import time of `module` as `-X importtime` reports it, and self time per top-level
    package imported under it (where the time goes)."""
    answer = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False,
    )
    if answer.returncode != 0:
        last = (answer.stderr.strip().splitlines() or ["?"])[-1]
        raise RuntimeError(f"import {module} failed: {last[:200]}")
    by_package: dict[str, int] = {}
    for line in answer.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = [p.strip() for p in line[len("import time:"):].split("|")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        package = parts[2].split(".")[0]
        by_package[package] = by_package.get(package, 0) + int(parts[0])
        if parts[2] == module:
            return int(parts[1]), by_package
    raise RuntimeError(f"no import time reported for {module}")


def _zip_size(root: Path, prefix: str = "") -> tuple[int, int, int]:
    """(zipped bytes, unzipped bytes, files) of a folder as SAM would package it (no caches)."""
    buffer = io.BytesIO()
    raw = files = 0
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            archive.write(path, prefix + str(path.relative_to(root)))
            raw += path.stat().st_size
            files += 1
    return len(buffer.getvalue()), raw, files


def _deps_layer(timeout: float) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-deps-"))
    target = workdir / "python"
    try:
        answer = subprocess.run(  # noqa: S603 - pip of this interpreter, fixed arguments
            # As layers/deps/Makefile builds the layer: the pinned closure, --no-deps, arm64 wheels.
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
             "--no-deps", "--target", str(target), "--platform", "manylinux2014_aarch64", "--implementation", "cp",
             "--python-version", "3.13", "--only-binary=:all:", "-r", str(DEPS_REQUIREMENTS)],
            capture_output=True, text=True, timeout=timeout, check=False,
        )
        if answer.returncode != 0:
            last = (answer.stderr.strip().splitlines() or ["pip failed"])[-1]
            return {"skipped": f"pip could not install the dependency layer here: {last[:160]}"}
        zipped, raw, files = _zip_size(workdir)
        biggest = sorted(
            ((sum(f.stat().st_size for f in p.rglob("*") if f.is_file()), p.name)
             for p in target.iterdir() if p.is_dir() and not p.name.endswith(".dist-info")),
            reverse=True,
        )[:5]
        return {"zipBytes": zipped, "unzippedBytes": raw, "files": files,
                "largestPackages": {name: size for size, name in biggest},
                "platform": "manylinux2014_aarch64, cp313 (the template's arm64 python3.13)"}
    except (OSError, subprocess.SubprocessError) as error:
        return {"skipped": f"pip could not run: {type(error).__name__}"}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_coldstart(runs: int = 5, deps_layer: bool = True, pip_timeout: float = 240.0,
                    only: list[str] | None = None) -> dict[str, Any]:
    functions = sorted(p for p in FUNCTIONS.iterdir() if (p / "app.py").exists() and (not only or p.name in only))
    imports: dict[str, Any] = {}
    for function in functions:
        env = lambda_env(function)
        boto3_times, app_times = [], []
        packages: dict[str, int] = {}
        try:
            # Interleaved, so a burst of load on the machine hits both sides alike.
            for _ in range(runs):
                boto3_times.append(import_microseconds("boto3", env, function)[0])
                app_us, packages = import_microseconds("app", env, function)
                app_times.append(app_us)
        except (RuntimeError, subprocess.SubprocessError) as error:
            imports[function.name] = {"error": str(error)}
            continue
        boto3_us, app_us = statistics.median(boto3_times), statistics.median(app_times)
        imports[function.name] = {
            "appMicroseconds": int(app_us),
            "boto3Microseconds": int(boto3_us),
            "ratio": round(app_us / boto3_us, 2),
            "meetsTarget": app_us <= TARGET * boto3_us,
            "runs": runs,
            # Self time by top-level package in the last run: what an import diet would have to cut.
            "topPackagesMicroseconds": dict(sorted(packages.items(), key=lambda kv: -kv[1])[:6]),
        }
    sizes: dict[str, Any] = {}
    for function in functions:
        zipped, raw, files = _zip_size(function)
        sizes[f"function {function.name}"] = {"zipBytes": zipped, "unzippedBytes": raw, "files": files}
    zipped, raw, files = _zip_size(CORE_LAYER)
    sizes["layer core"] = {"zipBytes": zipped, "unzippedBytes": raw, "files": files}
    sizes["layer deps"] = _deps_layer(pip_timeout) if deps_layer else {"skipped": "not run in --smoke mode"}
    return {"imports": imports, "sizes": sizes, "target": TARGET}
