"""Settings: env parsing, secrets from files, errors instead of silent defaults, no secret leaks."""

import pytest

from streams.errors import ConfigError
from streams.settings import Settings, get_settings, to_env


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for k in list(os.environ):
        if k.startswith("UEBA_"):
            monkeypatch.delenv(k)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_nested_env_and_confluent_config(monkeypatch, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    monkeypatch.setenv("UEBA_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9094")
    monkeypatch.setenv("UEBA_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("UEBA_KAFKA__SASL_USERNAME", "ueba")
    monkeypatch.setenv("UEBA_KAFKA__SASL_PASSWORD_FILE", str(pw))
    monkeypatch.setenv("UEBA_KAFKA__SSL_CAFILE", "/tmp/ca.pem")
    monkeypatch.setenv("UEBA_TOPICS__PARTITIONS", "8")
    s = get_settings()
    conf = s.kafka.confluent_config()
    assert conf["sasl.password"] == "s3cret"
    assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["ssl.ca.location"] == "/tmp/ca.pem"
    assert s.topics.partitions == 8
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.model_dump())


def test_malformed_values_are_errors_naming_the_field(monkeypatch):
    monkeypatch.setenv("UEBA_TOPICS__PARTITIONS", "many")
    with pytest.raises(ConfigError, match="topics.partitions"):
        get_settings()


def test_sasl_without_credentials_is_refused(monkeypatch):
    monkeypatch.setenv("UEBA_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="SASL needs"):
        get_settings()


def test_unreadable_secret_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("UEBA_SEARCH__API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="api_key_file"):
        get_settings()


def test_api_key_and_basic_auth_are_exclusive(monkeypatch):
    monkeypatch.setenv("UEBA_SEARCH__API_KEY", "k")
    monkeypatch.setenv("UEBA_SEARCH__USERNAME", "elastic")
    monkeypatch.setenv("UEBA_SEARCH__PASSWORD", "p")
    with pytest.raises(ConfigError, match="either"):
        get_settings()


def test_unknown_settings_are_refused(monkeypatch):
    monkeypatch.setenv("UEBA_KAFKA__BOOTSTRAP_SERVER", "typo:9092")
    with pytest.raises(ConfigError):
        get_settings()


def test_to_env_round_trips(monkeypatch):
    s = Settings(kafka={"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p"}, topics={"partitions": 6})
    for k, v in to_env(s).items():
        monkeypatch.setenv(k, v)
    assert Settings() == s
