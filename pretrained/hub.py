"""Where a checkpoint's files come from: a local folder, or a Hub repo through huggingface_hub's cache.

Every `from_pretrained` in the package goes through `Source`, so configs, weights, tokenizers and generation
configs are found the same way, and the cache is the one transformers uses
(`$HF_HUB_CACHE`, by default `$HF_HOME/hub`, by default `~/.cache/huggingface/hub`): what either library
downloaded, the other finds.

What a load costs on the network (see the README's "Hub ids and the cache"):

- a commit hash, `local_files_only=True` or `HF_HUB_OFFLINE=1`: no request at all when the files are cached;
- a branch or tag: one request per load, `GET /api/models/{repo}/revision/{rev}`, which tells both the commit
  the branch points to and the list of files at that commit. Files already in the snapshot are used as they
  are; probes for files the repo does not have (`model.safetensors.index.json`, `generation_config.json`, …)
  are answered from that list without a request, and remembered in the cache's `.no_exist/` folder so that
  offline and commit-hash loads can answer them too;
- a file not yet cached: huggingface_hub's `HEAD` + `GET`, with its progress bar
  (`HF_HUB_DISABLE_PROGRESS_BARS=1` turns it off), lock and atomic move into place.

When the Hub cannot be reached, a branch load falls back to the commit the cache last saw for that branch.

Errors are `HubError` (an `OSError`, as transformers raises) subclasses, each naming the repo and what to do:
`RepoNotFoundError`, `RevisionNotFoundError`, `GatedRepoError`, `NotCachedError`, `MissingFileError`.
"""
from __future__ import annotations

import json
import logging
import os
import re
import uuid

logger = logging.getLogger(__name__)

HUB_OPTIONS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "subfolder")

_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")
# The Hub lists every file of a repo in `siblings`; past this many we do not trust the list to be complete
# and fall back to asking for each file.
_MAX_TRUSTED_SIBLINGS = 10_000

# Files `download` fetches besides config.json and the weights: what a tokenizer or generate() may ask for.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
    "chat_template.jinja",
)
# One weights format, in order of preference; an index names its shards.
WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


class HubError(OSError):
    """A checkpoint's files could not be found or fetched. Base class of the errors below."""


class RepoNotFoundError(HubError, FileNotFoundError):
    """No such local folder, and no such Hub repo (or it is private and the token does not give access)."""


class RevisionNotFoundError(HubError):
    """The repo exists but has no such branch, tag or commit."""


class GatedRepoError(HubError, PermissionError):
    """The repo is gated: a token from an account that accepted its conditions is needed."""


class NotCachedError(HubError):
    """The Hub cannot be asked (offline mode, `local_files_only`, no network) and the cache lacks the files."""


class MissingFileError(HubError, FileNotFoundError):
    """The folder or repo has no such file (raised by `Source.require`)."""


def pop_hub_options(kwargs: dict) -> dict:
    """Remove and return the download options (`revision`, `cache_dir`, …) from a kwargs dict."""
    return {name: kwargs.pop(name) for name in HUB_OPTIONS if name in kwargs}


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.is_offline_mode()


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _has_token(token) -> bool:
    if token is False:
        return False
    if token:
        return True
    from huggingface_hub import get_token

    return get_token() is not None


