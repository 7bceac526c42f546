"""tf.distribute for pretraining: strategies, TF_CONFIG, per-worker input, the tf.data
service, and the training loop used under MultiWorkerMirroredStrategy.

One host (`default`, `mirrored`, `tpu`) trains with `model.fit`. Under
`MultiWorkerMirroredStrategy`, `model.fit` of Keras 3.15 fails while converting the
per-replica outputs of a step (keras-team/keras#20585), so `fit_distributed` runs the same
compiled model's `train_step` with `strategy.run` inside a `tf.function` and drives the same
Keras callbacks (progress bar, CSV log, TensorBoard, checkpoints, backup) as `fit` does.
"""

import json
import os

import keras
import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi-worker", "tpu")

_TF_CONFIG_HINT = (
    'set it to e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
)


def read_tf_config(text=None):
    """Parses and checks `TF_CONFIG` (the environment variable when `text` is None).

    Returns:
        (task_type, task_index, workers): the task of this process and the list of worker
        addresses (a `chief` task, when present, counts as the first worker).

    Raises:
        ValueError: naming what is wrong, for missing, malformed or inconsistent values.

    Example:
    >>> read_tf_config('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}')
    ('worker', 1, ['a:1', 'b:1'])
    """
    text = os.environ.get("TF_CONFIG") if text is None else text
    if not text or not text.strip():
        raise ValueError(f"--strategy multi-worker needs the TF_CONFIG environment variable; {_TF_CONFIG_HINT}")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}); {_TF_CONFIG_HINT}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict):
        raise ValueError(f"TF_CONFIG has no \"cluster\" object; {_TF_CONFIG_HINT}")
    cluster = config["cluster"]
    workers = []
    for role in ("chief", "worker"):
        addresses = cluster.get(role, [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) and ":" in a for a in addresses):
            raise ValueError(f"TF_CONFIG cluster.{role} must be a list of \"host:port\" strings, got {addresses!r}")
        workers.extend(addresses)
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise ValueError(f"TF_CONFIG cluster has roles {unknown} that multi-worker training does not use; use chief and worker")
    if not workers:
        raise ValueError(f"TF_CONFIG cluster lists no workers; {_TF_CONFIG_HINT}")
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in ("chief", "worker"):
        raise ValueError(f"TF_CONFIG task {task!r} must be {{\"type\": \"worker\" or \"chief\", \"index\": N}}")
    index = task.get("index", 0)
    count = len(cluster.get(task["type"], []))
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
        raise ValueError(
            f"TF_CONFIG task index {index!r} is outside the {count} {task['type']} address(es) of the cluster; "
            f"use 0 to {count - 1}"
        )
    return task["type"], index, workers


def make_strategy(name):
    """The `tf.distribute` strategy for `--strategy NAME`.

    Create it before any other TensorFlow work: MultiWorkerMirroredStrategy configures
    collective ops, which TensorFlow allows only at program start-up.
    """
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ValueError(f"--strategy tpu found no TPU ({first}); run on a TPU VM or choose default or mirrored") from None
        return tf.distribute.TPUStrategy(resolver)
    return tf.distribute.get_strategy()


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def worker_index(strategy):
    """This process's worker number (0 = the chief, which writes the run directory)."""
    if not is_multi_worker(strategy):
        return 0
    resolver = strategy.cluster_resolver
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    if task_type == "chief":
        return 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_id + 1 if has_chief else task_id


def xla_allowed(strategy):
    """Whether the whole train step may be XLA-compiled: on one replica, or on TPU (which
    compiles everything). With more replicas the step holds all-reduce collectives, which
    XLA cannot compile on CPU; Keras' own `jit_compile="auto"` turns XLA off there too."""
    return strategy.num_replicas_in_sync == 1 or isinstance(strategy, tf.distribute.TPUStrategy)


def per_replica_batch_size(strategy, global_batch_size):
    """The rows each replica gets from a global batch; raises unless it divides evenly."""
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        raise ValueError(
            f"--batch-size {global_batch_size} does not split evenly over the {replicas} replicas of the strategy; "
            f"use a multiple of {replicas}"
        )
    return global_batch_size // replicas


