"""Device and precision of a role (generator actors, trainer group, reward deployment, reward training,
latent reward and guidance): one setting each, honoured by every tensor the role makes.

The rule the library follows: a role puts its model on ``DeviceConfig.device`` in
``DeviceConfig.dtype`` (:func:`place`) and every tensor it makes afterwards (noise, sigmas, codec
statistics, text embeddings, targets, timesteps, guidance gradients) is made on the device of the
model it feeds, read from the model itself (:func:`module_device`, :func:`module_dtype`), never from a
global. Losses and the quantities they compare (velocity targets, per-sample errors, rewards) are
computed in fp32 whatever the model's precision: in bf16 a squared error of order 1e-3 keeps only
two to three significant digits, and the Flow-DPO margin is a small difference of such errors.

fp32 is the CPU default (bf16 autocast made the Wan transformer ~10x slower on these CPUs); bf16 is
for GPUs. ``gradient_checkpointing`` switches on the libraries' own activation checkpointing
(diffusers' ``enable_gradient_checkpointing``, transformers' ``gradient_checkpointing_enable``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a tensor is made: configs travel to processes that never load it
    import torch

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}  # precision -> torch dtype name


class DeviceError(ValueError):
    """A device or precision that this machine or this role cannot use."""


@dataclass
class DeviceConfig:
    device: str = "cpu"  # cpu | cuda | cuda:N (the GPU Ray assigned is cuda, index 0 of CUDA_VISIBLE_DEVICES)
    precision: str = "fp32"  # fp32 | bf16 (weights and activations; losses stay fp32)
    gradient_checkpointing: bool = False  # the libraries' own activation checkpointing (training roles)

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise DeviceError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        kind = self.device.split(":")[0]
        if kind not in ("cpu", "cuda", "meta") or (kind != "cuda" and ":" in self.device):
            raise DeviceError(f"device must be cpu, cuda or cuda:N, got {self.device!r}")
        if kind == "cuda" and ":" in self.device and not self.device.split(":")[1].isdigit():
            raise DeviceError(f"device {self.device!r}: the GPU index must be a number (cuda:0)")

    def check_gpus(self, gpus: float, device_key: str, gpus_key: str) -> None:
        """A role's device against the GPUs Ray reserves for it (``gpus_key``): a cuda device needs some, a
        cpu device none (a reserved GPU it never uses would idle)."""
        self.validate()
        if gpus > 0 and not self.is_cuda:
            raise DeviceError(
                f"{gpus_key}={gpus:g} reserves a GPU but {device_key}.device={self.device!r} runs on "
                f"the CPU: set {device_key}.device=cuda to use it, or {gpus_key}=0"
            )
        if self.is_cuda and gpus <= 0:
            raise DeviceError(
                f"{device_key}.device={self.device!r} but {gpus_key}={gpus:g}: Ray gives the role no "
                f"GPU; set {gpus_key}=1 (or a fraction to share one), or {device_key}.device=cpu"
            )

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, PRECISIONS[self.precision])

    def torch_device(self) -> torch.device:
        """The device, checked against this machine: a clear error instead of a CUDA trace."""
        import torch

        self.validate()
        if self.is_cuda:
            if not torch.cuda.is_available():
                raise DeviceError(
                    f"device {self.device!r} asked for but this process sees no CUDA GPU "
                    f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}); give the role a GPU "
                    "(Ray: num_gpus / use_gpu) or set its device to cpu"
                )
            index = int(self.device.split(":")[1]) if ":" in self.device else 0
            if index >= torch.cuda.device_count():
                raise DeviceError(f"device {self.device!r}: only {torch.cuda.device_count()} GPU(s) visible")
            if self.precision == "bf16" and not torch.cuda.is_bf16_supported():
                raise DeviceError(f"{torch.cuda.get_device_name(index)} has no bf16: use precision fp32")
        return torch.device(self.device)


def as_device_config(device: DeviceConfig | str | torch.device) -> DeviceConfig:
    """``device`` as a DeviceConfig; a plain string (``"cpu"``, ``"cuda:1"``, the older API) means that
    device in fp32."""
    import torch

    if isinstance(device, DeviceConfig):
        return device
    if isinstance(device, (str, torch.device)):
        return DeviceConfig(device=str(device))
    raise DeviceError(f"device must be a DeviceConfig or a string such as 'cpu' or 'cuda', got {device!r}")


def place(module: torch.nn.Module, cfg: DeviceConfig) -> torch.nn.Module:
    """``module`` on the role's device in the role's precision (in place; returned for chaining)."""
    return module.to(device=cfg.torch_device(), dtype=cfg.dtype)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s parameters live (the device every tensor made for it is made on)."""
    import torch

    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    """The floating-point dtype of ``module``'s weights (frozen base weights when a LoRA is attached:
    the first floating parameter that does not require grad, else the first floating one)."""
    import torch

    first = None
    for p in module.parameters():
        if p.is_floating_point():
            if not p.requires_grad:
                return p.dtype
            first = first or p.dtype
    return first or torch.float32


def seeded_generator(seed: int, device: torch.device | str) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` (noise is drawn where the model runs, not copied there)."""
    import torch

    device = torch.device(device)
    gen = torch.Generator(device="cpu" if device.type == "meta" else device)
    return gen.manual_seed(int(seed))


__all__ = [
    "DeviceConfig",
    "DeviceError",
    "PRECISIONS",
    "as_device_config",
    "module_device",
    "module_dtype",
    "place",
    "seeded_generator",
]
