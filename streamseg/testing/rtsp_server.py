#!/usr/bin/python3
"""A real RTSP server for tests: GStreamer's gst-rtsp-server streaming a moving test pattern.

Runs under Debian's /usr/bin/python3 (python3-gi, gir1.2-gst-rtsp-server-1.0, plugins base/good/ugly):

    /usr/bin/python3 streamseg/testing/rtsp_server.py PORT NAME:FPS[:av] [NAME:record=FILE.mkv ...] [--auth USER:PASSWORD]

Serves rtsp://127.0.0.1:PORT/NAME for each mount, H.264 320x180 (with ``:av``, and a 440 Hz tone in AAC),
and prints "ready" once listening. A ``record=`` mount is one to publish H.264 to (RTSP RECORD),
``record-av=`` H.264 and AAC: what comes is kept in FILE.mkv.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    args = sys.argv[1:]
    auth = None
    if "--auth" in args:
        i = args.index("--auth")
        auth = args[i + 1]
        del args[i : i + 2]
    port, mounts = args[0], args[1:]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    if auth:
        user, password = auth.split(":", 1)
        rtsp_auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        rtsp_auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(rtsp_auth)
    for spec in mounts:
        name, what = spec.split(":", 1)
        factory = GstRtspServer.RTSPMediaFactory()
        if what.startswith(("record=", "record-av=")):  # takes a published stream, keeps it in a Matroska file
            kind, path = what.split("=", 1)
            sound = "rtpmp4gdepay name=depay1 ! aacparse ! mux. " if kind == "record-av" else ""  # H.264 + AAC
            factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
            factory.set_eos_shutdown(True)  # the session's end reaches the muxer: it writes what it held back
            factory.set_launch(f"( rtph264depay name=depay0 ! h264parse ! mux. {sound}matroskamux name=mux "
                               f"streamable=true ! filesink buffer-mode=unbuffered location={path} )")
        else:
            fps, _, av = what.partition(":")
            sound = ("audiotestsrc is-live=true freq=440 ! audioconvert ! audioresample "
                     "! audio/x-raw,rate=48000,channels=1 ! voaacenc ! rtpmp4gpay name=pay1 pt=97 ") if av else ""
            factory.set_launch(
                f"( videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=180,framerate={fps}/1 "
                f"! timeoverlay ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} "
                f"! rtph264pay name=pay0 pt=96 {sound})"
            )
            factory.set_shared(True)
        if auth:
            permissions = GstRtspServer.RTSPPermissions()
            permissions.add_role("user")
            permissions.add_permission_for_role("user", "media.factory.access", True)
            permissions.add_permission_for_role("user", "media.factory.construct", True)
            factory.set_permissions(permissions)
        server.get_mount_points().add_factory(f"/{name}", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {port}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
