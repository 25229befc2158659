"""Run checkpoints: an orbax `CheckpointManager` of (state pytree, JSON metadata) per step.

Layout under `directory` (orbax's): `<step_id>/state/` (the pytree, OCDBT/tensorstore) and
`<step_id>/metadata/` (JSON). Orbax writes each step into a temporary directory and renames
it when complete, so a save that fails half-way leaves the earlier steps untouched and is
not listed by `latest()` (tested).

Restoring without a template (the student's expert count grows between stages, so a
template built in advance would have the wrong structure):

* `restore(step)` returns the pytree *as saved*, its structure read from the checkpoint's
  own tree metadata: nested dicts and lists of arrays. Dicts (flax params, replay-buffer
  dicts) come back as dicts, exactly; other containers are flattened to plain Python types:
  flax struct dataclasses and NamedTuples (optax states) -> dict of fields, tuples ->
  lists, empty nodes (`optax.EmptyState()`) -> None. Arrays saved as numpy come back as numpy,
  jax arrays as jax arrays (on the default device).
* `restore(step, template_fn=f)` calls `f(metadata)` to build the target structure (e.g.
  `init_student` with `metadata["num_experts"]` experts and `tx.init`, or `jax.eval_shape`
  of them) and restores into it, giving the original types (DistillState, optax
  NamedTuples). Leaves of the template may be arrays or `jax.ShapeDtypeStruct`s.

Zero-size arrays (an empty replay buffer, MJX constraint arrays of a model without
equality rows) are stored as empty nodes, since orbax refuses them, and come back as
zeros of their shape and dtype: callers save any pytree of arrays.

Metadata is a JSON dict owned by the caller. Convention for the stage loop: `stage`,
`num_experts`, `config` (a `ConfigDict.to_dict()`), `metrics`, `replay` (which trajectories
the buffer holds); a checkpoint of one kind of run names it in `format` (`check_format`).
`save` adds `format_version`, `step_id` and `zero_size_leaves`.

`nested(name)` is a second checkpointer in `<directory>/<name>/`, a step namespace of
its own (the stage loop's intra-stage checkpoints): orbax lists only numeric step
directories, so the outer checkpointer never sees it. `restructure` gives a raw restore
(or one part of it) the structure and types of a template.

`save_tree` / `restore_tree` store a single pytree at a path, with no steps and no
metadata: a trained teacher's policy.

One module despite its length: it is the project's only checkpointer (continual and
joint runs, teachers), and its helpers (zero-size leaves, template-free restore, config
comparison) exist only for `RunCheckpointer`.
"""

import json
import logging as std_logging
import pathlib
import shutil
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from cpd_jax.errors import UserError

FORMAT_VERSION = 1


def is_orbax_chatter(record) -> bool:
    """A log record of orbax below WARNING: a dozen INFO lines per save (timings, thread
    waits) that bury a run's own progress lines."""
    return (record.levelno < std_logging.WARNING
            and "/orbax/" in record.pathname.replace("\\", "/"))


def quiet_orbax_logs() -> None:
    """Drops orbax's INFO/DEBUG lines from the absl log (its warnings and errors stay).
    Called by the entry point; idempotent."""
    handler = logging.get_absl_handler()
    if not any(getattr(f, "__name__", "") == "_drop_orbax_chatter" for f in handler.filters):
        def _drop_orbax_chatter(record):
            return not is_orbax_chatter(record)
        handler.addFilter(_drop_orbax_chatter)

STATE_ITEM = "state"
METADATA_ITEM = "metadata"
TMP_SUFFIX = "orbax-checkpoint-tmp"  # orbax names an unfinished step `<step>.<suffix>[-ts]`
TMP_CLEANUP_ATTEMPTS = 100  # x TMP_CLEANUP_WAIT_S: up to 10 s for in-flight writes to drain
TMP_CLEANUP_WAIT_S = 0.1
TMP_SETTLE_CHECKS = 5  # the tmp dir must stay unchanged (then gone) this many waits in a row
ZERO_SIZE_LEAVES = "zero_size_leaves"  # metadata key: [{"path", "shape", "dtype", "numpy"}]


class CorruptCheckpointError(RuntimeError):
    """A checkpoint step exists but cannot be read back; the message names its path."""


