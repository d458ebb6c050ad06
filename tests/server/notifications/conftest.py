from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from conveyor.server.db import dialect
from conveyor.server.db.engine import create_session_factory


@pytest.fixture
def factory(migrated_engine: Engine, db_session: Session) -> sessionmaker[Session]:
    """Writer sessions like the server's duties get (rows are deleted by db_session)."""
    return create_session_factory(
        migrated_engine.execution_options(**dialect.write_transaction_options(migrated_engine))
    )
