"""What `profile show` hides: secret-looking names, flags, URL passwords; `${VAR}` as written."""

from __future__ import annotations

import pytest

from aitherctl.profiles.redact import (
    MASK,
    is_secret_name,
    redact_args,
    redact_env,
    redact_mapping,
    redact_url,
)


@pytest.mark.parametrize(
    "name",
    [
        "HF_TOKEN",
        "OPENAI_API_KEY",
        "apiKey",
        "DB_PASSWORD",
        "Authorization",
        "x-api-key",
        "GITHUBTOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "key",
        "MY_PASS",
    ],
)
def test_secret_looking_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["max_tokens", "MONKEY", "api_key_env", "tokenizer", "MODE", "price", "PASSES"]
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_env_keeps_references_and_hides_literals() -> None:
    env = [("HF_TOKEN", "${HF_TOKEN}"), ("API_KEY", "sk-1"), ("TOKEN", "${T:-x}"), ("MODE", "a")]
    assert redact_env(env) == {
        "HF_TOKEN": "${HF_TOKEN}",
        "API_KEY": MASK,
        "TOKEN": "${T:-x}",
        "MODE": "a",
    }
    # A reference with text around it may carry a literal secret: hidden.
    assert redact_env([("API_KEY", "Bearer ${K}")]) == {"API_KEY": MASK}


def test_args_hide_the_value_of_secret_flags() -> None:
    args = ["--api-key", "sk-1", "--token=abc", "--port", "8000", "--api-key", "${KEY}"]
    assert redact_args(args) == [
        "--api-key",
        MASK,
        f"--token={MASK}",
        "--port",
        "8000",
        "--api-key",
        "${KEY}",
    ]


def test_urls_lose_passwords_and_key_parameters() -> None:
    assert (
        redact_url("https://me:pw@host/v1?key=abc&x=1")
        == f"https://me:{MASK}@host/v1?key={MASK}&x=1"
    )
    assert redact_url("https://host/v1") == "https://host/v1"


def test_nested_sections() -> None:
    endpoints = {
        "e": {
            "base_url": "https://host/v1",
            "api_key_env": "E_KEY",
            "api_key": "sk-literal",
            "headers": {"Authorization": "Bearer sk-2", "X-Trace": "on"},
            "price": {"input": 1.0},
        }
    }
    assert redact_mapping(endpoints) == {
        "e": {
            "base_url": "https://host/v1",
            "api_key_env": "E_KEY",
            "api_key": MASK,
            "headers": {"Authorization": MASK, "X-Trace": "on"},
            "price": {"input": 1.0},
        }
    }
    assert redact_mapping({"max_tokens": 2048}) == {"max_tokens": 2048}
