import hashlib

import pytest

from inferstack.auth import (
    MISSING_KEY_MESSAGE,
    SERVICE,
    ApiKeyEntry,
    KeyFileWatch,
    KeyRefused,
    KeyRing,
    Tenant,
    bearer_token,
    hash_key,
    identify,
    load_key_file,
    mask_key,
    new_key,
    wrong_key_message,
)
from inferstack.errors import ConfigError


def test_three_ways_to_name_a_key_each_kept_as_its_hash(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text(f"""
- key: sk-team-a-0123456789
  tenant: team-a
  priority: 2
  requests_per_minute: 60
- key_sha256: {hashlib.sha256(b"sk-team-b-0123456789").hexdigest()}
  tenant: team-b
- key_env: TEAM_C_KEY
  tenant: team-c
  tokens_per_minute: 1000
""")
    ring = load_key_file(path, environ={"TEAM_C_KEY": "sk-team-c-0123456789"})
    a = ring.lookup("sk-team-a-0123456789")
    assert a is not None and (a.name, a.priority, a.requests_per_minute) == ("team-a", 2, 60)
    assert ring.lookup("sk-team-b-0123456789").name == "team-b"
    assert ring.lookup("sk-team-c-0123456789").tokens_per_minute == 1000
    assert ring.lookup("sk-team-a-012345678") is None and ring.lookup("") is None
    assert [t.name for t in ring.tenants] == ["team-a", "team-b", "team-c"]
    assert "sk-team-a" not in repr(vars(ring))  # only hashes are held


def test_a_mapping_with_keys_is_read_as_the_list(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n  - {key: sk-0123456789, tenant: t}\n")
    assert len(load_key_file(path)) == 1


@pytest.mark.parametrize(("text", "message"), [
    ("- {tenant: t}", "give exactly one of key, key_sha256, key_env (got none)"),
    ("- {key: sk-0123456789, key_env: X, tenant: t}", "got key, key_env"),
    ("- {key_sha256: ABC, tenant: t}", "64 lowercase hex digits"),
    ("- {key: sk-0123456789, tenant: 'a b'}", "tenant 'a b'"),
    ("- {key: sk-0123456789, tenant: t, requests_per_minute: 0}", "requests_per_minute"),
    ("- {key: sk-0123456789, tenant: t, colour: red}", "colour"),
    ("- {key: sk-0123456789, tenant: a}\n- {key: sk-0123456789, tenant: b}", "repeats the key of tenant a"),
    ("- {key_env: NOT_SET_ANYWHERE, tenant: t}", "key_env NOT_SET_ANYWHERE (tenant t) is not set"),
    ("[]", "keys"),
    ("just text", "must be a list of {key, tenant} entries"),
    ("- {key: [unclosed", "not valid YAML"),
])
def test_a_bad_key_file_names_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "keys.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="keys.yaml") as err:
        load_key_file(path, environ={})
    assert message in str(err.value)


def test_a_missing_key_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the API key file"):
        load_key_file(tmp_path / "none.yaml")


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer sk-abc", "sk-abc"), ("bearer   sk-abc  ", "sk-abc"), ("BEARER sk-abc", "sk-abc"),
    ("Basic dXNlcjpwYXNz", None), ("Bearer", None), ("Bearer ", None), ("sk-abc", None), ("", None),
])
def test_bearer_tokens_are_read_as_rfc_6750_writes_them(header, token):
    assert bearer_token(header) == token


def test_refused_keys_are_named_by_their_last_four_characters_only():
    key = new_key()
    assert key.startswith("sk-inferstack-") and len(key) > 40 and new_key() != key
    assert mask_key(key) == "..." + key[-4:] and key[:-4] not in wrong_key_message(key)
    assert mask_key("short") == "(too short to be a key)"
    assert hash_key("x") == hashlib.sha256(b"x").hexdigest()


def test_the_file_is_read_again_when_it_changes_and_a_broken_one_keeps_the_last_good_keys(tmp_path):
    path = tmp_path / "keys.yaml"
    path.write_text("- {key: sk-first-0123456789, tenant: a}\n")
    watch = KeyFileWatch(path, check_every_s=1.0)
    assert watch.current(now=0.0).lookup("sk-first-0123456789").name == "a"
    path.write_text("- {key: sk-second-0123456789, tenant: b, requests_per_minute: 5}\n")
    # not looked at again within check_every_s of the last look
    assert watch.current(now=watch._checked + 0.5).lookup("sk-first-0123456789") is not None
    ring = watch.current(now=watch._checked + 1.0)
    assert ring.lookup("sk-first-0123456789") is None and ring.lookup("sk-second-0123456789").requests_per_minute == 5
    path.write_text("- {tenant: broken, extra: entry}\n")
    ring = watch.current(now=watch._checked + 1.0)
    assert ring.lookup("sk-second-0123456789") is not None and "extra" in (watch.last_error or "")


def test_an_entry_validates_alone_as_keys_add_checks_it():
    assert ApiKeyEntry(key_sha256="a" * 64, tenant="t-1.x_y").tenant_of().name == "t-1.x_y"


def test_identify_names_the_tenant_the_service_or_why_the_key_is_refused():
    ring = KeyRing({hash_key("sk-team-a-0123456789"): Tenant("team-a", priority=2)})
    service = hash_key("sk-service-0123456789")
    assert identify(ring, "Bearer sk-team-a-0123456789", service) == Tenant("team-a", priority=2)
    assert identify(ring, "bearer  sk-service-0123456789", service) is SERVICE
    assert identify(ring, "Bearer sk-service-0123456789") == KeyRefused(wrong_key_message("sk-service-0123456789"))
    assert identify(ring, "", service) == KeyRefused(MISSING_KEY_MESSAGE)
    assert identify(ring, "Basic c2stdGVhbS1h", service) == KeyRefused(MISSING_KEY_MESSAGE)
