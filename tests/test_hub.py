"""Hub ids: download, cache and offline use, against a loopback Hub (tests/hub_server.py).

huggingface_hub reads HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so every load runs in a
fresh Python process with its own environment, as a user's would; the Hub runs in a thread of this process
and counts the requests those processes make.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from hub_server import HubServer, etag_of, read_folder

ROOT = Path(__file__).resolve().parents[1]
RESULT = "@@result@@"
# Environment that would leak the developer's own Hub setup into the tests.
_HUB_ENV = ("HF_HOME", "HF_HUB_CACHE", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
            "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN_PATH")

# Runs in the child: the test's code, then the dict `result` (or the error) as JSON on the last line.
_PRELUDE = """
import json, os, sys, urllib.request
result = {}
def hits():
    with urllib.request.urlopen(os.environ["HF_ENDPOINT"] + "/_test/hits") as r:
        return json.load(r)
try:
CODE
except Exception as error:
    result = {"error": type(error).__name__, "message": str(error),
              "bases": [c.__name__ for c in type(error).__mro__]}
print(MARKER + json.dumps(result))
"""


def run_py(code: str, *, home, hub: HubServer | None = None, env=None, endpoint=None, timeout=120,
           background=False):
    """Run `code` in a fresh interpreter with HF_HOME=home and HF_ENDPOINT at the loopback Hub.

    Returns the child's `result` dict (with `stderr` added), or the Popen when `background`.
    """
    full_env = {k: v for k, v in os.environ.items() if k not in _HUB_ENV}
    full_env.update(HF_HOME=str(home), HF_HUB_DISABLE_XET="1",
                    HF_ENDPOINT=endpoint or (hub.url if hub else "http://127.0.0.1:9"),
                    PYTHONPATH=str(ROOT), HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}
    script = _PRELUDE.replace("CODE", textwrap.indent(textwrap.dedent(code), "    ")).replace("MARKER", repr(RESULT))
    cmd = [sys.executable, "-c", script]
    if background:
        return subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    proc = subprocess.run(cmd, env=full_env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return _parse(proc.stdout, proc.stderr)


def _parse(stdout: str, stderr: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    assert lines, f"child printed no result\nstdout:\n{stdout}\nstderr:\n{stderr}"
    result = json.loads(lines[-1][len(RESULT):])
    result["stderr"] = stderr
    return result


def ok(result: dict) -> dict:
    assert "error" not in result, f"{result['error']}: {result['message']}\n{result['stderr']}"
    return result


# A checkpoint's files, for transport tests: contents do not matter, names and sizes do.
def fake_checkpoint(**extra) -> dict:
    files = {
        "config.json": json.dumps({"model_type": "bert", "hidden_size": 32}).encode(),
        "model.safetensors": os.urandom(300_000),
        "vocab.txt": b"[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n",
        "tokenizer_config.json": b'{"do_lower_case": true}',
    }
    files.update(extra)
    return files


LOAD = """
from pretrained.hub import Source
source = Source({name!r}, **{options!r})
result["config"] = source.require("config.json")
result["weights"] = [source.file(n) for n in ("model.safetensors", "model.safetensors.index.json",
                                             "pytorch_model.bin")]
result["generation"] = source.file("generation_config.json")
result["commit"] = source.commit
"""


def load(name, *, home, hub, env=None, **options) -> dict:
    """What a model load asks of a Source, in a fresh process: config, weights probes, generation config."""
    return run_py(LOAD.format(name=name, options=options), home=home, hub=hub, env=env)


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


@pytest.fixture
def repo_id():
    return f"org/tiny-{uuid.uuid4().hex[:8]}"


def api_calls(hub):
    return [str(h) for h in hub.requests(contains="/api/models/")]


def load_requests(hub):
    """Requests a load made, leaving out huggingface_hub's once-a-day telemetry registry fetch."""
    return [str(h) for h in hub.hits if "/api/agent-harnesses" not in h.path]


