"""Config checks, run from the Snakefile before any job: the files themselves, the schema, and the rest.

- ``check_config_files``: each config file read again strictly: invalid YAML names file and line, a key given
  twice is an error (YAML would silently keep the last one).
- ``schema_error``: a JSON-schema failure as one line naming the key and the file that sets it (never the
  schema itself), with a hint when YAML read a number such as ``5e-4`` as a string.
- ``check_config``: what JSON schema cannot express (references between sections, fractions, models).

Each problem raises a VecflowError; ``python -m vecflow.core.config_checks FILE...`` runs the file checks alone
(Snakemake itself rejects a ``--configfile`` that is not YAML before the workflow is read, without a line).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from vecflow.core.errors import VecflowError
from vecflow.core.generation_config import check_generation_config

# what YAML 1.1 reads as a string although it looks like a number: 5e-4, 1E3 (no dot in the mantissa)
NUMBER_LIKE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


# ----------------------------------------------------------------------------------------------- files


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise VecflowError(
                f"{loader.name}:{key_node.start_mark.line + 1}: duplicate key '{key}' (first at line "
                f"{seen[key]}); YAML would keep only the last one, so keep one of them"
            )
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_config_file(path: str | Path) -> dict:
    """One config file as a dict; invalid YAML, duplicate keys or a non-mapping raise naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise VecflowError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise VecflowError(f"{path}: not UTF-8 (byte offset {exc.start}); re-encode it as UTF-8") from None
    loader = _StrictLoader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "syntax error"
        raise VecflowError(f"{path}{line}: invalid YAML: {problem}; fix the line (indent with spaces, quote "
                           f"values that contain ': ' or start with a special character)") from None
    except yaml.YAMLError as exc:
        raise VecflowError(f"{path}: invalid YAML: {str(exc).splitlines()[0]}") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise VecflowError(f"{path}: expected a mapping of keys at the top level, got {type(data).__name__}")
    return data


def check_config_files(paths) -> dict[str, dict]:
    """Every config file loaded strictly (see ``load_config_file``); returns ``{path: content}``."""
    return {str(path): load_config_file(path) for path in paths}


# ---------------------------------------------------------------------------------------------- schema


MISSING = object()


def _value_at(data, keys: list):
    node = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def _lookup(data, keys: list) -> bool:
    return _value_at(data, keys) is not MISSING


def _source(files: dict[str, dict], keys: list, instance, leaf: bool) -> str:
    """Where a bad value came from: the last config file that sets it to that value (file:line), else the
    command line (``--config`` overrides every file, and a file that sets another value is not the culprit)."""
    setting = [path for path, data in files.items() if _lookup(data, keys)]
    if setting and (not leaf or _value_at(files[setting[-1]], keys) == instance):
        line = _key_line(setting[-1], keys)
        return f"{setting[-1]}:{line}" if line else setting[-1]
    return "--config (command line)" if files and leaf else "config"


def _key_line(path: str, keys: list) -> int | None:
    """The line of ``keys`` (a key path) in a YAML file, when it can be found."""
    try:
        node = yaml.compose(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if key_node.value == str(key):
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            return line
    return line


def _short(value, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number_literal(text: str, expected: str) -> str:
    """How to write ``text`` (a number YAML read as a string) so YAML reads the ``expected`` type."""
    text = text.strip().lower()
    if expected == "integer":
        value = float(text)
        return str(int(value)) if value.is_integer() else f"a whole number (not {text})"
    mantissa, _, exponent = text.partition("e")
    return (mantissa if "." in mantissa else mantissa + ".0") + (f"e{exponent}" if exponent else "")


def schema_error(error, files: dict[str, dict]) -> str:
    """One line for a jsonschema ValidationError: where (file:line, key), what is wrong, what to do."""
    keys = list(error.absolute_path)
    unknown = []
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})), key=str)
        keys = keys + unknown[:1]
    dotted = ".".join(str(k) for k in keys) or "(top level)"
    instance = error.instance
    where = _source(files, keys, instance, leaf=not unknown and not isinstance(instance, (dict, list)))
    if unknown:
        known = ", ".join(sorted(error.schema.get("properties", {}))) or "none"
        parent = ".".join(str(k) for k in keys[:-1]) or "the top level"
        return f"{where}: unknown key '{dotted}' under {parent}; remove it or fix its spelling (known: {known})"
    if error.validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        hint = ""
        if isinstance(instance, str) and NUMBER_LIKE.match(instance.strip()) and expected in ("number", "integer"):
            if where.startswith("--config") and len(keys) > 1:  # Snakemake reads nested --config values as strings
                hint = f"; --config reads every value inside {{...}} as a string: set '{dotted}' in a --configfile"
            else:
                hint = f"; YAML reads {instance} as a string: write {_number_literal(instance, expected)}"
        return f"{where}: key '{dotted}': expected {expected}, got {type(instance).__name__} {_short(instance)}{hint}"
    if error.validator == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        return f"{where}: key '{dotted}': {_short(instance)} is not one of: {choices}"
    if error.validator == "required":
        return f"{where}: key '{dotted}': {error.message}; add it"
    message = error.message if len(error.message) <= 200 else error.message[:197] + "..."
    return f"{where}: key '{dotted}': {message}"


