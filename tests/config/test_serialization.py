from __future__ import annotations

import functools
import linecache
import pickle
import subprocess
import sys
import textwrap
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from omniq_nb import BlobSerializer, OmniQ, OmniQError, SerializationError, SignatureError
from omniq_nb.pickling import MAX_SHIPPED_SOURCE

_HEADER = 5  # b"OQ" + version + format + flag
_SIGNATURE = 32


class Point:
    def __init__(self, x: int, y: int) -> None:
        self.x, self.y = x, y

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self) -> int:
        return hash((self.x, self.y))

    def as_tuple(self) -> tuple[int, int]:
        return (self.x, self.y)


class CreatesMarker:
    """Unpickling this opens (creates) the marker file: proof that the body was unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


PLAIN = [
    {"a": [1, 2.5, "x", None, True, b"\x00\xff"], "nested": {"k": {"deep": [[], {}]}}},
    [1, -2, 3.25, "é", False, None],
    "text",
    0,
    -(2**63),
    2**64 - 1,
    1.5,
    float("inf"),
    True,
    None,
    b"bytes\x00",
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_data_uses_msgpack_and_round_trips(value: Any) -> None:
    s = BlobSerializer()
    blob = s.dumps(value)
    assert blob[:2] == b"OQ"
    assert blob[3:4] == b"m"  # the format tag says msgpack
    back = s.loads(blob)
    assert back == value
    assert type(back) is type(value)


def test_plain_bool_and_int_keep_their_types_inside_containers() -> None:
    s = BlobSerializer()
    back = s.loads(s.dumps({"flag": True, "n": 1, "f": 1.0}))
    assert [type(v) for v in back.values()] == [bool, int, float]


def _identity(x: Any) -> Any:
    return x


RICH = [
    (1, "two", 3.0),
    {1, 2, 3},
    frozenset({"a"}),
    {1: "int key"},
    datetime(2024, 5, 17, 12, 30, 15, 123456, tzinfo=timezone.utc),
    datetime(2024, 5, 17, 12, 30),
    timedelta(seconds=90),
    Point(1, 2),
    [Point(3, 4), (5, 6)],
    2**70,
]


@pytest.mark.parametrize("value", RICH, ids=repr)
def test_other_values_use_cloudpickle_and_round_trip_exactly(value: Any) -> None:
    s = BlobSerializer()
    blob = s.dumps(value)
    assert blob[3:4] == b"p"  # the format tag says pickle
    back = s.loads(blob)
    assert back == value
    assert type(back) is type(value)


def test_lambda_and_closure_round_trip() -> None:
    s = BlobSerializer()
    offset = 10
    assert s.loads(s.dumps(lambda x: x + offset))(5) == 15


def test_call_round_trip() -> None:
    s = BlobSerializer(secret="k")
    fn, args, kwargs = s.load_call(s.dump_call(_identity, (Point(1, 2),), {"extra": (1,)}))
    assert fn(*args) == Point(1, 2)
    assert kwargs == {"extra": (1,)}


def by_value(source: str, name: str) -> Any:
    """Define a function in a module nobody can import, so cloudpickle sends it by value."""
    namespace: dict[str, Any] = {"__name__": "omniq_unimportable_cell"}
    exec(source, namespace)
    return namespace[name]


def test_a_plain_function_is_unpickled_once_for_all_its_calls() -> None:
    s = BlobSerializer()
    scale = by_value("def scale(x):\n    return x * 10\n", "scale")
    first, second = s.dump_calls(scale, [((1,), {}), ((2,), {})])
    fn1, args1, _ = s.load_call(first)
    fn2, args2, _ = s.load_call(second)
    assert fn1 is fn2
    assert (fn1(*args1), fn2(*args2)) == (10, 20)


def test_callables_with_state_of_their_own_are_unpickled_for_every_task() -> None:
    s = BlobSerializer()
    seen: list[int] = []

    def remember(x: int) -> list[int]:  # a closure over a list
        seen.append(x)
        return seen

    for fn in (remember, functools.partial(_identity, 1), Point(1, 2).as_tuple):
        blob = s.dump_call(fn, (), {})
        assert s.load_call(blob)[0] is not s.load_call(blob)[0]
    first, second = s.dump_calls(remember, [((1,), {}), ((2,), {})])
    assert s.load_call(first)[0](1) == [1]
    assert s.load_call(second)[0](2) == [2]  # not [1, 2]: no state from the first task


def test_a_function_pickled_larger_than_the_cache_limit_is_not_kept() -> None:
    s = BlobSerializer()
    size = by_value("def size(data=b'x' * 100_000):\n    return len(data)\n", "size")
    blob = s.dump_call(size, (), {})
    fn1, _, _ = s.load_call(blob)
    fn2, _, _ = s.load_call(blob)
    assert fn1 is not fn2
    assert fn1() == fn2() == 100_000


@pytest.mark.parametrize("value", [{"a": 1}, Point(1, 2)], ids=["msgpack", "pickle"])
def test_signed_blobs_verify(value: Any) -> None:
    s = BlobSerializer(secret="key")
    blob = s.dumps(value)
    assert blob[4:5] == b"s"
    assert s.loads(blob) == value
    assert BlobSerializer(secret=b"key").loads(blob) == value  # str and bytes keys agree


def test_tampered_signed_payload_is_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled.marker"
    signer = BlobSerializer(secret="key")
    harmless = signer.dumps((1, 2, 3))
    assert harmless[3:4] == b"p"
    evil_body = pickle.dumps(CreatesMarker(str(marker)))
    tampered = harmless[: _HEADER + _SIGNATURE] + evil_body
    # the attack would work if nothing checked the signature
    with pytest.raises(SignatureError, match="signature"):
        signer.loads(tampered)
    with pytest.raises(SignatureError, match="signature"):
        signer.load_call(tampered)
    assert not marker.exists()


def test_signature_with_another_secret_is_rejected(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled.marker"
    blob = BlobSerializer(secret="attacker").dumps(CreatesMarker(str(marker)))
    with pytest.raises(SignatureError, match="signature"):
        BlobSerializer(secret="key").loads(blob)
    assert not marker.exists()


def test_flipping_the_format_tag_breaks_the_signature() -> None:
    s = BlobSerializer(secret="key")
    blob = bytearray(s.dumps({"a": 1}))
    blob[3] = ord("p")
    with pytest.raises(SignatureError):
        s.loads(bytes(blob))


def test_unsigned_blob_read_with_secret_raises(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled.marker"
    unsigned = BlobSerializer().dumps(CreatesMarker(str(marker)))
    assert not marker.exists()  # dumps does not unpickle
    with pytest.raises(SignatureError, match="signature"):
        BlobSerializer(secret="key").loads(unsigned)
    assert not marker.exists()


def test_signed_blob_read_without_secret_raises() -> None:
    blob = BlobSerializer(secret="key").dumps({"a": 1})
    with pytest.raises(SignatureError, match="signature"):
        BlobSerializer().loads(blob)


def test_signature_error_is_an_omniq_error() -> None:
    assert issubclass(SignatureError, OmniQError)


@pytest.mark.parametrize("garbage", [b"", b"x", b"hello world", b"OQ", b"OQ\x01z-abc", pickle.dumps({"a": 1})])
def test_garbage_bytes_raise_serialization_error(garbage: bytes) -> None:
    with pytest.raises(SerializationError):
        BlobSerializer().loads(garbage)


@pytest.mark.parametrize("value", [{"a": [1, 2, 3]}, Point(1, 2)], ids=["msgpack", "pickle"])
def test_truncated_blob_raises_serialization_error(value: Any) -> None:
    s = BlobSerializer()
    blob = s.dumps(value)
    with pytest.raises(SerializationError):
        s.loads(blob[:-3])


def test_load_call_of_a_non_call_raises() -> None:
    s = BlobSerializer()
    with pytest.raises(SerializationError, match="call"):
        s.load_call(s.dumps([1, 2]))


def _takes(*args: Any, **kwargs: Any) -> None:
    return None


def _generator() -> Any:
    yield 1


def test_dump_call_names_the_unpicklable_positional_argument() -> None:
    with pytest.raises(SerializationError) as info:
        BlobSerializer().dump_call(_takes, (1, threading.Lock()), {})
    message = str(info.value)
    assert "argument 1" in message
    assert "lock" in message
    assert "_takes" in message
    assert isinstance(info.value, TypeError)


def test_dump_call_names_the_unpicklable_keyword_argument() -> None:
    with pytest.raises(SerializationError) as info:
        BlobSerializer().dump_call(_takes, (1,), {"items": _generator()})
    message = str(info.value)
    assert "keyword argument 'items'" in message
    assert "generator" in message
    assert isinstance(info.value, TypeError)


def test_dump_call_names_an_unpicklable_callable() -> None:
    lock = threading.Lock()
    with pytest.raises(SerializationError, match="callable"):
        BlobSerializer().dump_call(lock.acquire, (), {})


def test_dumps_of_unpicklable_value_names_its_type() -> None:
    with pytest.raises(SerializationError, match="lock"):
        BlobSerializer().dumps(threading.Lock())


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


class Chain:
    """Nested objects whose repr recurses as deeply as they are nested."""

    def __init__(self, inner: Chain | None) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"Chain({self.inner!r})"


def chain(depth: int) -> Chain | None:
    value = None
    for _ in range(depth):
        value = Chain(value)
    return value


@pytest.mark.parametrize("deep", [nested(100_000), chain(100_000)], ids=["list", "object"])
def test_an_argument_too_deeply_nested_is_named_and_called_too_deep(deep: Any) -> None:
    with OmniQ(db_url="memory://") as q:
        with pytest.raises(SerializationError) as positional:
            q.enqueue(_takes, 1, deep)
        with pytest.raises(SerializationError) as keyword:
            q.enqueue(_takes, 1, tree=deep)
        with pytest.raises(SerializationError, match=r"argument 0 .*too deeply nested"):
            q.enqueue_many(_takes, [(deep,)])
    assert "argument 1 of _takes()" in str(positional.value)
    assert "keyword argument 'tree' of _takes()" in str(keyword.value)
    for info in (positional, keyword):
        assert "too deeply nested" in str(info.value)
        assert len(str(info.value).splitlines()) == 1


def test_dumps_of_a_value_too_deeply_nested_names_its_label() -> None:
    with pytest.raises(SerializationError, match="the task's result: it is too deeply nested"):
        BlobSerializer().dumps(nested(100_000), label="the task's result")


def test_main_function_travels_by_value_to_another_process(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    script = tmp_path / "enqueue_main.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import omniq_nb

            def double(x):
                return 2 * x

            with omniq_nb.OmniQ(db_url={f"sqlite:///{db}"!r}) as q:
                print(q.enqueue(double, 21).id)
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip().splitlines()[-1]

    assert not hasattr(sys.modules["__main__"], "double")
    with OmniQ(db_url=f"sqlite:///{db}") as q:
        [stored] = [task for task in q.list() if task.id == task_id]  # rows carry the payload; handles do not
        assert stored.name == "double"
        fn, args, kwargs = q.core.serializer.load_call(stored.payload)
    assert fn.__module__ == "__main__"
    assert fn(*args, **kwargs) == 42


CELL_SOURCE = "def in_a_cell(x):\n    return 1 / x  # the cell's own line\n"


def _cell_function(filename: str, source: str) -> Any:
    """Define a function as a notebook cell does: its file lives only in ``linecache``."""
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace: dict[str, Any] = {"__name__": "__not_importable_cell__"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["in_a_cell"]


def test_a_cell_functions_source_travels_with_it_to_a_process_that_lacks_it() -> None:
    filename = "/tmp/ipykernel_0/omniq-test-cell.py"  # no such file: as ipykernel names cells
    blob = BlobSerializer().dump_call(_cell_function(filename, CELL_SOURCE), (0,), {})
    del linecache.cache[filename]  # as in a child process or another machine
    fn, _, _ = BlobSerializer().load_call(blob)
    assert fn.__code__.co_filename == filename
    assert linecache.getline(filename, 2) == "    return 1 / x  # the cell's own line\n"


def test_only_a_bounded_cell_source_travels_and_a_files_source_never() -> None:
    filename = "/tmp/ipykernel_0/omniq-test-long-cell.py"
    long_source = CELL_SOURCE + "#" * (MAX_SHIPPED_SOURCE + 1) + "\n"
    long_blob = BlobSerializer().dump_call(_cell_function(filename, long_source), (0,), {})
    assert b"the cell's own line" not in long_blob
    linecache.getlines(__file__)  # a real file's lines, cached with its modification time
    by_value = BlobSerializer().dump_call(lambda x: 2 * x, (1,), {})  # a file's line
    assert b"a file's line" not in by_value