# ------------------------------------------------------------------------------------ cold and warm
def test_first_load_downloads_into_hf_home_and_the_second_downloads_nothing(hub, repo_id, tmp_path):
    files = fake_checkpoint()
    sha = hub.add_repo(repo_id, files)
    hub.reset()
    cold = ok(load(repo_id, home=tmp_path, hub=hub))
    folder = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    assert cold["config"] == str(folder / "snapshots" / sha / "config.json")
    assert cold["weights"] == [str(folder / "snapshots" / sha / "model.safetensors"), None, None]
    assert cold["generation"] is None
    assert (folder / "refs" / "main").read_text() == sha
    assert Path(cold["weights"][0]).read_bytes() == files["model.safetensors"]
    # The blob is named by its ETag: sha256 for LFS files, the git blob sha1 for small ones.
    assert (folder / "blobs" / etag_of("model.safetensors", files["model.safetensors"])).is_file()
    # One API call learns the commit and the file list; only the two files that exist are fetched.
    assert load_requests(hub) == [
        f"GET /api/models/{repo_id}/revision/main",
        f"HEAD /{repo_id}/resolve/{sha}/config.json", f"GET /{repo_id}/resolve/{sha}/config.json",
        f"HEAD /{repo_id}/resolve/{sha}/model.safetensors", f"GET /{repo_id}/resolve/{sha}/model.safetensors",
    ]
    # Absent files are recorded where huggingface_hub and transformers look for them.
    assert (folder / ".no_exist" / sha / "generation_config.json").is_file()
    assert (folder / ".no_exist" / sha / "model.safetensors.index.json").is_file()

    hub.reset()
    warm = ok(load(repo_id, home=tmp_path, hub=hub))
    assert warm["config"] == cold["config"] and warm["weights"] == cold["weights"]
    assert load_requests(hub) == [f"GET /api/models/{repo_id}/revision/main"]


def test_commit_hash_offline_and_local_files_only_make_no_request(hub, repo_id, tmp_path):
    sha = hub.add_repo(repo_id, fake_checkpoint())
    first = ok(load(repo_id, home=tmp_path, hub=hub))
    for options, env in [({"revision": sha}, None), ({}, {"HF_HUB_OFFLINE": "1"}),
                         ({"local_files_only": True}, None)]:
        hub.reset()
        again = ok(load(repo_id, home=tmp_path, hub=hub, env=env, **options))
        assert again["weights"] == first["weights"] and again["generation"] is None
        assert again["commit"] == sha
        assert hub.hits == [], (options, env)


def test_commit_hash_cold_downloads_without_resolving(hub, repo_id, tmp_path):
    sha = hub.add_repo(repo_id, fake_checkpoint())
    hub.reset()
    result = ok(load(repo_id, home=tmp_path, hub=hub, revision=sha))
    assert result["commit"] == sha and result["weights"][0].endswith(f"{sha}/model.safetensors")
    # One listing of the commit answers the probes for absent files; no refs/ entry for a hash.
    assert api_calls(hub) == [f"GET /api/models/{repo_id}/revision/{sha}"]
    assert len(hub.file_downloads()) == 2
    assert not (tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}" / "refs").exists()


def test_a_moved_branch_fetches_only_what_changed(hub, repo_id, tmp_path):
    files = fake_checkpoint()
    old = hub.add_repo(repo_id, files)
    ok(load(repo_id, home=tmp_path, hub=hub))
    new = hub.push(repo_id, {"config.json": b'{"model_type": "bert", "hidden_size": 64}'})
    hub.reset()
    result = ok(load(repo_id, home=tmp_path, hub=hub))
    assert result["commit"] == new != old
    assert json.loads(Path(result["config"]).read_text())["hidden_size"] == 64
    # The unchanged weights blob is linked into the new snapshot after a HEAD, not downloaded again.
    assert [str(h) for h in hub.file_downloads()] == [f"GET /{repo_id}/resolve/{new}/config.json"]
    folder = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    assert (folder / "refs" / "main").read_text() == new
    assert len(list((folder / "blobs").iterdir())) == 3  # two configs, one weights file


def test_revision_tag_branch_and_subfolder(hub, repo_id, tmp_path):
    v1 = hub.add_repo(repo_id, {**fake_checkpoint(), "sub/config.json": b'{"where": "sub"}'})
    hub.tag(repo_id, "v1.0", v1)
    hub.push(repo_id, {"config.json": b'{"version": 2}'}, branch="main")
    hub.repos[repo_id].refs["feature/x"] = v1  # a branch with a slash travels as %2F
    for revision in ("v1.0", "feature/x"):
        result = ok(load(repo_id, home=tmp_path, hub=hub, revision=revision))
        assert result["commit"] == v1
        assert "version" not in json.loads(Path(result["config"]).read_text())
    result = ok(run_py(f"""
        from pretrained.hub import Source
        source = Source({repo_id!r}, subfolder="sub")
        result["config"] = open(source.require("config.json")).read()
        result["weights"] = source.file("model.safetensors")
        result["folder"] = source.folder
    """, home=tmp_path, hub=hub))
    assert json.loads(result["config"]) == {"where": "sub"}
    assert result["weights"] is None and result["folder"].endswith("/sub")


