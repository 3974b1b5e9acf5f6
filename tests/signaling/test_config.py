"""load_config: defaults < YAML file < PARLEY_* environment < flags, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from conference.config import RoomConfig
from signaling.config import ConfigError, NodeConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "parley.yaml"
    path.write_text(text)
    return path


def test_defaults_apply_when_nothing_is_given() -> None:
    config = load_config(env={})
    assert config == NodeConfig()
    assert config.port == 8080 and config.host == "127.0.0.1"
    assert config.auth.keys == {}
    assert config.rooms == RoomConfig()


def test_yaml_file_overrides_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\nsignaling:\n  join_timeout: 2.5\nrooms:\n"
                           "  max_participants: 7\n")
    config = load_config(path=path, env={})
    assert config.port == 9000
    assert config.signaling.join_timeout == 2.5
    assert config.rooms.max_participants == 7
    assert config.host == "127.0.0.1"  # untouched settings keep their defaults


def test_env_overrides_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\nlog_level: debug\nrooms:\n  max_participants: 7\n")
    env = {"PARLEY_PORT": "9100", "PARLEY_ROOMS_MAX_PARTICIPANTS": "3"}
    config = load_config(path=path, env=env)
    assert config.port == 9100
    assert config.rooms.max_participants == 3
    assert config.log_level == "debug"  # from the file, not overridden


def test_flags_override_env_and_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 9000\nhost: 10.0.0.1\n")
    env = {"PARLEY_PORT": "9100", "PARLEY_KEYS": "envkey:envsecret"}
    config = load_config(path=path, env=env,
                         overrides={"port": 9200, "auth": {"keys": "flagkey:flagsecret"}})
    assert config.port == 9200
    assert config.host == "10.0.0.1"
    assert config.auth.keys == {"flagkey": "flagsecret"}


def test_env_is_ignored_when_an_explicit_mapping_is_passed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PARLEY_PORT", "9999")
    assert load_config(env={}).port == 8080
    assert load_config().port == 9999  # env=None reads the process environment


def test_parley_keys_parses_several_pairs() -> None:
    config = load_config(env={"PARLEY_KEYS": "k1:s1, k2:s2"})
    assert config.auth.keys == {"k1": "s1", "k2": "s2"}


def test_nested_env_settings_reach_their_sections() -> None:
    env = {
        "PARLEY_SIGNALING_JOIN_TIMEOUT": "0.75",
        "PARLEY_ROOMS_MAX_PARTICIPANTS": "12",
        "PARLEY_ICE_STUN_URLS": "stun:a.example:3478, stun:b.example:3478",
        "PARLEY_SIGNALING_ALLOWED_ORIGINS": "https://a.example",
        "PARLEY_DEVELOPMENT": "yes",
        "OTHER_PORT": "1",  # not ours
    }
    config = load_config(env=env)
    assert config.signaling.join_timeout == 0.75
    assert config.rooms.max_participants == 12
    assert config.ice.stun_urls == ("stun:a.example:3478", "stun:b.example:3478")
    assert config.signaling.allowed_origins == ("https://a.example",)
    assert config.development is True
    assert config.port == 8080


def test_top_level_keys_in_yaml_become_auth_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "keys:\n  k1: s1\n  k2: s2\nauth:\n  leeway: 3\n")
    config = load_config(path=path, env={})
    assert config.auth.keys == {"k1": "s1", "k2": "s2"}
    assert config.auth.leeway == 3.0


def test_keys_as_string_in_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "keys: 'k1:s1,k2:s2'\n")
    assert load_config(path=path, env={}).auth.keys == {"k1": "s1", "k2": "s2"}


def test_yaml_lists_become_tuples(tmp_path: Path) -> None:
    path = write(tmp_path, "ice:\n  turn_urls: [turn:t.example:3478, turns:t.example:5349]\n")
    config = load_config(path=path, env={})
    assert config.ice.turn_urls == ("turn:t.example:3478", "turns:t.example:5349")


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(path=write(tmp_path, ""), env={}) == NodeConfig()


def test_unknown_top_level_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'prot'"):
        load_config(path=write(tmp_path, "prot: 9000\n"), env={})


def test_unknown_section_setting_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'signaling\.join_timout'"):
        load_config(env={}, overrides={"signaling": {"join_timout": 1}})


def test_unknown_env_setting_in_a_section_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'rooms\.max_rooms'"):
        load_config(env={"PARLEY_ROOMS_MAX_ROOMS": "3"})


def test_bad_int_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"rooms\.max_participants"):
        load_config(env={"PARLEY_ROOMS_MAX_PARTICIPANTS": "lots"})


def test_bad_port_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_config(env={"PARLEY_PORT": "eighty"})
    with pytest.raises(ConfigError, match="port"):
        load_config(env={}, overrides={"port": 70000})


def test_bool_is_not_accepted_as_an_int(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port"):
        load_config(path=write(tmp_path, "port: true\n"), env={})


def test_heartbeat_timeout_must_exceed_interval() -> None:
    env = {"PARLEY_SIGNALING_HEARTBEAT_INTERVAL": "5",
           "PARLEY_SIGNALING_HEARTBEAT_TIMEOUT": "5"}
    with pytest.raises(ConfigError, match="heartbeat_timeout"):
        load_config(env=env)


def test_non_hmac_algorithm_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "auth:\n  algorithms: [HS256, RS256]\n")
    with pytest.raises(ConfigError, match=r"auth\.algorithms.*RS256"):
        load_config(path=path, env={})


def test_malformed_keys_are_refused() -> None:
    with pytest.raises(ConfigError, match="keys"):
        load_config(env={"PARLEY_KEYS": "k1-without-secret"})


def test_section_given_as_a_scalar_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="rooms"):
        load_config(path=write(tmp_path, "rooms: 5\n"), env={})


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_config(path=write(tmp_path, "- port\n- 9000\n"), env={})


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file"):
        load_config(path=tmp_path / "absent.yaml", env={})


def test_bad_log_level_is_refused() -> None:
    with pytest.raises(ConfigError, match="log_level"):
        load_config(env={"PARLEY_LOG_LEVEL": "loud"})
