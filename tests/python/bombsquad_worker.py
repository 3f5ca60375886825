"""A bombsquad worker in Python: the worker side of PROTOCOL.md.

Standard library only, Python 3.8+. A worker program imports this module,
defines a handler that takes one decoded request and returns the answer,
and calls ``serve(handler)``::

    from bombsquad_worker import serve

    def handle(request):
        return {"Ok": request["x"] * 2}

    serve(handle)

The Rust side starts it with ``bombsquad::RemoteWorker``. What travels is
MessagePack as ``rmp_serde::to_vec_named`` writes it: a Rust struct is a map
keyed by field name, ``Result`` is ``{"Ok": v}`` or ``{"Err": e}``, a unit
enum variant is its name as a string, ``Option`` is the value or nil, and
``serde_bytes`` bytes are ``bin`` (Python ``bytes``).

What the handler does decides what the caller sees:

* it returns a value: a ``Return`` frame; the caller decodes it as its
  output type;
* it raises an exception: a ``Panic`` frame ("ValueError: boom"), and the
  worker serves the next request;
* the process dies (a signal, ``os._exit(3)``, ``sys.exit(3)``): the caller
  gets ``Error::NonzeroExitcode`` and a fresh worker takes over;
* it calls ``progress(message)`` first: ``Progress`` frames, zero or more
  before the answer.
"""

import os
import resource
import socket
import struct
import sys
import traceback
import zlib

__all__ = [
    "MsgpackError",
    "ProtocolError",
    "Channel",
    "packb",
    "unpackb",
    "progress",
    "serve",
]

# ---------------------------------------------------------------------------
# Frames

#: The first four bytes of every frame; the last one is the frame format.
MAGIC = b"BSQ\x02"
#: The protocol version this module speaks in its Hello.
PROTOCOL_VERSION = 2
#: The call id of frames that belong to no call (Hello, Shutdown).
NO_CALL = 0
#: The largest payload either side accepts (16 GiB).
MAX_FRAME_LEN = 16 << 30

# Frame kinds a foreign worker sends or receives.
HELLO = 4  # worker -> parent, once, first
REQUEST = 5  # parent -> worker
SHUTDOWN = 6  # parent -> worker, between requests
RETURN = 16  # worker -> parent: the answer
PANIC = 17  # worker -> parent: the handler raised
FAILURE = 18  # worker -> parent: the request or answer could not be coded
PROGRESS = 20  # worker -> parent: during a request, before the answer

# magic, kind, 3 reserved bytes, call id, checksum, payload length
_HEADER = struct.Struct("<4sB3sIIQ")
HEADER_LEN = _HEADER.size  # 24
_NO_RESERVED = b"\0\0\0"
# Smaller payloads go out in one write with their header.
_JOIN_BELOW = 64 << 10


class ProtocolError(Exception):
    """The parent sent something this protocol does not allow."""


class MsgpackError(ValueError):
    """A value that cannot be encoded, or bytes that cannot be decoded."""


# ---------------------------------------------------------------------------
# MessagePack: the subset serde and rmp_serde use (no ext types, no timestamps)


def packb(value):
    """Encodes ``value`` as MessagePack.

    Supported: None, bool, int (-2**63 .. 2**64-1), float (as float64), str,
    bytes/bytearray/memoryview (as bin), list/tuple (as array), dict (as map).
    Anything else raises MsgpackError naming the type and where it was.
    """
    out = bytearray()
    try:
        _pack(value, out, "value")
    except RecursionError:
        raise MsgpackError("the value is nested too deeply to encode") from None
    return bytes(out)


