"""The sidecar: watches the volume and turns each input into a published result or error status."""
