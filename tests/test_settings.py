"""Settings from the environment.

Typed readers that fail loudly, production refusing to start half-configured, and the embedded mode
keeping its generated secret key.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.conftest import run_python
from xcaliber.lib.env import env_bool, env_choice, env_int, env_list, env_secret, env_str

PRINT_SECRET = "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)"
PRODUCTION_SECRET = "p" * 64
REQUIRED_IN_PRODUCTION = ("XCALIBER_SECRET_KEY", "DATABASE_URL", "XCALIBER_ALLOWED_HOSTS", "REDIS_URL")


# ---------------------------------------------------------------------------- readers


def test_env_str_default_and_required() -> None:
    assert env_str("NAME", "fallback", environ={}) == "fallback"
    assert env_str("NAME", "fallback", environ={"NAME": "  "}) == "fallback"
    assert env_str("NAME", environ={"NAME": " value "}) == "value"
    with pytest.raises(ImproperlyConfigured, match="NAME must be set"):
        env_str("NAME", environ={})


@pytest.mark.parametrize(
    ("raw", "expected"), [("1", True), ("TRUE", True), ("on", True), ("no", False), ("0", False), ("", True)]
)
def test_env_bool_reads_the_usual_spellings(raw: str, expected: bool) -> None:
    assert env_bool("XCALIBER_FLAG", True, environ={"XCALIBER_FLAG": raw}) is expected


def test_env_bool_refuses_anything_else_naming_the_variable() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"XCALIBER_FLAG.*'maybe'"):
        env_bool("XCALIBER_FLAG", False, environ={"XCALIBER_FLAG": "maybe"})


def test_env_int_parses_and_checks_bounds() -> None:
    assert env_int("XCALIBER_N", 5, environ={}) == 5
    assert env_int("XCALIBER_N", 5, minimum=1, maximum=10, environ={"XCALIBER_N": " 7 "}) == 7
    with pytest.raises(ImproperlyConfigured, match=r"XCALIBER_N must be an integer.*'seven'"):
        env_int("XCALIBER_N", 5, environ={"XCALIBER_N": "seven"})
    with pytest.raises(ImproperlyConfigured, match="XCALIBER_N must be >= 1"):
        env_int("XCALIBER_N", 5, minimum=1, environ={"XCALIBER_N": "0"})
    with pytest.raises(ImproperlyConfigured, match="XCALIBER_N must be <= 10"):
        env_int("XCALIBER_N", 5, maximum=10, environ={"XCALIBER_N": "11"})


def test_env_list_drops_blanks() -> None:
    assert env_list("HOSTS", ("a",), environ={}) == ["a"]
    assert env_list("HOSTS", environ={"HOSTS": " x.test, ,y.test ,"}) == ["x.test", "y.test"]


def test_env_choice_refuses_unknown_values_naming_the_variable() -> None:
    assert env_choice("XCALIBER_MODE", ("a", "b"), "a", environ={}) == "a"
    assert env_choice("XCALIBER_MODE", ("a", "b"), "a", environ={"XCALIBER_MODE": "b"}) == "b"
    with pytest.raises(ImproperlyConfigured, match=r"XCALIBER_MODE must be one of a, b.*'c'"):
        env_choice("XCALIBER_MODE", ("a", "b"), "a", environ={"XCALIBER_MODE": "c"})


def test_env_secret_reads_the_variable_or_its_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("from-a-file\n", encoding="utf-8")

    assert env_secret("TOKEN", environ={}) is None
    assert env_secret("TOKEN", environ={"TOKEN": ""}) is None
    assert env_secret("TOKEN", environ={"TOKEN": "direct"}) == "direct"
    assert env_secret("TOKEN", environ={"TOKEN_FILE": str(secret_file)}) == "from-a-file"


def test_env_secret_refuses_both_missing_and_empty_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("value", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.write_text(" \n", encoding="utf-8")

    with pytest.raises(ImproperlyConfigured, match="set TOKEN or TOKEN_FILE, not both"):
        env_secret("TOKEN", environ={"TOKEN": "direct", "TOKEN_FILE": str(secret_file)})
    with pytest.raises(ImproperlyConfigured, match=r"TOKEN_FILE: .* is empty"):
        env_secret("TOKEN", environ={"TOKEN_FILE": str(empty)})
    with pytest.raises(ImproperlyConfigured, match="TOKEN_FILE: cannot read"):
        env_secret("TOKEN", environ={"TOKEN_FILE": str(tmp_path / "absent")})


# ---------------------------------------------------------------------------- start-up, in fresh processes


def _clean_environ(data_dir: Path, **variables: str) -> dict[str, str]:
    """The current environment without any X Caliber configuration, plus ``variables``."""
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("XCALIBER_", "DATABASE_URL", "REDIS_URL", "DJANGO_"))
    }
    environ.update(DJANGO_SETTINGS_MODULE="xcaliber.settings", XCALIBER_DATA_DIR=str(data_dir))
    environ.update(variables)
    return environ


def _production(data_dir: Path, **overrides: str) -> dict[str, str]:
    variables = {
        "XCALIBER_ENV": "production",
        "XCALIBER_SECRET_KEY": PRODUCTION_SECRET,
        "DATABASE_URL": f"sqlite:///{data_dir / 'prod.sqlite3'}",
        "XCALIBER_ALLOWED_HOSTS": "xcaliber.example.test",
        "REDIS_URL": "redis://127.0.0.1:1/0",
    }
    variables.update(overrides)
    return _clean_environ(data_dir, **{name: value for name, value in variables.items() if value is not None})


@pytest.mark.parametrize("missing", REQUIRED_IN_PRODUCTION)
def test_production_refuses_to_start_naming_the_missing_variable(tmp_path: Path, missing: str) -> None:
    environ = _production(tmp_path)
    del environ[missing]

    result = run_python(["-c", "import django; django.setup()"], environ)

    assert result.returncode != 0
    assert f"XCALIBER_ENV=production requires {missing}" in result.stderr
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize("missing", REQUIRED_IN_PRODUCTION)
def test_production_treats_an_empty_variable_as_missing(tmp_path: Path, missing: str) -> None:
    result = run_python(["manage.py", "check"], _production(tmp_path, **{missing: ""}))

    assert result.returncode != 0
    assert missing in result.stderr


def test_production_starts_with_everything_set(tmp_path: Path) -> None:
    result = run_python(["manage.py", "check"], _production(tmp_path))

    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout
    assert not (tmp_path / "secret_key").exists()


def test_production_reads_secrets_from_files(tmp_path: Path) -> None:
    key_file = tmp_path / "secret"
    key_file.write_text(PRODUCTION_SECRET + "\n", encoding="utf-8")
    environ = _production(tmp_path)
    del environ["XCALIBER_SECRET_KEY"]
    environ["XCALIBER_SECRET_KEY_FILE"] = str(key_file)

    result = run_python(["-c", PRINT_SECRET], environ)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == PRODUCTION_SECRET


def test_a_short_secret_key_is_refused(tmp_path: Path) -> None:
    result = run_python(["-c", PRINT_SECRET], _production(tmp_path, XCALIBER_SECRET_KEY="too-short"))

    assert result.returncode != 0
    assert "XCALIBER_SECRET_KEY must be at least 32 characters" in result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [("XCALIBER_DEBUG", "maybe"), ("XCALIBER_LOGIN_MAX_FAILURES", "five"), ("XCALIBER_ENV", "staging")],
)
def test_a_malformed_variable_stops_start_up_naming_it(tmp_path: Path, name: str, value: str) -> None:
    result = run_python(["-c", "import django; django.setup()"], _clean_environ(tmp_path, **{name: value}))

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {name} must be" in result.stderr


def test_embedded_generates_a_private_secret_key_once_and_reuses_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh"
    environ = _clean_environ(data_dir)

    first = run_python(["-c", PRINT_SECRET], environ)
    second = run_python(["-c", PRINT_SECRET], environ)

    assert first.returncode == 0, first.stderr
    assert second.returncode == 0, second.stderr
    key_file = data_dir / "secret_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = first.stdout.strip()
    assert len(key) >= 50
    assert second.stdout.strip() == key
    assert key_file.read_text(encoding="utf-8").strip() == key


def test_embedded_refuses_a_damaged_secret_key_file(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("short\n", encoding="utf-8")

    result = run_python(["-c", PRINT_SECRET], _clean_environ(tmp_path))

    assert result.returncode != 0
    assert "holds no usable secret key" in result.stderr


PRINT_PROCESSES = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.XCALIBER_PEERS_DIR); print(settings.CACHES['default']['BACKEND']); "
    "print(settings.CACHES['default'].get('LOCATION', ''))"
)


def test_several_embedded_processes_share_a_file_cache_and_a_peers_directory(tmp_path: Path) -> None:
    one = run_python(["-c", PRINT_PROCESSES], _clean_environ(tmp_path))
    two = run_python(["-c", PRINT_PROCESSES], _clean_environ(tmp_path, XCALIBER_WEB_PROCESSES="2"))
    with_redis = run_python(
        ["-c", PRINT_PROCESSES],
        _clean_environ(tmp_path, XCALIBER_WEB_PROCESSES="2", REDIS_URL="redis://127.0.0.1:6379/0"),
    )

    assert one.returncode == 0, one.stderr
    assert one.stdout.split("\n")[:2] == ["None", "django.core.cache.backends.locmem.LocMemCache"]
    assert two.returncode == 0, two.stderr
    assert two.stdout.split("\n")[:3] == [
        str(tmp_path.resolve() / "run"),
        "django.core.cache.backends.filebased.FileBasedCache",
        str(tmp_path.resolve() / "cache"),
    ]
    # With Redis the channel layer and the cache are shared already: no peers.
    assert with_redis.returncode == 0, with_redis.stderr
    assert with_redis.stdout.split("\n")[:2] == ["None", "django.core.cache.backends.redis.RedisCache"]


def test_zero_web_processes_is_refused_naming_the_variable(tmp_path: Path) -> None:
    result = run_python(["-c", PRINT_PROCESSES], _clean_environ(tmp_path, XCALIBER_WEB_PROCESSES="0"))

    assert result.returncode != 0
    assert "ImproperlyConfigured: XCALIBER_WEB_PROCESSES must be >= 1" in result.stderr


PRINT_DIRECT_WRITES = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.XCALIBER['UPLOAD_DIRECT_WRITES'])"
)


def test_uploads_are_written_past_the_page_cache_with_local_storage_only_by_default(tmp_path: Path) -> None:
    local = run_python(["-c", PRINT_DIRECT_WRITES], _clean_environ(tmp_path))
    s3 = run_python(["-c", PRINT_DIRECT_WRITES], _clean_environ(tmp_path, XCALIBER_S3_BUCKET="radiographs"))
    told = run_python(
        ["-c", PRINT_DIRECT_WRITES],
        _clean_environ(tmp_path, XCALIBER_S3_BUCKET="radiographs", XCALIBER_UPLOAD_DIRECT_WRITES="1"),
    )
    off = run_python(["-c", PRINT_DIRECT_WRITES], _clean_environ(tmp_path, XCALIBER_UPLOAD_DIRECT_WRITES="0"))

    assert [r.stdout.strip() for r in (local, s3, told, off)] == ["True", "False", "True", "False"], [
        r.stderr[-300:] for r in (local, s3, told, off)
    ]