def validation_error_from(exc: BaseException):
    """The jsonschema ValidationError inside Snakemake's WorkflowError from ``validate`` (or None)."""
    import jsonschema

    for arg in getattr(exc, "args", ()):
        if isinstance(arg, jsonschema.exceptions.ValidationError):
            return arg
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, jsonschema.exceptions.ValidationError):
        return cause
    return None


def merge_order(configfiles, default: str) -> list[str]:
    """The config files of a run in the order Snakemake merges them (the default first), each file once.

    ``make demo`` and a plain ``snakemake`` must agree: the default file given again with ``--configfile``
    is the same source, so the resolved config and the report do not rerun."""
    import os

    candidates = ([default] if os.path.exists(default) else []) + [str(f) for f in configfiles]
    seen, out = set(), []
    for path in candidates:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


def config_sources(paths) -> list[str]:
    """Config file paths relative to the working directory when possible (for the run's lineage)."""
    import os

    out = []
    for path in paths:
        try:
            out.append(os.path.relpath(path))
        except ValueError:
            out.append(str(path))
    return out


# ------------------------------------------------------------------------------------- whole config


def check_config(config: dict) -> None:
    check_generation_config(config["summarizer"]["generation"], "summarizer.generation")
    causal = config["summarizer"].get("causal", {})
    if "generation" in causal:  # the schema fills it; a hand-built config may not have the section
        check_generation_config(causal["generation"], "summarizer.causal.generation")
        for i, candidate in enumerate(causal.get("decoding_candidates") or []):
            if not isinstance(candidate, dict):
                raise VecflowError(f"summarizer.causal.decoding_candidates[{i}]: expected a mapping of generation "
                                   f"settings, got {type(candidate).__name__}")
            check_generation_config(causal["generation"] | candidate, f"summarizer.causal.decoding_candidates[{i}]")
    check_generation_config(config["elm"]["generation"], "elm.generation")
    _check_model_sources(config["models"])
    _check_models_referenced(config)
    _check_lvm(config["lvm"])
    _check_deploy(config)
    splits = config["summary"]["splits"]
    for name in ("train", "val"):
        if name not in splits:
            raise VecflowError(f"config: summary.splits.{name}: missing (train and val are required)")


def _check_model_sources(models: dict) -> None:
    """Each models: entry has what its source needs; a local folder must exist now, before any job runs."""
    needs = {"pypi": "package", "hub": "id", "local": "path"}
    for name, spec in models.items():
        key = needs[spec["source"]]
        if not spec.get(key):
            raise VecflowError(f"config: models.{name}.{key}: missing (source '{spec['source']}' needs it)")
        if spec["source"] == "local":
            folder = Path(spec["path"])
            if not folder.is_dir():
                raise VecflowError(f"config: models.{name}.path: folder '{folder}' not found; give an existing HF "
                                   f"model folder (relative paths start at the working directory)")
            if not (folder / "config.json").is_file():
                raise VecflowError(f"config: models.{name}.path: '{folder}' is not an HF model folder (no "
                                   f"config.json)")


