-- What a WebSocket connection subscribed to (the `subscribe` route): every task of its organization,
-- or the tasks listed. The first step is what `prisma migrate dev` writes for the two fields of
-- WebSocketConnection (`node scripts/prisma.mjs diff`); the table's row-level security and grants
-- already cover the new columns.

-- AlterTable
ALTER TABLE "websocket_connections" ADD COLUMN     "subscribed_all" BOOLEAN NOT NULL DEFAULT false,
ADD COLUMN     "task_ids" UUID[] DEFAULT ARRAY[]::UUID[];

-- Written by hand from here on.

-- CheckConstraints
-- A bounded list without holes: the notifier matches a task id against it for every status event.
ALTER TABLE "websocket_connections" ADD CONSTRAINT "websocket_connections_task_ids_check"
    CHECK (pg_catalog.cardinality("task_ids") <= 100 AND pg_catalog.array_position("task_ids", NULL) IS NULL);
