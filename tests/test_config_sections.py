"""Config sections (a wrenmq feature, no MQTT statement): ``[api] port`` and the flat ``api_port`` are
one setting, in the file, the environment, flags and ``Config(...)``; one written both ways is an
error naming both; errors name the key as written; ``Limits`` is the ``[limits]`` section, whole."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import wrenmq
from wrenmq.broker.limits import Limits
from wrenmq.cli import main as wrenmq_main
from wrenmq.config import SECTIONS, SETTINGS, Config, ConfigError, LimitsConfig, env_vars, load_config

NESTED = """\
port = 1884
allow_anonymous = true

[api]
port = 8081
stream_buffer = 50

[limits]
max_packet_size = 65536
queue_drop_policy = "drop_oldest"

[realtime]
enabled = false
cors_origins = ["https://app.example.com"]

[presence]
devices_root = "fleet"

[log]
level = "debug"
syslog_facility = "local3"
"""

FLAT = """\
port = 1884
allow_anonymous = true
api_port = 8081
stream_buffer = 50
max_packet_size = 65536
queue_drop_policy = "drop_oldest"
realtime = false
realtime_cors_origins = ["https://app.example.com"]
presence_devices_root = "fleet"
log_level = "debug"
syslog_facility = "local3"
"""


def write(tmp_path: Path, text: str, name: str = "wrenmq.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_config_nested_form_reads_into_sections(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, NESTED), env={})
    assert (config.port, config.allow_anonymous) == (1884, True)
    assert (config.api.port, config.api.stream_buffer, config.api.host) == (8081, 50, "127.0.0.1")
    assert (config.limits.max_packet_size, config.limits.queue_drop_policy) == (65536, "drop_oldest")
    assert (config.realtime.enabled, config.realtime.cors_origins) == (False, ["https://app.example.com"])
    assert config.presence.devices_root == "fleet" and config.presence.enabled
    assert (config.log.level, config.log.syslog_facility) == ("debug", "local3")


def test_config_flat_form_is_the_same_config(tmp_path: Path) -> None:
    """Deployed files with the flat names keep working, and mean exactly what the sections mean."""
    flat = load_config(write(tmp_path, FLAT), env={})
    assert flat == load_config(write(tmp_path, NESTED, "nested.toml"), env={})
    assert flat.api.port == 8081 and flat.realtime.enabled is False


def test_config_mixed_forms_in_one_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, 'api_host = "127.0.0.2"\n[api]\nport = 0\n'), env={})
    assert (config.api.host, config.api.port) == ("127.0.0.2", 0)


def test_config_both_forms_for_one_setting_is_an_error_naming_both(tmp_path: Path) -> None:
    path = write(tmp_path, "api_port = 8081\nmax_packet_size = 1024\n[api]\nport = 8082\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == f"config file {path}: keys 'api_port' and 'api.port' both set api.port: keep one"
    # realtime = false is the flat name of [realtime] enabled (TOML itself refuses both in one file).
    with pytest.raises(ConfigError, match=r"WRENMQ_REALTIME and WRENMQ_REALTIME_ENABLED both set realtime\.enabled"):
        load_config(env={"WRENMQ_REALTIME": "false", "WRENMQ_REALTIME_ENABLED": "true"})
    with pytest.raises(ValueError, match=r"'api_port' and 'api\.port' both set api\.port"):
        Config(api_port=1, api={"port": 2})


def test_config_unknown_key_in_a_section_is_named_with_its_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[api]\nprot = 8081\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == f"config file {path}: unknown key 'api.prot' (did you mean 'api.port'?)"
    with pytest.raises(
        ConfigError, match=r"unknown key 'limits.max_packet_sise' \(did you mean 'limits.max_packet_size'"
    ):
        load_config(write(tmp_path, "[limits]\nmax_packet_sise = 1\n"), env={})
    with pytest.raises(ConfigError, match=r"key 'api' is a section: give it as a table \(\[api\]\)"):
        load_config(write(tmp_path, "api = 8081\n"), env={})


def test_config_errors_name_the_key_as_written(tmp_path: Path) -> None:
    nested = write(tmp_path, "[api]\nport = 70000\n")
    with pytest.raises(ConfigError, match=rf"^config file {nested}: key 'api.port': Input should be less than"):
        load_config(nested, env={})
    flat = write(tmp_path, "api_port = 70000\n", "flat.toml")
    with pytest.raises(ConfigError, match=rf"^config file {flat}: key 'api_port': Input should be less than"):
        load_config(flat, env={})
    listed = write(tmp_path, '[realtime]\ncors_origins = ["a", 1]\n', "listed.toml")
    with pytest.raises(ConfigError, match=r"key 'realtime.cors_origins' at realtime.cors_origins\[1\]"):
        load_config(listed, env={})
    # A rule over two keys of one section names both, each with its source.
    buffers = write(tmp_path, "[limits]\nwrite_buffer_high = 10\n", "buffers.toml")
    with pytest.raises(ConfigError) as caught:
        load_config(buffers, env={"WRENMQ_WRITE_BUFFER_LOW": "10"})
    assert str(caught.value) == (
        f"config file {buffers}: key 'limits.write_buffer_high', environment WRENMQ_WRITE_BUFFER_LOW: "
        "write_buffer_high (10) must be greater than write_buffer_low (10)"
    )


def test_config_env_var_sets_a_section(tmp_path: Path) -> None:
    """``WRENMQ_API_PORT`` is both the flat and the section name; settings whose flat name has no
    section prefix answer to the section's name too (``WRENMQ_LIMITS_MAX_PACKET_SIZE``)."""
    config = load_config(
        write(tmp_path, "[api]\nport = 8081\n"),
        env={"WRENMQ_API_PORT": "9090", "WRENMQ_LIMITS_MAX_PACKET_SIZE": "2048", "WRENMQ_REALTIME_ENABLED": "false"},
    )
    assert (config.api.port, config.limits.max_packet_size, config.realtime.enabled) == (9090, 2048, False)
    assert load_config(env={"WRENMQ_MAX_PACKET_SIZE": "4096"}).limits.max_packet_size == 4096
    assert env_vars("max_packet_size") == ["WRENMQ_MAX_PACKET_SIZE", "WRENMQ_LIMITS_MAX_PACKET_SIZE"]
    assert env_vars("api.port") == ["WRENMQ_API_PORT"]
    with pytest.raises(ConfigError) as caught:
        load_config(env={"WRENMQ_MAX_PACKET_SIZE": "4096", "WRENMQ_LIMITS_MAX_PACKET_SIZE": "2048"})
    assert str(caught.value) == (
        "environment WRENMQ_LIMITS_MAX_PACKET_SIZE and WRENMQ_MAX_PACKET_SIZE both set limits.max_packet_size: keep one"
    )
    with pytest.raises(
        ConfigError, match=r"environment WRENMQ_API_PROT: unknown variable \(did you mean WRENMQ_API_PORT"
    ):
        load_config(env={"WRENMQ_API_PROT": "1"})


