"""The errors tinygrok shows to people (the CLI prints their one-line message and exits 2)."""


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the option and what is allowed."""
