"""Settings: defaults, environment, TOML file, and refusals that name the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ferry.settings import Settings, SettingsError, load_settings, settings_variables
from tests.foundation.test_ae_titles import REFUSED


def test_defaults_are_the_embedded_shape() -> None:
    settings = load_settings({})
    assert settings.http_host == "127.0.0.1"
    assert settings.http_port == 8042
    assert settings.dicom_port == 11112
    assert settings.dicom_ae_title == "FERRY"
    assert settings.data_dir == Path("var")
    assert settings.database_url.startswith("sqlite:///")
    assert settings.database_url.endswith("var/ferry.db")


def test_environment_values_are_parsed() -> None:
    settings = load_settings(
        {
            "FERRY_HTTP_PORT": "9000",
            "FERRY_CORS_ORIGINS": "https://a.example, https://b.example",
            "FERRY_PUBLIC_URL": "https://ferry.example.org/",
            "FERRY_TRUSTED_PROXY": "yes",
            "FERRY_MAX_REQUEST_BYTES": "1024",
        }
    )
    assert settings.http_port == 9000
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.public_url == "https://ferry.example.org"
    assert settings.trusted_proxy is True
    assert settings.max_request_bytes == 1024


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("FERRY_HTTP_PORT", "eighty"),
        ("FERRY_HTTP_PORT", "70000"),
        ("FERRY_DICOM_PORT", "-1"),
        ("FERRY_DICOM_AE_TITLE", "A_TITLE_MUCH_TOO_LONG"),
        ("FERRY_DICOM_AE_TITLE", ""),
        ("FERRY_PUBLIC_URL", "ftp://x"),
        ("FERRY_MAX_REQUEST_BYTES", "0"),
        ("FERRY_TRUSTED_PROXY", "perhaps"),
        ("FERRY_QIDO_MAX_LIMIT", "many"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_toml_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "ferry.toml"
    config.write_text('http_port = 9100\ncors_origins = ["https://viewer.example"]\n')
    settings = load_settings({"FERRY_CONFIG": str(config), "FERRY_HTTP_PORT": "9200"})
    assert settings.http_port == 9200
    assert settings.cors_origins == ("https://viewer.example",)


def test_toml_with_unknown_key_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "ferry.toml"
    config.write_text("http_prot = 1\n")
    with pytest.raises(SettingsError, match="http_prot"):
        load_settings({"FERRY_CONFIG": str(config)})


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.http_port = 1  # type: ignore[misc]


def test_every_variable_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for name in settings_variables():
        assert f"`{name}`" in readme, name


def test_serve_refuses_to_start_with_an_invalid_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferry.cli", "serve"],
        env={"FERRY_HTTP_PORT": "not-a-port", "FERRY_DATA_DIR": str(tmp_path), "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "FERRY_HTTP_PORT" in result.stderr


@pytest.mark.parametrize("text", REFUSED)
def test_ae_title_setting_is_checked_as_every_ae_title_is(text: str) -> None:
    with pytest.raises(SettingsError, match="FERRY_DICOM_AE_TITLE: AE title"):
        load_settings({"FERRY_DICOM_AE_TITLE": text})
    assert load_settings({"FERRY_DICOM_AE_TITLE": "  FERRY2 "}).dicom_ae_title == "FERRY2"
