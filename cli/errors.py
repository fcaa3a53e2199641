"""What can go wrong, as exceptions that carry the process's exit code and the lines to print."""

from __future__ import annotations

# Where a customer's token comes from: the platform's operator runs one of these on the service.
WHERE_TOKENS_COME_FROM = (
    "the platform's operator makes one with `manage.py customer create NAME` (a new customer) "
    "or `manage.py api_token create NAME` (an existing user)"
)

# Exit codes (argparse uses 2 for usage errors).
OK = 0
USER_ERROR = 1
USAGE_ERROR = 2
AUTH_ERROR = 3
SERVER_ERROR = 4


class CliError(Exception):
    """A failure reported to the user as one line per problem, then the process exits with `exit_code`."""

    exit_code = USER_ERROR

    def __init__(self, *lines: str):
        super().__init__(*lines)
        self.lines = list(lines)

    def __str__(self) -> str:
        return "; ".join(self.lines)


class UserError(CliError):
    """Invalid input, a name that does not exist, a conflict, a file that cannot be used."""

    exit_code = USER_ERROR


class AuthError(CliError):
    """No token, or one the API refuses."""

    exit_code = AUTH_ERROR


class ServerError(CliError):
    """The API failed, answered something unexpected, or could not be reached."""

    exit_code = SERVER_ERROR


class UsageError(CliError):
    """Arguments that parse but do not go together (argparse's own errors exit the same way)."""

    exit_code = USAGE_ERROR