def _json_default(x):
    """numpy scalars/arrays and tuples in metadata become JSON numbers/lists."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, (np.ndarray, jax.Array)):
        return np.asarray(x).tolist()
    raise TypeError(f"metadata value of type {type(x).__name__} is not JSON-serialisable: {x!r}")


def _normalise_json(metadata: Mapping[str, Any]) -> dict:
    """The metadata as it will read back (tuples -> lists, numpy -> Python)."""
    return json.loads(json.dumps(dict(metadata), default=_json_default))


def _restore_args(template):
    """Per-leaf restore args: numpy leaves restore as numpy, the rest as jax arrays."""
    device = jax.local_devices()[0]

    def leaf_args(x):
        if isinstance(x, np.ndarray):
            return ocp.RestoreArgs(restore_type=np.ndarray, dtype=x.dtype)
        sharding = getattr(x, "sharding", None) or jax.sharding.SingleDeviceSharding(device)
        return ocp.ArrayRestoreArgs(sharding=sharding, dtype=x.dtype,
                                    global_shape=tuple(x.shape))

    return jax.tree_util.tree_map(leaf_args, template)


def _raw_key(k):
    """A jax key-path entry as a key into the structure a raw restore returns: dict keys
    and field names (dataclasses and NamedTuples come back as dicts), tuple positions
    (tuples come back as lists)."""
    if isinstance(k, jax.tree_util.DictKey):
        return k.key
    if isinstance(k, jax.tree_util.GetAttrKey):
        return k.name
    if isinstance(k, jax.tree_util.SequenceKey):
        return k.idx
    raise TypeError(f"cannot checkpoint a zero-size leaf under pytree key {k!r}")


def _size(x) -> int:
    return int(np.prod(np.shape(x)))


def _split_zero_size(state) -> tuple[Any, list[dict]]:
    """(state with every zero-size leaf replaced by None, how to rebuild those leaves:
    [{"path", "shape", "dtype", "numpy"}] in flattening order)."""
    found = []

    def strip(key_path, x):
        if _size(x) > 0:
            return x
        found.append({"path": [_raw_key(k) for k in key_path],
                      "shape": list(np.shape(x)), "dtype": str(np.dtype(x.dtype)),
                      "numpy": isinstance(x, np.ndarray)})
        return None

    return jax.tree_util.tree_map_with_path(strip, state), found


def _zeros(entry: Mapping[str, Any]):
    make = np.zeros if entry["numpy"] else jnp.zeros
    return make(tuple(entry["shape"]), jnp.dtype(entry["dtype"]))


def _put_back_zero_size(raw_state, entries: Iterable[Mapping[str, Any]]):
    """The raw restored structure (nested dicts and lists) with the zero-size leaves
    `_split_zero_size` took out put back as zeros."""
    for entry in entries:
        if not entry["path"]:  # the whole state was one zero-size array
            return _zeros(entry)
        *parents, last = entry["path"]
        node = raw_state
        for k in parents:
            node = node[k]
        node[last] = _zeros(entry)
    return raw_state


def _is_none(x) -> bool:
    return x is None


def _as_array(template_leaf):
    """A zero-size template leaf as the restored value (it holds no data): an array
    stays itself, a `jax.ShapeDtypeStruct` becomes jax zeros (as its restored
    non-empty siblings are jax arrays)."""
    if isinstance(template_leaf, (np.ndarray, jax.Array)):
        return template_leaf
    return jnp.zeros(template_leaf.shape, template_leaf.dtype)


def _without_zero_size(template) -> tuple[Any, Callable[[Any], Any]]:
    """(the template with its zero-size leaves as None, restored -> restored with those
    leaves put back from the template)."""
    leaves, treedef = jax.tree_util.tree_flatten(template, is_leaf=_is_none)
    empty = [x is not None and _size(x) == 0 for x in leaves]
    stripped = treedef.unflatten([None if e else x for x, e in zip(leaves, empty)])

    def put_back(restored):
        got = treedef.flatten_up_to(restored)
        return treedef.unflatten([_as_array(x) if e else r
                                  for x, r, e in zip(leaves, got, empty)])

    return stripped, put_back


class RunCheckpointer:
    """Keeps the last `max_to_keep` steps of a run under `directory`.

    `save` is synchronous: when it returns, the step is on disk (a stage loop saves a few
    times per run, so the simplicity is worth more than overlapping the write).
    """

    def __init__(self, directory, max_to_keep: Optional[int] = None):
        self.directory = pathlib.Path(directory).absolute()
        self.max_to_keep = max_to_keep
        self._manager = None

    # The manager is built lazily so that reading a missing directory does not create it.
    def _get_manager(self, create: bool) -> Optional[ocp.CheckpointManager]:
        if self._manager is None:
            if not self.directory.exists() and not create:
                return None
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self.max_to_keep, create=True, enable_async_checkpointing=False,
                # a save killed half-way leaves a tmp dir; clear it at the next start
                cleanup_tmp_directories=True)
            self._manager = ocp.CheckpointManager(
                self.directory, options=options,
                # explicit handlers: a fresh process can then read tree metadata unasked
                item_handlers={STATE_ITEM: ocp.PyTreeCheckpointHandler(),
                               METADATA_ITEM: ocp.JsonCheckpointHandler()})
        return self._manager

    def all_steps(self) -> list[int]:
        manager = self._get_manager(create=False)
        if manager is None:
            return []
        manager.reload()  # another process (a previous run) may have written steps
        return sorted(manager.all_steps())

    def latest(self) -> Optional[int]:
        """The newest complete step id, or None when there is none."""
        steps = self.all_steps()
        return steps[-1] if steps else None

    def save(self, step_id: int, state, metadata: Mapping[str, Any]) -> pathlib.Path:
        """Writes `state` (any pytree of arrays: params, optax state, replay dict of numpy
        arrays) and `metadata` (JSON dict) as step `step_id` (> every saved step).

        Returns the step directory. Raises ValueError for an id not after the latest one
        or metadata that is not JSON; whatever goes wrong, earlier steps stay intact.
        """
        state, zero_size = _split_zero_size(state)
        md = _normalise_json({**metadata, "format_version": FORMAT_VERSION,
                              "step_id": int(step_id), ZERO_SIZE_LEAVES: zero_size})
        manager = self._get_manager(create=True)
        latest = self.latest()
        if latest is not None and step_id <= latest:
            raise ValueError(f"checkpoint step {step_id} is not after the latest saved step "
                             f"{latest} in {self.directory}")
        try:
            saved = manager.save(int(step_id), args=ocp.args.Composite(**{
                STATE_ITEM: ocp.args.PyTreeSave(state), METADATA_ITEM: ocp.args.JsonSave(md)}),
                force=True)
            manager.wait_until_finished()
        except BaseException:
            self._discard_failed_save(int(step_id))
            raise
        if not saved:
            raise RuntimeError(f"orbax declined to save step {step_id} in {self.directory}")
        return self.directory / str(int(step_id))

    def _discard_failed_save(self, step_id: int) -> None:
        """Drops the manager and the step's tmp dir so the next save starts clean.

        When one item of the step fails, orbax re-raises while tensorstore threads may still
        be writing the other item into the tmp dir; removing it then races with those writes
        ("Directory not empty"), so wait until they have drained. Finalised steps are never
        touched: only `<step>.orbax-checkpoint-tmp*` paths.
        """
        manager, self._manager = self._manager, None
        try:
            manager.close()
        except Exception:  # the save already failed; closing a broken manager may too
            pass
        # Remove only once the in-flight writes have drained: the dir's listing must stay
        # unchanged for TMP_SETTLE_CHECKS waits in a row (deleting earlier makes those
        # writes fail noisily, or re-create the dir after the rmtree).
        def snapshot():
            return sorted((str(f), f.stat().st_size if f.is_file() else -1)
                          for tmp in self.directory.glob(f"{step_id}.{TMP_SUFFIX}*")
                          for f in [tmp, *tmp.rglob("*")] if f.exists())

        previous, unchanged = None, 0
        for _ in range(TMP_CLEANUP_ATTEMPTS):
            try:
                current = snapshot()
            except FileNotFoundError:  # a file vanished mid-listing: still changing
                current = None
            unchanged = unchanged + 1 if current == previous and current is not None else 0
            previous = current
            if unchanged >= TMP_SETTLE_CHECKS:
                if not current:
                    break
                for tmp in self.directory.glob(f"{step_id}.{TMP_SUFFIX}*"):
                    shutil.rmtree(tmp, ignore_errors=True)
                previous, unchanged = None, 0
            time.sleep(TMP_CLEANUP_WAIT_S)

    def _resolve(self, step_id: Optional[int]) -> int:
        if not self.directory.exists():
            raise FileNotFoundError(f"no checkpoint directory {self.directory}")
        steps = self.all_steps()
        if step_id is None:
            if not steps:
                raise FileNotFoundError(f"no checkpoint steps in {self.directory}")
            return steps[-1]
        if step_id not in steps:
            raise FileNotFoundError(f"no checkpoint step {step_id} in {self.directory} "
                                    f"(saved steps: {steps})")
        return int(step_id)

    def restore_metadata(self, step_id: Optional[int] = None) -> dict:
        """Only the JSON metadata of `step_id` (default: latest)."""
        step = self._resolve(step_id)
        path = self.directory / str(step) / METADATA_ITEM
        try:
            restored = self._get_manager(create=False).restore(
                step, args=ocp.args.Composite(**{METADATA_ITEM: ocp.args.JsonRestore()}))
            metadata = restored[METADATA_ITEM]
        except Exception as e:  # orbax/json raise many types; name the file either way
            raise CorruptCheckpointError(
                f"checkpoint metadata {path} could not be read: {type(e).__name__}: {e}") from e
        if not isinstance(metadata, dict):
            raise CorruptCheckpointError(f"checkpoint metadata {path} is not a JSON object")
        version = metadata.get("format_version")
        if version is None or version > FORMAT_VERSION:
            raise CorruptCheckpointError(
                f"checkpoint {path} has format_version {version!r}; this code reads "
                f"versions <= {FORMAT_VERSION}")
        return metadata

    def restore(self, step_id: Optional[int] = None,
                template_fn: Optional[Callable[[dict], Any]] = None):
        """(state, metadata) of `step_id` (default: the latest step).

        Without `template_fn` the state is the raw saved structure (see the module
        docstring); with it, `template_fn(metadata)` gives the target structure and types.
        Raises FileNotFoundError (no directory / step), CorruptCheckpointError (unreadable
        step, naming its path).
        """
        step = self._resolve(step_id)
        metadata = self.restore_metadata(step)
        path = self.directory / str(step) / STATE_ITEM
        if template_fn is None:
            state_args = ocp.args.PyTreeRestore(restore_args=self._raw_restore_args(step, path))
            put_back = lambda raw: _put_back_zero_size(raw, metadata.get(ZERO_SIZE_LEAVES, []))
        else:
            template, put_back = _without_zero_size(template_fn(metadata))
            state_args = ocp.args.PyTreeRestore(item=template,
                                                restore_args=_restore_args(template))
        try:
            restored = self._get_manager(create=False).restore(
                step, args=ocp.args.Composite(**{STATE_ITEM: state_args}))
        except Exception as e:
            raise CorruptCheckpointError(
                f"checkpoint state {path} could not be restored"
                f"{' into the template' if template_fn else ''}: {type(e).__name__}: {e}") from e
        return put_back(restored[STATE_ITEM]), metadata

    def _raw_restore_args(self, step: int, path: pathlib.Path):
        """Restore args from the checkpoint's own tree metadata: numpy leaves (saved without
        a sharding) as numpy, the rest as jax arrays on the first local device -- whatever
        device topology saved them (a 4-device data-parallel run restores on 1 device)."""
        try:
            tree = self._get_manager(create=False).item_metadata(step)[STATE_ITEM].tree
        except Exception as e:
            raise CorruptCheckpointError(f"checkpoint state {path} has unreadable tree "
                                         f"metadata: {type(e).__name__}: {e}") from e
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

        def leaf_args(m):
            if getattr(m, "sharding", None) is None:
                return ocp.RestoreArgs(restore_type=np.ndarray, dtype=m.dtype)
            return ocp.ArrayRestoreArgs(sharding=device, dtype=m.dtype,
                                        global_shape=tuple(m.shape))

        return jax.tree_util.tree_map(leaf_args, tree,
                                      is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))

    def nested(self, name: str, max_to_keep: Optional[int] = None) -> "RunCheckpointer":
        """A checkpointer of its own steps in `<directory>/<name>/` (not created until its
        first save). `name` must not be a number: it would read as one of this
        checkpointer's steps."""
        if name.isdigit() or "/" in name or name in ("", ".", ".."):
            raise ValueError(f"nested checkpointer name {name!r}: use a non-numeric "
                             "directory name")
        return RunCheckpointer(self.directory / name, max_to_keep=max_to_keep)

    def delete_all(self) -> None:
        """Deletes every step (finished or half-written) and the directory itself (on
        several processes: once every process has stopped reading it, process 0
        deletes, and every process waits until it has)."""
        from cpd_jax import parallel

        self.close()
        parallel.barrier(f"delete {self.directory.name}")
        if parallel.is_main_process() and self.directory.exists():
            shutil.rmtree(self.directory)
        parallel.barrier(f"deleted {self.directory.name}")

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()
            self._manager = None

    def __enter__(self) -> "RunCheckpointer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def restructure(raw, like):
    """`raw` (a template-free `restore`'s state, or a part of it: nested dicts and lists)
    in the structure and types of `like` (e.g. a `DistillState` with its optax state,
    arrays or `jax.ShapeDtypeStruct`s as leaves). Each leaf of `like` is looked up in
    `raw` by its key path, so `raw` must hold every leaf with the same shape and dtype;
    ValueError names the first one that differs or is missing."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    out = []
    for path, template in leaves:
        node = raw
        try:
            for k in path:
                node = node[_raw_key(k)]
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(f"restored state has no leaf at {jax.tree_util.keystr(path)}") from e
        if np.shape(node) != tuple(template.shape) or np.dtype(node.dtype) != template.dtype:
            raise ValueError(f"restored leaf {jax.tree_util.keystr(path)} is "
                             f"{np.dtype(node.dtype).name}{list(np.shape(node))}, expected "
                             f"{np.dtype(template.dtype).name}{list(template.shape)}")
        out.append(node)
    return treedef.unflatten(out)


def check_format(metadata: Mapping[str, Any], expected: str | Sequence[str], source: str,
                 fix: str) -> None:
    """Raises UserError (one line: `source`, the formats, then `fix`) unless the
    checkpoint's `metadata["format"]` is `expected` (or one of them): each kind of run
    names its checkpoints' format, so one kind never restores another's."""
    found = metadata.get("format")
    allowed = (expected,) if isinstance(expected, str) else tuple(expected)
    if found not in allowed:
        wanted = " or ".join(repr(f) for f in allowed)
        raise UserError(f"{source}: checkpoint format {found!r} is not {wanted}; {fix}")


def save_tree(path, tree) -> None:
    """Writes one pytree of arrays (no zero-size ones) at `path`, replacing what is there."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(pathlib.Path(path).absolute(), tree, force=True)
    checkpointer.wait_until_finished()