def _pack(value, out, path):
    if value is None:
        out.append(0xC0)
    elif value is False:
        out.append(0xC2)
    elif value is True:
        out.append(0xC3)
    elif isinstance(value, int):
        _pack_int(value, out, path)
    elif isinstance(value, float):
        out.append(0xCB)
        out += struct.pack(">d", value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        _pack_len(len(data), out, 0xA0, 31, (0xD9, 0xDA, 0xDB), path)
        out += data
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        _pack_len(len(data), out, None, 0, (0xC4, 0xC5, 0xC6), path)
        out += data
    elif isinstance(value, (list, tuple)):
        _pack_len(len(value), out, 0x90, 15, (None, 0xDC, 0xDD), path)
        for i, item in enumerate(value):
            _pack(item, out, "%s[%d]" % (path, i))
    elif isinstance(value, dict):
        _pack_len(len(value), out, 0x80, 15, (None, 0xDE, 0xDF), path)
        for key, item in value.items():
            _pack(key, out, "%s key %r" % (path, key))
            _pack(item, out, "%s[%r]" % (path, key))
    else:
        raise MsgpackError(
            "cannot encode %s of type %s as MessagePack (supported: None, bool, "
            "int, float, str, bytes, list, tuple, dict)" % (path, type(value).__name__)
        )


def _pack_int(value, out, path):
    if 0 <= value <= 0x7F:
        out.append(value)
    elif -32 <= value < 0:
        out.append(value & 0xFF)
    elif 0 <= value <= 0xFF:
        out += struct.pack(">BB", 0xCC, value)
    elif 0 <= value <= 0xFFFF:
        out += struct.pack(">BH", 0xCD, value)
    elif 0 <= value <= 0xFFFFFFFF:
        out += struct.pack(">BI", 0xCE, value)
    elif 0 <= value <= 0xFFFFFFFFFFFFFFFF:
        out += struct.pack(">BQ", 0xCF, value)
    elif -0x80 <= value < 0:
        out += struct.pack(">Bb", 0xD0, value)
    elif -0x8000 <= value < 0:
        out += struct.pack(">Bh", 0xD1, value)
    elif -0x80000000 <= value < 0:
        out += struct.pack(">Bi", 0xD2, value)
    elif -0x8000000000000000 <= value < 0:
        out += struct.pack(">Bq", 0xD3, value)
    else:
        raise MsgpackError(
            "cannot encode %s = %d: MessagePack integers hold -2**63 .. 2**64-1"
            % (path, value)
        )


def _pack_len(length, out, fix_base, fix_max, markers, path):
    """A length header: the fix form when there is one, else 8/16/32 bits."""
    m8, m16, m32 = markers
    if fix_base is not None and length <= fix_max:
        out.append(fix_base | length)
    elif m8 is not None and length <= 0xFF:
        out += struct.pack(">BB", m8, length)
    elif length <= 0xFFFF:
        out += struct.pack(">BH", m16, length)
    elif length <= 0xFFFFFFFF:
        out += struct.pack(">BI", m32, length)
    else:
        raise MsgpackError("%s is too long for MessagePack (%d)" % (path, length))


def unpackb(data):
    """Decodes one MessagePack value that fills all of ``data``.

    Maps become dicts (array keys become tuples), arrays lists, bin bytes,
    float32 and float64 floats. Ext types and trailing bytes raise
    MsgpackError.
    """
    data = memoryview(data)
    try:
        value, end = _unpack(data, 0)
    except RecursionError:
        raise MsgpackError("the value is nested too deeply to decode") from None
    if end != len(data):
        raise MsgpackError("%d bytes after the value" % (len(data) - end))
    return value


def _take(data, at, n):
    if at + n > len(data):
        raise MsgpackError(
            "truncated: %d bytes needed at offset %d, %d left" % (n, at, len(data) - at)
        )
    return data[at : at + n], at + n


def _unpack_fmt(data, at, fmt):
    size = struct.calcsize(fmt)
    raw, at = _take(data, at, size)
    return struct.unpack(fmt, raw)[0], at


# marker -> (struct format of the value or length, what follows)
_FIXED = {
    0xCA: (">f", "float"),
    0xCB: (">d", "float"),
    0xCC: (">B", "int"),
    0xCD: (">H", "int"),
    0xCE: (">I", "int"),
    0xCF: (">Q", "int"),
    0xD0: (">b", "int"),
    0xD1: (">h", "int"),
    0xD2: (">i", "int"),
    0xD3: (">q", "int"),
    0xC4: (">B", "bin"),
    0xC5: (">H", "bin"),
    0xC6: (">I", "bin"),
    0xD9: (">B", "str"),
    0xDA: (">H", "str"),
    0xDB: (">I", "str"),
    0xDC: (">H", "array"),
    0xDD: (">I", "array"),
    0xDE: (">H", "map"),
    0xDF: (">I", "map"),
}


def _unpack(data, at):
    marker, at = _take(data, at, 1)
    marker = marker[0]
    if marker <= 0x7F:
        return marker, at
    if marker >= 0xE0:
        return marker - 0x100, at
    if 0x80 <= marker <= 0x8F:
        return _unpack_map(data, at, marker & 0x0F)
    if 0x90 <= marker <= 0x9F:
        return _unpack_array(data, at, marker & 0x0F)
    if 0xA0 <= marker <= 0xBF:
        return _unpack_str(data, at, marker & 0x1F)
    if marker == 0xC0:
        return None, at
    if marker == 0xC2:
        return False, at
    if marker == 0xC3:
        return True, at
    if marker in _FIXED:
        fmt, what = _FIXED[marker]
        number, at = _unpack_fmt(data, at, fmt)
        if what in ("int", "float"):
            return number, at
        if what == "bin":
            raw, at = _take(data, at, number)
            return bytes(raw), at
        if what == "str":
            return _unpack_str(data, at, number)
        if what == "array":
            return _unpack_array(data, at, number)
        return _unpack_map(data, at, number)
    if marker in (0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8):
        raise MsgpackError(
            "MessagePack ext type (marker 0x%02x) at offset %d is not supported"
            % (marker, at - 1)
        )
    raise MsgpackError("invalid MessagePack marker 0x%02x at offset %d" % (marker, at - 1))


def _unpack_str(data, at, length):
    raw, at = _take(data, at, length)
    try:
        return str(raw, "utf-8"), at
    except UnicodeDecodeError as e:
        raise MsgpackError("a str at offset %d is not UTF-8: %s" % (at - length, e))


def _unpack_array(data, at, length):
    items = []
    for _ in range(length):
        item, at = _unpack(data, at)
        items.append(item)
    return items, at


def _unpack_map(data, at, length):
    result = {}
    for _ in range(length):
        key_at = at
        key, at = _unpack(data, at)
        value, at = _unpack(data, at)
        key = _hashable(key)
        try:
            result[key] = value
        except TypeError:
            raise MsgpackError(
                "a map key at offset %d is a %s, which Python cannot use as a key"
                % (key_at, type(key).__name__)
            ) from None
    return result, at


def _hashable(key):
    if isinstance(key, list):
        return tuple(_hashable(item) for item in key)
    return key


# ---------------------------------------------------------------------------
# The channel


class Channel:
    """The worker's end of its channel: a connected SOCK_STREAM Unix socket
    that the parent passes as stdin (fd 0).

    The socket is moved to a private descriptor that subprocesses do not
    inherit, and fd 0 becomes /dev/null, so neither ``input()`` nor a child
    process can read the parent's requests.
    """

    def __init__(self, fd=0):
        private = os.dup(fd)  # not inheritable (PEP 446)
        try:
            probe = socket.socket(fileno=private)
        except OSError as e:
            os.close(private)
            raise ProtocolError(
                "fd %d is not a socket (%s): this program is a bombsquad worker; "
                "start it through bombsquad::RemoteWorker" % (fd, e.strerror)
            ) from None
        if probe.family != socket.AF_UNIX or probe.type != socket.SOCK_STREAM:
            probe.close()
            raise ProtocolError("fd %d is not a Unix stream socket" % fd)
        self.sock = probe
        self.sock.setblocking(True)
        if fd == 0:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)

    def send(self, kind, payload=b"", call_id=NO_CALL):
        """Sends one frame for the call ``call_id``, its checksum included."""
        if len(payload) > MAX_FRAME_LEN:
            raise MsgpackError("a frame of %d bytes is over the 16 GiB limit" % len(payload))
        unsealed = _HEADER.pack(MAGIC, kind, _NO_RESERVED, call_id, 0, len(payload))
        checksum = zlib.crc32(payload, zlib.crc32(unsealed))
        header = _HEADER.pack(MAGIC, kind, _NO_RESERVED, call_id, checksum, len(payload))
        if len(payload) < _JOIN_BELOW:
            self.sock.sendall(header + bytes(payload))
        else:
            self.sock.sendall(header)
            self.sock.sendall(payload)

    def receive(self):
        """The next frame as ``(kind, call_id, payload)``, its checksum
        checked, or None at the end of the channel (the parent closed it, or
        died)."""
        header = self._read_exact(HEADER_LEN, at_boundary=True)
        if header is None:
            return None
        magic, kind, reserved, call_id, checksum, length = _HEADER.unpack(header)
        if magic != MAGIC:
            raise ProtocolError("bad frame magic %r" % bytes(magic))
        if length > MAX_FRAME_LEN:
            raise ProtocolError("a frame of %d bytes is over the 16 GiB limit" % length)
        payload = self._read_exact(length, at_boundary=False)
        unsealed = _HEADER.pack(magic, kind, reserved, call_id, 0, length)
        computed = zlib.crc32(payload, zlib.crc32(unsealed))
        if computed != checksum:
            raise ProtocolError(
                "checksum mismatch in a frame of kind %d: it says %08x, its bytes give %08x"
                % (kind, checksum, computed)
            )
        return kind, call_id, payload

    def _read_exact(self, n, at_boundary):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            read = self.sock.recv_into(view[got:])
            if read == 0:
                if at_boundary and got == 0:
                    return None
                raise ProtocolError("the channel ended inside a frame (%d of %d bytes)" % (got, n))
            got += read
        return bytes(buf)


