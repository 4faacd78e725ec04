"""The service reads params and environment in one place (service/settings.py)."""

from __future__ import annotations

from tests.conftest import REPO


def test_environment_overrides_and_secrets_come_from_one_place():
    from service.settings import Settings

    params_file = str(REPO / "params.yaml")
    plain = Settings.from_environment({"VOICELOCK_PARAMS": params_file})
    assert plain.model_tag == plain.params.service.model_tag
    assert plain.database_url == plain.params.service.database_url
    assert plain.api_key is None and plain.admin_key is None

    service = plain.params.service
    env = {"VOICELOCK_PARAMS": params_file, "VOICELOCK_MODEL_TAG": "voicelock:abc",
           "VOICELOCK_DATABASE_URL": "sqlite:////tmp/x.db", service.api_key_env: "k" * 20,
           service.admin_key_env: "a" * 20}
    custom = Settings.from_environment(env)
    assert (custom.model_tag, custom.database_url) == ("voicelock:abc", "sqlite:////tmp/x.db")
    assert (custom.api_key, custom.admin_key) == ("k" * 20, "a" * 20)
    # An empty variable is no key at all (an empty X-API-Key must never match it).
    empty = Settings.from_environment({**env, service.api_key_env: "", service.admin_key_env: ""})
    assert empty.api_key is None and empty.admin_key is None
