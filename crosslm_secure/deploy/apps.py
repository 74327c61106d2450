"""The Flower components named in the app's pyproject (``[tool.flwr.app.components]``).

``client_app`` runs in a fresh ``flwr-clientapp`` process per message, so it imports only
Flower and the socket hop and forwards the bytes to the site worker. ``server_app`` runs the
unchanged coordinator over :class:`~crosslm_secure.transport.flower.FlowerTransport`.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from crosslm_secure.deploy.wire import ask_worker, ping_worker
from crosslm_secure.transport.flower import RECORD, unwrap, wrap

client_app = ClientApp()
server_app = ServerApp()


@client_app.query("hello")
def hello(message: Message, context: Context) -> Message:
    """Tell the server which site this SuperNode serves (a routing hint; replies are signed anyway).

    Only once the site worker answers: a SuperNode whose worker died or is stopped does not
    claim its site, so the server does not take a dead site back between rounds.
    """
    ping_worker(str(context.node_config["socket"]))
    return Message(RecordDict({RECORD: ConfigRecord({"site": str(context.node_config["site"])})}), reply_to=message)


@client_app.query()
def protocol(message: Message, context: Context) -> Message:
    """Carry one sealed request to the site worker and its sealed reply back."""
    reply = ask_worker(str(context.node_config["socket"]), int(message.metadata.run_id), unwrap(message.content))
    return Message(wrap(reply), reply_to=message)


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    from crosslm_secure.deploy.server import serve

    serve(grid, dict(context.run_config))
