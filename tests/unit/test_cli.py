from typer.testing import CliRunner

from ops.cli import app
from shared.kafka.topics import topics_to_create

runner = CliRunner()


def test_topics_list_shows_every_registry_topic() -> None:
    result = runner.invoke(app, ["topics", "list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    for spec in topics_to_create():
        assert spec.name in result.output


def test_help_lists_the_command_groups() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "stack" in result.output and "topics" in result.output
