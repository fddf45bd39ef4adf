"""modelgen-watcher: a file-triggered model sidecar.

Kept import-light on purpose: the embedded reference model runs as
``python -m modelgen_watcher.reference_model`` once per request, and importing this
package must not drag pydantic or watchdog into that process.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
