"""Hot reload: watch the settings file and the policies folder, validate, then swap in one step.

Loading runs in a worker thread (it reads files), then ``Runtime.apply`` swaps the snapshot. An
invalid change is logged with every ``file:line`` problem, counted as
``prefit_config_reloads_total{result="error"}``, shown by ``/readyz``, and changes nothing: the
last good configuration keeps serving. SIGHUP triggers the same reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import time
from pathlib import Path

import anyio
import watchfiles

from gateway.config.load import Config, load_config
from gateway.errors import ConfigError
from gateway.serving.runtime import ReloadStatus, Runtime

__all__ = ["Reloader"]

log = logging.getLogger(__name__)
_DEBOUNCE_MS = 200
#: How often an idle watcher wakes; its first wake-up proves the watch is in place.
_IDLE_TICK_MS = 250
_WATCH_START_TIMEOUT_S = 10.0

Fingerprint = dict[Path, tuple[int, int]]


def _fingerprint(paths: list[Path]) -> Fingerprint:
    """Modification time and size of every file under ``paths``, to spot changes made before watching began."""
    seen: Fingerprint = {}
    for root in paths:
        candidates = [root] if root.is_file() else (p for p in root.rglob("*") if p.is_file())
        for path in candidates:
            try:
                stat = path.stat()
            except OSError:
                continue
            seen[path] = (stat.st_mtime_ns, stat.st_size)
    return seen


class Reloader:
    def __init__(self, runtime: Runtime, settings_file: Path | None) -> None:
        self.runtime = runtime
        self.settings_file = settings_file
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._watching = asyncio.Event()
        self._seen = _fingerprint(self._paths(runtime.config))
        self.generation = 0

    def _paths(self, config: Config) -> list[Path]:
        paths = [config.policies_dir] if config.policies_dir.is_dir() else []
        if self.settings_file is not None:
            paths.append(self.settings_file.resolve())
        return paths

    async def reload(self, reason: str) -> bool:
        """Load and apply the configuration now; True when it was applied."""
        async with self._lock:
            started = time.perf_counter()
            self._seen = await anyio.to_thread.run_sync(_fingerprint, self._paths(self.runtime.config))
            try:
                config = await anyio.to_thread.run_sync(
                    functools.partial(load_config, self.settings_file, resources=self.runtime.resources)
                )
            except ConfigError as exc:
                errors = [str(issue) for issue in exc.issues]
                for line in errors:
                    log.error("reload rejected: %s", line)
                self.runtime.metrics.config_reloads.child("error").inc()
                self.runtime.reload_status = ReloadStatus(ok=False, errors=errors)
                return False
            self.runtime.resources.configure(config.settings, config.base_dir.resolve())
            await self.runtime.apply(config)
            self.generation += 1
            self.runtime.metrics.config_reloads.child("success").inc()
            self.runtime.reload_status = ReloadStatus(ok=True)
            log.info(
                "configuration reloaded",
                extra={
                    "fields": {
                        "reason": reason,
                        "policies": len(config.policies),
                        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
                    }
                },
            )
            return True

    async def _watch(self) -> None:
        while not self._stop.is_set():
            paths = self._paths(self.runtime.config)
            if not paths:
                return
            async for changes in watchfiles.awatch(
                *paths,
                stop_event=self._stop,
                debounce=_DEBOUNCE_MS,
                step=50,
                recursive=True,
                yield_on_timeout=True,
                rust_timeout=_IDLE_TICK_MS,
            ):
                if not self._watching.is_set():
                    self._watching.set()
                    if await anyio.to_thread.run_sync(_fingerprint, paths) != self._seen:
                        changes = changes or {(watchfiles.Change.modified, "(before the watch began)")}
                if not changes:
                    continue
                log.debug("changes seen: %d", len(changes))
                await self.reload("files")
                if self._paths(self.runtime.config) != paths:
                    break

    async def start(self, watch: bool) -> None:
        """Reload on SIGHUP, and with ``watch`` on every file change too (returns once the watch is in place)."""
        loop = asyncio.get_running_loop()
        if watch and self._paths(self.runtime.config):
            self._task = loop.create_task(self._watch())
            try:
                await asyncio.wait_for(self._watching.wait(), _WATCH_START_TIMEOUT_S)
            except TimeoutError:
                log.warning("file watching did not start within %.0f s; changes may be missed", _WATCH_START_TIMEOUT_S)
        try:
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(self.reload("sighup")))
        except (NotImplementedError, RuntimeError, ValueError):
            log.info("SIGHUP reload is not available here")

    async def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
