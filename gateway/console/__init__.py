"""The web console at ``/console``: policies, playground, eval runs and live stats for platform teams."""

from gateway.console.pages import Console

__all__ = ["Console"]
