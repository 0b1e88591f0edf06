"""gradscope in the tools people train with (docs/integrations.md).

tensorboard.py: ``log(scope, writer)``; lightning.py: ``GradscopeCallback``; distributed.py: the
per-step reduction across ranks under ``torch.distributed``. The optional packages (extras
``gradscope[tensorboard]``, ``gradscope[lightning]``) are imported only when used.
"""
