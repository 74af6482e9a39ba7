"""Fixtures of the API tests. `alice` is a client with a key of its own on the module's `api_server`
(each module picks its server: tests.helpers.api_server, or one with other settings)."""

from __future__ import annotations

import pytest

from tests.helpers import ApiServer


@pytest.fixture(scope="module")
def alice(api_server: ApiServer):
    with api_server.client(api_server.new_key("alice")) as client:
        yield client