def use_data_service(dataset, address, job_name):
    """Moves the input pipeline onto a tf.data service (dispatcher `address`, e.g.
    `grpc://host:5050`): its workers build the batches and this process only trains.

    Every trainer that passes the same `job_name` reads from one shared job, each batch
    going to one of them ("distributed_epoch" would need a finite dataset; the training
    pipeline repeats forever, so the job runs in "parallel_epochs" mode with the
    pipeline's own per-worker seeds).
    """
    if not address:
        return dataset
    if "://" not in address:
        address = f"grpc://{address}"
    return dataset.apply(
        tf.data.experimental.service.distribute(
            processing_mode=tf.data.experimental.service.ShardingPolicy.OFF,
            service=address,
            job_name=job_name,
        )
    )


def barrier(strategy):
    """Waits until every worker gets here (a no-op on one host). The chief calls it after
    writing the run directory, so that no worker exits while the chief still needs the
    cluster (its coordination service reports workers that left as crashed)."""
    if is_multi_worker(strategy):
        values = strategy.experimental_distribute_values_from_function(lambda _: tf.constant([0], tf.int64))
        strategy.gather(values, axis=0).numpy()


def check_backup_agrees(strategy, epoch):
    """Raises unless every worker restored the same epoch (they must share --out)."""
    if not is_multi_worker(strategy):
        return
    values = strategy.experimental_distribute_values_from_function(lambda _: tf.constant([epoch], tf.int64))
    epochs = strategy.gather(values, axis=0).numpy()
    lowest, highest = int(epochs.min()), int(epochs.max())
    if lowest != highest:
        raise ValueError(
            f"the workers restored different epochs ({lowest} to {highest}) from the backup; --out must be one "
            "directory on a file system that all workers share"
        )


def _float_logs(results):
    return {name: float(value) for name, value in results.items()}


def fit_distributed(
    model,
    strategy,
    dataset_fn,
    *,
    steps_per_epoch,
    epochs,
    callbacks=(),
    verbose=1,
    validation_data=None,
    validation_steps=None,
):
    """`model.fit` for MultiWorkerMirroredStrategy: same step, metrics and callbacks.

    Args:
        model: A model compiled inside `strategy.scope()`.
        strategy: The strategy (any `tf.distribute` strategy works).
        dataset_fn: `fn(input_context) -> dataset` of per-replica batches, as
            `strategy.distribute_datasets_from_function` takes.
        steps_per_epoch, epochs: As for `fit`; `model._initial_epoch` (set by a backup
            callback in `on_train_begin`) skips finished epochs.
        callbacks: Keras callbacks; a progress bar is added when `verbose` is 1 or 2.
        validation_data: A dataset of global batches evaluated after every epoch.
        validation_steps: Batches of `validation_data` per evaluation.

    Returns:
        The `keras.callbacks.History`.
    """
    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))

    def train_step(data):
        return model.train_step(data)

    def test_step(data):
        return model.test_step(data)

    if model.jit_compile:
        train_step = tf.function(train_step, jit_compile=True)
        test_step = tf.function(test_step, jit_compile=True)

    @tf.function
    def train_function(iterator):
        strategy.run(train_step, args=(next(iterator),))

    @tf.function
    def test_function(iterator):
        strategy.run(test_step, args=(next(iterator),))

    history = keras.callbacks.History()
    callback_list = keras.callbacks.CallbackList(
        [*callbacks, history],
        add_progbar=verbose in (1, 2),
        verbose=verbose,
        epochs=epochs,
        steps=steps_per_epoch,
        model=model,
    )
    val_iterator = None
    if validation_data is not None:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        val_iterator = iter(strategy.experimental_distribute_dataset(validation_data.with_options(options)))

    model.stop_training = False
    model._initial_epoch = None
    logs = {}
    callback_list.on_train_begin()
    initial_epoch = model._initial_epoch or 0
    check_backup_agrees(strategy, initial_epoch)
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callback_list.on_train_batch_begin(step)
            train_function(iterator)
            logs = _float_logs(model.get_metrics_result())
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = dict(logs)
        if val_iterator is not None:
            model.reset_metrics()
            for _ in range(validation_steps):
                test_function(val_iterator)
            epoch_logs.update({f"val_{name}": value for name, value in _float_logs(model.get_metrics_result()).items()})
        callback_list.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    return history
