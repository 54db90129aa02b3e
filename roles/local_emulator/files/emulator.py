"""Run moto's server, corrected where it answers differently from AWS for calls this collection makes.

Each correction makes the emulator behave as AWS documents; none changes what our roles send.
- CloudTrail DeleteTrail accepts a trail ARN as its Name (AWS does, and amazon.aws.cloudtrail sends
  the ARN); moto only looks trails up by name and silently keeps the trail.
"""

from __future__ import annotations

import sys

from moto.cloudtrail.models import CloudTrailBackend
from moto.server import main

_delete_trail_by_name = CloudTrailBackend.delete_trail


def _delete_trail(self: CloudTrailBackend, name: str) -> None:
    if name.startswith("arn:"):
        name = name.rsplit("/", 1)[-1]
    _delete_trail_by_name(self, name)


CloudTrailBackend.delete_trail = _delete_trail  # type: ignore[method-assign]

if __name__ == "__main__":
    main(sys.argv[1:])
