"""The Ray Serve reward service: the handle path batches and scores exactly as the oracle does on the
same decoded clips, the JSON API answers every bad request with the right 4xx and keeps serving, and
the client gives up with a clear error when the service is not there. The service started on its own
(`serve run` / `serve deploy` through the application builder and serve/reward_config.yaml) serves on
127.0.0.1 with the resources its args ask for.

One Serve instance on a free 127.0.0.1 port is shared by the module: the app `deploy` starts
(model="oracle", fast) and, for the builder tests, the config file's app."""

import base64
import http.client
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray binds 127.0.0.1, not the routable address

from rlhf.synthetic.oracle import score as oracle_score  # noqa: E402
from rlhf.synthetic.prompts import split_prompts  # noqa: E402
from rlhf.synthetic.render import render  # noqa: E402
from rlhf.video import encode_video, read_video  # noqa: E402
from serve.backends import VLLM_MISSING, RewardRequestError, RewardServiceError, TransformersBackend, make_backend  # noqa: E402
from serve.client import RewardClient  # noqa: E402
from serve.config import RewardServiceConfig  # noqa: E402
from serve.deployment import SERVE_KEYS, app  # noqa: E402

MAX_BODY = 64 * 1024  # small, so that the oversized-body test sends little
CONFIG_FILE = Path(__file__).resolve().parents[1] / "serve" / "reward_config.yaml"
CUSTOM = "reward_node"  # a custom resource the module's cluster offers once (cluster.yaml's role resources)


def _free_port() -> int:
    """A port the kernel hands out on 127.0.0.1, outside Ray's worker range 10002-19999."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port
    raise RuntimeError("no free port outside 10002-19999")


def _clips(n: int, seed: int = 0):
    prompts = [p.text for p in split_prompts("train")[seed::37][:n]]
    return [render(p, seed=seed + i) for i, p in enumerate(prompts)], prompts


def _stored(video: np.ndarray) -> np.ndarray:
    """The clip as the service sees it: H.264 crf 12 round trip."""
    return read_video(encode_video(video, crf=12))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    import ray

    from serve.deployment import deploy, shutdown

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=4, resources={CUSTOM: 1}, include_dashboard=False, log_to_driver=False)
    root = tmp_path_factory.mktemp("videos")
    cfg = RewardServiceConfig(
        model="oracle",
        http_port=_free_port(),
        app_name="reward_test",
        route_prefix="/reward_test",
        max_body_bytes=MAX_BODY,
        batch_wait_timeout_s=0.2,
        max_batch_size=8,
        max_ongoing_requests=16,
        video_root=str(root),
    )
    try:
        handle = deploy(cfg)
        yield cfg, handle, root
    finally:
        shutdown(cfg)
        if started:
            ray.shutdown()


@pytest.fixture(scope="module")
def built(service):
    """The app as `serve run serve/reward_config.yaml` builds it: the file's application entry and args,
    some args replaced by strings as `serve run ... key=value` passes them (the oracle, the module's
    custom resource, 0.25 GiB of memory, a small body limit), run by the module's Serve. Yields the
    file's application entry."""
    import ray
    from ray import serve

    # A replica that asks for a resource no node has never starts, and serve.run would wait forever.
    assert ray.cluster_resources().get(CUSTOM) == 1, f"this module's cluster must offer {CUSTOM}: 1"
    entry = yaml.safe_load(CONFIG_FILE.read_text())["applications"][0]
    args = {
        **entry["args"],
        "model": "oracle",
        "resources": f'{{"{CUSTOM}": 1}}',
        "memory_gib": "0.25",
        "num_cpus": "0.5",
        "max_body_bytes": str(MAX_BODY),
    }
    serve.run(app(args), name=entry["name"], route_prefix=entry["route_prefix"], blocking=False)
    try:
        yield entry
    finally:
        serve.delete(entry["name"])


