"""The integration tests' own stack: real Kafka, FerretDB, Prometheus and one service, on free ports.

Started once per test session in a temporary directory and stopped at the end, never a developer's
running stack. The dispatch service runs in it so Prometheus has a real process to scrape and
the faust-in-FastAPI co-hosting is exercised as deployed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from ops.stack import LocalStack, StackError, StackPorts
from shared.db import Document
from shared.settings import KafkaSettings, MongoSettings

pytestmark = pytest.mark.integration

STACK_SERVICE = "dispatch"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(
        run_dir=tmp_path_factory.mktemp("stack"),
        ports=StackPorts.free(services=[STACK_SERVICE]),
        components=("kafka", "ferretdb", "prometheus", STACK_SERVICE),
        scrape_interval="1s",
        kafka_heap="384m",
    )
    try:
        local.start()
        local.wait_healthy(timeout_s=240)
        yield local
    except StackError:
        for log in sorted(local.logs_dir.glob("*.log")):
            print(f"==== {log.name} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-40:]))
        raise
    finally:
        local.stop()


@pytest.fixture(scope="session")
def kafka_settings(stack: LocalStack) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=stack.kafka_bootstrap, default_partitions=3)


@pytest.fixture(scope="session")
def mongo_settings(stack: LocalStack) -> MongoSettings:
    return MongoSettings(uri=stack.mongo_uri, database="lvyue_test")


@pytest.fixture
async def mongo_db(stack: LocalStack) -> AsyncIterator[AsyncDatabase[Document]]:
    """A fresh database per test, dropped afterwards."""
    client: AsyncMongoClient[Document] = AsyncMongoClient(stack.mongo_uri, tz_aware=True)
    name = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        await client.drop_database(name)
        await client.close()
