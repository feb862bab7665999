"""Checks of the ``[server]`` settings that msgspec's types cannot say: addresses, header names, the base path."""

from __future__ import annotations

import ipaddress
import re

from h2ochat.server.config.models import ConfigError

__all__ = ["check_base_path", "check_identity_headers", "check_oidc", "check_proxies"]


_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")


def check_identity_headers(user: str | None, name: str | None, proxies: list[str]) -> None:
    """The identity headers are header names, and believed from named proxies only: with no proxy, or
    with "*", anyone could send the header and be anyone."""
    for key, header in (("trusted_user_header", user), ("trusted_name_header", name)):
        if header is not None and not _HEADER_NAME.fullmatch(header):
            raise ConfigError(f"{key}: {header!r} is not an HTTP header name (e.g. X-Forwarded-Email)")
    if name is not None and user is None:
        raise ConfigError("trusted_name_header is set without trusted_user_header: set both, or neither")
    if user is not None and (not proxies or "*" in proxies):
        raise ConfigError(
            f'trusted_user_header {user!r} needs forwarded_allow_ips naming the proxy that sets it (not "*"): '
            "from any other address the header is whatever a client wrote"
        )


def check_proxies(entries: list[str], key: str = "forwarded_allow_ips") -> None:
    """Each ``forwarded_allow_ips`` entry is "*", an IP address or a network; a host name cannot be
    matched against a request's address (and used to fail every request with a 500)."""
    for entry in entries:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                f"{key}: {entry!r} is not an IP address or network; name each by "
                'its address (10.0.0.5, ::1) or network (10.0.0.0/8), or "*" for any'
            ) from None


_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")


def check_base_path(path: str) -> str:
    """``base_path`` as routes are matched: ``""`` for none, else ``/a/b`` (no trailing slash).

    Only plain segments are accepted: a query, a fragment, percent-escapes or ``..`` in a prefix
    would be matched against decoded, normalised request paths and never (or wrongly) match.
    """
    if path in ("", "/"):
        return ""
    if not path.startswith("/"):
        raise ConfigError(f"base_path {path!r} must start with '/' (for example /chat); '/' or '' means none")
    trimmed = path.rstrip("/")
    for segment in trimmed[1:].split("/"):
        if segment in (".", ".."):
            raise ConfigError(f"base_path {path!r} must not contain '.' or '..' segments; write the prefix itself")
        if not _SEGMENT.fullmatch(segment):
            raise ConfigError(
                f"base_path {path!r}: each part between slashes must be letters, digits, '.', '_', '~' or '-' "
                "(no empty parts, query, fragment, spaces or %-escapes), for example /chat or /apps/chat"
            )
    return trimmed


def check_oidc(issuer: str | None, client_id: str | None, messages_before_login: int | None) -> None:
    """Sign-in needs both the provider and this server's client there; an issuer is an https URL (http
    only on loopback, for a provider run beside the server)."""
    if (issuer is None) != (client_id is None):
        raise ConfigError("oidc_issuer and oidc_client_id go together: set both to turn sign-in on, or neither")
    if messages_before_login is not None and issuer is None:
        raise ConfigError("messages_before_login needs sign-in: set oidc_issuer and oidc_client_id too")
    if issuer is not None:
        local = re.match(r"http://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?(/|$)", issuer)
        if not (issuer.startswith("https://") or local):
            raise ConfigError(f"oidc_issuer {issuer!r} must be an https:// URL (http:// only on this machine)")
