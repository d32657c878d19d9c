"""Config: file < environment < flags, and errors that name the key, its source and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from wrenmq.config import Config, ConfigError, load_config


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wrenmq.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config(env={})
    assert config == Config()
    assert (config.host, config.port, config.storage, config.durability) == (
        "127.0.0.1",
        1883,
        "sqlite",
        "strict",
    )
    assert config.limits.max_packet_size == 16 * 1024 * 1024
    assert config.limits.max_session_expiry_interval == 4294967295
    assert config.sqlite_path == config.data_dir / "wrenmq.db"
    assert "wrenmq" in str(config.data_dir)


def test_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        Config().port = 1


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'port = 1000\nhost = "0.0.0.0"\nsys_interval = 5\nstorage = "memory"\n')
    env = {"WRENMQ_PORT": "2000", "WRENMQ_SYS_INTERVAL": "7.5", "UNRELATED": "x"}
    config = load_config(path, env=env, overrides={"port": 3000, "host": None})
    assert config.port == 3000  # flag beats env and file
    assert config.sys_interval == 7.5  # env beats file
    assert config.host == "0.0.0.0"  # file beats default; a None flag is not set
    assert config.storage == "memory"
    assert config.durability == "strict"  # default


def test_env_strings_are_parsed() -> None:
    env = {"WRENMQ_ALLOW_ANONYMOUS": "false", "WRENMQ_DATA_DIR": "/srv/wrenmq", "WRENMQ_LOG_LEVEL": "debug"}
    config = load_config(env=env)
    assert config.allow_anonymous is False
    assert config.data_dir == Path("/srv/wrenmq")
    assert config.log.level == "debug"


def test_data_dir_expands_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    path = write_toml(tmp_path, 'data_dir = "~/data"\n')
    assert load_config(path, env={}).data_dir == tmp_path / "data"


def test_out_of_range_value_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 70000\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value) == f"config file {path}: key 'port': Input should be less than or equal to 65535"


def test_bad_env_value_names_variable() -> None:
    with pytest.raises(ConfigError, match=r"^environment WRENMQ_PORT: .*valid integer"):
        load_config(env={"WRENMQ_PORT": "eighteen"})


def test_bad_flag_names_option() -> None:
    with pytest.raises(ConfigError, match=r"^option --max-packet-size: Input should be greater than"):
        load_config(env={}, overrides={"max_packet_size": 10})


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "prot = 1884\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"config file {path}: unknown key 'prot'")
    assert "did you mean 'port'" in str(info.value)


def test_table_in_file_is_an_unknown_key(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[broker]\nport = 1884\n")
    with pytest.raises(ConfigError, match="unknown key 'broker'"):
        load_config(path, env={})


def test_unknown_override_key() -> None:
    with pytest.raises(ConfigError, match="overrides: unknown key 'prot'"):
        load_config(env={}, overrides={"prot": 1})


def test_wrenmq_variables_that_are_not_settings_are_allowed() -> None:
    env = {"WRENMQ_CONFIG": "/x.toml", "WRENMQ_KEY": "wmq_x", "WRENMQ_PURE_PYTHON": "1", "OTHER_NOPE": "1"}
    assert load_config(env=env) == Config()


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("WRENMQ_ALLOW_ANONYMUS", " (did you mean WRENMQ_ALLOW_ANONYMOUS?)"),  # the typo that left a broker open
        ("WRENMQ_port", " (did you mean WRENMQ_PORT?)"),  # names are case-sensitive: this one set nothing
        ("WRENMQ_CONFG", " (did you mean WRENMQ_CONFIG?)"),
        ("WRENMQ_XYZZY", ""),
    ],
)
def test_unknown_wrenmq_variable_is_an_error(name: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={name: "false"})
    assert str(info.value) == f"environment {name}: unknown variable{hint}"


def test_unknown_variable_is_reported_with_the_other_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(env={"WRENMQ_ALLOW_ANONYMUS": "false", "WRENMQ_PORT": "x"})
    lines = str(info.value).splitlines()
    assert lines[0].startswith("environment WRENMQ_ALLOW_ANONYMUS: unknown variable")
    assert lines[1].startswith("environment WRENMQ_PORT: ")


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ('port = "1883"', "port", "valid integer"),
        ("port = true", "port", "valid integer"),
        ("port = 1.5", "port", "valid integer"),
        ('allow_anonymous = "false"', "allow_anonymous", "valid boolean"),
        ('log_level = "loud"', "log_level", "'debug', 'info', 'warning' or 'error'"),
        ('durability = "eventual"', "durability", "'strict' or 'relaxed'"),
        ("commit_interval = 0", "commit_interval", "greater than 0"),
        ("maximum_qos = 3", "maximum_qos", "less than or equal to 2"),
        ("data_dir = 5", "data_dir", "expected a path string"),
    ],
)
def test_file_values_must_have_the_right_type(tmp_path: Path, line: str, key: str, message: str) -> None:
    """TOML has real types, so a quoted number or a string boolean is a mistake worth reporting."""
    path = write_toml(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"config file {path}: key '{key}': ")
    assert message in str(info.value)


def test_int_accepted_for_float_in_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "commit_interval = 1\nsys_interval = 0\n")
    config = load_config(path, env={})
    assert (config.commit_interval, config.sys_interval) == (1.0, 0.0)


def test_all_errors_are_reported_together(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "prot = 1\nport = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"WRENMQ_MAXIMUM_QOS": "x"})
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert any("unknown key 'prot'" in line for line in lines)
    assert any("key 'port'" in line for line in lines)
    assert any(line.startswith("environment WRENMQ_MAXIMUM_QOS:") for line in lines)


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 1884\nthis is not toml\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(info.value).startswith(f"config file {path}: invalid TOML: ")
    assert "line 2" in str(info.value)


def test_missing_file_names_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match=r"config file .*missing\.toml: cannot read: No such file"):
        load_config(path, env={})


def test_write_buffer_high_must_exceed_low(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "write_buffer_low = 300000\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    message = str(info.value)
    assert message.startswith(f"config file {path}: key 'write_buffer_low': ")
    assert "write_buffer_high (262144) must be greater than write_buffer_low (300000)" in message


def test_write_buffer_high_must_not_exceed_cap() -> None:
    env = {"WRENMQ_MAX_WRITE_BUFFER": "100000"}
    with pytest.raises(ConfigError) as info:
        load_config(env=env, overrides={"write_buffer_high": 200000})
    message = str(info.value)
    assert message.startswith("option --write-buffer-high, environment WRENMQ_MAX_WRITE_BUFFER: ")
    assert "write_buffer_high (200000) must not exceed max_write_buffer (100000)" in message


def test_write_buffer_validator_applies_to_direct_construction() -> None:
    with pytest.raises(ValidationError, match="write_buffer_low"):
        Config(write_buffer_high=10, write_buffer_low=10)


def test_api_keyfile_needs_api_certfile() -> None:
    with pytest.raises(ConfigError, match="environment WRENMQ_API_KEYFILE: api_keyfile needs api_certfile"):
        load_config(env={"WRENMQ_API_KEYFILE": "/etc/wrenmq/api.key"})
