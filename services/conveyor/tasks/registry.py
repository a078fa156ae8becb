"""Task types, each declared once with `@task` in the package that handles it.

    @task("invoice.render", payload=InvoiceRender, max_attempts=8, timeout="30s",
          backoff=Backoff(base="1s", cap="5m"), permanent=(ValidationError,),
          slo=TaskSlo(success=99.9))
    def render(ctx: TaskContext, invoice: InvoiceRender) -> RenderResult: ...

The declaration is the one registry every part reads: the API serves only declared types and
checks each payload against its model at submit, the worker runs the handler under the type's
policy, the client maps a payload model to its type, the schema gate compares each model with
its committed snapshot, the SLO rules give a type with an `slo` SLOs of its own. A deployment
names the modules that declare its types (CONVEYOR_TASK_MODULES, the stack's
`worker.taskModules`); `load` imports them. Importing a
task module must only declare (no connections, no threads): the API imports it too.

A payload is a pydantic model, sent as its JSON; a handler may return a pydantic model (stored
as its JSON), bytes, str or None. A breaking change to a payload model is a new `version`: a
type of its own on the wire (`invoice.render.v2`), so both handlers run while the old one's
queue drains (README "Changing a payload model").
"""

from __future__ import annotations

import importlib
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from conveyor.domain import MAX_ATTEMPTS_LIMIT, TASK_TYPE_RE
from conveyor.runtime import MAX_VISIBILITY_SECONDS

MODULE_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")  # a dotted module name
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = float | int | str
Handler = Callable[..., object]  # (ctx: TaskContext, payload: <the payload model>) -> result
H = TypeVar("H", bound=Handler)


def seconds(value: Duration) -> float:
    """A duration as seconds: a number, or a string such as "500ms", "30s", "5m", "1h"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    else:
        match = _DURATION.fullmatch(str(value))
        if not match:
            raise ValueError(f"duration {value!r}: use seconds or a string like 30s, 5m, 500ms")
        number = float(match[1]) * _UNIT_SECONDS[match[2]]
    if number <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return number


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff between a type's attempts: up to `base` * 2^(n-1),
    at most `cap` (applied through the message's visibility timeout, so at most 12 h)."""

    base: Duration = 1.0
    cap: Duration = 60.0

    def __post_init__(self) -> None:
        base, cap = seconds(self.base), seconds(self.cap)
        if base > cap:
            raise ValueError(f"backoff base {self.base} exceeds its cap {self.cap}")
        if cap > MAX_VISIBILITY_SECONDS:
            raise ValueError(f"backoff cap {self.cap} exceeds SQS's {MAX_VISIBILITY_SECONDS} s")
        object.__setattr__(self, "base", base)
        object.__setattr__(self, "cap", cap)

    @property
    def base_seconds(self) -> float:
        return float(self.base)

    @property
    def cap_seconds(self) -> float:
        return float(self.cap)


@dataclass(frozen=True)
class TaskSlo:
    """Objectives (percent) of a type's own SLOs: `success`, of its runs ending succeeded;
    `freshness`, of its tasks started soon enough after submit (observability/slos.yaml defines
    both measures, as `task-success` and `task-freshness`). Each one makes the global task SLO
    of its kind stop counting the type, so an outage of it pages once, on its own SLO."""

    success: float | None = None
    freshness: float | None = None

    def __post_init__(self) -> None:
        for name, objective in vars(self).items():
            if objective is not None and not 0 < objective < 100:
                raise ValueError(f"SLO {name}: objective {objective} must be a percent in (0, 100)")


@dataclass(frozen=True)
class TaskType:
    """One declared task type and its policy (None: the worker's or API's default)."""

    name: str
    payload: type[BaseModel]
    handler: Handler
    version: int = 1
    result: type[BaseModel] | None = None
    max_attempts: int | None = None  # the default, and the ceiling a submit may lower
    timeout: float | None = None  # seconds a run may take before it fails as retryable
    backoff: Backoff | None = None
    permanent: tuple[type[BaseException], ...] = ()
    concurrency: int | None = None  # at most this many in flight per worker process
    slo: TaskSlo | None = None  # the type's own SLOs; None: the global task SLOs count it
    module: str = field(default="", compare=False)

    @property
    def type_name(self) -> str:
        """The name on the wire: `name` for version 1, `name.vN` after a breaking change."""
        return self.name if self.version == 1 else f"{self.name}.v{self.version}"


class UnknownModel(LookupError):
    """A payload model no loaded declaration uses, or more than one uses."""


class Registry(Mapping[str, TaskType]):
    """The task types a deployment declares, by wire name."""

    def __init__(self, types: Iterable[TaskType]) -> None:
        self._types = {t.type_name: t for t in types}

    def __getitem__(self, type_name: str) -> TaskType:
        return self._types[type_name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._types))

    def __len__(self) -> int:
        return len(self._types)

    def for_model(self, model: type[BaseModel] | BaseModel) -> TaskType:
        """The type whose payload is `model` (a class or an instance)."""
        cls = model if isinstance(model, type) else type(model)
        found = [t for t in self._types.values() if t.payload is cls]
        if len(found) == 1:
            return found[0]
        if not found:
            raise UnknownModel(
                f"{cls.__qualname__} is the payload of no declared task type "
                "(import the module that declares it)"
            )
        names = ", ".join(sorted(t.type_name for t in found))
        raise UnknownModel(f"{cls.__qualname__} is the payload of {names}: name the task type")