def test_hf_hub_cache_and_cache_dir_move_the_cache(hub, repo_id, tmp_path):
    hub.add_repo(repo_id, fake_checkpoint())
    by_env = ok(load(repo_id, home=tmp_path / "home", hub=hub, env={"HF_HUB_CACHE": str(tmp_path / "env")}))
    assert by_env["config"].startswith(str(tmp_path / "env" / f"models--{repo_id.replace('/', '--')}"))
    by_arg = ok(load(repo_id, home=tmp_path / "home", hub=hub, cache_dir=str(tmp_path / "arg")))
    assert by_arg["config"].startswith(str(tmp_path / "arg"))
    assert not (tmp_path / "home" / "hub").exists()


def test_legacy_id_follows_the_rename(hub, tmp_path):
    name = f"legacy-{uuid.uuid4().hex[:6]}"
    sha = hub.add_repo(f"google-bert/{name}", fake_checkpoint())
    hub.aliases[name] = f"google-bert/{name}"
    result = ok(load(name, home=tmp_path, hub=hub))
    # Cached under the id the user typed, as huggingface_hub and transformers do.
    assert result["config"] == str(tmp_path / "hub" / f"models--{name}" / "snapshots" / sha / "config.json")
    hub.reset()
    ok(load(name, home=tmp_path, hub=hub))
    assert load_requests(hub) == [f"GET /api/models/{name}/revision/main"]


def test_force_download_fetches_again(hub, repo_id, tmp_path):
    hub.add_repo(repo_id, fake_checkpoint())
    ok(load(repo_id, home=tmp_path, hub=hub))
    hub.reset()
    ok(load(repo_id, home=tmp_path, hub=hub, force_download=True))
    assert len(hub.file_downloads()) == 2


