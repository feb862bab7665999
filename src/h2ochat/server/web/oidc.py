"""An OpenID Connect provider, as this server's sign-in uses it (README "Sign-in with OpenID Connect").

Discovery (``<issuer>/.well-known/openid-configuration``, whose ``issuer`` must be the configured one),
the authorization code exchanged with the PKCE verifier, and the ID token checked by ``authlib``: its
signature against the provider's keys (``jwks_uri``), its issuer, audience, expiry and nonce. The
discovery document and the keys are kept for an hour; the client's secret comes from the environment.
``joserfc`` (authlib's JOSE library, which authlib.jose now points to) reads the token.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import urllib.parse
from typing import Any

import aiohttp
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

__all__ = ["SECRET_ENV", "Provider", "SignInRefused"]

SECRET_ENV = "H2OCHAT_OIDC_CLIENT_SECRET"
_KEEP = 3600.0  # seconds the discovery document and the keys are kept
_LEEWAY = 60  # seconds of clock difference allowed on the ID token's times
_ALGORITHMS = [
    "RS256",
    "RS384",
    "RS512",
    "ES256",
    "ES384",
    "PS256",
    "EdDSA",
]  # signed with a public key: never HS* or none


class SignInRefused(Exception):
    """The provider or its answer cannot be trusted for this sign-in; the message says why."""


class Provider:
    def __init__(self, issuer: str, client_id: str, scopes: str) -> None:
        self.issuer = issuer.rstrip("/")
        self.client_id = client_id
        self.scopes = scopes
        self.secret = os.environ.get(SECRET_ENV, "")
        self._http: aiohttp.ClientSession | None = None
        self._found: tuple[float, dict[str, Any], Any] | None = None  # (when, metadata, keys)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def authorize_url(self, redirect_uri: str, state: str, nonce: str, verifier: str) -> str:
        metadata, _ = await self._discover()
        query = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": self.scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        }
        return f"{metadata['authorization_endpoint']}?{urllib.parse.urlencode(query)}"

    async def sign_in(self, code: str, redirect_uri: str, verifier: str, nonce: str) -> dict[str, Any]:
        """The ID token's claims for an authorization code, every check passed; :class:`SignInRefused` else."""
        metadata, keys = await self._discover()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        headers = {}
        if self.secret:  # client_secret_basic: id and secret form-encoded, then base64 (RFC 6749 2.3.1)
            pair = f"{urllib.parse.quote(self.client_id, safe='')}:{urllib.parse.quote(self.secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:  # a public client: its id in the form, the PKCE verifier its only proof
            form["client_id"] = self.client_id
        try:
            async with self._session().post(metadata["token_endpoint"], data=form, headers=headers) as response:
                status, answer = response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            raise SignInRefused(f"the provider's token endpoint gave no usable answer: {exc!r}") from None
        if status != 200 or not isinstance(answer, dict) or "id_token" not in answer:
            why = answer.get("error", status) if isinstance(answer, dict) else status
            raise SignInRefused(f"the provider refused the code: {str(why)[:200]}")
        wanted = jwt.JWTClaimsRegistry(
            leeway=_LEEWAY,
            iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.client_id},
            exp={"essential": True},
            nonce={"essential": True, "value": nonce},
        )
        try:
            token = jwt.decode(answer["id_token"], keys, algorithms=_ALGORITHMS)  # the signature, first
            wanted.validate(token.claims)
        except (JoseError, ValueError) as exc:
            raise SignInRefused(f"the provider's ID token was refused: {exc!r}") from None
        return dict(token.claims)

    async def _discover(self) -> tuple[dict[str, Any], Any]:
        if self._found is not None and time.monotonic() - self._found[0] < _KEEP:
            return self._found[1], self._found[2]
        try:
            metadata = await self._get(f"{self.issuer}/.well-known/openid-configuration")
            if str(metadata.get("issuer", "")).rstrip("/") != self.issuer:
                raise SignInRefused(f"the provider names itself {metadata.get('issuer')!r}, not {self.issuer!r}")
            keys = KeySet.import_key_set(await self._get(metadata["jwks_uri"]))  # type: ignore[arg-type]
        except (aiohttp.ClientError, KeyError, ValueError, asyncio.TimeoutError) as exc:
            raise SignInRefused(f"the provider at {self.issuer} could not be read: {exc!r}") from None
        self._found = (time.monotonic(), metadata, keys)
        return metadata, keys

    async def _get(self, url: str) -> dict[str, Any]:
        async with self._session().get(url) as response:
            response.raise_for_status()
            found: dict[str, Any] = await response.json(content_type=None)
            return found

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        return self._http
