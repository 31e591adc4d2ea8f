"""agile.errors: the library's argument mistakes are ArgumentErrors, not ConfigErrors (#27 F10);
an experiment turns them into ConfigErrors when they come from its config."""

import pytest

import agile
from agile.errors import ArgumentError, ConfigError, UserError, as_config_error


def test_library_mistakes_are_argument_errors_not_config_errors():
    for call in (lambda: agile.get_activation("swish"),
                 lambda: agile.layers.validate_granularity("pixel")):
        with pytest.raises(ArgumentError, match=r"Unknown (activation 'swish'|granularity "
                                                r"'pixel')") as err:
            call()
        assert not isinstance(err.value, ConfigError)
        assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)


def test_as_config_error_keeps_the_message_and_config_errors():
    with pytest.raises(ConfigError, match=r"^Unknown activation 'swish'"):
        with as_config_error():
            agile.get_activation("swish")
    with pytest.raises(ConfigError, match="already one"):
        with as_config_error():
            raise ConfigError("already one")