def test_local_folder_needs_no_hub(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    result = ok(run_py(f"""
        from pretrained.hub import Source, MissingFileError
        source = Source({str(tmp_path / 'ckpt')!r})
        result["local"] = source.is_local
        result["config"] = source.require("config.json")
        result["weights"] = source.file("model.safetensors")
        result["str"] = str(source)
        try:
            source.require("model.safetensors")
        except MissingFileError as error:
            result["missing"] = str(error)
    """, home=tmp_path))
    assert result["local"] and result["config"] == str(tmp_path / "ckpt" / "config.json")
    assert result["weights"] is None
    assert result["missing"] == f"folder '{tmp_path / 'ckpt'}' has no file 'model.safetensors'"


def test_pop_hub_options():
    from pretrained.hub import pop_hub_options

    kwargs = {"revision": "v1", "token": "t", "num_labels": 3, "subfolder": "s"}
    assert pop_hub_options(kwargs) == {"revision": "v1", "token": "t", "subfolder": "s"}
    assert kwargs == {"num_labels": 3}


# ------------------------------------------------------------------------------------------ errors
ERRORS = """
from pretrained import hub as H
def attempt(key, name, filename="config.json", **options):
    try:
        path = H.Source(name, **options).require(filename)
        result[key] = {"ok": path}
    except H.HubError as error:
        result[key] = {"type": type(error).__name__, "message": str(error),
                       "bases": [c.__name__ for c in type(error).__mro__]}
attempt("repo", "org/no-such-model")
attempt("private", names["private"])
attempt("revision", names["repo"], revision="no-such-branch")
attempt("file", names["repo"], filename="tokenizer.json")
attempt("gated", names["gated"])
attempt("gated_no_access", names["gated"], token="hf_other")
attempt("gated_granted", names["gated"], token="hf_good")
attempt("bad_token", names["repo"], token="hf_bad")
attempt("path", "./no/such/folder")
"""


@pytest.fixture(scope="module")
def errors(hub, tmp_path_factory):
    tag = uuid.uuid4().hex[:6]
    names = {"repo": f"org/plain-{tag}", "private": f"org/private-{tag}", "gated": f"org/gated-{tag}"}
    hub.tokens |= {"hf_good", "hf_other"}
    hub.add_repo(names["repo"], fake_checkpoint())
    hub.add_repo(names["private"], fake_checkpoint(), private=True)
    hub.add_repo(names["gated"], fake_checkpoint(), gated=True)
    hub.repos[names["gated"]].granted.add("hf_good")
    code = f"names = {names!r}\n{ERRORS}"
    return names, ok(run_py(code, home=tmp_path_factory.mktemp("errors"), hub=hub))


@pytest.mark.parametrize("case, repo, error_type, words", [
    ("repo", None, "RepoNotFoundError", ["'org/no-such-model' was not found", "spelling", "HF_TOKEN"]),
    ("private", "private", "RepoNotFoundError", ["private", "token=", "hf auth login"]),
    ("revision", "repo", "RevisionNotFoundError", ["has no revision 'no-such-branch'", "branch, tag or", "commit"]),
    ("file", "repo", "MissingFileError", ["has no file 'tokenizer.json'"]),
    ("gated", "gated", "GatedRepoError", ["is gated", "accept its conditions", "http://127.0.0.1", "HF_TOKEN"]),
    ("gated_no_access", "gated", "GatedRepoError", ["is gated", "token in use has no access", "request"]),
    ("bad_token", "repo", "HubError", ["refused the token", "HF_TOKEN"]),
    ("path", None, "RepoNotFoundError", ["'./no/such/folder' is not a folder", "check the path"]),
])
def test_errors_name_the_repo_and_say_what_to_do(errors, case, repo, error_type, words):
    names, result = errors
    got = result[case]
    assert got.get("type") == error_type, got
    assert "OSError" in got["bases"]
    for word in words + ([names[repo]] if repo else []):
        assert word in got["message"], (word, got["message"])


def test_error_types():
    from pretrained import hub as H

    assert issubclass(H.RepoNotFoundError, FileNotFoundError)
    assert issubclass(H.MissingFileError, FileNotFoundError)
    assert issubclass(H.GatedRepoError, PermissionError)
    for error in (H.RevisionNotFoundError, H.NotCachedError):
        assert issubclass(error, H.HubError) and issubclass(error, OSError)


def test_a_gated_repo_loads_with_a_token_from_the_argument_or_hf_token(hub, errors, tmp_path):
    names, result = errors
    assert result["gated_granted"]["ok"].endswith("config.json")
    hub.reset()
    ok(load(names["gated"], home=tmp_path, hub=hub, env={"HF_TOKEN": "hf_good"}))
    assert all(h.authorized for h in hub.hits if "/api/agent-harnesses" not in h.path)


def test_no_network_and_nothing_cached(tmp_path):
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    result = run_py(LOAD.format(name="org/anything", options={}), home=tmp_path, endpoint="http://127.0.0.1:9")
    assert result["error"] == "NotCachedError"
    assert "'org/anything' is not in the cache" in result["message"]
    assert "could not be reached" in result["message"] and "network connection" in result["message"]


def test_no_network_falls_back_to_the_cache(hub, repo_id, tmp_path):
    hub.add_repo(repo_id, fake_checkpoint())
    first = ok(load(repo_id, home=tmp_path, hub=hub))
    again = ok(run_py(LOAD.format(name=repo_id, options={}), home=tmp_path, endpoint="http://127.0.0.1:9"))
    assert again["weights"] == first["weights"] and again["generation"] is None
    assert "using the cached commit" in again["stderr"]


@pytest.mark.parametrize("how", ["offline", "local_files_only"])
def test_offline_with_nothing_cached(hub, repo_id, tmp_path, how):
    hub.add_repo(repo_id, fake_checkpoint())
    hub.reset()
    if how == "offline":
        result = load(repo_id, home=tmp_path, hub=hub, env={"HF_HUB_OFFLINE": "1"})
        assert "HF_HUB_OFFLINE=1" in result["message"] and "HF_HUB_OFFLINE=0" in result["message"]
    else:
        result = load(repo_id, home=tmp_path, hub=hub, local_files_only=True)
        assert "local_files_only=True" in result["message"]
    assert result["error"] == "NotCachedError"
    assert f"'{repo_id}' is not in the cache" in result["message"]
    assert hub.hits == []


def test_offline_with_a_file_missing_from_the_cache(hub, repo_id, tmp_path):
    sha = hub.add_repo(repo_id, fake_checkpoint())
    ok(load(repo_id, home=tmp_path, hub=hub))  # config and weights, not the tokenizer files
    result = run_py(f"""
        from pretrained.hub import Source
        source = Source({repo_id!r}, revision={sha!r})
        result["absent"] = source.file("tokenizer.json")   # known absent: listed at download time
        source.require("vocab.txt")                          # in the repo, never downloaded
    """, home=tmp_path, hub=hub, env={"HF_HUB_OFFLINE": "1"})
    assert result["error"] == "NotCachedError"
    assert "'vocab.txt'" in result["message"] and "HF_HUB_OFFLINE=0" in result["message"]


# ------------------------------------------------------------------------- interrupted and concurrent
def test_a_dropped_connection_resumes_where_it_stopped(hub, repo_id, tmp_path):
    # huggingface_hub writes in 10 MiB chunks and resumes from the last whole chunk with a Range request.
    chunk = 10 * 1024 * 1024
    files = fake_checkpoint(**{"model.safetensors": os.urandom(chunk + 500_000)})
    hub.add_repo(repo_id, files)
    fault = hub.fault(f"{repo_id}/model.safetensors", after_bytes=chunk + 100_000)
    hub.reset()
    result = ok(load(repo_id, home=tmp_path, hub=hub))
    assert fault.reached.is_set()
    assert Path(result["weights"][0]).read_bytes() == files["model.safetensors"]
    gets = [h for h in hub.file_downloads() if h.path.endswith("model.safetensors")]
    assert [h.range for h in gets] == [None, f"bytes={chunk}-"]


def test_a_killed_download_leaves_the_cache_usable_and_the_next_call_completes_it(hub, repo_id, tmp_path):
    files = fake_checkpoint()
    hub.add_repo(repo_id, files)
    fault = hub.fault(f"{repo_id}/model.safetensors", after_bytes=150_000, mode="stall")
    child = run_py(LOAD.format(name=repo_id, options={}), home=tmp_path, hub=hub, background=True)
    try:
        assert fault.reached.wait(60), "the download never started"
        child.send_signal(signal.SIGKILL)  # as hard as a crash or a power cut: no cleanup runs
        child.communicate(timeout=30)
    finally:
        fault.release.set()
    folder = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    blob = folder / "blobs" / etag_of("model.safetensors", files["model.safetensors"])
    assert not blob.exists()  # the half file is only ever in a *.incomplete file
    # The cache is consistent: what finished is there, what did not is reported as not cached, never truncated.
    offline = run_py(f"""
        from pretrained.hub import Source
        source = Source({repo_id!r})
        result["config"] = source.require("config.json")
        source.require("model.safetensors")
    """, home=tmp_path, hub=hub, env={"HF_HUB_OFFLINE": "1"})
    assert offline["error"] == "NotCachedError" and "'model.safetensors'" in offline["message"]
    hub.reset()
    result = ok(load(repo_id, home=tmp_path, hub=hub))
    assert Path(result["weights"][0]).read_bytes() == files["model.safetensors"]
    assert [str(h) for h in hub.file_downloads()] == [f"GET /{repo_id}/resolve/{result['commit']}/model.safetensors"]


def test_two_processes_loading_a_new_id_at_once_share_one_copy(hub, repo_id, tmp_path):
    files = fake_checkpoint()
    hub.add_repo(repo_id, files)
    hub.fault(f"{repo_id}/model.safetensors", after_bytes=1000, mode="slow", times=2, delay=1.0)
    hub.reset()
    code = LOAD.format(name=repo_id, options={})
    children = [run_py(code, home=tmp_path, hub=hub, background=True) for _ in range(2)]
    results = [ok(_parse(*child.communicate(timeout=120))) for child in children]
    assert results[0]["weights"] == results[1]["weights"]
    assert Path(results[0]["weights"][0]).read_bytes() == files["model.safetensors"]
    folder = tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}"
    blobs = sorted(p.name for p in (folder / "blobs").iterdir())
    assert blobs == sorted({etag_of(n, files[n]) for n in ("config.json", "model.safetensors")})
    assert len(list((folder / "snapshots").iterdir())) == 1
    # huggingface_hub's lock made the later process wait for the first one's download and reuse it.
    assert len([h for h in hub.file_downloads() if h.path.endswith("model.safetensors")]) == 1


