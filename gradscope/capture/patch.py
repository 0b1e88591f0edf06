"""Swapping a module's forward for the duration of a watch, and putting it back exactly."""


class ForwardPatch:
    """Sets ``module.forward`` as an instance attribute; ``remove()`` restores what was there."""

    MARK = "_gradscope_scope"

    def __init__(self, module, make_replacement):
        self.module = module
        self._had_instance = "forward" in module.__dict__
        self._previous = module.__dict__.get("forward")
        self.original = module.forward
        replacement = make_replacement(self.original)
        module.__dict__["forward"] = replacement
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