# ---------------------------------------------------------------------------
# The serving loop

_current = None  # the channel, while a request runs (for progress())
_current_call = NO_CALL  # the id of that request, which every frame for it echoes


def progress(message):
    """Sends a Progress frame with ``message`` (any encodable value) to the
    parent. Only during a request, before the handler returns."""
    if _current is None:
        raise RuntimeError("progress() is only allowed while a request is being handled")
    _current.send(PROGRESS, packb(message), _current_call)


def panic_report(error):
    """The Panic payload for an exception: its message as Python prints the
    last line of a traceback, the innermost frame, the whole traceback."""
    message = "".join(traceback.format_exception_only(type(error), error)).strip()
    location = None
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        last = frames[-1]
        # Python 3.11+ knows the column (from 0); 0 here means unknown.
        column = getattr(last, "colno", None)
        location = {
            "file": last.filename,
            "line": last.lineno or 0,
            "column": column + 1 if column is not None else 0,
        }
    backtrace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return {"message": message, "location": location, "backtrace": backtrace}


def _failure(stage, error):
    return packb({"Codec": {"stage": stage, "message": str(error)}})


def _flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def serve(handler, disable_core_dumps=True):
    """Says Hello, then runs ``handler(request)`` for each Request until the
    parent sends Shutdown or closes the channel, and exits with code 0.

    ``handler`` gets the decoded request and returns the value to send back.
    An exception it raises (any ``Exception``) becomes a Panic frame and the
    worker goes on; ``SystemExit`` and ``KeyboardInterrupt`` end the process,
    as a crash would. Core dumps are disabled unless asked for, as in
    bombsquad's own children.
    """
    global _current
    if disable_core_dumps:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    channel = Channel(0)
    try:
        channel.send(HELLO, packb({"protocol": PROTOCOL_VERSION, "pid": os.getpid()}))
        while True:
            frame = channel.receive()
            if frame is None:
                break  # the parent is gone or done with us
            kind, call_id, payload = frame
            if kind == SHUTDOWN:
                break
            if kind != REQUEST:
                raise ProtocolError("unexpected frame kind %d from the parent" % kind)
            kind, answer = _answer(channel, handler, call_id, payload)
            _flush_output()
            channel.send(kind, answer, call_id)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the parent went away mid-answer: nobody is left to tell
    except ProtocolError as e:
        sys.stderr.write("bombsquad worker %d: %s\n" % (os.getpid(), e))
        sys.stderr.flush()
        os._exit(2)
    _flush_output()
    sys.exit(0)


def _answer(channel, handler, call_id, payload):
    """The terminal frame for one request: ``(kind, payload)``."""
    global _current, _current_call
    try:
        request = unpackb(payload)
    except MsgpackError as e:
        return FAILURE, _failure("DecodeArguments", e)
    _current = channel
    _current_call = call_id
    try:
        result = handler(request)
    except Exception as e:  # noqa: BLE001 -- every handler error is a Panic frame
        return PANIC, packb(panic_report(e))
    finally:
        _current = None
    try:
        return RETURN, packb(result)
    except MsgpackError as e:
        return FAILURE, _failure("EncodeResult", e)
