"""Fixtures for the security tests: one district PKI per session, a city broker per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.city import CityBroker, Pki, city_broker


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def gateways() -> tuple[str, str]:
    """Two fresh gateway ids (= certificate CNs = ACL user names), unique per test."""
    tag = uuid.uuid4().hex[:8]
    return f"gw{tag}a", f"gw{tag}b"


@pytest.fixture
def broker(tmp_path: Path, pki: Pki) -> Iterator[CityBroker]:
    """The deploy config and ACL on two loopback ports (mTLS; mTLS + password)."""
    with city_broker(tmp_path / "broker", pki) as running:
        yield running
