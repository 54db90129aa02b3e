"""Operators' command line, with the functions' own code and settings (``JWT_*``, ``DATABASE_URL`` /
``DATABASE_SECRET_ID``, AWS credentials and ``AWS_ENDPOINT_URL`` from the environment)::

    python -m tenantforge_lambda issue --org acme --email ada@acme.example
    python -m tenantforge_lambda set-password --org acme --email ada@acme.example < password-file

``issue`` prints a token for a new session of the user (their current roles and permissions; no
password asked: whoever can run it can read the signing key anyway); ``--claims`` prints the claims
as JSON on a second line. ``set-password`` reads the password from standard input (prompting without
echo on a terminal) and stores its Argon2id hash. Exit status 0, 1 when refused (the reason on
standard error), 2 for a usage or configuration error. Nothing secret is ever printed but the token.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence

from tenantforge_lambda import directory, passwords
from tenantforge_lambda.config import ConfigError
from tenantforge_lambda.database import Database, DatabaseConfigError, DatabaseUnavailable
from tenantforge_lambda.issuing import IssueError, from_env
from tenantforge_lambda.signing import SigningKeyError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tenantforge_lambda", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    issue = commands.add_parser("issue", help="print a token for a user")
    set_password = commands.add_parser("set-password", help="set a user's password (read from stdin)")
    for command in (issue, set_password):
        command.add_argument("--org", required=True, help="the organization's slug")
        command.add_argument("--email", required=True, help="the user's email")
    issue.add_argument("--claims", action="store_true", help="also print the claims (JSON)")
    args = parser.parse_args(argv)
    try:
        if args.command == "issue":
            issued = from_env().issue(args.org, args.email)
            print(issued.token)
            if args.claims:
                print(json.dumps(issued.claims, sort_keys=True))
        else:
            _set_password(args.org, args.email)
    except (ConfigError, DatabaseConfigError) as error:
        print(f"configuration: {error}", file=sys.stderr)
        return 2
    except IssueError as error:
        print(f"refused: {error.reason}", file=sys.stderr)
        return 1
    except (DatabaseUnavailable, SigningKeyError) as error:
        print(f"unavailable: {error}", file=sys.stderr)
        return 1
    return 0


def _set_password(org: str, email: str) -> None:
    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.read().rstrip("\r\n")
    try:
        password_hash = passwords.hash_password(password)
    except ValueError as error:
        raise IssueError(f"bad_password ({error})") from None
    database = Database.from_env()
    subject = directory.subject_by_email(database, org, email)
    if subject is None:
        raise IssueError("unknown_user")
    directory.replace_password_hash(database, subject, password_hash)
    print(f"password set for {subject.email} of {subject.org_slug}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
