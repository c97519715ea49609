"""Ray Serve reward service: VideoReward or the oracle behind a batched deployment (see README.md).

Names are exported lazily so that ``import serve`` stays light; Ray loads only when a function that
needs it runs.
"""

_EXPORTS = {
    "RewardServiceConfig": "config",
    "RewardDeployment": "deployment",
    "RewardClient": "client",
    "build_app": "deployment",
    "deploy": "deployment",
    "shutdown": "deployment",
    "app": "deployment",
    "RewardBackend": "backends",
    "TransformersBackend": "backends",
    "OracleBackend": "backends",
    "VLLMBackend": "backends",
    "make_backend": "backends",
    "RewardServiceError": "backends",
    "RewardRequestError": "backends",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'serve' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
