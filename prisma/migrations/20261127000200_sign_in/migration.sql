-- Sign-in: the users' password hashes, and how the token function finds an organization by its slug.
--
-- The first two statements are what `prisma migrate dev` writes for the UserCredential model (the
-- test of the schema compares them with the engine's output); the rest is written by hand, like the
-- row_level_security migration, and run by tenantforge_owner.

-- CreateTable
CREATE TABLE "user_credentials" (
    "organization_id" UUID NOT NULL,
    "user_id" UUID NOT NULL,
    "password_hash" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "user_credentials_pkey" PRIMARY KEY ("organization_id","user_id")
);

-- AddForeignKey
ALTER TABLE "user_credentials" ADD CONSTRAINT "user_credentials_organization_id_fkey" FOREIGN KEY ("organization_id") REFERENCES "organizations"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "user_credentials" ADD CONSTRAINT "user_credentials_organization_id_user_id_fkey" FOREIGN KEY ("organization_id", "user_id") REFERENCES "users"("organization_id", "id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Written by hand from here on.

-- CheckConstraints
-- An Argon2id hash in PHC string format, nothing else: a password stored by mistake is refused.
ALTER TABLE "user_credentials" ADD CONSTRAINT "user_credentials_password_hash_check"
    CHECK ("password_hash" ~ '^\$argon2id\$v=19\$m=[0-9]+,t=[0-9]+,p=[0-9]+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$');

-- EnableRowLevelSecurity
-- The same isolation as every tenant table (20261127000100_row_level_security).
ALTER TABLE "user_credentials" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY "tenant_isolation" ON "user_credentials"
    USING ("organization_id" = "current_org_id"()) WITH CHECK ("organization_id" = "current_org_id"());

-- Grants
-- The token function verifies a password as the application; setting one (the front-end's invite
-- and password change) is the application's too.
REVOKE ALL ON "user_credentials" FROM tenantforge_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON "user_credentials" TO tenantforge_app;

-- CreateFunction
-- Signing in names an organization by its slug, before any organization is set, and the application
-- sees no organization row then. This function is the one way it may look one up: the id and the
-- status of the organization with that slug, nothing else, no listing. It runs as its owner
-- (tenantforge_owner, whose owner_directory policy reads every organization), with a search_path
-- fixed at creation to this schema and pg_temp last, so a caller's objects cannot stand in for the
-- table (the advice of CREATE FUNCTION's "Writing SECURITY DEFINER Functions Safely").
SELECT pg_catalog.set_config('search_path', pg_catalog.quote_ident(pg_catalog.current_schema()) || ', pg_temp', true);
CREATE FUNCTION "organization_for_sign_in"("org_slug" text)
    RETURNS TABLE ("id" uuid, "status" "organization_status")
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path FROM CURRENT
    AS $$ SELECT o."id", o."status" FROM "organizations" AS o WHERE o."slug" = "org_slug" $$;
REVOKE ALL ON FUNCTION "organization_for_sign_in"(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION "organization_for_sign_in"(text) TO tenantforge_app;
