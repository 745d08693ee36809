"""The one settings object. Every option is read from the environment with the
``UEBA_`` prefix (nested with ``__``, e.g. ``UEBA_KAFKA__BOOTSTRAP_SERVERS``)
or from a ``.env`` file; each secret can instead be read from a file named by
its ``*_FILE`` twin (``UEBA_KAFKA__SASL_PASSWORD_FILE``).

Values that do not parse are errors, never silent defaults.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigError


def _read_secret(path: Path, name: str) -> SecretStr:
    try:
        return SecretStr(path.read_text().strip())
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror}") from None


class SecurityProtocol(str, Enum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class _Section(BaseModel):
    # A misspelt UEBA_* variable is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class TopicSettings(_Section):
    access: str = "ueba.access"
    api: str = "ueba.api"
    telemetry: str = "ueba.telemetry"
    #: Login events re-keyed by source.ip (password spraying; internal).
    bysource: str = "ueba.access-by-source"
    #: Candidate alerts keyed by entity, before policy/suppression/risk (internal).
    candidates: str = "ueba.candidates"
    alerts: str = "ueba.alerts"
    risk: str = "ueba.risk"
    deadletter: str = "ueba.deadletter"
    partitions: int = Field(4, ge=1, le=1024)
    replication_factor: int = Field(1, ge=1, le=16)

    def inputs(self) -> dict[str, str]:
        """Stream kind -> topic name for the three input streams."""
        return {"access": self.access, "api": self.api, "telemetry": self.telemetry}


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    #: Read the SASL password from this file (e.g. a mounted secret) instead.
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_check_hostname: bool = True

    @model_validator(mode="after")
    def _check(self) -> "KafkaSettings":
        if self.sasl_password is None and self.sasl_password_file is not None:
            self.sasl_password = _read_secret(self.sasl_password_file, "kafka.sasl_password_file")
        if self.security_protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL):
            if not self.sasl_username or self.sasl_password is None:
                raise ValueError("SASL needs kafka.sasl_username and kafka.sasl_password")
        return self

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    def confluent_config(self) -> dict[str, str]:
        """librdkafka configuration for confluent-kafka clients."""
        conf: dict[str, str] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol.value,
        }
        if self.uses_sasl:
            conf["sasl.mechanism"] = self.sasl_mechanism
            conf["sasl.username"] = self.sasl_username or ""
            conf["sasl.password"] = self.sasl_password.get_secret_value() if self.sasl_password else ""
        if self.uses_tls:
            if self.ssl_cafile:
                conf["ssl.ca.location"] = str(self.ssl_cafile)
            if self.ssl_certfile:
                conf["ssl.certificate.location"] = str(self.ssl_certfile)
            if self.ssl_keyfile:
                conf["ssl.key.location"] = str(self.ssl_keyfile)
            conf["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_check_hostname else "none"
        return conf

    def faust_broker_url(self) -> str:
        return "kafka://" + ";".join(self.bootstrap_servers.split(","))

    def faust_credentials(self):  # -> faust.types.auth.CredentialsT | None
        """Faust credentials object for TLS and/or SASL, or None for plaintext."""
        import ssl

        import faust

        ctx = None
        if self.uses_tls:
            ctx = ssl.create_default_context(
                purpose=ssl.Purpose.SERVER_AUTH,
                cafile=str(self.ssl_cafile) if self.ssl_cafile else None,
            )
            ctx.check_hostname = self.ssl_check_hostname
            if self.ssl_certfile:
                ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None)
        if self.uses_sasl:
            password = self.sasl_password.get_secret_value() if self.sasl_password else ""
            if self.sasl_mechanism == "PLAIN":
                return faust.SASLCredentials(username=self.sasl_username, password=password, ssl_context=ctx)
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=password,
                ssl_context=ctx,
                mechanism=self.sasl_mechanism,
            )
        if ctx is not None:
            return faust.SSLCredentials(ctx)
        return None


class SearchSettings(_Section):
    engine: Literal["opensearch", "elasticsearch"] = "opensearch"
    url: str = "http://127.0.0.1:9200"
    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_certs: Path | None = None
    verify_certs: bool = True
    namespace: str = Field("default", pattern=r"^[a-z0-9_]{1,100}$")
    request_timeout: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "SearchSettings":
        if self.api_key is None and self.api_key_file is not None:
            self.api_key = _read_secret(self.api_key_file, "search.api_key_file")
        if self.password is None and self.password_file is not None:
            self.password = _read_secret(self.password_file, "search.password_file")
        if self.api_key is not None and self.username:
            raise ValueError("set either search.api_key or search.username/password, not both")
        if self.username and self.password is None:
            raise ValueError("search.username needs search.password")
        return self


class WorkerSettings(_Section):
    app_id: str = "ai-ueba"
    data_dir: Path = Path("./.ueba-data")
    web_port: int = Field(6066, ge=1, le=65535)
    metrics_port: int = Field(9464, ge=0, le=65535)
    max_event_bytes: int = Field(262_144, ge=1024)
    store: str = "rocksdb://"
    #: "suite": the detector library's per-stream suites; "first_seen": the
    #: minimal first-seen scorer (the backbone's end-to-end check).
    scorer: Literal["suite", "first_seen"] = "suite"
    #: Alerting threshold on the 0-100 score (the policy file can refine it per detector/rule).
    min_score: float = Field(50.0, ge=0, le=100)
    #: /health answers 503 when there is lag and no progress for this long.
    stall_seconds: float = Field(60.0, gt=0)
    #: Sigma rule files or folders; empty = the built-in AI rule pack (rules/sigma).
    rules_paths: list[Path] = []
    rules_enabled: bool = True
    #: Sigma placeholder files (pySigma ``vars`` format) expanded by ``|expand``
    #: modifiers, e.g. the registry of sanctioned models and inference endpoints;
    #: empty = any ``*.placeholders.yml`` on the rule paths (the pack's examples).
    rules_placeholders: list[Path] = []
    #: YAML file of SOAR webhook targets (streams/webhooks.py); unset = no webhooks.
    webhooks_file: Path | None = None
    #: YAML policy: thresholds, allow-lists, suppression, learning mode, risk (streams/policy.py).
    policy_file: Path | None = None
    #: Most messages fetched and processed as one batch (Kafka max.poll.records);
    #: a batch is whatever has arrived, up to this many, so it never waits to fill.
    #: Each batch's state changes are written once, before its offsets are acked.
    batch_size: int = Field(1000, ge=1, le=100_000)
    #: Milliseconds the broker may hold a fetch that found nothing new (Faust
    #: hard-codes 1500, which starved busy partitions; see streams.batchdrain).
    fetch_max_wait_ms: int = Field(25, ge=1, le=10_000)
    #: Seconds between settles: Kafka's acknowledgement of the outputs awaited, then
    #: state written, then offsets acked (streams.batchdrain). 0 = after every
    #: fetch round. Longer lets processing run on while the outputs travel; a crash
    #: then redelivers up to this much work (never loses or double-counts it).
    settle_seconds: float = Field(0.0, ge=0.0, le=30.0)
    #: Decoded per-identity states kept in memory per agent (least recently used
    #: beyond this are dropped after a batch; the table keeps everything).
    state_cache_keys: int = Field(20_000, ge=1)


class SinkSettings(_Section):
    """``ueba sink``: alerts and risk topics -> search engine."""

    #: Records per batch (one bulk request; its offsets are committed together).
    batch_size: int = Field(1000, ge=1, le=50_000)
    #: Bulk requests in flight at once (batches still complete and commit in order).
    max_in_flight: int = Field(2, ge=1, le=16)
    #: Seconds: Kafka's max.poll.interval for the sink's consumer. The sink keeps
    #: polling while it holds batches during an engine outage, so this never
    #: needs to cover an outage; it bounds how long one poll loop may take.
    max_poll_interval: float = Field(300.0, ge=6.0, le=3600.0)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="UEBA_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    search: SearchSettings = SearchSettings()
    worker: WorkerSettings = WorkerSettings()
    sink: SinkSettings = SinkSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Load settings once; a malformed value raises ConfigError with the field named."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        raise ConfigError(f"invalid configuration: {problems}") from None


def to_env(settings: Settings) -> dict[str, str]:
    """``UEBA_*`` environment variables that reproduce ``settings`` in a child
    process (secrets included: pass only to processes you start)."""
    env: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(f"{prefix}{name.upper()}__", getattr(value, name))
            return
        key = prefix[:-2]
        if value is None:
            return
        if isinstance(value, SecretStr):
            env[key] = value.get_secret_value()
        elif isinstance(value, Enum):
            env[key] = str(value.value)
        elif isinstance(value, bool):
            env[key] = "true" if value else "false"
        else:
            env[key] = str(value)

    for name in type(settings).model_fields:
        walk(f"UEBA_{name.upper()}__", getattr(settings, name))
    return env