class Source:
    """A local folder or a Hub repo id, resolved to local file paths on demand.

    One `Source` serves one `from_pretrained` call: a non-local source asks the Hub which commit its revision
    points to at most once (on the first `file` call) and reads every file from that commit.

    Args:
        name_or_path: a folder, or a Hub id such as `bert-base-cased` or `org/name`.
        revision: branch, tag or commit hash (default `main`).
        cache_dir: cache folder instead of `$HF_HUB_CACHE`.
        token: Hub token (`None`: `$HF_TOKEN` or the saved login; `False`: none).
        local_files_only: never use the network, only the cache.
        force_download: download the files again even when cached.
        subfolder: folder inside the repo or directory that holds the files.
    """

    def __init__(self, name_or_path, *, revision=None, cache_dir=None, token=None,
                 local_files_only=False, force_download=False, subfolder=""):
        self.name_or_path = os.fspath(name_or_path)
        self.revision = revision
        self.cache_dir = os.fspath(cache_dir) if cache_dir is not None else None
        self.token = token
        self.local_files_only = local_files_only
        self.force_download = force_download
        self.subfolder = _checked_relative(subfolder or "", "subfolder").strip("/")
        if revision is not None:
            _checked_revision(revision)
        self.is_local = os.path.isdir(self.name_or_path)
        self.commit: str | None = None      # the commit the revision resolved to, once known
        self._files: set[str] | None = None  # the repo's files at `commit`, when the Hub told us
        self._resolved = False
        self._listed = False  # whether the file list was asked for
        self._why_no_network: str | None = None  # set when files can only come from the cache

    def __str__(self) -> str:
        where = f"{self.name_or_path}/{self.subfolder}" if self.subfolder else self.name_or_path
        if self.is_local:
            return f"folder '{where}'"
        rev = f" at revision '{self.revision}'" if self.revision else ""
        return f"Hub repo '{where}'{rev}"

    def __repr__(self) -> str:
        return f"Source({str(self)!r})"

    # ----------------------------------------------------------------------------------------- public
    def file(self, filename: str) -> str | None:
        """Local path of `filename`, downloading it if needed; None when the folder or repo has no such file.

        Raises:
            RepoNotFoundError, RevisionNotFoundError, GatedRepoError, NotCachedError, HubError.
        """
        _checked_relative(filename, "file name")
        if self.is_local:
            path = os.path.join(self.name_or_path, self.subfolder, filename)
            return path if os.path.isfile(path) else None
        return self._hub_file(self._path_in_repo(filename))

    def require(self, filename: str) -> str:
        """Like `file`, but a missing file raises `MissingFileError` (a FileNotFoundError) naming file and source.

        When the file is only missing from the cache because the Hub cannot be asked, raises `NotCachedError`.
        """
        path = self.file(filename)
        if path is not None:
            return path
        if not self.is_local and self._why_no_network and not self._known_absent(self._path_in_repo(filename)):
            raise NotCachedError(
                f"'{filename}' of {self} is not in the cache ({self.cache_folder}){self._no_folder_hint()} and "
                f"{self._why_no_network}. "
                f"{self._how_to_go_online()}")
        where = "" if self.is_local else f" (its files: {_endpoint()}/{self.name_or_path}/tree/{self.commit})"
        raise MissingFileError(f"{self} has no file '{filename}'{where}")

    def listdir(self, folder: str) -> list[str]:
        """Names of the files directly inside `folder` of the folder or repo; [] when there are none, or when the
        repo's file list is unknown (offline with a cache that has no listing)."""
        _checked_relative(folder, "folder name")
        if self.is_local:
            path = os.path.join(self.name_or_path, self.subfolder, folder)
            return sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n))) \
                if os.path.isdir(path) else []
        self._resolve()
        prefix = self._path_in_repo(folder).rstrip("/") + "/"
        return sorted(name[len(prefix):] for name in self._files or ()
                      if name.startswith(prefix) and "/" not in name[len(prefix):])

    @property
    def cache_folder(self) -> str:
        """The folder `models--org--name` that holds this repo in the cache."""
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        cache = self.cache_dir if self.cache_dir is not None else constants.HF_HUB_CACHE
        return os.path.join(cache, repo_folder_name(repo_id=self.name_or_path, repo_type="model"))

    @property
    def folder(self) -> str:
        """The local folder the files are in: the folder itself, or the cache snapshot of the resolved commit."""
        if self.is_local:
            return os.path.join(self.name_or_path, self.subfolder) if self.subfolder else self.name_or_path
        self._resolve()
        snapshot = os.path.join(self.cache_folder, "snapshots", self.commit)
        return os.path.join(snapshot, self.subfolder) if self.subfolder else snapshot

    # -------------------------------------------------------------------------------------- internals
    def _path_in_repo(self, filename: str) -> str:
        return f"{self.subfolder}/{filename}" if self.subfolder else filename

    def _resolve(self) -> None:
        """Learn the commit the revision points to: from the name itself, from the cache, or with one request."""
        if self._resolved:
            return
        self._check_repo_id()
        revision = self.revision or "main"
        if self.local_files_only:
            self._why_no_network = "local_files_only=True was passed"
        elif _offline():
            self._why_no_network = "offline mode is on (HF_HUB_OFFLINE=1)"
        if _COMMIT_HASH.match(revision):
            self.commit = revision
        elif self._why_no_network:
            self.commit = self._cached_commit(revision)
            if self.commit is None:
                raise NotCachedError(
                    f"{self} is not in the cache ({self.cache_folder}){self._no_folder_hint()} and "
                    f"{self._why_no_network}. {self._how_to_go_online()}")
        else:
            self._ask_hub(revision)
        self._files = self._files if self._files is not None else self._cached_tree()
        self._resolved = True

    def _check_repo_id(self) -> None:
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(self.name_or_path)
        except HFValidationError:
            raise RepoNotFoundError(
                f"'{self.name_or_path}' is not a folder, and not a Hub repo id ('name' or 'org/name'): "
                f"check the path") from None

    def _ask_hub(self, revision: str) -> None:
        """The one request of a branch or tag load: the commit and the file list, or the cache's last commit."""
        try:
            info = self._model_info(revision)
        except _Unreachable as error:
            # No network, or the Hub is down: use what the cache last saw for this revision.
            self._why_no_network = f"the Hub at {_endpoint()} could not be reached ({error})"
            self.commit = self._cached_commit(revision)
            if self.commit is None:
                raise NotCachedError(
                    f"{self} is not in the cache ({self.cache_folder}){self._no_folder_hint()} and "
                    f"{self._why_no_network}. Check your network connection (and HF_ENDPOINT), then try "
                    f"again.") from None
            logger.warning("%s: %s; using the cached commit %s", self, self._why_no_network, self.commit)
            return
        self.commit = info.sha
        self._files = self._siblings(info)
        self._listed = True
        if revision != self.commit:
            self._write_ref(revision, self.commit)

    def _model_info(self, revision: str):
        """`GET /api/models/{repo}/revision/{revision}`, with huggingface_hub's errors mapped to ours."""
        import httpx2
        from huggingface_hub import HfApi, constants
        from huggingface_hub import errors as hf

        try:
            return HfApi().model_info(self.name_or_path, revision=revision, token=self.token,
                                      expand=["sha", "siblings"], timeout=constants.HF_HUB_ETAG_TIMEOUT)
        except hf.RevisionNotFoundError:
            raise self._revision_not_found(revision) from None
        except hf.GatedRepoError:
            raise self._gated() from None
        except hf.RepositoryNotFoundError:
            raise self._repo_not_found() from None
        except httpx2.ProxyError:
            raise
        except (httpx2.TransportError, hf.OfflineModeIsEnabled, hf.HfHubHTTPError) as error:
            if isinstance(error, hf.HfHubHTTPError) and error.response.status_code == 401:
                raise self._bad_token(error) from None
            raise _Unreachable(_short(error)) from None

    @staticmethod
    def _siblings(info) -> set[str] | None:
        if info.siblings is None or len(info.siblings) >= _MAX_TRUSTED_SIBLINGS:
            return None
        return {s.rfilename for s in info.siblings}

    def _list_files(self) -> None:
        """For a commit-hash source about to download: one listing saves a HEAD per probe of an absent file."""
        self._listed = True
        try:
            self._files = self._siblings(self._model_info(self.commit))
        except _Unreachable as error:
            # Not worth huggingface_hub's retries with back-off: say at once that the file is not cached.
            self._why_no_network = f"the Hub at {_endpoint()} could not be reached ({error})"

    def _hub_file(self, path_in_repo: str) -> str | None:
        import httpx2
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
        from huggingface_hub import errors as hf

        self._resolve()
        if not self.force_download:
            cached = try_to_load_from_cache(self.name_or_path, path_in_repo, cache_dir=self.cache_dir,
                                            revision=self.commit)
            if isinstance(cached, str):
                return cached
            if cached is not None:  # huggingface_hub's marker for "known not to exist at this commit"
                return None
        if self._files is None and not self._listed and not self._why_no_network:
            self._list_files()
        if self._files is not None and path_in_repo not in self._files:
            self._remember_absent(path_in_repo)
            return None
        if self._why_no_network:
            return None  # `require` turns this into NotCachedError, saying why
        try:
            return hf_hub_download(self.name_or_path, path_in_repo, revision=self.commit,
                                   cache_dir=self.cache_dir, token=self.token, force_download=self.force_download)
        except hf.LocalEntryNotFoundError as error:  # the HEAD failed (network) and the cache lacks the file
            raise self._not_cached(path_in_repo, error) from None
        except hf.EntryNotFoundError:  # the Hub says so; huggingface_hub wrote the .no_exist marker
            return None
        except hf.RevisionNotFoundError:
            raise self._revision_not_found(self.commit) from None
        except hf.GatedRepoError:
            raise self._gated() from None
        except hf.RepositoryNotFoundError:
            raise self._repo_not_found() from None
        except hf.HfHubHTTPError as error:
            if error.response.status_code == 401:
                raise self._bad_token(error) from None
            raise HubError(f"could not download '{path_in_repo}' from {self}: {_short(error)}") from error
        except (httpx2.HTTPError, OSError) as error:  # e.g. the connection dropped for good, a size mismatch
            if isinstance(error, HubError):
                raise
            raise HubError(f"could not download '{path_in_repo}' from {self}: {_short(error)}. "
                           f"Run the same call again to retry.") from error

    # -------------------------------------------------------------------------- the cache's own files
    def _cached_commit(self, revision: str) -> str | None:
        ref = os.path.join(self.cache_folder, "refs", revision)
        if os.path.isfile(ref):
            with open(ref) as f:
                return f.read().strip() or None
        return None

    def _write_ref(self, revision: str, commit: str) -> None:
        """Record `refs/<revision>` → commit, as huggingface_hub does, atomically so racing processes agree."""
        ref = os.path.join(self.cache_folder, "refs", revision)
        try:
            if os.path.isfile(ref):
                with open(ref) as f:
                    if f.read() == commit:
                        return
            os.makedirs(os.path.dirname(ref), exist_ok=True)
            tmp = f"{ref}.{uuid.uuid4().hex[:8]}.tmp"
            with open(tmp, "w") as f:
                f.write(commit)
            os.replace(tmp, ref)
        except OSError as error:  # a read-only cache still serves reads
            logger.debug("could not write %s: %s", ref, error)

    def _cached_tree(self) -> set[str] | None:
        """The file list of `commit` from huggingface_hub's tree cache (`trees/<sha>.json`), if it wrote one."""
        path = os.path.join(self.cache_folder, "trees", f"{self.commit}.json")
        try:
            with open(path) as f:
                return set(json.load(f)["files"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _known_absent(self, path_in_repo: str) -> bool:
        if self._files is not None:
            return path_in_repo not in self._files
        return os.path.isfile(os.path.join(self.cache_folder, ".no_exist", self.commit or "", path_in_repo))

    def _remember_absent(self, path_in_repo: str) -> None:
        """Mark the file absent at this commit in `.no_exist/`, where huggingface_hub and transformers look too."""
        marker = os.path.join(self.cache_folder, ".no_exist", self.commit, path_in_repo)
        if os.path.exists(marker):
            return
        try:
            os.makedirs(os.path.dirname(marker), exist_ok=True)
            open(marker, "a").close()
        except OSError as error:
            logger.debug("could not write %s: %s", marker, error)

    # ---------------------------------------------------------------------------------------- errors
    def _no_folder_hint(self) -> str:
        """For a name that was taken as a Hub id because no folder has it: say so (a mistyped folder name)."""
        return f", and there is no local folder named '{self.name_or_path}'"

    def _how_to_go_online(self) -> str:
        if self.local_files_only:
            return (f"Drop local_files_only=True to download it, or run `pretrained download {self.name_or_path}` "
                    f"first.")
        return (f"Set HF_HUB_OFFLINE=0 to download it, or run `pretrained download {self.name_or_path}` "
                f"while online.")

    def _repo_not_found(self) -> RepoNotFoundError:
        hint = ("the token in use does not give access to it if it is private" if _has_token(self.token)
                else "if it is private, pass token=… or set HF_TOKEN (or run `hf auth login`)")
        return RepoNotFoundError(
            f"{self} was not found at {_endpoint()}, and there is no local folder of that name. "
            f"Check the spelling of the id ('org/name'); {hint}.")

    def _revision_not_found(self, revision: str) -> RevisionNotFoundError:
        return RevisionNotFoundError(
            f"Hub repo '{self.name_or_path}' has no revision '{revision}'. Pass revision= a branch, tag or "
            f"full commit hash that exists; see {_endpoint()}/{self.name_or_path}/tree/main for the branches.")

    def _gated(self) -> GatedRepoError:
        page = f"{_endpoint()}/{self.name_or_path}"
        if _has_token(self.token):
            what = (f"the token in use has no access yet: request it on {page} (and wait for approval) with "
                    f"the account the token belongs to")
        else:
            what = (f"accept its conditions on {page}, then pass token=… or set HF_TOKEN "
                    f"(or run `hf auth login`)")
        return GatedRepoError(f"{self} is gated: {what}.")

    def _bad_token(self, error) -> HubError:
        response = error.response
        why = response.headers.get("X-Error-Message") or response.reason_phrase
        return HubError(f"the Hub at {_endpoint()} refused the token for {self} ({response.status_code}: {why}). "
                        f"Check the token passed as token=… or in HF_TOKEN, or log in again.")

    def _not_cached(self, path_in_repo: str, error) -> NotCachedError:
        return NotCachedError(
            f"'{path_in_repo}' of {self} is not in the cache ({self.cache_folder}){self._no_folder_hint()} and the Hub at "
            f"{_endpoint()} could not be reached ({_short(error)}). Check your network connection, then try again.")


def _checked_relative(value, what: str) -> str:
    """`value` if it is a relative path that stays inside its folder; ValueError naming it otherwise.

    Checked before any path is joined, so that `subfolder="../x"` can neither read outside a local folder nor
    create `.no_exist` markers outside the cache."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    parts = value.replace("\\", "/").split("/")
    if "\0" in value or value.startswith(("/", "\\")) or os.path.isabs(value) or re.match(r"^[A-Za-z]:", value) \
            or ".." in parts:
        raise ValueError(f"{what} {value!r} must be a relative path inside the folder or repo (no '..', "
                         f"not absolute)")
    return value


def _checked_revision(revision) -> str:
    """A branch, tag or commit name as the Hub allows it; ValueError naming it otherwise (a revision becomes
    the path `refs/<revision>` in the cache, so `..` or an absolute path would read or write anywhere)."""
    if not isinstance(revision, str) or not revision:
        raise ValueError(f"revision must be a non-empty string (branch, tag or commit hash), got {revision!r}")
    parts = revision.split("/")
    if "\0" in revision or "\\" in revision or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"revision {revision!r} is not a branch, tag or commit name (no '..', no leading, "
                         f"trailing or double '/')")
    return revision


class _Unreachable(Exception):
    """The Hub could not be asked (no network, offline mode, server error): fall back to the cache."""


def _short(error: BaseException) -> str:
    """First line of an exception's message, for messages that wrap it."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def download(name_or_path, **options) -> str:
    """Fetch what loading a model needs into the cache and return the local folder.

    That is config.json, one weights format (safetensors first; an index and all its shards when sharded),
    generation_config.json, the tokenizer files the repo has, and for a sentence-transformers repo its module
    files (modules.json, 1_Pooling/, 2_Dense/, …). A local folder is returned as it is.

    Args:
        name_or_path: Hub id or folder.
        **options: the download options of `Source` (`revision`, `cache_dir`, `token`, `local_files_only`,
            `force_download`, `subfolder`).

    Raises:
        MissingFileError: the repo has no config.json or no weights. Other `HubError`s as `Source.file`.
    """
    source = Source(name_or_path, **options)
    source.require("config.json")
    for name in WEIGHTS_FILES:
        path = source.file(name)
        if path is None:
            continue
        if name.endswith(".index.json"):
            with open(path) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            for shard in shards:
                source.require(shard)
        break
    else:
        raise MissingFileError(f"{source} has no weights: none of {', '.join(WEIGHTS_FILES)}")
    for name in ("generation_config.json", *TOKENIZER_FILES):
        source.file(name)
    for name in source.listdir("additional_chat_templates"):  # named chat templates, beside chat_template.jinja
        source.file(f"additional_chat_templates/{name}")
    download_sentence_modules(source)
    return source.folder


# A sentence-transformers repo: its own files at the root, and what each module folder of modules.json holds
# (1_Pooling/config.json, 2_Dense/config.json + weights, an old 0_Transformer/ with its encoder and tokenizer).
SENTENCE_FILES = ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json")
MODULE_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "sentence_bert_config.json",
                *TOKENIZER_FILES)


def download_sentence_modules(source: Source) -> None:
    """Fetch a sentence-transformers repo's module files, so that its snapshot folder loads as a
    SentenceTransformer or CrossEncoder; nothing for a repo without modules.json."""
    for name in SENTENCE_FILES:
        source.file(name)
    path = source.file("modules.json")
    if path is None:
        return
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)
        folders = {e.get("path") for e in entries if isinstance(e, dict)}
    except (ValueError, TypeError, AttributeError):
        return  # loading the folder reports the bad modules.json, naming it
    for folder in sorted(f for f in folders if isinstance(f, str) and f.strip("/")):
        for name in MODULE_FILES:
            source.file(f"{folder.strip('/')}/{name}")


def cached_repos(cache_dir=None) -> list[dict]:
    """What the Hub cache holds, for `pretrained cache`: one dict per model repo, sorted by id.

    Each dict has `repo_id`, `size` (bytes on disk), `path` (the `models--…` folder), `last_accessed`
    (a timestamp) and `revisions`: a list of `{"commit", "refs" (branch and tag names), "size", "path"}`.
    """
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    repos = []
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = [
            {"commit": rev.commit_hash, "refs": sorted(rev.refs), "size": rev.size_on_disk,
             "path": str(rev.snapshot_path)}
            for rev in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        ]
        repos.append({"repo_id": repo.repo_id, "size": repo.size_on_disk, "path": str(repo.repo_path),
                      "last_accessed": repo.last_accessed, "revisions": revisions})
    return sorted(repos, key=lambda r: r["repo_id"])
