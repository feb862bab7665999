"""Chat providers: the async base class and the h2oGPT client."""

from __future__ import annotations

from h2ochat.protocol.errors import DeleteFailedWarning
from h2ochat.providers.base import AsyncGeneratorProvider, AsyncResult, CallInfo
from h2ochat.providers.h2o import H2o
from h2ochat.providers.options import Timeout
from h2ochat.providers.session import H2oSession

__all__ = ["AsyncGeneratorProvider", "AsyncResult", "CallInfo", "DeleteFailedWarning", "H2o", "H2oSession", "Timeout"]
