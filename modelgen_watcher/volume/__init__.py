"""The contract on disk, shared by every reader and writer of the watch dir.

Names, documents and their schemas, safe file primitives, bounded decoding, the retry
rules a status implies, and the health a heartbeat says. The watcher and the server
side both import from here and from nowhere in each other.
"""
