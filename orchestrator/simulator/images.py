"""Images as the simulated IMS keeps them, and the checks of a copy request on its body and image.

Refusals are :class:`SimError` with the code the IMS documentation gives (the table at the top
of orchestrator/simulator/world.py).
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Mapping
from typing import Any

from orchestrator.core.units import GIB

CAP_MESSAGE = (
    "The number of tasks exceeds the flow control limit. Wait for a while and then try again."
)
_NAME_RE = re.compile(r"^[0-9A-Za-z\u4e00-\u9fa5._\- ]+$")
_TRUE = frozenset({"1", "true", "True", "TRUE"})


class SimError(Exception):
    """A refusal as the cloud would answer it: HTTP status, IMS code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def bad(code: str, message: str) -> SimError:
    """A 400 refusal with ``code``."""
    return SimError(400, code, message)


def is_encrypted(image: Mapping[str, Any]) -> bool:
    flags = (image.get("__system_encrypted"), image.get("__system__encrypted"))
    return bool(image.get("__system__cmkid")) or any(str(f) in _TRUE for f in flags if f)


def is_iso(image: Mapping[str, Any]) -> bool:
    return image.get("disk_format") == "iso" or image.get("virtual_env_type") == "IsoImage"


def size_bytes(image: Mapping[str, Any]) -> int:
    try:
        return int(str(image.get("__image_size") or 0))
    except ValueError:
        return 0


def min_disk(image: Mapping[str, Any]) -> int:
    try:
        return int(image.get("min_disk") or 0)
    except (TypeError, ValueError):
        return 0


def check_body_fields(body: Mapping[str, Any]) -> tuple[str, str]:
    """The copy body's (name, description) once present, typed and well-formed."""
    if not isinstance(body, Mapping):
        raise bad("IMG.0001", "The request message format is invalid: not a JSON object.")
    for key in ("name", "region", "project_name", "agency_name"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise bad("IMG.0001", f"The request message format is invalid: {key} is mandatory.")
    for key in ("description", "vault_id"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise bad("IMG.0001", f"The request message format is invalid: {key} is no string.")
    name: str = body["name"]
    if len(name) > 128:
        raise bad("IMG.0002", "The image name contains more than 128 characters.")
    if not _NAME_RE.match(name) or name != name.strip():
        raise bad("IMG.0003", "The image name format is invalid.")
    description: str = body.get("description") or ""
    if len(description) > 1024:
        raise bad("IMG.0004", "The description contains more than 1024 characters.")
    if any(ch in description for ch in "<>\r\n"):
        raise bad("IMG.0001", "The description must not contain <, > or a line break.")
    return name, description


def random_hex32(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def random_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def new_image(rng: random.Random, owner: str, attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A private image of project ``owner``: ``attrs`` over API-shaped defaults, and every
    ``__x`` value a string, as the API returns them."""
    size = size_bytes(attrs) or 10 * GIB
    image: dict[str, Any] = {
        "id": random_uuid(rng),
        "name": "image",
        "status": "active",
        "__imagetype": "private",
        "visibility": "private",
        "protected": False,
        "disk_format": "zvhd2",
        "container_format": "bare",
        "virtual_env_type": "FusionCompute",
        "min_disk": max(40, -(-size // GIB)),
        "min_ram": 0,
        "__image_size": str(size),
        "__os_type": "Linux",
        "__platform": "Ubuntu",
        "__os_bit": "64",
        "__isregistered": "true",
        "__image_source_type": "uds",
        "__whole_image": "false",
        "__system__cmkid": "",
        "__description": "",
        "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "tags": [],
    }
    image.update(attrs)
    image["owner"] = owner
    for key, value in list(image.items()):
        if key.startswith("__") and not isinstance(value, str):
            image[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return image


def check_image(
    image: Mapping[str, Any], region: str, limit_gib: int, vault_id: str | None
) -> None:
    """Refuse the copy of ``image`` from ``region`` (size limit ``limit_gib``) as IMS would."""
    if image.get("status") != "active":
        raise bad("IMG.0046", "The image is unavailable.")
    if is_encrypted(image):
        raise bad("IMG.0197", "Encrypted images cannot be replicated across regions.")
    if is_iso(image):
        raise bad("IMG.0167", "This operation cannot be performed for ISO images.")
    if min_disk(image) > limit_gib or size_bytes(image) > limit_gib * GIB:
        raise bad(
            "IMG.0001",
            f"Images over {limit_gib} GiB cannot be replicated across regions from {region}.",
        )
    if str(image.get("__whole_image")).lower() == "true" and not vault_id:
        raise bad("IMG.0130", "The full-ECS image cannot be exported or replicated.")
