"""Runs the stack's Lambda functions in this process, each with the environment CloudFormation
resolved for it, as the Lambda service would (moto's own invoke needs Docker).

Functions share one process, so the environment and stdout are switched per invocation: invocations
of the same function may overlap (the HTTP API is concurrent); a different function waits until they
finish. Each function's stdout (Powertools logs and EMF metrics) goes to its own log file.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .stack import Deployment, FunctionInfo


class LambdaContext:
    """The attributes of the real context object that Powertools and our handlers use."""

    def __init__(self, fn: FunctionInfo, region: str):
        self.function_name = fn.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = fn.arn
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{fn.name}"
        self.log_stream_name = f"sandbox/{self.aws_request_id}"
        self._deadline = time.monotonic() + fn.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class _ThreadStdout(io.TextIOBase):
    """sys.stdout that writes to the current thread's function log, or the real stdout."""

    def __init__(self, real: Any):
        self._real = real
        self._local = threading.local()

    def target(self, stream: Any | None) -> None:
        self._local.stream = stream

    def _stream(self) -> Any:
        return getattr(self._local, "stream", None) or self._real

    def write(self, text: str) -> int:
        return self._stream().write(text)

    def flush(self) -> None:
        self._stream().flush()

    def isatty(self) -> bool:
        return False


class FunctionRuntime:
    def __init__(self, deployment: Deployment, aws_env: dict[str, str], log_dir: Path):
        self.deployment = deployment
        self._aws_env = aws_env
        self._log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._modules: dict[str, Any] = {}
        self._logs: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._active: str | None = None
        self._active_count = 0
        self._saved_env: dict[str, str] | None = None
        if not isinstance(sys.stdout, _ThreadStdout):
            sys.stdout = _ThreadStdout(sys.stdout)
        self._stdout: _ThreadStdout = sys.stdout  # type: ignore[assignment]
        self.invocations: dict[str, int] = {}
        self._import_lock = threading.Lock()

    def function_env(self, fn: FunctionInfo) -> dict[str, str]:
        return {
            **fn.environment,
            **self._aws_env,
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_REGION": self.deployment.region,
            "AWS_DEFAULT_REGION": self.deployment.region,
            # No X-Ray daemon here; Powertools Tracer becomes a no-op, as under `sam local`.
            "POWERTOOLS_TRACE_DISABLED": "true",
        }

    @contextmanager
    def _as_function(self, fn: FunctionInfo):
        with self._cond:
            while self._active not in (None, fn.logical_id):
                self._cond.wait()
            if self._active is None:
                self._saved_env = dict(os.environ)
                os.environ.clear()
                os.environ.update({**self._saved_env, **self.function_env(fn)})
                self._active = fn.logical_id
            self._active_count += 1
        self._stdout.target(self._log(fn))
        try:
            yield
        finally:
            self._stdout.target(None)
            self._log(fn).flush()
            with self._cond:
                self._active_count -= 1
                if self._active_count == 0:
                    os.environ.clear()
                    os.environ.update(self._saved_env or {})
                    self._active = None
                    self._cond.notify_all()

    def _log(self, fn: FunctionInfo):
        if fn.logical_id not in self._logs:
            self._logs[fn.logical_id] = open(self._log_dir / f"{fn.logical_id}.log", "a", encoding="utf-8")  # noqa: SIM115
        return self._logs[fn.logical_id]

    def _module(self, fn: FunctionInfo):
        with self._import_lock:
            return self._load(fn)

    def _load(self, fn: FunctionInfo):
        if fn.logical_id not in self._modules:
            module_name, _ = fn.handler.rsplit(".", 1)
            path = Path(fn.code_dir) / f"{module_name.replace('.', '/')}.py"
            spec = importlib.util.spec_from_file_location(f"lambda_{fn.logical_id}_{module_name}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)  # the cold start: import under the function's env
            self._modules[fn.logical_id] = module
        return self._modules[fn.logical_id]

    def invoke(self, logical_id: str, event: dict[str, Any]) -> Any:
        fn = self.deployment.functions[logical_id]
        with self._as_function(fn):
            handler = getattr(self._module(fn), fn.handler.rsplit(".", 1)[1])
            self.invocations[logical_id] = self.invocations.get(logical_id, 0) + 1
            return handler(event, LambdaContext(fn, self.deployment.region))

    def close(self) -> None:
        for fh in self._logs.values():
            fh.close()
        self._logs.clear()