def _http(
    cfg,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict | None = None,
    chunked: bool = False,
    prefix: str | None = None,
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", cfg.http_port, timeout=30)
    url = (cfg.route_prefix if prefix is None else prefix) + path
    try:
        hdrs = {"Content-Type": "application/json", "Connection": "close", **(headers or {})}
        if chunked:
            conn.request(method, url, body=iter([body]), headers=hdrs, encode_chunked=True)
        else:
            conn.request(method, url, body=body, headers=hdrs)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        conn.close()


def _post(cfg, payload) -> tuple[int, dict]:
    return _http(cfg, "POST", "/score", json.dumps(payload).encode())


def _assert_matches_oracle(reply: dict, video: np.ndarray, prompt: str) -> None:
    expected = oracle_score(_stored(video), prompt)
    for d in ("VQ", "MQ", "TA"):
        assert reply["raw"][d] == pytest.approx(expected[d], abs=1e-12), d
        assert reply["normalised"][d] == reply["raw"][d]  # the oracle has no normalisation constants
    assert reply["raw"]["Overall"] == pytest.approx(expected["VQ"] + expected["MQ"] + expected["TA"])


# ---------------------------------------------------------------- handle path


def test_client_scores_equal_the_oracle_on_the_stored_clips(service):
    cfg, handle, _ = service
    videos, prompts = _clips(3)
    replies = RewardClient(cfg.app_name, timeout_s=30).score(videos, prompts)
    assert len(replies) == 3
    for reply, v, p in zip(replies, videos, prompts):
        _assert_matches_oracle(reply, v, p)
        assert reply["model"] == "oracle"


def test_client_accepts_encoded_mp4_bytes_and_a_handle(service):
    cfg, handle, _ = service
    videos, prompts = _clips(2, seed=5)
    mp4s = [encode_video(v, crf=12) for v in videos]
    replies = RewardClient(handle, timeout_s=30).score(mp4s, prompts)
    for reply, v, p in zip(replies, videos, prompts):
        _assert_matches_oracle(reply, v, p)


def test_concurrent_requests_are_scored_in_batches(service):
    cfg, _, _ = service
    videos, prompts = _clips(8, seed=2)
    replies = RewardClient(cfg.app_name, timeout_s=30).score(videos, prompts)
    sizes = [r["batch_size"] for r in replies]
    assert max(sizes) > 1, sizes
    assert max(sizes) <= cfg.max_batch_size


def test_concurrent_callers_share_batches(service):
    cfg, handle, _ = service
    out, start = {}, threading.Barrier(4)

    def call(k):
        videos, prompts = _clips(1, seed=10 + k)
        mp4s = [encode_video(v, crf=12) for v in videos]
        client = RewardClient(handle, timeout_s=30)
        start.wait()
        out[k] = client.score(mp4s, prompts)[0]["batch_size"]

    threads = [threading.Thread(target=call, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4 and max(out.values()) > 1, out


def test_bad_input_is_raised_at_once_and_not_retried(service):
    cfg, _, _ = service
    client = RewardClient(cfg.app_name, timeout_s=30, retries=3, backoff_s=5.0)  # a retry would cost 5 s
    t0 = time.monotonic()
    with pytest.raises(RewardRequestError, match="video 0"):
        client.score([b"not an mp4 at all"], ["a red circle moving left slowly on a black background"])
    assert time.monotonic() - t0 < 4.0


def test_a_bad_request_among_concurrent_ones_fails_alone(service):
    cfg, handle, _ = service
    videos, prompts = _clips(3, seed=7)
    mp4s = [encode_video(v, crf=12) for v in videos]
    good = [handle.score.remote(m, p) for m, p in zip(mp4s, prompts)]
    bad = handle.score.remote(mp4s[0], "a teapot on a table")  # not the oracle's grammar
    with pytest.raises(RewardRequestError, match="moving-shapes prompts"):
        bad.result(timeout_s=30)
    for r, v, p in zip(good, videos, prompts):
        _assert_matches_oracle(r.result(timeout_s=30), v, p)


def test_client_fails_fast_when_the_app_is_not_deployed(service):
    client = RewardClient("no_such_reward_app", timeout_s=2, retries=2, backoff_s=0.05)
    videos, prompts = _clips(1)
    t0 = time.monotonic()
    with pytest.raises(RewardServiceError, match="no_such_reward_app.*3 attempt.*serve status"):
        client.score(videos, prompts)
    assert time.monotonic() - t0 < 10


def test_client_gives_up_on_requests_slower_than_its_timeout(service):
    cfg, _, _ = service
    # Every request waits batch_wait_timeout_s (0.2 s) for company: longer than the client's patience.
    client = RewardClient(cfg.app_name, timeout_s=0.05, retries=1, backoff_s=0.01)
    videos, prompts = _clips(1)
    t0 = time.monotonic()
    with pytest.raises(RewardServiceError, match="2 attempt.*Timeout"):
        client.score(videos, prompts)
    assert time.monotonic() - t0 < 5


# ---------------------------------------------------------------- HTTP API


def test_http_score_and_health(service):
    cfg, _, _ = service
    videos, prompts = _clips(1, seed=3)
    status, reply = _post(cfg, {"prompt": prompts[0], "video_b64": base64.b64encode(encode_video(videos[0])).decode()})
    assert status == 200, reply
    _assert_matches_oracle(reply, videos[0], prompts[0])
    status, health = _http(cfg, "GET", "/health")
    assert status == 200 and health["status"] == "ok", health
    assert all(np.isfinite(v) for v in health["raw"].values())


def test_http_list_form_and_server_side_paths(service):
    cfg, _, root = service
    videos, prompts = _clips(2, seed=4)
    (root / "a.mp4").write_bytes(encode_video(videos[1]))
    status, reply = _post(
        cfg,
        {
            "videos": [
                {"prompt": prompts[0], "video_b64": base64.b64encode(encode_video(videos[0])).decode()},
                {"prompt": prompts[1], "path": "a.mp4"},
            ]
        },
    )
    assert status == 200, reply
    for r, v, p in zip(reply["results"], videos, prompts):
        _assert_matches_oracle(r, v, p)


@pytest.mark.parametrize(
    "name, body, status, needle",
    [
        ("malformed JSON", b'{"prompt": "a red', 400, "not valid JSON"),
        ("empty body", b"", 400, "empty body"),
        ("not an object", b"[1, 2]", 422, "JSON object"),
        ("prompt as number", {"prompt": 3, "video_b64": "AAAA"}, 422, "'prompt' must be a string"),
        ("video_b64 as list", {"prompt": "p", "video_b64": [1, 2]}, 422, "'video_b64' must be a base64 string"),
        ("missing prompt", {"video_b64": "AAAA"}, 422, "missing 'prompt'"),
        ("missing video", {"prompt": "a red circle moving left slowly on a black background"}, 422, "no video"),
        ("both video forms", {"prompt": "p", "video_b64": "AAAA", "path": "a.mp4"}, 422, "both"),
        ("unknown field", {"prompt": "p", "video": "AAAA"}, 422, "unknown field"),
        ("not base64", {"prompt": "p", "video_b64": "***"}, 422, "not valid base64"),
        ("random bytes", "random", 422, "not a readable video container"),
        ("truncated mp4", "truncated", 422, "video"),
        ("wrong prompt grammar", "bad_prompt", 422, "moving-shapes prompts"),
        ("path outside video_root", {"prompt": "p", "path": "../../etc/hostname"}, 403, "outside video_root"),
        ("absolute path outside", {"prompt": "p", "path": "/etc/hostname"}, 403, "outside video_root"),
        ("missing file", {"prompt": "p", "path": "nope.mp4"}, 404, "no file"),
        ("NUL in path", {"prompt": "p", "path": "a\u0000.mp4"}, 422, "cannot be resolved"),
        ("bad list item", {"videos": [{"prompt": "p"}]}, 422, "videos[0]: no video"),
    ],
)
def test_http_bad_requests_get_a_clear_4xx(service, name, body, status, needle):
    cfg, _, _ = service
    prompt = "a red circle moving left slowly on a black background"
    mp4 = encode_video(render(prompt, seed=1))
    if body == "random":
        body = {"prompt": prompt, "video_b64": base64.b64encode(np.random.default_rng(0).bytes(3000)).decode()}
    elif body == "truncated":
        body = {"prompt": prompt, "video_b64": base64.b64encode(mp4[: len(mp4) // 3]).decode()}
    elif body == "bad_prompt":
        body = {"prompt": "a teapot", "video_b64": base64.b64encode(mp4).decode()}
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got, reply = _http(cfg, "POST", "/score", raw)
    assert got == status, (name, reply)
    assert needle in reply["error"], (name, reply)


def test_http_oversized_bodies_are_refused(service):
    cfg, _, _ = service
    big = json.dumps({"prompt": "p", "video_b64": "A" * (MAX_BODY + 16)}).encode()
    status, reply = _http(cfg, "POST", "/score", big)  # Content-Length says it
    assert status == 413 and "max_body_bytes" in reply["error"], reply
    status, reply = _http(cfg, "POST", "/score", big, chunked=True)  # no Content-Length: counted
    assert status == 413 and "max_body_bytes" in reply["error"], reply


def test_http_unknown_route_and_wrong_method(service):
    cfg, _, _ = service
    status, reply = _http(cfg, "GET", "/scores")
    assert status == 404 and f"POST {cfg.route_prefix}/score" in reply["error"], reply
    status, reply = _http(cfg, "GET", "/score")
    assert status == 405 and "use POST" in reply["error"], reply
    status, reply = _http(cfg, "POST", "/health", b"{}")
    assert status == 405 and "use GET" in reply["error"], reply


def test_replica_keeps_serving_after_bad_requests(service):
    cfg, _, _ = service
    for raw in (b"{", b"[]", json.dumps({"prompt": 1}).encode(), b"x" * (MAX_BODY + 1)):
        assert _http(cfg, "POST", "/score", raw)[0] >= 400
    videos, prompts = _clips(1, seed=9)
    status, reply = _post(cfg, {"prompt": prompts[0], "video_b64": base64.b64encode(encode_video(videos[0])).decode()})
    assert status == 200, reply
    _assert_matches_oracle(reply, videos[0], prompts[0])


def _malformed(rng: np.random.Generator, mp4: bytes, prompt: str) -> tuple[str, bytes, bool]:
    """One random malformed request: (kind, raw body, chunked). Each kind is invalid by construction."""
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    good = {"prompt": prompt, "video_b64": b64(mp4)}
    junk_values = [None, True, 0, -1.5, 1e308, [], [1, "a"], {}, {"a": 1}, "", "\u0000", "\ud7ff" * 3]
    kind = rng.choice(
        [
            "bad_json",
            "wrong_type",
            "missing",
            "unknown_field",
            "corrupt_video",
            "truncated_video",
            "empty_video",
            "huge",
            "empty_body",
            "bad_list",
            "bad_prompt",
            "bad_base64",
            "not_object",
        ]
    )
    if kind == "bad_json":
        raw = json.dumps(good).encode()
        choice = rng.integers(4)
        if choice == 0:  # cut short
            return kind, raw[: int(rng.integers(1, len(raw) - 1))], False
        if choice == 1:  # random bytes
            return kind, rng.bytes(int(rng.integers(1, 2000))), False
        if choice == 2:  # invalid UTF-8 inside a string
            return kind, raw[:12] + b"\xff\xfe\xfd" + raw[12:], False
        return kind, b'{"prompt": "' + prompt.encode() + b'", "video_b64": ' + b"NaN}", False
    if kind == "wrong_type":
        body = dict(good)
        key = rng.choice(["prompt", "video_b64"])
        body[key] = junk_values[int(rng.integers(len(junk_values)))]
        if key == "prompt" and isinstance(body[key], str):
            body[key] = 7
        if key == "video_b64" and isinstance(body[key], str):
            body[key] = [body[key]]
        return kind, json.dumps(body).encode(), False
    if kind == "missing":
        drop = rng.choice(list(good))
        return kind, json.dumps({k: v for k, v in good.items() if k != drop}).encode(), False
    if kind == "unknown_field":
        return kind, json.dumps({**good, f"x{int(rng.integers(1000))}": 1}).encode(), False
    if kind == "corrupt_video":  # a container header the demuxer cannot read, then the real payload
        n = int(rng.integers(8, 64))
        return kind, json.dumps({"prompt": prompt, "video_b64": b64(rng.bytes(n) + mp4[n + 32 :])}).encode(), False
    if kind == "truncated_video":  # cut within the first 90%: frames or the index (moov, at the end) are lost.
        # (A cut that drops only trailing metadata boxes still decodes every frame: that clip is scored.)
        return (
            kind,
            json.dumps({"prompt": prompt, "video_b64": b64(mp4[: int(rng.integers(1, 0.9 * len(mp4)))])}).encode(),
            False,
        )
    if kind == "empty_video":
        return kind, json.dumps({"prompt": prompt, "video_b64": ""}).encode(), False
    if kind == "huge":
        return (
            kind,
            json.dumps({"prompt": prompt, "video_b64": "A" * (MAX_BODY + int(rng.integers(1, 4096)))}).encode(),
            bool(rng.integers(2)),
        )
    if kind == "empty_body":
        return kind, b"", False
    if kind == "bad_list":
        items = [good, {"prompt": prompt}, {"video_b64": b64(mp4)}, 3, None, "x"]
        bad = items[int(rng.integers(1, len(items)))]
        return kind, json.dumps({"videos": [good, bad] if rng.integers(2) else [bad]}).encode(), False
    if kind == "bad_prompt":
        words = ["teapot", "blue", "zzz", "", "circle circle", "moving", "\u00e9\u00e8"]
        text = " ".join(rng.choice(words, int(rng.integers(0, 6))))
        return kind, json.dumps({"prompt": text, "video_b64": b64(mp4)}).encode(), False
    if kind == "bad_base64":
        alphabet = list("!@#$%^&*()~`<>?") + ["A"]
        junk = "".join(rng.choice(alphabet, int(rng.integers(1, 60))))
        return kind, json.dumps({"prompt": prompt, "video_b64": junk + "!"}).encode(), False
    return kind, json.dumps([good] if rng.integers(2) else "text").encode(), False


def test_http_fuzz_1000_malformed_requests_get_4xx(service):
    """1,200 random malformed requests (bad JSON, wrong types, missing and unknown fields, corrupt, truncated
    and empty videos, bodies over the limit with and without Content-Length, empty bodies, bad list items,
    prompts outside the grammar, bad base64, non-objects), 8 at a time: every one gets a 4xx with a JSON
    error, none a 5xx; the replica still scores a valid request exactly afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    cfg, _, _ = service
    rng = np.random.default_rng(1234)
    videos, prompts = _clips(2, seed=21)
    mp4s = [encode_video(v) for v in videos]
    cases = [_malformed(rng, mp4s[i % 2], prompts[i % 2]) for i in range(1200)]

    def send(case):
        kind, raw, chunked = case
        status, reply = _http(cfg, "POST", "/score", raw, chunked=chunked)
        return kind, status, reply

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(send, cases))
    kinds = {k for k, _, _ in results}
    assert len(kinds) == 13, kinds
    wrong = [(k, s, r) for k, s, r in results if not 400 <= s < 500 or not r.get("error")]
    assert not wrong, wrong[:5]
    status, reply = _post(cfg, {"prompt": prompts[0], "video_b64": base64.b64encode(mp4s[0]).decode()})
    assert status == 200, reply
    _assert_matches_oracle(reply, videos[0], prompts[0])


# ---------------------------------------------------------------- the service on its own (serve run / deploy)


def test_config_file_app_scores_over_http_and_refuses_bad_requests(service, built):
    cfg, _, _ = service
    prefix = built["route_prefix"]
    videos, prompts = _clips(1, seed=13)
    body = json.dumps({"prompt": prompts[0], "video_b64": base64.b64encode(encode_video(videos[0])).decode()})
    status, reply = _http(cfg, "POST", "/score", body.encode(), prefix=prefix)
    assert status == 200, reply
    _assert_matches_oracle(reply, videos[0], prompts[0])
    assert reply["model"] == "oracle"  # the arg, not the file's "default"
    status, reply = _http(cfg, "POST", "/score", b'{"prompt": "a red', prefix=prefix)
    assert status == 400 and "not valid JSON" in reply["error"], reply
    status, reply = _http(cfg, "POST", "/score", b"x" * (MAX_BODY + 1), prefix=prefix)
    assert status == 413 and f"max_body_bytes={MAX_BODY}" in reply["error"], reply  # the string arg, parsed
    status, reply = _http(cfg, "GET", "/scores", prefix=prefix)
    assert status == 404 and f"POST {prefix}/score" in reply["error"], reply  # the prefix it was deployed under


def test_config_file_resources_are_reserved_for_the_replica(built):
    """The args ask 1 unit of the cluster's only CUSTOM resource and 0.25 GiB: while the app runs Ray
    has none of CUSTOM left and 0.25 GiB less memory (nothing else in this cluster reserves memory)."""
    import ray

    total = ray.cluster_resources()
    deadline, used = time.monotonic() + 10, None
    while time.monotonic() < deadline:  # the resource view reaches the driver within about a second
        free = ray.available_resources()
        used = (total[CUSTOM] - free.get(CUSTOM, 0.0), total["memory"] - free.get("memory", 0.0))
        if used == (1.0, 0.25 * 2**30):
            break
        time.sleep(0.2)
    assert used == (1.0, 0.25 * 2**30)


def test_every_listening_socket_of_the_cluster_is_on_loopback(service, built):
    """`serve run` on an import path starts Serve with HTTPOptions' defaults, and on the config file with
    its http_options: both 127.0.0.1. In this module's cluster (GCS, raylet, agents, workers, Serve's
    controller, proxy and both apps' replicas) every TCP listener is on loopback, except one per Serve
    replica: Ray 2.60 binds each replica's inter-deployment gRPC server to [::]:0, with no option
    (ray/serve/_private/replica.py); token auth guards it when it is on."""
    from ray.serve.config import HTTPOptions
    from ray.serve.schema import ServeDeploySchema

    cfg, _, _ = service
    if not os.environ.get("RAY_SERVE_DEFAULT_HTTP_HOST"):
        assert HTTPOptions().host == "127.0.0.1"
    assert ServeDeploySchema.model_validate(yaml.safe_load(CONFIG_FILE.read_text())).http_options.host == "127.0.0.1"
    listeners = []
    for proc in psutil.Process().children(recursive=True):  # ray.init(address="local") started all of them
        try:
            listeners += [
                (" ".join(proc.cmdline()), c.laddr)
                for c in proc.net_connections("tcp")
                if c.status == psutil.CONN_LISTEN
            ]
        except psutil.NoSuchProcess:
            pass
    loopback = lambda ip: ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1")  # noqa: E731
    assert ("127.0.0.1", cfg.http_port) in [(a.ip, a.port) for cmd, a in listeners if "ProxyActor" in cmd]
    exposed = [(cmd, a) for cmd, a in listeners if not loopback(a.ip)]
    replicas = [cmd for cmd, a in exposed if cmd.startswith("ray::ServeReplica") and a.ip in ("::", "0.0.0.0")]
    assert len(replicas) == len(exposed) and sorted(replicas) == sorted(set(replicas)), exposed
    assert len(replicas) <= 2, exposed  # the two apps' replicas


# ---------------------------------------------------------------- config and backends (no Serve)


def test_config_file_names_every_app_key_at_its_default():
    """serve/reward_config.yaml spells out every RewardServiceConfig key an app builder can take (all but
    Serve's own four), at the defaults, so that the file documents what can be set."""
    from rlhf.config import load_config

    args = yaml.safe_load(CONFIG_FILE.read_text())["applications"][0]["args"]
    keys = {f for f in RewardServiceConfig.__dataclass_fields__} - set(SERVE_KEYS)
    assert set(args) == keys
    assert load_config(RewardServiceConfig, values=args) == RewardServiceConfig()


def test_ray_actor_options_carry_resources_and_memory():
    cfg = RewardServiceConfig(num_cpus=2, resources={"reward": 1}, memory_gib=1.5)
    assert cfg.ray_actor_options() == {
        "num_cpus": 2,
        "num_gpus": 0,
        "resources": {"reward": 1},
        "memory": 1610612736,
    }  # 1.5 * 1024**3
    assert RewardServiceConfig().ray_actor_options() == {"num_cpus": 1, "num_gpus": 0}


@pytest.mark.parametrize(
    "args, needle",
    [
        ({"resources": '{"reward": -1}'}, "resources.reward must be a finite number >= 0"),
        ({"resources": {"reward": float("inf")}}, "resources.reward must be a finite number >= 0"),
        ({"resources": '{"GPU": 1}'}, "custom resources"),
        ({"resources": '{"memory": 100}'}, "custom resources"),
        ({"resources": "reward"}, "config key 'resources': expected a mapping"),
        ({"resources": '{"reward": "one"}'}, "config key 'resources.reward': expected a number"),
        ({"memory_gib": "-0.5"}, "memory_gib must be a finite number >= 0"),
        ({"num_cpus": "-1"}, "num_cpus must be a finite number >= 0"),
        ({"num_gpus": "nan"}, "num_gpus must be a finite number >= 0"),
        ({"modle": "oracle"}, "unknown config key 'modle'"),
        ({"device.device": "cuda"}, "num_gpus=0"),
        ({"http_port": "9000"}, "http_port is Serve's setting"),
        ({"app_name": "r", "route_prefix": "/r"}, "--name NAME"),
    ],
)
def test_app_builder_refuses_bad_args_naming_the_key(args, needle):
    from rlhf.config import ConfigError

    with pytest.raises(ConfigError, match="reward app args") as info:
        app(args)
    assert needle in str(info.value), str(info.value)


def test_config_refuses_batches_larger_than_the_request_limit():
    with pytest.raises(ValueError, match="max_ongoing_requests .* max_batch_size"):
        RewardServiceConfig(max_batch_size=16, max_ongoing_requests=8).validate()
    RewardServiceConfig(max_batch_size=16, max_ongoing_requests=16).validate()
    with pytest.raises(ValueError, match="video_root must be an absolute"):
        RewardServiceConfig(video_root="videos").validate()


def test_vllm_backend_without_vllm_says_how_to_fix_it():
    try:
        import vllm  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("vllm is installed here")
    with pytest.raises(RewardServiceError) as info:
        make_backend(RewardServiceConfig(backend="vllm"))
    assert str(info.value) == VLLM_MISSING
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_failing_item_inside_a_batch_fails_alone():
    import asyncio

    from serve.backends import OracleBackend
    from serve.deployment import RewardDeployment

    class FailsOnBlue(OracleBackend):
        def score(self, videos, prompts, fps=8.0):
            if any("blue" in p for p in prompts):
                raise RuntimeError("cannot score blue")
            return super().score(videos, prompts, fps)

    prompts = [
        "a red circle moving left slowly on a black background",
        "a blue square moving up quickly on a gray background",
        "a green triangle moving down slowly on a black background",
    ]
    videos = [_stored(render(p, seed=i)) for i, p in enumerate(prompts)]
    replica = RewardDeployment(RewardServiceConfig(model="oracle"))
    replica.backend = FailsOnBlue()
    out = asyncio.run(replica._score_batch(videos, [8.0] * 3, prompts))  # the method serve.batch calls
    assert isinstance(out[1], RewardServiceError) and "cannot score blue" in str(out[1])
    for i in (0, 2):
        expected = oracle_score(videos[i], prompts[i])
        assert [out[i]["raw"][d] for d in ("VQ", "MQ", "TA")] == [expected[d] for d in ("VQ", "MQ", "TA")]
        assert out[i]["batch_size"] == 3


def test_learned_backend_gives_videoreward_normalised_scores():
    from rlhf.reward.inference import VideoReward

    videos, prompts = _clips(3, seed=11)
    frames = [_stored(v) for v in videos]
    backend = make_backend(RewardServiceConfig(model="default"))
    assert isinstance(backend, TransformersBackend)
    got = backend.score(frames, prompts)
    want = VideoReward.default().reward(frames, prompts)
    for g, w in zip(got, want):
        for d in ("VQ", "MQ", "TA", "Overall"):
            assert g["normalised"][d] == pytest.approx(w[d], abs=1e-5), d
        for d in ("VQ", "MQ", "TA"):  # raw undoes the checkpoint's normalisation
            n = backend.norm
            assert g["raw"][d] == pytest.approx(w[d] * n[f"{d}_std"] + n[f"{d}_mean"], abs=1e-4), d


def test_rolling_to_a_new_reward_version_drops_and_repeats_no_request(service):
    """The online refresh's roll (actors/refresh.py): the app is re-run with version 1 while a caller keeps
    8 requests in flight. Every request is answered exactly once (none failed, none sent again), each answer
    names the version that scored it, answers from before the roll are version 0, and once the roll is over
    every answer is version 1 from a new replica."""
    from actors.refresh import roll_deployment, wait_running
    from serve.deployment import deploy, shutdown

    cfg = RewardServiceConfig(
        model="oracle",
        http_port=service[0].http_port,
        app_name="roll_test",
        route_prefix="/roll_test",
        batch_wait_timeout_s=0.05,
        max_batch_size=8,
        max_ongoing_requests=16,
    )
    videos, prompts = _clips(8)
    mp4s = [encode_video(v, crf=12) for v in videos]
    deploy(cfg)
    wait_running(cfg.app_name)
    client = RewardClient(cfg.app_name, retries=3)
    batches, stop, errors = [], threading.Event(), []

    def caller():
        while not stop.is_set():
            try:
                t0 = time.monotonic()
                out = client.score(mp4s, prompts)
                batches.append((t0, time.monotonic(), out))
            except Exception as e:  # noqa: BLE001 (the test reports it)
                errors.append(e)
                return

    thread = threading.Thread(target=caller)
    try:
        thread.start()
        while len(batches) < 3:
            time.sleep(0.05)
        before = {r["replica_pid"] for r in batches[-1][2]}
        t_roll = time.monotonic()
        roll_deployment(cfg, "oracle", 1)
        t_done = time.monotonic()
        while not any(t0 > t_done for t0, _, _ in batches) and not errors:
            time.sleep(0.05)
        stop.set()
        thread.join(60)
    finally:
        stop.set()
        shutdown(cfg)
    assert not errors and client.retried == 0  # nothing failed, nothing was sent twice
    assert all(len(out) == len(mp4s) for _, _, out in batches)  # one answer per request
    for t0, t1, out in batches:
        versions = {r["reward_version"] for r in out}
        assert versions <= {0, 1}
        if t1 < t_roll:
            assert versions == {0}
        if t0 > t_done:
            assert versions == {1} and not {r["replica_pid"] for r in out} & before
        for r, v, p in zip(out, videos, prompts):  # the answer is this request's own score
            _assert_matches_oracle(r, v, p)
    assert any(t0 < t_done and t1 > t_roll for t0, t1, _ in batches)  # requests were in flight during the roll
