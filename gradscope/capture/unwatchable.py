"""Models gradscope cannot look inside: compiled (torch.compile) and TorchScript modules.

Both run the recurrence where no per-time-step probe can be placed, so they are refused at
``watch`` with a message that says which module it is and what to watch instead.
"""

import torch


def _is_compiled(module):
    # torch.compile(m) wraps m in dynamo's OptimizedModule; m.compile() sets _compiled_call_impl
    wrapped = type(module).__name__ == "OptimizedModule" and "_dynamo" in type(module).__module__
    return wrapped or getattr(module, "_compiled_call_impl", None) is not None


def refuse_compiled(model):
    """Raise ``TypeError`` if ``model`` or a module inside it is compiled with torch.compile.

    Args:
        model: the ``nn.Module`` given to ``watch``.
    """
    for name, module in model.named_modules():
        if _is_compiled(module):
            where = f"{name!r} in {type(model).__name__}" if name else type(model).__name__
            raise TypeError(
                f"gradscope.watch: {where} is compiled with torch.compile; gradscope cannot place its "
                "per-time-step probes inside a compiled graph. Watch the module before compiling it: pass the "
                "uncompiled module (for c = torch.compile(m), that is m, also c._orig_mod) and run the watched "
                "steps through it; compile (or call m.compile()) after the watch ends.")


def scripted_hint(model):
    """A sentence for ``NoRecurrentModuleError`` when TorchScript hides the recurrence, else "".

    Args:
        model: the ``nn.Module`` given to ``watch``.

    Returns:
        The sentence (ending with a space), or an empty string.
    """
    for name, module in model.named_modules():
        if isinstance(module, torch.jit.ScriptModule):
            where = f"{name!r} in {type(model).__name__}" if name else type(model).__name__
            return (f"{where} is a TorchScript module (torch.jit.script or torch.jit.trace): its recurrence runs "
                    "inside TorchScript, out of gradscope's reach. Watch the eager module before scripting it "
                    "(script or trace it after the watch ends). ")
    return ""
