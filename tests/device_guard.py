"""A check that every tensor of a computation is made on the model's device, runnable on a CPU machine.

Put the model on the ``meta`` device and run the code under :class:`DeviceGuard`. On a GPU, a tensor
made on the CPU and used with CUDA tensors fails (``Expected all tensors to be on the same device``);
the meta device does not always fail the same way (``F.linear`` of a meta input and a CPU weight
returns a meta tensor), so the guard raises on what CUDA would refuse, and on what CUDA would allow
but the device rule forbids:

* an op whose tensor arguments sit on two devices (0-dim CPU tensors excepted, as CUDA accepts them);
* a random op (``randn``, ``rand``, ``normal``, ...) whose result is not on the expected device: noise
  is drawn where the model runs, never drawn on the host and copied.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

# random ops by base name: out-of-place (randn) and in-place (normal_, uniform_, ...) alike
RANDOM_OPS = (
    "randn",
    "rand",
    "randint",
    "normal",
    "bernoulli",
    "uniform",
    "multinomial",
    "randperm",
    "exponential",
    "random",
    "cauchy",
    "geometric",
    "log_normal",
)


class DeviceGuard(TorchDispatchMode):
    def __init__(self, device: str = "meta"):
        super().__init__()
        self.device = torch.device(device)
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__ if hasattr(func, "__name__") else str(func)
        tensors = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        devices = {t.device for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
        if len(devices) > 1 and not name.startswith(("_to_copy", "copy_", "lift_fresh")):
            raise AssertionError(f"{name} mixes devices {sorted(map(str, devices))}")
        out = func(*args, **kwargs)
        if name.split(".")[0].strip("_") in RANDOM_OPS:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor) and t.device != self.device:
                    raise AssertionError(f"{name} drew a random tensor on {t.device}, not on {self.device}")
        self.ops += 1
        return out
