# -*- coding: utf-8 -*-
# Copyright: Tenantforge
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations


class ModuleDocFragment:
    """The PostgreSQL connection options of the database modules (module_utils/database.py)."""

    DOCUMENTATION = r"""
options:
  dsn:
    description:
      - libpq connection string or URL of the database, as the role that owns the schema
        (C(tenantforge_owner)). Never logged.
      - With O(dsn_secret_id), the parameters the secret holds (typically user and password) are
        added to it.
    type: str
  dsn_secret_id:
    description:
      - Name or ARN of a Secrets Manager secret holding the connection string or URL (a string, or a
        JSON object with C(dsn), C(url) or C(DATABASE_URL)), or credentials (a JSON object with
        C(username) and C(password), optionally C(host), C(port) and C(dbname) or C(database)).
      - One of O(dsn) and O(dsn_secret_id) is required. Never logged either.
    type: str
  connect_timeout:
    description: Seconds to wait for the connection.
    type: int
    default: 10
"""
