"""Code shared by the Lambda functions under ``lambdas/``, bundled into each function's zip.

* :mod:`tenantforge_lambda.config`: the ``JWT_*`` settings, read from the environment once.
* :mod:`tenantforge_lambda.jwks`: the public keys of the JWKS secret, cached, refetched on rotation.
* :mod:`tenantforge_lambda.tokens`: verification of the platform's access tokens.
* :mod:`tenantforge_lambda.logs`: one structured JSON line per event, never a secret value.
* :mod:`tenantforge_lambda.secrets` and :mod:`tenantforge_lambda.database`: Secrets Manager and
  PostgreSQL, one client or connection per container.
* :mod:`tenantforge_lambda.directory`, :mod:`tenantforge_lambda.passwords`,
  :mod:`tenantforge_lambda.signing` and :mod:`tenantforge_lambda.issuing`: issuing, sign-in, refresh.

The modules import nothing heavy at import time (boto3 is imported on the first fetch), so a cold
start pays only for what it uses.
"""