def test_config_flags_and_env_override_either_file_form(tmp_path: Path) -> None:
    path = write(tmp_path, '[api]\nport = 8081\nhost = "127.0.0.2"\n')
    config = load_config(path, env={"WRENMQ_API_HOST": "127.0.0.3"}, overrides={"api_port": 8083})
    assert (config.api.host, config.api.port) == ("127.0.0.3", 8083)


def test_config_flat_keyword_arguments_and_replace() -> None:
    """Embedders' ``Config(api_port=...)`` and ``Broker(config, receive_maximum=...)`` keep working."""
    assert Config(api_port=0, max_packet_size=1024) == Config(api={"port": 0}, limits={"max_packet_size": 1024})
    base = Config(limits={"max_packet_size": 1024, "receive_maximum": 5}, api_port=None)
    changed = base.replace(receive_maximum=10, **{"api.host": "127.0.0.9"})
    assert (changed.limits.max_packet_size, changed.limits.receive_maximum) == (1024, 10)
    assert (changed.api.port, changed.api.host) == (None, "127.0.0.9")
    assert wrenmq.Broker(base, maximum_qos=1).limits.maximum_qos == 1


def test_config_every_setting_has_one_place() -> None:
    """Every name (flat or dotted) leads to one field of one model, and each field has both names."""
    fields = {(s.section, s.field) for s in SETTINGS.values()}
    expected = {(None, f) for f in Config.model_fields if f not in SECTIONS}
    expected |= {(name, f) for name, section in SECTIONS.items() for f in section.model_fields}
    assert fields == expected
    for name, setting in SETTINGS.items():
        assert name in setting.names()