# ------------------------------------------------------------------------------- download and cache
def test_download_fetches_config_one_weights_format_and_tokenizer_files(hub, repo_id, tmp_path):
    files = fake_checkpoint(**{"pytorch_model.bin": os.urandom(1000), "README.md": b"# card",
                               "flax_model.msgpack": os.urandom(1000)})
    sha = hub.add_repo(repo_id, files)
    hub.reset()
    result = ok(run_py(f"""
        from pretrained.hub import download
        result["folder"] = download({repo_id!r})
    """, home=tmp_path, hub=hub))
    folder = Path(result["folder"])
    assert folder == tmp_path / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / sha
    assert sorted(os.listdir(folder)) == ["config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    assert api_calls(hub) == [f"GET /api/models/{repo_id}/revision/main"]
    assert len(hub.file_downloads()) == 4


def test_download_fetches_every_shard_of_a_sharded_checkpoint(hub, repo_id, tmp_path):
    index = {"metadata": {"total_size": 2000},
             "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    files = {"config.json": b"{}", "model.safetensors.index.json": json.dumps(index).encode(),
             "model-00001-of-00002.safetensors": os.urandom(1000),
             "model-00002-of-00002.safetensors": os.urandom(1000), "pytorch_model.bin": os.urandom(10)}
    hub.add_repo(repo_id, files)
    result = ok(run_py(f"""
        from pretrained.hub import download
        result["folder"] = download({repo_id!r})
    """, home=tmp_path, hub=hub))
    assert sorted(os.listdir(result["folder"])) == sorted(set(files) - {"pytorch_model.bin"})


def test_download_of_a_repo_without_weights(hub, repo_id, tmp_path):
    hub.add_repo(repo_id, {"config.json": b"{}"})
    result = run_py(f"from pretrained.hub import download\ndownload({repo_id!r})", home=tmp_path, hub=hub)
    assert result["error"] == "MissingFileError" and "has no weights" in result["message"]


def test_cached_repos_lists_ids_sizes_and_revisions(hub, tmp_path):
    ids = [f"org/a-{uuid.uuid4().hex[:6]}", f"org/b-{uuid.uuid4().hex[:6]}"]
    shas = [hub.add_repo(i, fake_checkpoint()) for i in ids]
    for i in ids:
        ok(load(i, home=tmp_path, hub=hub))
    result = ok(run_py("""
        from pretrained.hub import cached_repos
        result["repos"] = cached_repos()
    """, home=tmp_path, hub=hub))
    repos = result["repos"]
    assert [r["repo_id"] for r in repos] == sorted(ids)
    for repo, sha in zip(repos, [s for _, s in sorted(zip(ids, shas))]):
        assert repo["size"] > 300_000
        assert repo["revisions"] == [{"commit": sha, "refs": ["main"], "size": repo["size"],
                                      "path": str(Path(repo["path"]) / "snapshots" / sha)}]
    assert ok(run_py("from pretrained.hub import cached_repos\nresult['r'] = cached_repos()",
                     home=tmp_path / "empty"))["r"] == []


def test_progress_bars_show_unless_disabled(hub, repo_id, tmp_path):
    hub.add_repo(repo_id, fake_checkpoint())
    # TQDM_POSITION=-1 shows huggingface_hub's bars even when stderr is not a terminal, as here.
    shown = ok(load(repo_id, home=tmp_path / "a", hub=hub,
                    env={"HF_HUB_DISABLE_PROGRESS_BARS": None, "TQDM_POSITION": "-1"}))
    assert "model.safetensors" in shown["stderr"] and "100%" in shown["stderr"]
    hidden = ok(load(repo_id, home=tmp_path / "b", hub=hub,
                     env={"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_POSITION": "-1"}))
    assert "100%" not in hidden["stderr"]


# ------------------------------------------------------------- end to end: our models, transformers, CLI
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(94)]

