"""The old import paths of the contrib parts (progrock.layer, progrock.twisted_writes,
progrock.autobahn_logs) still work, with a DeprecationWarning."""

from __future__ import annotations

import importlib

import pytest
from channels.layers import ChannelLayerManager
from django.test import override_settings

from progrock.contrib import autobahn_logs, layer, twisted_writes


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("progrock.layer", "RedisChannelLayer", layer.RedisChannelLayer),
        ("progrock.twisted_writes", "install", twisted_writes.install),
        ("progrock.autobahn_logs", "install", autobahn_logs.install),
    ],
)
def test_a_documented_name_is_the_contrib_one_with_a_deprecation_warning(
    old: str, name: str, new: object
) -> None:
    """progrock.X.name is progrock.contrib.X.name, and says where it moved."""
    module = importlib.import_module(old)
    with pytest.deprecated_call(match=rf"{old}\.{name} moved to progrock\.contrib\."):
        got = getattr(module, name)
    assert got is new


@pytest.mark.parametrize("old", ["progrock.layer", "progrock.twisted_writes"])
def test_an_unknown_name_is_an_attribute_error(old: str) -> None:
    """Only the documented names are forwarded; anything else fails as usual."""
    module = importlib.import_module(old)
    with pytest.raises(AttributeError, match=rf"module '{old}' has no attribute 'nothing'"):
        module.nothing  # noqa: B018


def test_the_old_backend_string_still_builds_the_layer() -> None:
    """CHANNEL_LAYERS BACKEND "progrock.layer.RedisChannelLayer" gives the contrib layer."""
    backend = {"BACKEND": "progrock.layer.RedisChannelLayer", "CONFIG": {"capacity": 7}}
    with (
        override_settings(CHANNEL_LAYERS={"default": backend}),
        pytest.deprecated_call(match="progrock.layer.RedisChannelLayer moved"),
    ):
        built = ChannelLayerManager()["default"]
    assert type(built) is layer.RedisChannelLayer
    assert built.capacity == 7
    assert built.lean
