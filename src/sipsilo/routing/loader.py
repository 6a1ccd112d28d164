"""Loading a user's route function from `[server] route = "module:function"`."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from sipsilo.routing.context import RouteContext

Route = Callable[[RouteContext], Awaitable[None]]


class RouteLoadError(Exception):
    pass


def load_route(spec: str | None) -> Route:
    if not spec:
        from sipsilo.routing.default import route

        return route
    module_name, _, func_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way
        raise RouteLoadError(f"server.route: cannot import {module_name}: {exc}") from exc
    func: Any = getattr(module, func_name, None)
    if func is None:
        raise RouteLoadError(f"server.route: {module_name} has no {func_name}")
    if not inspect.iscoroutinefunction(func):
        raise RouteLoadError(f"server.route: {spec} must be an async function taking a context")
    return func  # type: ignore[no-any-return]
