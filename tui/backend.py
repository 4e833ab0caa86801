"""The console's one way to the daemon: typed calls over the control API.

Every method blocks (a Unix socket round trip), so screens call them from thread
workers only. Tests inject a fake client with the same `call` contract.
"""

from __future__ import annotations

from typing import Any, Protocol

from appliance.control import ControlError

__all__ = ["Backend", "Client", "ControlError"]


class Client(Protocol):
    def call(self, command: str, **args: Any) -> Any: ...


class Backend:
    def __init__(self, client: Client):
        self.client = client

    @property
    def where(self) -> str:
        """Where the daemon is expected (shown when it cannot be reached)."""
        return str(getattr(self.client, "path", "the control socket"))

    def status(self) -> dict[str, Any]:
        return self.client.call("status")

    def knocks(self) -> list[dict[str, Any]]:
        return self.client.call("knocks")["knock_lists"]

    def rules(self) -> str:
        return self.client.call("rules")["rules"]

    def config(self) -> dict[str, Any] | None:
        return self.client.call("config")["config"]

    def check(self, yaml_text: str) -> dict[str, Any]:
        return self.client.call("check", yaml=yaml_text)

    def apply(self, yaml_text: str, confirm_within: float | None) -> dict[str, Any]:
        return self.client.call("apply", yaml=yaml_text, confirm_within=confirm_within)

    def confirm(self) -> dict[str, Any]:
        return self.client.call("confirm")

    def rollback(self) -> dict[str, Any]:
        return self.client.call("rollback")

    def whitelist(self) -> list[str]:
        return self.client.call("whitelist_list")["whitelist"]

    def whitelist_add(self, entries: list[str]) -> list[str]:
        return self.client.call("whitelist_add", entries=entries)["whitelist"]

    def whitelist_remove(self, entries: list[str]) -> list[str]:
        return self.client.call("whitelist_remove", entries=entries)["whitelist"]

    def trusted(self) -> dict[str, Any]:
        """Proven senders: {"trusted": [{address, family, time_left}], "enabled", "lifetime"}."""
        return self.client.call("trusted_list")

    def trusted_add(self, entries: list[str]) -> dict[str, Any]:
        return self.client.call("trusted_add", entries=entries)

    def trusted_remove(self, entries: list[str]) -> dict[str, Any]:
        return self.client.call("trusted_remove", entries=entries)