# Every declaration made in this process, by wire name; `load` selects a deployment's.
_DECLARED: dict[str, TaskType] = {}


def task(
    name: str,
    *,
    payload: type[BaseModel],
    version: int = 1,
    max_attempts: int | None = None,
    timeout: Duration | None = None,
    backoff: Backoff | None = None,
    permanent: tuple[type[BaseException], ...] = (),
    concurrency: int | None = None,
    slo: TaskSlo | None = None,
) -> Callable[[H], H]:
    """Declare the task type `name` handled by the decorated function (returned unchanged)."""

    def register(handler: H) -> H:
        declared = declare(
            name,
            handler,
            payload=payload,
            version=version,
            max_attempts=max_attempts,
            timeout=timeout,
            backoff=backoff,
            permanent=permanent,
            concurrency=concurrency,
            slo=slo,
        )
        existing = _DECLARED.get(declared.type_name)
        if existing is not None and _qualname(existing.handler) != _qualname(handler):
            raise ValueError(
                f"task type {declared.type_name!r} is declared twice: by "
                f"{_qualname(existing.handler)} and {_qualname(handler)}"
            )
        _DECLARED[declared.type_name] = declared
        return handler

    return register


def declare(
    name: str,
    handler: Handler,
    *,
    payload: type[BaseModel],
    version: int = 1,
    max_attempts: int | None = None,
    timeout: Duration | None = None,
    backoff: Backoff | None = None,
    permanent: tuple[type[BaseException], ...] = (),
    concurrency: int | None = None,
    slo: TaskSlo | None = None,
) -> TaskType:
    """A checked TaskType, not registered (`task` registers it; tests build ad-hoc types)."""
    if not (isinstance(payload, type) and issubclass(payload, BaseModel)):
        raise TypeError(f"task type {name!r}: payload must be a pydantic model class")
    if version < 1:
        raise ValueError(f"task type {name!r}: version must be at least 1")
    declared = TaskType(
        name=name,
        payload=payload,
        handler=handler,
        version=version,
        result=_result_model(handler),
        max_attempts=max_attempts,
        timeout=None if timeout is None else seconds(timeout),
        backoff=backoff,
        permanent=tuple(permanent),
        concurrency=concurrency,
        slo=slo,
        module=getattr(handler, "__module__", ""),
    )
    if not TASK_TYPE_RE.fullmatch(declared.type_name):
        raise ValueError(f"task type {declared.type_name!r} must match {TASK_TYPE_RE.pattern}")
    if max_attempts is not None and not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        raise ValueError(f"task type {name!r}: max_attempts must be 1..{MAX_ATTEMPTS_LIMIT}")
    if concurrency is not None and concurrency < 1:
        raise ValueError(f"task type {name!r}: concurrency must be at least 1")
    if not all(isinstance(e, type) and issubclass(e, BaseException) for e in permanent):
        raise TypeError(f"task type {name!r}: permanent must be a tuple of exception classes")
    return declared


def _qualname(fn: Handler) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _result_model(handler: Handler) -> type[BaseModel] | None:
    """The handler's return annotation, when it is a pydantic model (what a client decodes)."""
    try:
        hints = typing.get_type_hints(handler)
    except (NameError, TypeError):  # an annotation only a type checker resolves: no model
        return None
    returned: Any = hints.get("return")
    return returned if isinstance(returned, type) and issubclass(returned, BaseModel) else None


def parse_modules(spec: str) -> tuple[str, ...]:
    """`pkg.a,pkg.b` as module names (blanks ignored)."""
    return tuple(part.strip() for part in spec.split(",") if part.strip())


def load(modules: Iterable[str]) -> Registry:
    """Import `modules` and return the task types they (and their submodules) declare."""
    names = tuple(modules)
    if not names:
        raise ValueError(
            "no task modules named: list the modules that declare the task types, as "
            "'package.module[,package.other]' (the service image ships no handlers of its own)"
        )
    bad = [m for m in names if not MODULE_RE.fullmatch(m)]
    if bad:
        raise ValueError(f"not module names: {', '.join(map(repr, bad))}")
    for module in names:
        importlib.import_module(module)
    types = [t for t in _DECLARED.values() if any(_declared_in(t, m) for m in names)]
    empty = [m for m in names if not any(_declared_in(t, m) for t in types)]
    if empty:
        raise ValueError(f"{', '.join(empty)} declares no task type (conveyor.tasks.registry.task)")
    return Registry(types)


def _declared_in(declared: TaskType, module: str) -> bool:
    return declared.module == module or declared.module.startswith(module + ".")


def type_for(model: type[BaseModel] | BaseModel) -> TaskType:
    """The declared type whose payload is `model`, among every declaration this process
    imported (a client needs no deployment's module list: importing the models' module,
    which declares them, is enough)."""
    return Registry(_DECLARED.values()).for_model(model)
