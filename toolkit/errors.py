"""The project's one error type: what went wrong, what to do, and an exit code."""

from __future__ import annotations

# Exit codes scripts can trust (documented in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # a step failed while running; data kept, see the message
EXIT_USAGE = 2  # bad flags (Typer's own code)
EXIT_REFUSED = 3  # a check refused the upgrade before anything was changed
EXIT_VERIFY = 4  # the upgrade ran but verification found a difference
EXIT_ENVIRONMENT = 5  # Docker/Kubernetes unreachable, image missing, permission denied


class PgleapError(Exception):
    """An error an operator can act on: `message` says what, `hint` says what to do."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str = "", *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class Refused(PgleapError):
    """A preflight check said no; nothing was changed."""

    exit_code = EXIT_REFUSED


class EnvironmentProblem(PgleapError):
    """The engine (Docker, Kubernetes API) or an image is not usable."""

    exit_code = EXIT_ENVIRONMENT


class VerificationFailed(PgleapError):
    """The new cluster runs but differs from the old one."""

    exit_code = EXIT_VERIFY
