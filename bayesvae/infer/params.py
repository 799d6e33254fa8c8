r"""The parameters a fit owns: modules, and the ``pyro.param`` sites of hand-written functions.

Pyro keeps ``pyro.param`` values in one global store, looked up by name. That has two silent
failure modes for a user who fits twice in one session or loads a saved fit:

* a second model whose ``pyro.module("decoder", net)`` has the name of an earlier one gets
  the *earlier* tensors back from the store, so the optimizer trains tensors the new network
  never uses (the fit "does not move");
* values loaded into the store do not reach a network registered with ``pyro.module``
  (``update_module_params=False`` by default), so a loaded fit scores with random weights.

A :class:`ParamSet` removes both: while a fit's model or guide runs, every ``param``
statement is answered from the fit's own tensors (:class:`OwnParams`), never from the global
store. A ``pyro.module`` parameter *is* the module's ``nn.Parameter`` (so the network and the
optimizer see the same tensor), and a plain ``pyro.param`` gets an unconstrained leaf tensor
owned by the fit. Loaded values are written into those tensors -- into the module's own
parameters for ``pyro.module`` sites -- the first time the function runs.
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import pyro
import torch
from pyro.distributions import constraints
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import transform_to

__all__ = ["ParamSet", "OwnParams", "Scoped", "owner_module", "owned_modules", "CONSTRAINTS", "constraint_name"]

#: Constraints a saved ``pyro.param`` may carry, by name (what the file format can express).
CONSTRAINTS = {
    "real": constraints.real,
    "positive": constraints.positive,
    "unit_interval": constraints.unit_interval,
    "simplex": constraints.simplex,
    "lower_cholesky": constraints.lower_cholesky,
    "positive_definite": constraints.positive_definite,
}


def constraint_name(c: Any) -> str:
    """The name in :data:`CONSTRAINTS` of constraint ``c``; ``ValueError`` if it has none."""
    for name, known in CONSTRAINTS.items():
        if c is known or type(c) is type(known):
            return name
    raise ValueError(
        f"cannot save a pyro.param with constraint {c!r}; supported: {sorted(CONSTRAINTS)}"
    )


def owner_module(fn: Any) -> nn.Module | None:
    """The module behind a model/guide: the module itself, or the owner of a bound method."""
    if isinstance(fn, Scoped):
        fn = fn.fn
    if isinstance(fn, nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


def owned_modules(*parts: Any) -> list[nn.Module]:
    """The distinct modules behind ``parts`` (see :func:`owner_module`)."""
    out: list[nn.Module] = []
    for part in parts:
        m = owner_module(part)
        if m is not None and all(m is not o for o in out):
            out.append(m)
    return out


class ParamSet:
    """The ``pyro.param`` tensors of one fit, by name.

    Attributes
    ----------
    unconstrained : dict of str to Tensor
        Leaf tensors the optimizer updates (a module's own ``nn.Parameter`` for a
        ``pyro.module`` site).
    constraints : dict of str to Constraint
        Each site's constraint.
    module_sites : set of str
        Names that belong to a module registered with ``pyro.module``.
    """

    def __init__(self, pending: dict[str, torch.Tensor] | None = None, pending_constraints: dict[str, str] | None = None) -> None:
        self.unconstrained: dict[str, torch.Tensor] = {}
        self.constraints: dict[str, Any] = {}
        self.module_sites: set[str] = set()
        self.pending = dict(pending or {})
        self.pending_constraints = dict(pending_constraints or {})
        self.store_state: dict[str, Any] = {"params": {}, "constraints": {}}

    def __len__(self) -> int:
        return len(self.unconstrained)

    def wrapper(self) -> Callable:
        """A :class:`~bayesvae.convention.Call` wrapper entering :meth:`messenger` around a call."""

        def wrap(fn, x, kwargs):
            def call(*args, **kw):
                with self.context():
                    return fn(*args, **kw)

            return call

        return wrap

    @contextlib.contextmanager
    def context(self):
        """Run with this set answering ``param`` statements, inside a private param store.

        The private store (``ParamStoreDict.scope``) holds what a ``PyroModule`` (e.g. one
        of Pyro's autoguides) syncs into a store, so that two fits never share one by name.
        """
        with pyro.get_param_store().scope(self.store_state), OwnParams(self):
            yield

    def constrained(self, exclude: Iterable[torch.Tensor] = ()) -> dict[str, torch.Tensor]:
        """Detached constrained values, without the tensors in ``exclude`` (e.g. module weights)."""
        skip = {id(t) for t in exclude}
        out = {}
        for name, u in self.unconstrained.items():
            if id(u) in skip:
                continue
            c = self.constraints[name]
            out[name] = (u if name in self.module_sites else transform_to(c)(u)).detach()
        return out

    def trainable(self) -> list[torch.Tensor]:
        """Every tensor that requires a gradient."""
        return [u for u in self.unconstrained.values() if u.requires_grad]

    def check_pending(self) -> None:
        """Every loaded value must have reached a ``param`` statement."""
        if self.pending:
            raise ValueError(
                f"the saved fit has parameters that the model and guide never create: {sorted(self.pending)[:10]}; pass the model= and guide= functions the fit was made with"
            )

    def resolve(self, name: str, init: Any, constraint: Any) -> torch.Tensor:
        """The fit's value for ``pyro.param(name, init, constraint)``, created on first use."""
        if name not in self.unconstrained:
            self._create(name, init, constraint)
        u = self.unconstrained[name]
        value = u if name in self.module_sites else transform_to(self.constraints[name])(u)
        value.unconstrained = weakref.ref(u)  # as Pyro's store does (subsampled params read it)
        return value

    def _create(self, name: str, init: Any, constraint: Any) -> None:
        loaded = self.pending.pop(name, None)
        if isinstance(init, nn.Parameter):
            if loaded is not None:
                if loaded.shape != init.shape:
                    raise ValueError(
                        f"saved parameter {name!r} has shape {tuple(loaded.shape)} but the module's has {tuple(init.shape)}"
                    )
                with torch.no_grad():
                    init.copy_(loaded.to(device=init.device, dtype=init.dtype))
            self.unconstrained[name] = init
            self.constraints[name] = constraints.real
            self.module_sites.add(name)
            return
        if loaded is not None:
            c = CONSTRAINTS.get(self.pending_constraints.get(name, "real"), constraints.real)
            value = loaded
        else:
            if init is None:
                raise ValueError(
                    f"pyro.param({name!r}) has no initial value: inside a bayesvae fit every pyro.param needs an init_tensor (the fit does not read Pyro's global param store)"
                )
            value = init() if callable(init) else init
            c = constraint
        value = torch.as_tensor(value)
        u = transform_to(c).inv(value.detach()).clone().requires_grad_(value.is_floating_point())
        self.unconstrained[name] = u
        self.constraints[name] = c

    def adopt(self, name: str, unconstrained: torch.Tensor, constraint: Any) -> None:
        """Own a tensor that a module holds (a ``PyroModule`` parameter), loading a saved value."""
        loaded = self.pending.pop(name, None)
        if loaded is not None:
            c = CONSTRAINTS.get(self.pending_constraints.get(name, "real"), constraints.real)
            with torch.no_grad():
                unconstrained.copy_(transform_to(c).inv(loaded.to(unconstrained.device, unconstrained.dtype)))
        self.unconstrained[name] = unconstrained
        self.constraints[name] = constraint


class OwnParams(Messenger):
    """Answer ``pyro.param`` statements from a :class:`ParamSet` instead of the global store."""

    def __init__(self, params: ParamSet) -> None:
        super().__init__()
        self.params = params

    def _pyro_param(self, msg: Any) -> None:
        args = msg["args"]
        name = args[0]
        init = args[1] if len(args) > 1 else msg["kwargs"].get("init_tensor")
        store = pyro.get_param_store()
        if init is None and name not in self.params.unconstrained and name in store._params:
            # a PyroModule synced its own nn.Parameter into the (private) store
            self.params.adopt(name, store._params[name], store._constraints.get(name, constraints.real))
        constraint = msg["kwargs"].get("constraint", constraints.real)
        msg["value"] = self.params.resolve(name, init, constraint)
        msg["done"] = True


class Scoped:
    """A hand-written model/guide bound to a fit's own parameters.

    Calling it runs ``fn`` with every ``pyro.param`` statement answered from ``params``
    (:class:`OwnParams`), so the numbers a fit reports later -- evaluation, diagnostics --
    use the values that fit trained, whatever Pyro's global store holds by then.
    """

    def __init__(self, fn: Callable, params: ParamSet) -> None:
        self.fn = fn.fn if isinstance(fn, Scoped) else fn
        self.params = params
        try:
            self.__signature__ = inspect.signature(self.fn)
        except (TypeError, ValueError):
            pass
        self.__name__ = getattr(self.fn, "__name__", type(self.fn).__name__)
        self.__doc__ = getattr(self.fn, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.params.context():
            return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Scoped({self.fn!r}, {len(self.params)} params)"
