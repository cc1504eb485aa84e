"""The one error the document layer raises."""

from __future__ import annotations


class DocumentError(Exception):
    """A document, or the settings for processing it, cannot be used.

    The message names the file or the setting and the problem, in words fit to show the
    client: the API maps it to a 4xx at submission and to a failed file while running.
    """
