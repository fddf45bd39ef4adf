"""The server side: the client library, the reference HTTP server and upstream's drop-in."""
