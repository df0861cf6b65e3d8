"""Leave-one-group-out: how well "neither" carries to kinds of photo never trained on.

``python -m catdog.training.leave_one_out --init-from model/resnet.h5``

However broad the Other photos, users will upload kinds nobody collected. For
each group of Other photos (a kind: object, animal, scene, food, plant,
person, wildcat; see :mod:`catdog.data.groups`), a short fine-tuning run trains
without any photo of that group, and the share of the group's photos answered
"Other" is the forecast for a kind of photo nobody collected. A control run
with every group measures the same protocol on kinds it did see, so the two
columns differ only by the held-out kind.

Every run uses the same short protocol (start from the given model, a seeded
subsample of pets, every Other photo of the other groups, the configured
epochs), so the figures compare with each other, not with the shipped model's
longer run. With ``--refit-head`` each run then refits its head as the shipped
model's was (:mod:`catdog.training.head`: one Dense layer over the run's own
pooled features of its training part, generated and plain pictures), so the
forecast is that of the shipped recipe at reduced length. Each run also keeps
the pooled features and logits of the photos it scores (``scores.npz`` in its
run folder), from which :func:`open_set_table` measures the open-set signals of
:mod:`catdog.training.openset` on the held-out groups, and
:func:`held_out_confidence` their calibration.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from catdog import cli, paths
from catdog.config import Settings
from catdog.data.dataset import Split, source_of
from catdog.data.groups import file_groups
from catdog.dirs import atomic_write, write_json_atomic
from catdog.errors import ModelError
from catdog.labels import OTHER
from catdog.models.build import saved_architecture
from catdog.training import openset

log = logging.getLogger("catdog.training.leave_one_out")

# Shares of validation pets an open-set rule may set aside, at which the signals are compared.
PET_LOSSES = (0.01, 0.02, 0.05)
REFERENCE_PETS = 4000  # training pets whose features are the k-NN bank and the Mahalanobis fit
# What a member of a several-network run keeps in its folder (see trained_member).
MEMBER_WEIGHTS = "member.weights.h5"
MEMBER_RECORD = "member.json"


def held_out_groups(split: Split, group_of: dict[str, str]) -> list[str]:
    """The groups of the Other class, in name order."""
    index = split.classes.index(OTHER)
    return sorted(
        {
            group_of[f]
            for part in split.files
            for f, y in zip(split.files[part], split.labels[part], strict=True)
            if y == index
        }
    )


def subset(split: Split, arrays: dict, part: str, keep) -> tuple[np.ndarray, list[int], list[str]]:
    """The images, labels and files of ``part`` for which ``keep(file, label)`` is true."""
    chosen = [i for i, (f, y) in enumerate(zip(split.files[part], split.labels[part], strict=True)) if keep(f, y)]
    return arrays[part][chosen], [split.labels[part][i] for i in chosen], [split.files[part][i] for i in chosen]


def features_and_logits(model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pooled ``features`` and the head's logits of a uint8 image array, in float32."""
    from catdog.training.head import pooled_features

    pooled = pooled_features(model, images)
    kernel, bias = model.get_layer("predictions").get_weights()
    return pooled, openset.logits(pooled, kernel, bias)


def member_settings(settings: Settings, start: Path) -> Settings:
    """``settings`` with the start model's architecture: every member of a run is fine-tuned alike."""
    training = settings.training.model_copy(update={"architecture": saved_architecture(start)})
    return settings.model_copy(update={"training": training})


def trained_member(
    settings: Settings, split: Split, arrays: dict, root: Path, run: Path, start: Path, held_out: str | None
) -> tuple[object, float]:
    """One member of a run, fine-tuned from ``start`` in ``run/<architecture>/``, or kept from there.

    A member is kept when its folder records the same start, held-out group, training
    part and training settings: a fine-tune of 15-25 minutes is not redone when a run
    is resumed after it.

    Returns:
        The member (float32) and the seconds its fine-tune took.
    """
    from catdog.models import build_model
    from catdog.training.train import fit

    t = settings.training
    folder = run / t.architecture
    record = {
        "init_from": str(start),
        "held_out": held_out,
        "train_files_sha256": hashlib.sha256("\n".join(sorted(split.files["train"])).encode()).hexdigest(),
        "training": t.model_dump(mode="json", exclude={"head_refit"}),
    }
    weights, facts = folder / MEMBER_WEIGHTS, folder / MEMBER_RECORD
    if weights.exists() and facts.exists():
        kept = json.loads(facts.read_text(encoding="utf-8"))
        if kept.get("record") == record:
            member = build_model(t, len(split.classes))
            member.load_weights(str(weights))
            log.info("%s: %s member kept from an earlier run", held_out or "control", t.architecture)
            return member, kept["train_seconds"]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    member, facts_of_run = fit(settings, split, arrays, root, folder, resume=False, init_from=start)
    # Keras wants the name to end in .weights.h5, so not atomic_write: the record, written after, vouches for it.
    member.save_weights(str(weights))
    write_json_atomic(facts, {"record": record, "train_seconds": facts_of_run["wall_time_seconds"]})
    return member, facts_of_run["wall_time_seconds"]


