"""modelgen-watcher: a file-triggered model sidecar.

Kept import-light on purpose: the embedded reference model runs as
``python -m modelgen_watcher.reference_model`` once per request, and importing this
package must not drag pydantic or watchdog into that process.
"""

__version__ = "0.2.0"
"""The one place the version is written: pyproject reads it, the Makefile's image tag reads it,
and a test holds the Kubernetes manifests' image tags to it."""
__all__ = ["Client", "InvalidRoute", "ModelError", "Submission", "WaitTimeout", "__version__"]

_CLIENT_NAMES = frozenset({"Client", "InvalidRoute", "ModelError", "Submission", "WaitTimeout"})


def __getattr__(name: str) -> object:
    """The client library at the top (``from modelgen_watcher import Client``), imported only when asked for."""
    if name in _CLIENT_NAMES:
        from .server import client

        return getattr(client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
