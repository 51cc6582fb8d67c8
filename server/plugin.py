"""The server's plugin: adds the ``nodeloom serve`` command through the runtime's CLI hooks."""
