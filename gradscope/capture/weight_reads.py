"""``watch(weights={label: (module, "name")})``: keep the value a forward read from
``module.name``, without ever calling user code at another time.

A property (or a ``torch.nn.utils.parametrize`` parametrization, which is a property too) may
have side effects when read: an orthogonal parametrization that regenerates its matrix and
advances a counter. Reading it once more at step close would change training. Instead, while
the scope is started, ``module``'s class is swapped for a subclass whose property calls the
original getter and hands the value back unchanged, remembering it (detached) on the way; the
class is put back on stop. Nothing is called that the user's own code did not call.

An attribute that is no property (a Parameter, a buffer, a plain tensor) runs no user code when
read, so it is read directly at step close.
"""

import inspect

import torch


class WeightRead:
    """One ``(module, name)`` entry of ``weights=``: the last value read with grad enabled
    since the previous step closed (``taken()``), or the attribute itself where reading it runs
    no user code."""

    def __init__(self, label, module, name):
        self.label = label
        self.module = module
        self.name = name
        descriptor = inspect.getattr_static(module, name, None)
        self.is_property = isinstance(descriptor, property)
        if not self.is_property and not isinstance(getattr(module, name, None), torch.Tensor):
            raise TypeError(f"gradscope.watch(weights={{{label!r}: (module, {name!r})}}): "
                            f"{type(module).__name__}.{name} is neither a property nor a tensor attribute; "
                            "pass the module that holds the recurrent weight and the attribute's name")
        self._descriptor = descriptor
        self._original_class = None
        self._subclass = None
        self._value = None

    def start(self):
        """Watch reads of the property (nothing to do for a plain tensor attribute)."""
        if not self.is_property or self._original_class is not None:
            return
        cls = type(self.module)
        getter = self._descriptor.fget
        read = self

        def get(module):
            value = getter(module)
            # a copy made while watched (deepcopy keeps the class) is not the watched module
            if module is read.module and torch.is_grad_enabled() and isinstance(value, torch.Tensor):
                read._value = value.detach()  # the forward's own value; no graph kept
            return value

        watched = property(get, self._descriptor.fset, self._descriptor.fdel, self._descriptor.__doc__)
        # same name and module, so that reprs and error messages read as before
        subclass = type(cls.__name__, (cls,), {self.name: watched, "__module__": cls.__module__,
                                                "__qualname__": cls.__qualname__})
        self.module.__class__ = subclass
        self._original_class, self._subclass = cls, subclass

    def stop(self):
        """Put the module's class back (unless something else swapped it since)."""
        if self._original_class is not None:
            if type(self.module) is self._subclass:
                self.module.__class__ = self._original_class
            self._original_class = self._subclass = None
        self._value = None

    def taken(self):
        """The weight the step used, or None where its property was not read with grad enabled
        since the previous step closed. Forgets it: the next step starts afresh."""
        if not self.is_property:
            return getattr(self.module, self.name).detach()
        value, self._value = self._value, None
        return value

    def forget(self):
        """A step closed without being recorded: its reads are not the next step's."""
        self._value = None


def check_weights(weights):
    """``watch(weights=...)`` checked: ``{label: tensor | callable | WeightRead}``.

    Args:
        weights: None, or ``{label: tensor, Parameter, (module, "attribute") or zero-argument callable}``.

    Returns:
        The dict, each ``(module, "attribute")`` pair as a ``WeightRead``.

    Raises:
        TypeError: saying what each entry may be.
    """
    if weights is None:
        return {}
    if not isinstance(weights, dict):
        raise TypeError("gradscope.watch(weights=...): expected a dict {label: tensor, Parameter, "
                        f"(module, 'attribute') or zero-argument callable}}, got {type(weights).__name__}")
    checked = {}
    for label, value in weights.items():
        if not isinstance(label, str):
            raise TypeError(f"gradscope.watch(weights=...): labels must be str, got {label!r}")
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], torch.nn.Module) \
                and isinstance(value[1], str):
            value = WeightRead(label, value[0], value[1])
        elif not (isinstance(value, torch.Tensor) or callable(value)):
            raise TypeError(f"gradscope.watch(weights={{{label!r}: ...}}): expected a tensor, Parameter, "
                            "(module, 'attribute') pair (for a property: the value the forward read is kept) "
                            f"or zero-argument callable, got {type(value).__name__}")
        checked[label] = value
    return checked


def weight_reads(weights):
    """The ``WeightRead`` entries of a checked ``weights`` dict."""
    return [value for value in weights.values() if isinstance(value, WeightRead)]


def labelled_weights(weights, number, warn):
    """``{label: matrix}`` of the ``weights=`` entries for recorded step ``number``, at its close:
    a tensor as it is now (before the optimizer steps), a ``(module, name)`` pair as the forward
    read it, a callable called now, once (it must be free of side effects).

    Args:
        weights: the checked ``weights=`` dict (``check_weights``).
        number: the step's number (for the warning).
        warn: ``warn(key, message)``, for a pair the step's forward did not read (left out).

    Returns:
        ``{label: detached matrix}``.
    """
    out = {}
    for label, value in weights.items():
        if isinstance(value, WeightRead):
            matrix = value.taken()
            if matrix is None:
                warn(("unread", label), (
                    f"gradscope: watch(weights={{{label!r}: (module, {value.name!r})}}): "
                    f"{type(value.module).__name__}.{value.name} was not read with grad enabled during step "
                    f"{number}, so its spectra are not recorded for that step"))
                continue
        elif isinstance(value, torch.Tensor):
            matrix = value
        else:
            with torch.no_grad():
                matrix = value()
        out[label] = torch.as_tensor(matrix).detach()
    return out
