"""The supervisor's web status page: `/`, its static files, and the node facts the page needs.

The page (static/, plain HTML/CSS/JS, no build step) reads the same REST endpoints as
`shmcam top` (`/api/v1/{cam,pipeline}/info`, `/api/v1/logs`, the camera image PNG) and stops or
starts instances through the ordinary, token-guarded routes. The only route added here is
`/web/node`: the node's name and whether it wants a token, which the CamServer API has no
place for. Static files are found through the package, so the page works from any cwd.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

import shmcam

from .common import READ, route

# Everything the page loads comes from the node itself; previews are blob: URLs of fetched PNGs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)


def blueprint(node: str, auth, cluster: bool = False) -> Blueprint:
    """The page's blueprint; `cluster`: served by the coordinator (servers and node column)."""
    web = Blueprint("web", __name__, static_folder="static", static_url_path="/web/static")
    token_required = auth.token is not None

    @route(web, "/", "GET", READ)
    def index():
        response = web.send_static_file("index.html")
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    @route(web, "/web/node", "GET", READ)
    def node_facts():
        return jsonify(
            {
                "state": "ok",
                "status": "ok",
                "node": node,
                "version": shmcam.__version__,
                "token_required": token_required,
                "cluster": cluster,
            }
        )

    return web