def _check_models_referenced(config: dict) -> None:
    references = {
        "encoder": config["encoder"],
        "elm.lm": config["elm"]["lm"],
        "evaluation.bertscore.model": config["evaluation"]["bertscore"]["model"],
    }
    for key, name in references.items():
        if name not in config["models"]:
            known = ", ".join(sorted(config["models"])) or "none"
            raise VecflowError(f"config: {key}: '{name}' is not a models: entry (known: {known})")


def _check_lvm(lvm: dict) -> None:
    split = lvm["split"]
    if split["method"] == "fractions":
        fractions = split["fractions"]
        for name in ("train", "val", "ood"):
            if fractions.get(name, 0) <= 0 and not split.get("pinned", {}).get(name):
                raise VecflowError(f"config: lvm.split.fractions.{name}: must be > 0 (or pin ids to it: lvm.split.pinned)")
        total = sum(fractions.values())
        if abs(total - 1.0) > 1e-6:
            raise VecflowError(f"config: lvm.split.fractions: must sum to 1 (sum is {total:g})")
    else:
        for name in ("train", "val", "ood"):
            if not split["ranges"].get(name):
                raise VecflowError(f"config: lvm.split.ranges.{name}: missing (method is 'ranges')")
            for low, high in split["ranges"][name]:
                if low > high:
                    raise VecflowError(f"config: lvm.split.ranges.{name}: range [{low}, {high}] is empty")
    if not lvm["runs"]:
        raise VecflowError("config: lvm.runs: at least one run is needed")
    if lvm["train"]["d_model"] % lvm["train"]["heads"]:
        raise VecflowError("config: lvm.train.d_model: must be divisible by lvm.train.heads")


def _check_deploy(config: dict) -> None:
    deploy = config["deploy"]
    if deploy["lvm_run"] not in config["lvm"]["runs"]:
        raise VecflowError(f"config: deploy.lvm_run: '{deploy['lvm_run']}' is not one of lvm.runs")
    families = summary_families(config)
    if deploy["summarizer"] != "best" and deploy["summarizer"] not in families:
        why = "tracks.elm is false" if deploy["summarizer"] == "elm" else "summarizer.kind does not train it"
        raise VecflowError(f"config: deploy.summarizer: '{deploy['summarizer']}' is not trained in this run ({why}; "
                           f"trained: {', '.join(families) or 'none'}); use best or one of those")


ELM_VARIANTS = {"elm": "plain", "elm_rag": "rag"}  # ELM family (folder) name -> its elm.variants entry


def elm_families(config: dict) -> list[str]:
    """The ELM families a run trains (``elm.variants``), in order: elm, elm_rag."""
    if not (config["tracks"]["summary"] and config["tracks"]["elm"]):
        return []
    variants = (config.get("elm") or {}).get("variants", ["plain"])
    return [family for family, variant in ELM_VARIANTS.items() if variant in variants]


def elm_eval_suffixes(config: dict) -> list[str]:
    """Each ELM family is scored as ``eval/<family>`` (its top candidate) and, with re-ranking on
    (``elm.rerank_candidates`` > 1), as ``eval/<family>_rerank``."""
    return [""] + (["_rerank"] if int((config.get("elm") or {}).get("rerank_candidates", 1)) > 1 else [])


def elm_eval_families(config: dict) -> list[str]:
    return [family + suffix for family in elm_families(config) for suffix in elm_eval_suffixes(config)]


def summary_families(config: dict) -> list[str]:
    """The summarizer families a run trains: ``summarizer.kind`` (a name or a list; default seq2seq), then elm
    when ``tracks.elm`` is on. Empty when the summary track is off."""
    if not config["tracks"]["summary"]:
        return []
    kind = config["summarizer"].get("kind", "seq2seq")
    kinds = [kind] if isinstance(kind, str) else list(kind)
    families = [family for family in ("seq2seq", "causal") if family in kinds]
    if config["tracks"]["elm"] and "plain" in (config.get("elm") or {}).get("variants", ["plain"]):
        families.append("elm")  # the retrieval-augmented elm_rag is scored, never deployed (it needs the pool)
    return families


def main(argv: list[str] | None = None) -> int:
    """``python -m vecflow.core.config_checks FILE...``: check config files strictly; one line per bad file."""
    paths = list(sys.argv[1:] if argv is None else argv)
    status = 0
    for path in paths:
        try:
            load_config_file(path)
        except VecflowError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
