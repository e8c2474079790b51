"""Fixtures of the integration tests (the partner API's live and sandbox stores, its app and client)."""

from tests.integration.api_fixtures import api, store_urls  # noqa: F401 - fixtures