def restore_tree(path):
    """The pytree `save_tree` wrote at `path`, as saved (numpy leaves stay numpy)."""
    return ocp.StandardCheckpointer().restore(pathlib.Path(path).absolute())


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any],
                       ignore: Iterable[str] = (),
                       defaults: Mapping[str, Any] | None = None) -> dict:
    """{dotted.key: (saved value, current value)} for keys that differ (missing -> None).

    Values are compared after a JSON round trip (tuples == lists). `ignore` holds dotted
    keys or prefixes ("eval" ignores every eval.* field). `defaults` (the base config):
    a key the saved config lacks is no difference where the current value is its default,
    since a field added to the code after the run was saved defaults to the old behaviour.
    """
    a = _flatten(_normalise_json(saved))
    b = _flatten(_normalise_json(current))
    base = _flatten(_normalise_json(defaults or {}))
    ignore = tuple(ignore)
    skip = lambda k: any(k == i or k.startswith(i + ".") for i in ignore)
    missing = object()
    added_at_default = lambda k: k not in a and k in base and b.get(k, missing) == base[k]
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if not skip(k) and not added_at_default(k)
            and a.get(k, missing) != b.get(k, missing)}


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def verify_config(metadata: Mapping[str, Any], config_dict: Mapping[str, Any],
                  ignore: Iterable[str] = (),
                  fix: str = "use the config the checkpoint was saved with",
                  defaults: Mapping[str, Any] | None = None) -> None:
    """Raises UserError, one line naming every config field that differs from the
    checkpoint's (saved and current values; `config_differences`) and then `fix`."""
    if "config" not in metadata:
        raise UserError(f"checkpoint metadata has no 'config' to verify against; {fix}")
    diff = config_differences(metadata["config"], config_dict, ignore, defaults)
    if diff:
        where = f" (checkpoint step {metadata['step_id']})" if "step_id" in metadata else ""
        values = "; ".join(f"{k}: saved {_short(s)}, now {_short(c)}"
                           for k, (s, c) in diff.items())
        raise UserError(f"config differs from the checkpoint's{where} in "
                        f"{len(diff)} field(s): {', '.join(diff)} ({values}); {fix}")
