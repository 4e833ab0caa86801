"""Property-based fuzzing of the console's pure form models (tui/form.py and
tui/management_form.py): every field, arbitrary text. The property: a valid config (that
reads back from its own YAML and compiles), or errors grouped under a field of the form,
every one a non-empty message. Never an exception. Profiles: tests/unit/conftest.py.
"""

from __future__ import annotations

from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from appliance import config as cfg
from tui import form
from tui import management_form as mf

from .test_fuzz_config import address_texts, check_config, network_texts

BASE = cfg.default().to_dict()
GOOD = form.texts_from(BASE)
MANAGED = {
    "management": mf.ON,
    "address": "192.0.2.5/24, 2001:db8::5/64",
    "gateway": "192.0.2.1",
    "allow": "198.51.100.0/24 2001:db8:1::/48",
    "metrics": mf.YES,
    "ssh_keys": "",
}
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO2BHj0hKrbcYPEiC07tXbVNobMZk1yW5+HaShEkiQAx admin@example.test"

# Text as typed or pasted: anything, plus the shapes a field expects, spelled oddly.
TEXT = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="ascii"), max_size=60),
    address_texts(),
    network_texts(),
    st.lists(st.one_of(address_texts(), network_texts()), max_size=4).map(", ".join),
    st.integers(-(10**6), 10**6).map(str),
    st.integers(4300, 5000).map(lambda n: "9" * n),
    st.sampled_from(["١٢", "１２", "1_000", "0x10", "+5", " 25 ", "\x00", "%", "eth+", "br%d", *cfg.MODES]),
)


def check_verdict(verdict: form.Verdict, fields: tuple[str, ...]) -> None:
    if verdict.valid:
        assert not verdict.errors
        check_config(verdict.config)
        return
    assert verdict.errors, "a refused form says why"
    for where, messages in verdict.errors.items():
        assert where in fields or where == form.GENERAL, where
        assert messages and all(isinstance(m, str) and m.strip() for m in messages), messages


@given(st.sampled_from(form.EDIT_FIELDS), TEXT)
def test_edit_form_one_field(name: str, text: str) -> None:
    check_verdict(form.judge(BASE, {**GOOD, name: text}, form.EDIT_FIELDS), form.EDIT_FIELDS)


@given(st.fixed_dictionaries({name: TEXT for name in form.SETUP_FIELDS}))
def test_setup_form_every_field(texts: dict[str, str]) -> None:
    check_verdict(form.judge(form.setup_base(), texts, form.SETUP_FIELDS), form.SETUP_FIELDS)


@given(st.sampled_from(form.SETUP_FIELDS), TEXT)
@example("outside", "eth+")
@example("inside", "br%d")
def test_setup_form_one_field(name: str, text: str) -> None:
    texts = {**GOOD, "outside": "eth0", "inside": "eth1", name: text}
    check_verdict(form.judge(BASE, texts, form.SETUP_FIELDS), form.SETUP_FIELDS)


@given(TEXT)
def test_whitelist_entries(text: str) -> None:
    entries, errors = form.parse_entries(text)
    assert all(isinstance(m, str) and m for m in errors)
    for entry in entries:
        assert cfg.parse_network(entry)  # what the form normalized the engine takes as it is


@given(TEXT, st.sampled_from([(4,), (6,), (4, 6)]))
@example("2001:db8::1%eth0", (4, 6))
@example("::ffff:192.0.2.1", (4, 6))
def test_trusted_entry(text: str, allowed: tuple[int, ...]) -> None:
    address, errors = form.parse_trusted(text, allowed)
    assert (address is None) == bool(errors) or (address is None and not form.split(text))
    if address is not None:
        assert str(cfg.proven_sender(address, allowed)) == address


@given(st.sampled_from(mf.FIELDS), st.one_of(TEXT, st.sampled_from([mf.ON, mf.OFF, mf.YES, mf.NO])))
@example("address", "192.0.2.5/0")
@example("address", "2001:db8::5%eth0/64")
@example("gateway", "fe80::1%br0")
def test_management_form_one_field(name: str, text: str) -> None:
    check_verdict(mf.judge(BASE, {**MANAGED, name: text}), mf.FIELDS)


@given(st.lists(st.one_of(TEXT, st.just(SSH_KEY), st.just(SSH_KEY[:40])), max_size=5).map("\n".join))
def test_management_ssh_keys(text: str) -> None:
    check_verdict(mf.judge(BASE, {**MANAGED, "ssh_keys": text}), mf.FIELDS)


@given(st.fixed_dictionaries({name: TEXT for name in mf.FIELDS}))
def test_management_form_every_field(texts: dict[str, Any]) -> None:
    check_verdict(mf.judge(BASE, texts), mf.FIELDS)


@given(st.text(max_size=40), st.text(max_size=80))
def test_error_grouping(field: str, message: str) -> None:
    """Errors the daemon sends (any field name) land under a form field or general."""
    errors = [{"field": field, "message": message}]
    for fields in (form.EDIT_FIELDS, form.SETUP_FIELDS, mf.FIELDS):
        grouped = form.group_errors(errors, fields)
        assert set(grouped) <= {*fields, form.GENERAL}
    assert set(mf.group_errors(errors, {"ssh_keys": "a\nb"})) <= {*mf.FIELDS, form.GENERAL}
