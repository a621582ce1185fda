"""Job kind -> engine: the one place that says which engine runs a kind.

The three built-in engines (SecretFlow, CKKS, the sandbox) are registered on first use. Another engine is an addition: a module that
calls :func:`register` in a function ``register_engines()``, named in ``DCP_ENGINES`` (comma-separated
modules; every process of a federation inherits it: coordinator and nodes load the same engines), or
registered directly by a test (and removed with :func:`unregister`)."""

from __future__ import annotations

import importlib
import os
import threading

from engines.base import Engine, NodeEngine

PLUGINS_ENV = "DCP_ENGINES"
_lock = threading.RLock()
_engines: dict[str, Engine] = {}
_node_engines: dict[str, NodeEngine] = {}
_state = {"loaded": False, "loading": False}


def _builtins() -> None:
    if _state["loaded"]:
        return
    with _lock:
        if _state["loaded"] or _state["loading"]:
            return
        _state["loading"] = True
        try:
            from engines.ckks.coordinator import CkksEngine
            from engines.ckks.node import CkksNodeEngine
            from engines.sandbox.coordinator import SandboxEngine
            from engines.sandbox.node import SandboxNodeEngine
            from engines.secretflow.coordinator import SecretFlowEngine

            for e, n in ((SecretFlowEngine(), None), (CkksEngine(), CkksNodeEngine()),
                         (SandboxEngine(), SandboxNodeEngine())):
                for k in e.kinds:
                    _engines.setdefault(k, e)
                    if n is not None:
                        _node_engines.setdefault(k, n)
            for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
                importlib.import_module(name).register_engines()
            _state["loaded"] = True
        finally:
            _state["loading"] = False


def register(engine: Engine, node: NodeEngine | None = None) -> None:
    """Serve ``engine.kinds`` with ``engine`` (and ``node`` at the nodes); ValueError if a kind is taken."""
    _builtins()
    with _lock:
        taken = [k for k in engine.kinds if k in _engines]
        if taken:
            raise ValueError(f"kind(s) {taken} already have an engine")
        for k in engine.kinds:
            _engines[k] = engine
            if node is not None:
                _node_engines[k] = node


def unregister(engine: Engine) -> None:
    """Forget ``engine``'s kinds (tests)."""
    with _lock:
        for k in engine.kinds:
            if _engines.get(k) is engine:
                del _engines[k]
                _node_engines.pop(k, None)


def kinds() -> tuple[str, ...]:
    """Every kind some engine serves, built-ins first."""
    _builtins()
    return tuple(_engines)


def engine_for(kind: str) -> Engine:
    """The engine of ``kind`` (KeyError if none)."""
    _builtins()
    return _engines[kind]


def node_engine_for(kind: str) -> NodeEngine | None:
    """The node side of ``kind``'s engine, if it runs through the node's generic step route."""
    _builtins()
    return _node_engines.get(kind)


def node_engine_named(name: str) -> NodeEngine | None:
    """The node side of the engine called ``name`` (``Engine.name``), if it has one."""
    _builtins()
    for kind, engine in _engines.items():
        if engine.name == name:
            return _node_engines.get(kind)
    return None


def engine_names() -> tuple[str, ...]:
    """The names of the registered engines."""
    _builtins()
    return tuple(dict.fromkeys(e.name for e in _engines.values()))