OURS = """
import torch
from pretrained import AutoConfig, AutoModel, AutoTokenizer, BertModel, GenerationConfig

def step(name, load):
    before = len(hits())
    out = load()
    result[name] = [h for h in hits()[before:] if "agent-harnesses" not in h]
    return out

ids = torch.tensor([[2, 10, 11, 12, 3]])
for repo, sha in zip(REPOS, SHAS):
    cold = step(f"{repo}:cold", lambda: BertModel.from_pretrained(repo))
    warm = step(f"{repo}:warm", lambda: BertModel.from_pretrained(repo))
    step(f"{repo}:auto", lambda: AutoModel.from_pretrained(repo))
    step(f"{repo}:config", lambda: AutoConfig.from_pretrained(repo))
    generation = step(f"{repo}:generation", lambda: GenerationConfig.from_pretrained(repo))
    result[f"{repo}:max_length"] = generation.max_length
    step(f"{repo}:commit", lambda: BertModel.from_pretrained(repo, revision=sha))
    step(f"{repo}:local_files_only", lambda: BertModel.from_pretrained(repo, local_files_only=True))
    tok = step(f"{repo}:tokenizer", lambda: AutoTokenizer.from_pretrained(repo))
    step(f"{repo}:tokenizer_warm", lambda: AutoTokenizer.from_pretrained(repo))
    with torch.no_grad():
        result[f"{repo}:output"] = cold(ids).last_hidden_state.flatten().tolist()
        result[f"{repo}:same"] = torch.equal(cold(ids).last_hidden_state, warm(ids).last_hidden_state)
    result[f"{repo}:tokens"] = tok("w1 w2")["input_ids"]
"""

