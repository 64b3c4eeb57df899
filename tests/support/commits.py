"""A COMMIT that fails after everything before it succeeded (PostgreSQL only)."""

from __future__ import annotations

from django.db import connection

MESSAGE = "commit refused for this test"


class CommitFailure:
    """A deferred PostgreSQL constraint trigger: while armed, every transaction that wrote a checkpoint row
    fails at COMMIT, the very last step, after the row pointed at the new folder. With SQLSTATE 08006
    (connection_failure) the driver raises OperationalError, as for a connection lost at COMMIT; with the
    default P0001 it is a plain refusal by the server."""

    def __init__(self, errcode: str | None = None) -> None:
        self.errcode = errcode

    def arm(self) -> None:
        using = f" USING ERRCODE = '{self.errcode}'" if self.errcode else ""
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                CREATE FUNCTION test_fail_commit() RETURNS trigger AS $$
                BEGIN RAISE EXCEPTION '{MESSAGE}'{using}; END;
                $$ LANGUAGE plpgsql;
                CREATE CONSTRAINT TRIGGER test_fail_commit AFTER INSERT OR UPDATE ON checkpoints_checkpoint
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_fail_commit();
                """
            )

    def disarm(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "DROP TRIGGER IF EXISTS test_fail_commit ON checkpoints_checkpoint;"
                " DROP FUNCTION IF EXISTS test_fail_commit();"
            )
