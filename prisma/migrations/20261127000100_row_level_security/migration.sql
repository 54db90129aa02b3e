-- Tenant isolation, and what schema.prisma cannot express: CHECK constraints, the audit actor's
-- ON DELETE SET NULL ("actor_id"), row-level security, grants, and the permission catalog.
-- Written by hand; Prisma's CLI applies it as it is and never regenerates it.
--
-- Run by tenantforge_owner, which owns the schema and every table. The role names are the
-- platform's fixed ones (roles/postgres creates tenantforge_owner and tenantforge_app); a migration
-- takes no parameters, so they are written out.

-- CheckConstraints
-- The same rules as tenant_bootstrap's input checks, so that no other writer can break them.
ALTER TABLE "organizations" ADD CONSTRAINT "organizations_slug_check"
    CHECK ("slug" ~ '^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$');
ALTER TABLE "users" ADD CONSTRAINT "users_email_check" CHECK ("email" = lower("email"));

-- AlterForeignKey
-- organization_id is part of the actor reference (it keeps the actor inside the organization), and
-- a plain SET NULL would null it too and fail on its NOT NULL. PostgreSQL 15 can null the actor
-- alone. Prisma reads only the action (SET NULL), so the schema's onDelete: SetNull still matches.
ALTER TABLE "audit_events"
    DROP CONSTRAINT "audit_events_organization_id_actor_id_fkey",
    ADD CONSTRAINT "audit_events_organization_id_actor_id_fkey" FOREIGN KEY ("organization_id", "actor_id")
        REFERENCES "users"("organization_id", "id") ON DELETE SET NULL ("actor_id") ON UPDATE CASCADE;

-- CreateFunction
-- The organization of the current transaction. The application sets app.current_org_id per
-- transaction (SET LOCAL, or set_config(..., true)), which is what keeps it correct behind PgBouncer's
-- transaction pooling: the setting ends with the transaction, never reaching the next client of the
-- server connection. Unset, it reads as NULL (current_setting's missing_ok); after a transaction-local
-- setting ends it reads as '' for the rest of the session, hence NULLIF: both mean no organization,
-- and NULL equals nothing, so no row is visible or writable. A value that is not a uuid is an error,
-- never a match. STABLE and SQL so the planner inlines it into the policies below.
CREATE FUNCTION "current_org_id"() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(pg_catalog.current_setting('app.current_org_id', true), '')::pg_catalog.uuid $$;
REVOKE ALL ON FUNCTION "current_org_id"() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION "current_org_id"() TO tenantforge_app;

-- EnableRowLevelSecurity
-- FORCE: the owner, too, sees only the organization it sets. Superusers and BYPASSRLS roles are the
-- only exceptions, and neither tenantforge_owner nor tenantforge_app is one.
ALTER TABLE "organizations" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE "users" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE "roles" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE "role_permissions" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE "user_roles" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE "tasks" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE "websocket_connections" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
ALTER TABLE "audit_events" ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;

-- CreatePolicy
-- One policy per table, for every command and every role: rows of the current organization only,
-- for reading (USING) and for writing (WITH CHECK: an INSERT or UPDATE that names another
-- organization fails). Foreign key checks and cascades are not filtered (PostgreSQL runs them
-- without row-level security), which is why cross-row references are composite (schema.prisma).
CREATE POLICY "tenant_isolation" ON "organizations"
    USING ("id" = "current_org_id"()) WITH CHECK ("id" = "current_org_id"());
CREATE POLICY "tenant_isolation" ON "users"
    USING ("organization_id" = "current_org_id"()) WITH CHECK ("organization_id" = "current_org_id"());
CREATE POLICY "tenant_isolation" ON "roles"
    USING ("organization_id" = "current_org_id"()) WITH CHECK ("organization_id" = "current_org_id"());
CREATE POLICY "tenant_isolation" ON "role_permissions"
    USING ("organization_id" = "current_org_id"()) WITH CHECK ("organization_id" = "current_org_id"());
CREATE POLICY "tenant_isolation" ON "user_roles"
    USING ("organization_id" = "current_org_id"()) WITH CHECK ("organization_id" = "current_org_id"());
CREATE POLICY "tenant_isolation" ON "tasks"
    USING ("organization_id" = "current_org_id"()) WITH CHECK ("organization_id" = "current_org_id"());
CREATE POLICY "tenant_isolation" ON "websocket_connections"
    USING ("organization_id" = "current_org_id"()) WITH CHECK ("organization_id" = "current_org_id"());
CREATE POLICY "tenant_isolation" ON "audit_events"
    USING ("organization_id" = "current_org_id"()) WITH CHECK ("organization_id" = "current_org_id"());

-- The owner's directory of organizations: it reads every organization row (to find one by its slug,
-- to list them), and writes only the one it has set, like any session. This is how the bootstrap
-- manages tenants as tenantforge_owner under FORCE ROW LEVEL SECURITY: it looks the slug up here,
-- then sets app.current_org_id to the organization's id (a new one: the id it generates and inserts)
-- before it touches that organization's rows. The application never gets it.
CREATE POLICY "owner_directory" ON "organizations" FOR SELECT TO tenantforge_owner USING (true);

-- Grants
-- The application: data access only (it owns nothing and has no BYPASSRLS). The database's default
-- privileges (roles/postgres) already give it SELECT, INSERT, UPDATE, DELETE on every new table of
-- the owner; everything is revoked and granted again here, so that this migration alone states the
-- access, and narrower where the application has no business writing:
--  - organizations: read its own, rename it (org:write); creating, suspending and deleting tenants
--    is the bootstrap's, as tenantforge_owner.
--  - audit_events: append-only history, INSERT and SELECT.
--  - permissions: the global catalog, changed by migrations only.
REVOKE ALL ON "organizations", "users", "roles", "permissions", "role_permissions", "user_roles", "tasks",
    "websocket_connections", "audit_events" FROM tenantforge_app;
GRANT SELECT, UPDATE ("name", "updated_at") ON "organizations" TO tenantforge_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON "users", "roles", "role_permissions", "user_roles", "tasks",
    "websocket_connections" TO tenantforge_app;
GRANT SELECT, INSERT ON "audit_events" TO tenantforge_app;
GRANT SELECT ON "permissions" TO tenantforge_app;

-- SeedPermissions
-- The catalog roles are built from. A later migration adds keys the same way; one that retires a
-- key deletes its grants first (role_permissions' reference is ON DELETE RESTRICT).
INSERT INTO "permissions" ("key", "description") VALUES
    ('tasks:create', 'Create tasks'),
    ('tasks:read', 'Read tasks and their results'),
    ('tasks:cancel', 'Cancel queued or running tasks'),
    ('users:read', 'List the organization''s users'),
    ('users:write', 'Invite, change and remove users, and assign their roles'),
    ('roles:read', 'List roles and their permissions'),
    ('roles:write', 'Create, change and delete roles'),
    ('org:read', 'Read the organization''s settings'),
    ('org:write', 'Change the organization''s settings'),
    ('audit:read', 'Read the audit log')
ON CONFLICT ("key") DO NOTHING;
