"""HTTP side: routers, request bodies, access control, files and the editor's user data."""
