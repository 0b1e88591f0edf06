"""tanh for gradscope's own buffers on the CPU, through numpy's vectorised tanh.

On the 2-core AMD machine this project is measured on, ``torch.tanh`` runs at ~1 ns an entry
(float32, two threads; ``torch.sigmoid`` at ~0.12 ns), numpy's tanh at ~0.17 ns on one thread:
(6400, 256) 0.28 ms against 1.87 ms, a (32, 256) step 2 us against 14 us
(/work/proto/nptanh.py). Its results are within ~2 ulp of the true tanh (1.1e-7 relative at
worst in float32, against torch's 6e-8). A recorded fast LSTM step at (32, 256, 200) spent ~9 ms
of ~100 in tanh. Not for the exact route, whose steps must round as ATen's cells do. The own
RNN/GRU forward (own_bptt.py) keeps torch's: it gained 1%-3% there, and a rounding change in the
RNN's forward moves the demo's chaotic RNN (docs/demo.md).
"""

import numpy as np
import torch

_NUMPY_DTYPES = (torch.float32, torch.float64)


def tanh(x, out=None):
    """``torch.tanh(x, out=out)``, through numpy for CPU float32/float64 tensors. No autograd:
    only for tensors that no graph records (inference mode, no_grad, gradscope's buffers)."""
    if x.device.type != "cpu" or x.dtype not in _NUMPY_DTYPES or (out is not None and out.dtype != x.dtype):
        return torch.tanh(x) if out is None else torch.tanh(x, out=out)
    if out is None:
        return torch.from_numpy(np.tanh(x.detach().numpy()))
    np.tanh(x.detach().numpy(), out=out.detach().numpy())
    return out


def tanh_(x):
    """``x.tanh_()`` (see ``tanh``)."""
    return tanh(x, out=x)