THEIRS = """
import torch, transformers

def step(name, load):
    before = len(hits())
    out = load()
    result[name] = [h for h in hits()[before:] if "agent-harnesses" not in h]
    return out

ids = torch.tensor([[2, 10, 11, 12, 3]])
for repo, sha in zip(REPOS, SHAS):
    model = step(f"{repo}:cold", lambda: transformers.BertModel.from_pretrained(repo))
    step(f"{repo}:warm", lambda: transformers.BertModel.from_pretrained(repo))
    step(f"{repo}:auto", lambda: transformers.AutoModel.from_pretrained(repo))
    step(f"{repo}:commit", lambda: transformers.BertModel.from_pretrained(repo, revision=sha))
    step(f"{repo}:local_files_only", lambda: transformers.BertModel.from_pretrained(repo, local_files_only=True))
    tok = step(f"{repo}:tokenizer", lambda: transformers.AutoTokenizer.from_pretrained(repo))
    step(f"{repo}:tokenizer_warm", lambda: transformers.AutoTokenizer.from_pretrained(repo))
    with torch.no_grad():
        result[f"{repo}:output"] = model.eval()(ids).last_hidden_state.flatten().tolist()
    result[f"{repo}:tokens"] = tok("w1 w2")["input_ids"]
"""


@pytest.fixture(scope="module")
def interop(hub, hf_checkpoint, tmp_path_factory):
    """One HF_HOME shared by both libraries: we download `bert-base-cased` (the walkthrough's legacy id) first,
    then transformers loads it and downloads `org/theirs`, then we load `org/theirs`."""
    files = {"vocab.txt": "\n".join(VOCAB).encode() + b"\n",
             "tokenizer_config.json": b'{"do_lower_case": true, "tokenizer_class": "BertTokenizer"}',
             "generation_config.json": b'{"max_length": 7}'}
    checkpoint = {**read_folder(hf_checkpoint()), **files}
    ours = hub.add_repo("google-bert/bert-base-cased", checkpoint)
    hub.aliases["bert-base-cased"] = "google-bert/bert-base-cased"
    theirs = hub.add_repo("org/theirs", checkpoint)
    home = tmp_path_factory.mktemp("interop")

    def child(code, repos, shas):
        return ok(run_py(f"REPOS, SHAS = {repos!r}, {shas!r}\n{code}", home=home, hub=hub))

    return {
        "ours_first": child(OURS, ["bert-base-cased"], [ours]),
        "theirs": child(THEIRS, ["bert-base-cased", "org/theirs"], [ours, theirs]),
        "ours_second": child(OURS, ["org/theirs"], [theirs]),
        "shas": {"bert-base-cased": ours, "org/theirs": theirs}, "home": home,
    }


def test_bert_from_pretrained_with_a_hub_id_like_the_walkthrough(interop):
    run = interop["ours_first"]
    sha = interop["shas"]["bert-base-cased"]
    # Cold: one API call, then config and weights; the absent optional files cost nothing.
    assert run["bert-base-cased:cold"] == [
        "GET /api/models/bert-base-cased/revision/main",
        f"HEAD /bert-base-cased/resolve/{sha}/config.json", f"HEAD /google-bert/bert-base-cased/resolve/{sha}/config.json",
        f"GET /google-bert/bert-base-cased/resolve/{sha}/config.json",
        f"HEAD /bert-base-cased/resolve/{sha}/model.safetensors",
        f"HEAD /google-bert/bert-base-cased/resolve/{sha}/model.safetensors",
        f"GET /google-bert/bert-base-cased/resolve/{sha}/model.safetensors",
    ]
    # Warm: the one request that says whether the branch moved; an Auto class or a config costs the same.
    for step in ("warm", "auto", "config", "tokenizer_warm"):
        assert run[f"bert-base-cased:{step}"] == ["GET /api/models/bert-base-cased/revision/main"], step
    assert run["bert-base-cased:commit"] == [] and run["bert-base-cased:local_files_only"] == []
    # The tokenizer downloads only its own files.
    assert sorted(h.rsplit("/", 1)[-1] for h in run["bert-base-cased:tokenizer"] if h.startswith("GET /google")) \
        == ["tokenizer_config.json", "vocab.txt"]
    assert run["bert-base-cased:same"]
    assert run["bert-base-cased:max_length"] == 7
    assert [h for h in run["bert-base-cased:generation"] if h.startswith("GET /google")] == \
        [f"GET /google-bert/bert-base-cased/resolve/{sha}/generation_config.json"]
    assert os.path.isdir(interop["home"] / "hub" / "models--bert-base-cased" / "snapshots" / sha)


def test_transformers_finds_what_we_downloaded(interop):
    theirs = interop["theirs"]
    for step in ("cold", "warm", "auto", "commit", "local_files_only", "tokenizer", "tokenizer_warm"):
        downloads = [h for h in theirs[f"bert-base-cased:{step}"] if h.startswith("GET /") and "/resolve/" in h]
        assert downloads == [], (step, downloads)
    assert theirs["bert-base-cased:local_files_only"] == []
    assert theirs["bert-base-cased:output"] == pytest.approx(interop["ours_first"]["bert-base-cased:output"],
                                                              abs=1e-5)
    assert theirs["bert-base-cased:tokens"] == interop["ours_first"]["bert-base-cased:tokens"]


