"""The `vmem` command line, a thin shell over the service and the client.

May import: everything.
"""

from vmem.cli.main import main

__all__ = ["main"]
