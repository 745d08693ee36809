"""Kafka over TLS + SASL/SCRAM-SHA-512, through our own settings, on the real
broker's SASL_SSL listener (deploy/kafka.sh generates its CA and SCRAM user)."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from streams.kafka import DeadLetter, ensure_topics
from streams.settings import SecurityProtocol, Settings

from .conftest import ROOT, consume, produce, worker

TLS = ROOT / "deploy" / ".work" / "kafka" / "tls"
SASL_SSL = "127.0.0.1:9094"


@pytest.fixture
def secure(settings: Settings) -> Settings:
    if not (TLS / "ca.pem").exists():
        pytest.fail("deploy/kafka.sh did not create the SASL_SSL listener's CA (deploy/.work/kafka/tls/ca.pem)")
    kafka = settings.kafka.model_copy(
        update={
            "bootstrap_servers": SASL_SSL,
            "security_protocol": SecurityProtocol.SASL_SSL,
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "ueba",
            "sasl_password": None,
            "sasl_password_file": TLS / "scram-password",
            "ssl_cafile": TLS / "ca.pem",
        }
    )
    # the *_FILE twin is read by the model validator
    return settings.model_copy(update={"kafka": type(kafka).model_validate(kafka.model_dump())})


def test_topics_and_worker_over_tls_and_scram(secure: Settings, tmp_path: Path):
    assert secure.kafka.sasl_password is not None
    created = ensure_topics(secure)
    assert set(created.values()) == {"created"}
    produce(secure, secure.topics.access, [(b"k", b"not json over TLS")])
    with worker(secure, tmp_path) as w:
        dead = consume(secure, secure.topics.deadletter, 1, timeout=90)
        assert w.alive(), w.log()[-2000:]
    assert [DeadLetter.from_headers(m.value(), m.key(), m.headers()).reason for m in dead] == ["not_json"]
    # the password never reaches the worker's log
    assert secure.kafka.sasl_password.get_secret_value() not in w.log()


def test_wrong_password_and_untrusted_ca_are_refused(secure: Settings):
    bad = secure.kafka.model_copy(update={"sasl_password": type(secure.kafka.sasl_password)("wrong-password")})
    with pytest.raises(KafkaException):
        AdminClient({**bad.confluent_config(), "log_level": 0}).list_topics(timeout=8)
    no_ca = secure.kafka.model_copy(update={"ssl_cafile": None})
    with pytest.raises(KafkaException):
        AdminClient({**no_ca.confluent_config(), "log_level": 0}).list_topics(timeout=8)
