"""A person's API keys over HTTP (README "People: sign-in for teams"): list, make, revoke.

Only a person the identity proxy names manages keys here: an anonymous session has no person to give
one to, and a request that came with a key may use it but not make more (a leaked key must not be able
to outlive its revocation). A new key is in the answer once; the database keeps its hash.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from h2ochat.server.edge.http import API_KEY_ID, PERSON, STORE, ApiError, decode_body, json_response
from h2ochat.server.storage.devices import digest
from h2ochat.server.storage.people import KEY_NAME_RULE, ApiKey, Person, key_name, new_api_key

__all__ = ["routes"]

routes = web.RouteTableDef()


class NewKey(msgspec.Struct, forbid_unknown_fields=True):
    name: str


def _person(request: web.Request) -> Person:
    person: Person | None = request.get(PERSON)
    if person is None:
        raise ApiError(
            403,
            "API keys belong to people: this server names people through its identity proxy "
            "(trusted_user_header), and this request came from none",
        )
    if API_KEY_ID in request:
        raise ApiError(403, "A request made with an API key cannot manage keys: use the page, or h2ochat keys")
    return person


def _listed(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "createdAt": key.created_at,
        "lastUsedAt": key.last_used_at,
        "revokedAt": key.revoked_at,
    }


@routes.get("/api/keys")
async def list_keys(request: web.Request) -> web.StreamResponse:
    person = _person(request)
    return json_response([_listed(key) for key in await request.app[STORE].api_keys(person.login)])


@routes.post("/api/keys")
async def make_key(request: web.Request) -> web.StreamResponse:
    person = _person(request)
    name = key_name(decode_body(await request.read(), NewKey).name)
    if name is None:
        raise ApiError(400, KEY_NAME_RULE)
    secret = new_api_key()
    key = await request.app[STORE].create_api_key(person.login, name, digest(secret))
    return json_response({**_listed(key), "key": secret})  # the only time it is shown


@routes.delete("/api/keys/{id}")
async def revoke_key(request: web.Request) -> web.StreamResponse:
    person = _person(request)
    if not await request.app[STORE].revoke_api_key(person.login, request.match_info["id"][:64]):
        raise ApiError(404, "You have no live API key by that id (revoked already, or never yours)")
    return json_response({"revoked": True})
