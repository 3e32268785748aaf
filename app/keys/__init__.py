"""Virtual keys and teams: records (``model``), their table store (``store``) and the gateway's
cache of them (``directory``)."""

from app.keys.directory import CHANNEL, Entry, KeyDirectory, KeysUnavailable
from app.keys.model import (
    KeyCreate,
    KeyRecord,
    KeyUpdate,
    TeamCreate,
    TeamRecord,
    TeamUpdate,
    hash_key,
    new_key,
)
from app.keys.store import KeyStore

__all__ = [
    "CHANNEL", "Entry", "KeyCreate", "KeyDirectory", "KeyRecord", "KeyStore", "KeyUpdate",
    "KeysUnavailable", "TeamCreate", "TeamRecord", "TeamUpdate", "hash_key", "new_key",
]