def run_one(
    settings: Settings,
    split: Split,
    arrays: dict,
    root: Path,
    group_of: dict[str, str],
    held_out: str | None,
    pets_per_class: int,
    starts: Sequence[Path],
    runs: Path,
    refit_head: bool = False,
) -> dict:
    """Train without ``held_out`` (or with every group, for None), score the result and keep its features.

    One start gives one network. Several (a ResNet and an Inception) give one member each,
    fine-tuned alike in its own folder, ``<run>/<architecture>/``, and kept there, so that a run
    stopped between members resumes after the last one done; the run scores their ensemble.
    With ``refit_head`` the trained network's (or ensemble's) head is then refitted on the run's
    own training part (never on the held-out group), as the shipped model's was.

    Returns:
        The held-out group's images answered Other (every part: none was
        trained on), overall and by source; the seen groups' test photos
        answered Other; the test cats and dogs answered Other.
    """
    from catdog.training.train import fit

    other = split.classes.index(OTHER)
    rng = random.Random(f"{settings.training.seed}:leave-one-out")
    pets = {
        label: [f for f, y in zip(split.files["train"], split.labels["train"], strict=True) if y == label]
        for label in range(len(split.classes))
        if label != other
    }
    sampled = {f for files in pets.values() for f in rng.sample(files, min(pets_per_class, len(files)))}

    def unseen(f: str, y: int) -> bool:
        return y == other and group_of[f] == held_out

    # The test part is the whole one (fit never reads it), shared rather than copied.
    parts, sub_arrays = {"test": (split.files["test"], split.labels["test"])}, {"test": arrays["test"]}
    for part, keep in (
        ("train", lambda f, y: (y == other and not unseen(f, y)) or f in sampled),
        ("validation", lambda f, y: not unseen(f, y)),
    ):
        sub_arrays[part], labels, files = subset(split, arrays, part, keep)
        parts[part] = (files, labels)
    sub = Split(split.classes, {p: v[0] for p, v in parts.items()}, {p: v[1] for p, v in parts.items()})
    name = held_out or "control"
    if len(starts) == 1:
        if (runs / name).exists():
            shutil.rmtree(runs / name)
        (runs / name).mkdir(parents=True)
        model, run = fit(settings, sub, sub_arrays, root, runs / name, resume=False, init_from=starts[0])
        seconds = {settings.training.architecture: run["wall_time_seconds"]}
    else:
        from catdog.models.ensemble import build_ensemble

        seconds, members = {}, []
        for start in starts:
            member_run = member_settings(settings, start)
            member, seconds[member_run.training.architecture] = trained_member(
                member_run, sub, sub_arrays, root, runs / name, start, held_out
            )
            members.append(member)
        model = build_ensemble(members)
    head = None
    if refit_head:
        from catdog.training.head import refit_head as refit

        head = refit(model, sub_arrays["train"], sub.labels["train"], split.classes, settings.training)

    # The photos each figure needs, scored once; their features and logits are kept for open_set_table.
    reference = set(sorted(sampled)[:: max(1, len(sampled) // REFERENCE_PETS)])
    sets = {
        "reference_pets": subset(split, arrays, "train", lambda f, y: f in reference),
        "validation": subset(sub, sub_arrays, "validation", lambda f, y: True),
        "test_pets": subset(split, arrays, "test", lambda f, y: y != other),
        "seen_other_test": subset(split, arrays, "test", lambda f, y: y == other and not unseen(f, y)),
    }
    if held_out:
        chosen = [subset(split, arrays, part, unseen) for part in split.files]
        sets["held_out"] = (
            np.concatenate([c[0] for c in chosen]),
            [y for c in chosen for y in c[1]],
            [f for c in chosen for f in c[2]],
        )
    saved = {}
    for key, (images, labels, files) in sets.items():
        saved[f"{key}_features"], saved[f"{key}_logits"] = features_and_logits(model, images)
        saved[f"{key}_labels"] = np.asarray(labels, dtype=np.int64)
        saved[f"{key}_sources"] = np.asarray([source_of(f) for f in files])
        saved[f"{key}_groups"] = np.asarray([group_of[f] for f in files])
    with atomic_write(runs / name / "scores.npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **saved)

    def answered_other(key: str, source: str | None = None) -> float:
        mask = np.ones(len(saved[f"{key}_labels"]), dtype=bool)
        if source is not None:
            mask = saved[f"{key}_sources"] == source
        answers = saved[f"{key}_logits"][mask].argmax(axis=1)
        return float((answers == other).mean()) if mask.any() else float("nan")

    result = {
        "held_out": held_out,
        "train_images": len(sub_arrays["train"]),
        "train_seconds": sum(seconds.values()),
        **({"member_train_seconds": seconds} if len(starts) > 1 else {}),
        **({"head_refit": head} if head else {}),
        "test_pets_answered_other": answered_other("test_pets"),
        "seen_other_test_flagged": answered_other("seen_other_test"),
    }
    if held_out:
        result["held_out_images"] = len(saved["held_out_labels"])
        result["held_out_flagged"] = answered_other("held_out")
        result["held_out_flagged_by_source"] = {
            source: answered_other("held_out", source) for source in sorted(set(saved["held_out_sources"].tolist()))
        }
    else:
        groups = np.asarray([group_of[f] for f in sets["seen_other_test"][2]])
        answers = saved["seen_other_test_logits"].argmax(axis=1) == other
        result["test_flagged_by_group"] = {g: float(answers[groups == g].mean()) for g in sorted(set(groups.tolist()))}
    log.info("%s: %s", name, json.dumps(result))
    return result


def runs_folder(settings: Settings, protocol: dict) -> Path:
    """Where the runs of a protocol keep their scores: one folder per set of architectures and run seed.

    One network's runs keep ``runs/leave-one-out/``; a pair's, ``runs/leave-one-out-resnet-inception/``;
    runs with a seed of their own, ``runs/leave-one-out-resnet-inception-seed7/``.
    """
    architecture = protocol["architecture"]
    name = "leave-one-out" if isinstance(protocol["init_from"], str) else f"leave-one-out-{architecture}"
    if "seed" in protocol:
        name += f"-seed{protocol['seed']}"
    return paths.run_dir(settings.data.artifacts_dir, name)


def leave_one_group_out(
    settings: Settings,
    init_from: Path | Sequence[Path],
    pets_per_class: int = 3000,
    groups: Sequence[str] | None = None,
    refit_head: bool = False,
    seed: int | None = None,
) -> dict:
    """Run the control and one run per held-out Other group; write and return the table.

    ``init_from`` is one start model, or several (a member each, see :func:`run_one`).
    ``seed``, when given, replaces ``training.seed`` in the runs (their pet sample, weights'
    shuffles and augmentation) but not in the split, which must stay the one every model
    was chosen on: a run's figures can then be repeated with another sample.
    A run already in the table, from an earlier (perhaps interrupted) call with the same
    protocol, is kept unless its group is named in ``groups``: a rerun resumes. It is kept
    too when its scores are gone (``artifacts/`` is not in git) but the table holds the rows
    a report wrote from them (:func:`reported`).
    """
    from catdog.data.dataset import load_arrays, prepare_split

    # Checked before the minutes of loading the data.
    starts = [
        paths.require_model(start) for start in ([init_from] if isinstance(init_from, (str, Path)) else init_from)
    ]
    t = settings.training
    several = len(starts) > 1
    architectures = [saved_architecture(start) for start in starts] if several else [t.architecture]
    if len(set(architectures)) < len(architectures):  # each member has its own folder, named by its architecture
        raise ModelError(f"the starts of one run must be of different architectures, not {', '.join(architectures)}")
    split, root, _ = prepare_split(settings)
    arrays = load_arrays(settings, split, root)
    if seed is not None:
        t = t.model_copy(update={"seed": seed})
        settings = settings.model_copy(update={"training": t})
    every = [f for part in split.files.values() for f in part]
    group_of = dict(zip(every, file_groups(every, root, settings.data.source_groups), strict=True))
    table_file = paths.leave_one_out(settings.model.dir)
    protocol = {
        # One start stays a string, as in the tables written before several could be given.
        "init_from": [str(start) for start in starts] if several else str(starts[0]),
        "pets_per_class": pets_per_class,
        "epochs": t.epochs,
        "learning_rate": t.learning_rate,
        "image_size": t.image_size,
        "architecture": "-".join(architectures),
    }
    if seed is not None:  # only then, so that tables written before a run seed could be given still resume
        protocol["seed"] = seed
    runs = runs_folder(settings, protocol)
    if refit_head:  # only then, so that tables of runs without it still resume
        protocol["head_refit"] = t.head_refit.model_dump()
    previous = json.loads(table_file.read_text(encoding="utf-8")) if table_file.exists() else {}
    if previous.get("protocol") != protocol:
        previous = {}
    # The earlier report's rows come along: a run whose scores are gone is reported from them.
    table = {"control": None, "held_out": {}, **previous, "protocol": protocol}
    for group in [None, *(groups or held_out_groups(split, group_of))]:
        name = group or "control"
        kept = table["control"] if group is None else table["held_out"].get(group)
        if kept and ((runs / name / "scores.npz").exists() or reported(table, group)) and not (groups and group):
            log.info("%s: kept from an earlier run of the same protocol", name)
            continue
        result = run_one(settings, split, arrays, root, group_of, group, pets_per_class, starts, runs, refit_head)
        if group is None:
            table["control"] = result
        else:
            table["held_out"][group] = result
        write_json_atomic(table_file, table)
    return report(settings, table)


def report(settings: Settings, table: dict | None = None) -> dict:
    """Add the open-set and held-out confidence tables, from the runs' kept scores, to the table and write it.

    Args:
        settings: The configuration (where the runs and the table are).
        table: The runs' table; by default the one written by :func:`leave_one_group_out`.
    """
    table_file = paths.leave_one_out(settings.model.dir)
    if table is None:
        table = json.loads(table_file.read_text(encoding="utf-8"))
    runs = runs_folder(settings, table["protocol"])
    scores = {
        group: dict(np.load(runs / group / "scores.npz"))
        for group in table["held_out"]
        if (runs / group / "scores.npz").exists()
    }
    # A run whose scores are gone (they live in artifacts/, which a new machine lacks) keeps the rows
    # an earlier report wrote from them; one without either cannot be reported.
    gone = [group for group in table["held_out"] if group not in scores]
    if missing := [group for group in gone if not reported(table, group)]:
        raise ModelError(
            f"the scores of the run(s) {', '.join(missing)} are not in {runs} and the table holds no rows "
            f"reported from them; train them again with --group {' --group '.join(missing)}"
        )
    earlier_rows = (table.get("open_set") or {}).get("groups", {})
    table["open_set"] = open_set_table(
        scores, settings.data.classes, kept={group: earlier_rows[group] for group in gone}
    )
    if (runs / "control" / "scores.npz").exists():  # else the earlier report's rows, if any, stay
        table["control_at_pet_loss"] = control_at_pet_loss(
            dict(np.load(runs / "control" / "scores.npz")), settings.data.classes
        )
    earlier_confidence = table.get("held_out_confidence") or {}
    table["held_out_confidence"] = {
        **{group: earlier_confidence[group] for group in gone},
        **held_out_confidence(scores, settings.data.classes),
    }
    write_json_atomic(table_file, table)
    print(format_table(table))
    return table


def reported(table: dict, group: str | None) -> bool:
    """Whether the table holds the rows a report writes from the run's scores (None: the control)."""
    if group is None:
        return bool(table.get("control_at_pet_loss"))
    return group in ((table.get("open_set") or {}).get("groups") or {}) and group in (
        table.get("held_out_confidence") or {}
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _scores(run: dict, key: str, classes: Sequence[str], fitted: dict) -> dict[str, np.ndarray]:
    """Every open-set score of one set of photos of a run."""
    other = list(classes).index(OTHER)
    pets = [i for i in range(len(classes)) if i != other]
    z = run[f"{key}_logits"]
    probabilities = _softmax(z)
    x = run[f"{key}_features"]
    return {
        "other_probability": probabilities[:, other],
        "pet_energy": openset.pet_energy(z, pets),
        "pet_max_logit": openset.pet_max_logit(z, pets),
        "knn": openset.knn_distance(x, fitted["bank"]),
        "mahalanobis": openset.mahalanobis(x, fitted["means"], fitted["precision"]),
    }


def open_set_table(
    scores: dict[str, dict[str, np.ndarray]], classes: Sequence[str], kept: dict[str, dict] | None = None
) -> dict:
    """Held-out flagged rate of each open-set rule at equal pet loss, per group and on average.

    Each rule flags a photo whose score passes the threshold at which the given
    share of the run's validation pets is set aside: each score alone, and each
    signal joined with the Other probability (:func:`catdog.training.openset.either`).
    ``"argmax"`` is the model's plain answer, with the pet loss it costs.

    Args:
        scores: Each held-out group's kept ``scores.npz``, as arrays by name.
        classes: Class names, in index order.
        kept: Rows of groups whose scores are gone, as an earlier call gave them; they count
            in the mean like the others.
    """
    other = list(classes).index(OTHER)
    table: dict = {"pet_losses": list(PET_LOSSES), "groups": dict(kept or {})}
    for group, run in scores.items():
        reference = run["reference_pets_features"]
        fitted = {"bank": openset.normalise(reference)}
        fitted["means"], fitted["precision"] = openset.fit_mahalanobis(reference, run["reference_pets_labels"])
        pets = run["validation_labels"] != other
        val = {k: v[pets] for k, v in _scores(run, "validation", classes, fitted).items()}
        judged = {
            "held_out": _scores(run, "held_out", classes, fitted),
            "test_pets": _scores(run, "test_pets", classes, fitted),
        }
        rules = {name: (val[name], {k: v[name] for k, v in judged.items()}) for name in openset.SCORES}
        for name in openset.SCORES[1:]:
            pair = ("other_probability", name)
            rules[f"{name}+other_probability"] = (
                openset.either([val[n] for n in pair], [val[n] for n in pair]),
                {k: openset.either([val[n] for n in pair], [v[n] for n in pair]) for k, v in judged.items()},
            )
        rows = {
            "argmax": {f"{key}_flagged": float((run[f"{key}_logits"].argmax(axis=1) == other).mean()) for key in judged}
        }
        for name, (pet_scores, scores) in rules.items():
            for loss in PET_LOSSES:
                threshold = openset.threshold_at_loss(pet_scores, loss)
                rows.setdefault(name, {})[f"{loss:g}"] = {
                    f"{key}_flagged": float((values > threshold).mean()) for key, values in scores.items()
                }
        table["groups"][group] = rows
    groups = list(table["groups"])
    first = table["groups"][groups[0]] if groups else {}
    table["mean"] = {
        name: {
            loss: {key: float(np.mean([table["groups"][g][name][loss][key] for g in groups])) for key in row}
            for loss, row in cells.items()
        }
        if name != "argmax"
        else {key: float(np.mean([table["groups"][g]["argmax"][key] for g in groups])) for key in cells}
        for name, cells in first.items()
    }
    return table


def control_at_pet_loss(run: dict[str, np.ndarray], classes: Sequence[str]) -> dict:
    """The control run's Other test photos (every group seen) flagged at each pet loss of :data:`PET_LOSSES`.

    The same rule as the held-out column of :func:`open_set_table` (P(Other) over the threshold that
    sets the share of the run's validation pets aside), so the two columns differ only by whether
    the group was trained on, at the pet loss a served model keeps.

    Args:
        run: The control's kept ``scores.npz``, as arrays by name; per group where it kept
            ``seen_other_test_groups`` (runs before that column kept only the whole share).
        classes: Class names, in index order.
    """
    other = list(classes).index(OTHER)
    pets = run["validation_labels"] != other
    threshold_scores = _softmax(run["validation_logits"])[pets, other]
    seen = _softmax(run["seen_other_test_logits"])[:, other]
    test_pets = _softmax(run["test_pets_logits"])[:, other]
    groups = run.get("seen_other_test_groups")
    table = {}
    for loss in PET_LOSSES:
        threshold = openset.threshold_at_loss(threshold_scores, loss)
        flagged = seen > threshold
        row = {
            "seen_other_test_flagged": float(flagged.mean()),
            "test_pets_flagged": float((test_pets > threshold).mean()),
        }
        if groups is not None:
            row["by_group"] = {g: float(flagged[groups == g].mean()) for g in sorted(set(groups.tolist()))}
        table[f"{loss:g}"] = row
    return table


def held_out_confidence(scores: dict[str, dict[str, np.ndarray]], classes: Sequence[str]) -> dict:
    """ECE and the wrong answers' median confidence on each held-out group.

    Probabilities are calibrated first, with the temperature fitted on the run's validation part.
    """
    from catdog.serving.calibration import apply_temperature, fit_temperature, reliability

    other = list(classes).index(OTHER)
    table = {}
    for group, run in scores.items():
        temperature = fit_temperature(_softmax(run["validation_logits"]), run["validation_labels"])
        probabilities = apply_temperature(_softmax(run["held_out_logits"]), temperature)
        wrong = probabilities.argmax(axis=1) != other
        table[group] = {
            "temperature": temperature,
            "ece": reliability(probabilities, run["held_out_labels"])["ece"],
            "wrong_answers": int(wrong.sum()),
            "wrong_median_confidence": float(np.median(probabilities[wrong].max(axis=1))) if wrong.any() else None,
        }
    return table


def format_table(table: dict) -> str:
    """Markdown table: flagged rate of each group when held out against when seen.

    With the open-set table, also each group's flagged rate at the first pet loss of
    :data:`PET_LOSSES` (P(Other) over the threshold that sets that share of validation pets
    aside): the forecast at the pet budget a served model keeps, where the plain answer's
    rate is at whatever share of pets the short run happens to call Other.
    """
    seen = table["control"].get("test_flagged_by_group", {})
    loss = f"{PET_LOSSES[0]:g}"
    at_loss = {
        group: rows["other_probability"][loss]["held_out_flagged"]
        for group, rows in (table.get("open_set") or {}).get("groups", {}).items()
    }
    control = (table.get("control_at_pet_loss") or {}).get(loss)
    seen_at_loss = control.get("by_group") if control else None
    budget = f" flagged at {PET_LOSSES[0]:.0%} pet loss |" if at_loss else ""
    control_budget = " trained on, at the same pet loss |" if seen_at_loss else ""
    lines = [
        f"| Other group | flagged when held out |{budget} flagged when trained on (control) |{control_budget} "
        "test pets called Other |",
        "|---|---:|---:|---:|" + ("---:|" if at_loss else "") + ("---:|" if seen_at_loss else ""),
    ]
    for group, row in table["held_out"].items():
        cell = f" {at_loss[group]:.1%} |" if at_loss else ""
        control_cell = f" {seen_at_loss.get(group, float('nan')):.1%} |" if seen_at_loss else ""
        lines.append(
            f"| {group} | {row['held_out_flagged']:.1%} ({row['held_out_images']:,} photos) |{cell} "
            f"{seen.get(group, float('nan')):.1%} |{control_cell} {row['test_pets_answered_other']:.1%} |"
        )
    rows = table["held_out"].values()
    mean = f" **{np.mean(list(at_loss.values())):.1%}** |" if at_loss else ""
    control_mean = f" {np.mean([seen_at_loss.get(g, np.nan) for g in table['held_out']]):.1%} |" if seen_at_loss else ""
    lines.append(
        f"| **mean** | **{np.mean([r['held_out_flagged'] for r in rows]):.1%}** |{mean} "
        f"{np.mean([seen.get(g, np.nan) for g in table['held_out']]):.1%} |{control_mean} |"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = cli.make_parser("catdog leave_one_out", "Estimate Other-flagging on kinds of photo never trained on.")
    parser.add_argument(
        "--init-from",
        type=Path,
        action="append",
        metavar="MODEL_H5",
        help="the model every run starts from; given twice (a ResNet and an Inception), each run fine-tunes both "
        "and scores their ensemble",
    )
    parser.add_argument("--pets-per-class", type=int, default=3000, help="cats and dogs sampled per run (default 3000)")
    parser.add_argument("--group", action="append", help="hold out only this group (repeatable; default: all)")
    parser.add_argument(
        "--refit-head",
        action="store_true",
        help="after each run's fine-tune, refit its head as the shipped model's was (training.head_refit)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seed of the runs (pet sample, shuffles, augmentation) in place of training.seed, which still "
        "makes the split; use another model.dir for the table",
    )
    parser.add_argument(
        "--report", action="store_true", help="train nothing: redo the open-set and confidence tables from the runs"
    )
    args = parser.parse_args(argv)
    settings = cli.settings_from_args(args)
    if args.report:
        report(settings)
    elif args.init_from is None:
        parser.error("--init-from is needed to train the runs")
    else:
        leave_one_group_out(settings, args.init_from, args.pets_per_class, args.group, args.refit_head, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