def test_limits_is_the_limits_section_whole() -> None:
    """``Limits`` (compiled) holds every [limits] setting under its own name, with the section's value:
    a setting added to [limits] reaches the hot path without a hand copy (compiled, an undeclared one
    fails at construction)."""
    changed = {}
    for name, info in LimitsConfig.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, bool):
            changed[name] = not default
        elif name == "queue_drop_policy":
            changed[name] = "drop_oldest"
        elif name in ("write_buffer_low", "write_buffer_high", "max_write_buffer"):
            changed[name] = {"write_buffer_low": 1000, "write_buffer_high": 2000, "max_write_buffer": 3000}[name]
        elif isinstance(default, int | float):
            changed[name] = type(default)(default - 1 if default >= 2 else default + 1)
    section = LimitsConfig(**changed)
    limits = Limits(section)
    for name in LimitsConfig.model_fields:
        assert getattr(limits, name) == getattr(section, name), name
    assert limits.queue_drop_oldest is True
    if hasattr(limits, "__dict__"):  # pure Python: nothing beyond the section and what is derived from it
        assert set(vars(limits)) == set(LimitsConfig.model_fields) | {"queue_drop_oldest"}


def test_config_convert_prints_sections(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = write(tmp_path, "listener 1883 127.0.0.1\nallow_anonymous true\nmax_queued_messages 50\n", "m.conf")
    assert wrenmq_main(["config", "convert", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "\n[limits]\nmax_queued_messages = 50\n" in out
    assert "max_queued_messages" not in out.split("[limits]")[0]
    converted = write(tmp_path, out)
    assert load_config(converted, env={}) == load_config(conf, env={})


README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_sections_table_lists_every_setting_in_its_place() -> None:
    """The README's "Sections" table says where each setting lives: exactly the Config's sections."""
    text = README.read_text()
    table = text[text.index("### Sections") :].split("\n\n")[1]
    listed: dict[str | None, list[str]] = {}
    for row in table.splitlines()[2:]:
        section, flat, settings = (cell.strip() for cell in row.strip("|").split("|"))
        name = None if section == "top level" else section.strip("`[]")
        listed[name] = re.findall(r"`([a-z_]+)`", settings.split("(")[0])
        if name is not None:  # the flat names: the prefix, and the names that are not prefix + key
            model = SECTIONS[name]
            prefix = re.match(r"`([a-z]+_)<key>`", flat)
            assert (prefix.group(1) if prefix else "") == model.flat_prefix, name
            assert set(re.findall(r"`([a-z_]+)`", flat)) == set(model.flat_names) | set(model.flat_names.values())
    expected: dict[str | None, list[str]] = {None: [f for f in Config.model_fields if f not in SECTIONS]}
    expected |= {name: list(section.model_fields) for name, section in SECTIONS.items()}
    assert listed == expected


def test_readme_file_example_loads_in_sections(tmp_path: Path) -> None:
    text = README.read_text()
    start = text.index("- **File**: `wrenmq serve --config")
    block = re.search(r"```toml\n(.*?)```", text[start:], re.S)
    assert block is not None
    toml = "\n".join(line.removeprefix("  ") for line in block.group(1).splitlines())
    config = load_config(write(tmp_path, toml), env={})
    assert (config.api.port, config.limits.max_queued_messages, config.durability) == (8081, 1000, "relaxed")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_port = 8883\n", "key 'tls_port': tls_port needs certfile and keyfile"),
        ("require_certificate = true\n", "key 'require_certificate': require_certificate needs cafile"),
        ('[[brokers]]\nname = "a"\nurl = "mqtt://h"\n[[brokers]]\nname = "a"\nurl = "mqtt://h"\n', "named 'a'"),
        ('[log]\ndest = ["file"]\n', "key 'log.dest': log_dest file needs log_file"),
        ("[limits]\nwrite_buffer_high = 10\nwrite_buffer_low = 10\n", "must be greater than write_buffer_low"),
        ("[metrics]\nhistory_interval = 0.05\n", "metrics_history_retention / metrics_history_interval"),
        ('[api]\nkeyfile = "k.pem"\n', "key 'api.keyfile': api_keyfile needs api_certfile"),
        ('[jwt]\nsecret = "short"\n', "key 'jwt.secret': jwt_secret must be at least 32 bytes"),
        ('[cluster]\nurl = "http://h"\n', "key 'cluster.url': expected a Redis URL"),
    ],
)
def test_config_rules_over_several_keys_hold_in_every_section(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, text), env={})
