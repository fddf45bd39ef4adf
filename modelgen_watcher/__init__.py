"""modelgen-watcher: a file-triggered model sidecar.

Kept import-light on purpose: the embedded reference model runs as
``python -m modelgen_watcher.reference_model`` once per request, and importing this
package must not drag pydantic or watchdog into that process.
"""

__version__ = "0.1.0"
"""The one place the version is written: pyproject reads it, the Makefile's image tag reads it,
and a test holds the Kubernetes manifests' image tags to it."""
__all__ = ["__version__"]
