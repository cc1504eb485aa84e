"""The node side: what runs on a machine that serves models for an inferq server.

``inferq node`` pulls jobs over HTTP (the node protocol, docs/nodes.md) and runs them
with a Python :class:`Handler` or with engines of a models file. A handler imports
this package only::

    from inferq.worker import Context, FileOutput, Handler, JobFailed
"""

from __future__ import annotations

from inferq.worker.handler import Context, FileOutput, Handler, JobFailed

__all__ = ["Context", "FileOutput", "Handler", "JobFailed"]
