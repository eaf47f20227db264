"""The demo domain: a legacy catalog with one product per channel (blue) and a new
catalog with one product per SKU (green).

``CATALOG`` is the whole of it as the engine sees it (a ``schemas.domain.Domain``):
the faces pass it into the services; the engine imports nothing from this package.
To migrate another domain, build another Domain the same way and name it in
``Settings.domain`` (``BLUEGREEN_DOMAIN=package.module:NAME``).
"""

from schemas.catalog.ddl import create_green
from schemas.catalog.green_apply import APPLY
from schemas.catalog.reverse_spec import REVERSE
from schemas.catalog.source import SOURCE
from schemas.catalog.staged import STAGE, stage_row
from schemas.catalog.superseded import listing_keys, newer_in_green
from schemas.catalog.transform import transform
from schemas.catalog.verify_spec import VERIFY
from schemas.domain import Domain, Supersession

CATALOG = Domain(
    ref="schemas.catalog:CATALOG",
    source=SOURCE,
    transform=transform,
    stage_row=stage_row,
    stage=STAGE,
    create_green=create_green,
    apply=APPLY,
    verify=VERIFY,
    superseded=Supersession(listing_keys, newer_in_green),
    reverse=REVERSE,
)

__all__ = ["CATALOG", "SOURCE"]
