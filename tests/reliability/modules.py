"""Model helpers shared by the reliability families."""

import torch


def tame_relu(module):
    """A relu RNN whose units stay alive and bounded, as the module grid keeps them: W_hh halved,
    biases positive. Returns ``module``."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("weight_hh"):
                p.mul_(0.5)
            if name.startswith("bias"):
                p.abs_().add_(0.1)
    return module