def test_we_find_what_transformers_downloaded(interop):
    ours = interop["ours_second"]
    assert [h for h in ours["org/theirs:cold"] if "/resolve/" in h] == []  # nothing downloaded again
    assert ours["org/theirs:cold"] == ["GET /api/models/org/theirs/revision/main"]
    assert ours["org/theirs:commit"] == [] and ours["org/theirs:local_files_only"] == []
    assert ours["org/theirs:output"] == pytest.approx(interop["theirs"]["org/theirs:output"], abs=1e-5)
    assert ours["org/theirs:tokens"] == interop["theirs"]["org/theirs:tokens"]


def test_request_counts_against_transformers(interop):
    """Requests per load on the same warm cache. We promise one for a branch, none with a commit hash or
    local_files_only; transformers' numbers are compared, not pinned (they are in the README)."""
    theirs, ours = interop["theirs"], interop["ours_second"]
    counts = {step: (len(ours[f"org/theirs:{step}"]), len(theirs[f"org/theirs:{step}"]))
              for step in ("warm", "auto", "commit", "local_files_only", "tokenizer_warm")}
    print("\n(ours, transformers) requests per warm load:", counts)
    assert {step: we for step, (we, _) in counts.items()} == \
        {"warm": 1, "auto": 1, "commit": 0, "local_files_only": 0, "tokenizer_warm": 1}
    for step, (we, they) in counts.items():
        assert we <= they, (step, we, they)


def test_cli_download_cache_and_run_with_a_hub_id(hub, interop, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in _HUB_ENV}
    env.update(HF_HOME=str(tmp_path), HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", PYTHONPATH=str(ROOT),
               HF_HUB_DISABLE_PROGRESS_BARS="1")

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "pretrained.cli", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    sha = interop["shas"]["org/theirs"]
    assert "no checkpoints cached" in cli("cache")
    folder = cli("download", "org/theirs").strip()
    assert folder == str(tmp_path / "hub" / "models--org--theirs" / "snapshots" / sha)
    assert sorted(os.listdir(folder)) == ["config.json", "generation_config.json", "model.safetensors",
                                          "tokenizer_config.json", "vocab.txt"]
    listing = cli("cache")
    assert "org/theirs" in listing and sha[:12] in listing and "main" in listing
    hub.reset()
    out = cli("run", "org/theirs", "w1 w2", "w3")
    assert "model: org/theirs (BertModel" in out and "cosine similarity" in out
    assert load_requests(hub) == ["GET /api/models/org/theirs/revision/main"]


# -- path safety: nothing read or written outside the cache or the given folder ---------------------------------
@pytest.mark.parametrize("subfolder", ["../../x", "../x", "a/../../x", "/abs/x", "..", "a\\..\\..\\x"])
def test_subfolder_outside_the_repo_is_refused_before_any_path_is_joined(tmp_path, monkeypatch, subfolder):
    from pretrained import BertConfig

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="subfolder") as info:
        BertConfig.from_pretrained("org/name", cache_dir=str(cache), subfolder=subfolder, force_download=True)
    assert repr(subfolder) in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"] and not list(cache.iterdir())


def test_local_subfolder_cannot_leave_the_folder(tmp_path):
    from pretrained import BertConfig

    (tmp_path / "model").mkdir()
    (tmp_path / "outside").mkdir()
    BertConfig(hidden_size=64).save_pretrained(tmp_path / "outside")
    with pytest.raises(ValueError, match=r"subfolder '\.\./outside'"):
        BertConfig.from_pretrained(tmp_path / "model", subfolder="../outside")


@pytest.mark.parametrize("revision", ["../../../../etc", "/etc/passwd", "main/../../x", "a//b", "", "x\\..\\y", 5])
def test_revision_that_is_not_a_ref_name_is_refused(tmp_path, monkeypatch, revision):
    from pretrained import BertConfig

    secret = tmp_path / "refs-target"
    secret.write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="revision") as info:
        BertConfig.from_pretrained("org/name", cache_dir=str(tmp_path / "cache"), revision=revision)
    assert repr(revision) in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_branch_names_with_slashes_are_still_accepted():
    from pretrained.hub import Source

    assert Source("org/name", revision="refs/pr/1").revision == "refs/pr/1"
    assert Source("org/name", revision="feature/v1.0", subfolder="a/b/").subfolder == "a/b"
