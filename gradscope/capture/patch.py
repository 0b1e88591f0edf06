"""Swapping a module's forward for the duration of a watch, and putting it back exactly."""

import types
import weakref


class WatchedForward:
    """The forward a watch sets on a module instance.

    A copy of the module (``copy.deepcopy`` for an EMA model or a best-model snapshot,
    ``pickle`` or ``torch.save`` of the whole model) is a model of its own, not watched: it gets
    the class's forward bound to itself rather than this one, which would run the watched
    module with the watched module's weights.
    """

    def __init__(self, module, replacement):
        self._module = weakref.ref(module)
        self._replacement = replacement
        mark = getattr(replacement, ForwardPatch.MARK, None)
        if mark is not None:
            setattr(self, ForwardPatch.MARK, mark)

    def __call__(self, *args, **kwargs):
        return self._replacement(*args, **kwargs)

    def __deepcopy__(self, memo):
        module = self._module()
        copy = memo.get(id(module)) if module is not None else None
        if copy is None:  # copied on its own, not as part of its module's state
            return self
        return types.MethodType(type(copy).forward, copy)

    def __reduce__(self):
        # unpickled while its module's state is restored: getattr finds the class's forward
        # bound to the new module (its instance dict does not hold one yet)
        return getattr, (self._module(), "forward")


class ForwardPatch:
    """Sets ``module.forward`` as an instance attribute; ``remove()`` restores what was there."""

    MARK = "_gradscope_scope"

    def __init__(self, module, make_replacement):
        self.module = module
        self._had_instance = "forward" in module.__dict__
        self._previous = module.__dict__.get("forward")
        self.original = module.forward
        replacement = make_replacement(self.original)
        module.__dict__["forward"] = WatchedForward(module, replacement)
        self.removed = False

    def remove(self):
        if self.removed:
            return
        if self._had_instance:
            self.module.__dict__["forward"] = self._previous
        else:
            self.module.__dict__.pop("forward", None)
        self.removed = True


def watched_by(module):
    """The Scope currently watching ``module``, if any."""
    forward = module.__dict__.get("forward")
    return getattr(forward, ForwardPatch.MARK, None)
