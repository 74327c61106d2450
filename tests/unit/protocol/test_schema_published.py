"""protocols/messages.schema.json is exactly what the code validates against."""

from pathlib import Path

from crosslm_secure.protocol.messages import schema_document

ROOT = Path(__file__).resolve().parents[3]


def test_published_schema_matches_code() -> None:
    published = (ROOT / "protocols" / "messages.schema.json").read_text()
    assert published == schema_document(), (
        "protocols/messages.schema.json is stale; regenerate it with "
        "`crosslm protocol-schema > protocols/messages.schema.json`"
    )
