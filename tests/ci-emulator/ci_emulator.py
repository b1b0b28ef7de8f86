"""Checks and runs the GitHub Action (action.yml) and the GitLab component
(templates/modelbake.yml) the way their runners would, for tests/integration/ci_entry.rs.

    ci_emulator.py check-action ACTION_YML
    ci_emulator.py check-component TEMPLATE_YML
    ci_emulator.py run-action ACTION_YML INPUTS_JSON
    ci_emulator.py run-component TEMPLATE_YML INPUTS_JSON
    ci_emulator.py check-readme README_MD ACTION_YML TEMPLATE_YML

`check-*` exit 1 listing every problem a runner would only find in a user's pipeline: an input
that is referenced but not declared (or declared and never used), a script that does not
exist, an environment variable the script never reads, a step output nobody writes, a
component whose inline copy of ci/*.sh is stale, cache or report paths that are not where the
scripts write.

`check-readme` checks that the README's workflows pass the action and the component only
inputs they declare, and every required one; it prints the versions they pin.

`run-*` check first, then run the steps (bash, as the runners start it) with this process's
environment as the runner's: the action's run steps with `${{ }}` expressions evaluated,
GITHUB_OUTPUT/GITHUB_PATH/GITHUB_ENV files per step and `::add-mask::` taken out of the log;
actions/cache/restore and save against the folder $CI_EMULATOR_CACHE; the component's job with
its inputs interpolated, its variables expanded and its script run in $CI_PROJECT_DIR. The
steps' output goes to stderr; a JSON report to stdout.

PyYAML is the only dependency (target/pyenv has it).
"""

import glob
import hashlib
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml


class Problem(Exception):
    pass


def fail(problems):
    for p in problems:
        print(f"ci_emulator: {p}", file=sys.stderr)
    sys.exit(1)


def strings(node, path=""):
    """Every string (keys included) under node, with a readable path."""
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{path}.{k}" if path else str(k)
            if isinstance(k, str):
                yield here + " (key)", k
            yield from strings(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from strings(v, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def reads_env(script_text, name):
    return re.search(r"\$\{?" + re.escape(name) + r"\b", script_text) is not None


# ---------------------------------------------------------------------------------------------
# GitHub expressions: the subset an action uses (contexts, literals, == != ! && || and calls).

TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||!|\(|\)|,|\.)"
    r"|(?P<id>[A-Za-z_][A-Za-z0-9_-]*))"
)


def tokenize(expr):
    out, pos = [], 0
    expr = expr.strip()
    while pos < len(expr):
        m = TOKEN.match(expr, pos)
        if not m or m.end() == pos:
            raise Problem(f"cannot read the expression `{expr}` at `{expr[pos:]}`")
        pos = m.end()
        kind = m.lastgroup
        out.append((kind, m.group(kind)))
    return out


def paths_in(expr):
    """The context paths (`inputs.version`, `steps.run.outputs.x`) an expression reads."""
    toks = tokenize(expr)
    found, i = [], 0
    while i < len(toks):
        kind, val = toks[i]
        if kind == "id" and not (i + 1 < len(toks) and toks[i + 1] == ("op", "(")) and val not in (
            "true", "false", "null"
        ):
            parts = [val]
            while i + 2 < len(toks) and toks[i + 1] == ("op", ".") and toks[i + 2][0] == "id":
                parts.append(toks[i + 2][1])
                i += 2
            found.append(parts)
        i += 1
    return found


def truthy(v):
    return v not in (None, False, "", 0)


def text(v):
    if v is None:
        return ""
    if v is True:
        return "true"
    if v is False:
        return "false"
    return str(v)


class Evaluator:
    def __init__(self, contexts, functions):
        self.contexts, self.functions = contexts, functions

    def eval(self, expr):
        self.toks, self.i = tokenize(expr), 0
        v = self.or_()
        if self.i != len(self.toks):
            raise Problem(f"unexpected `{self.toks[self.i][1]}` in `{expr}`")
        return v

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None)

    def take(self, op):
        if self.peek() == ("op", op):
            self.i += 1
            return True
        return False

    def or_(self):
        v = self.and_()
        while self.take("||"):
            r = self.and_()
            v = v if truthy(v) else r
        return v

    def and_(self):
        v = self.unary()
        while self.take("&&"):
            r = self.unary()
            v = r if truthy(v) else v
        return v

    def unary(self):
        if self.take("!"):
            return not truthy(self.unary())
        return self.cmp()

    def cmp(self):
        v = self.primary()
        for op in ("==", "!="):
            if self.take(op):
                r = self.primary()
                eq = (
                    text(v).lower() == text(r).lower()
                    if isinstance(v, str) or isinstance(r, str)
                    else v == r
                )
                return eq if op == "==" else not eq
        return v

    def primary(self):
        kind, val = self.peek()
        self.i += 1
        if kind == "str":
            return val[1:-1].replace("''", "'")
        if kind == "num":
            return float(val)
        if (kind, val) == ("op", "("):
            v = self.or_()
            if not self.take(")"):
                raise Problem("missing )")
            return v
        if kind == "id":
            if val in ("true", "false"):
                return val == "true"
            if val == "null":
                return None
            if self.take("("):
                args = []
                if not self.take(")"):
                    args.append(self.or_())
                    while self.take(","):
                        args.append(self.or_())
                    if not self.take(")"):
                        raise Problem(f"missing ) after the arguments of {val}()")
                if val not in self.functions:
                    raise Problem(f"no function {val}()")
                return self.functions[val](*args)
            v = self.contexts.get(val)
            while self.take("."):
                k, name = self.peek()
                self.i += 1
                v = v.get(name) if isinstance(v, dict) else None
            return v
        raise Problem(f"unexpected `{val}`")


def interpolate_github(s, ev):
    return re.sub(r"\$\{\{(.*?)\}\}", lambda m: text(ev.eval(m.group(1))), s)


def if_expression(cond):
    cond = str(cond).strip()
    m = re.fullmatch(r"\$\{\{(.*)\}\}", cond, re.S)
    return m.group(1) if m else cond


# ---------------------------------------------------------------------------------------------
# The GitHub Action.

KNOWN_CONTEXTS = {"inputs", "steps", "github", "runner", "env", "job"}
# Outputs of the actions the action uses, and which the emulator runs.
ACTION_OUTPUTS = {
    "actions/cache/restore": {"cache-hit", "cache-primary-key", "cache-matched-key"},
    "actions/cache/save": set(),
}


def load_action(path):
    with open(path) as f:
        return yaml.safe_load(f)


def step_scripts(step, root):
    """The files under the action's folder a run step runs (`$GITHUB_ACTION_PATH/...`)."""
    return re.findall(r"\$\{?GITHUB_ACTION_PATH\}?/([A-Za-z0-9_./-]+)", step.get("run", ""))


def check_action(path):
    root = pathlib.Path(path).resolve().parent
    a = load_action(path)
    problems = []
    for key in ("name", "description", "runs"):
        if key not in a:
            problems.append(f"{path}: no `{key}`")
    inputs = a.get("inputs") or {}
    runs = a.get("runs") or {}
    if runs.get("using") != "composite":
        problems.append(f"{path}: runs.using is {runs.get('using')!r}, not composite")
    steps = runs.get("steps") or []
    for name, spec in inputs.items():
        if not (spec or {}).get("description"):
            problems.append(f"input `{name}` has no description")
    for name, spec in (a.get("outputs") or {}).items():
        if not (spec or {}).get("description") or "value" not in (spec or {}):
            problems.append(f"output `{name}` needs a description and a value")

    ids = [s.get("id") for s in steps]
    used_inputs = set()

    def check_expr(expr, where, earlier_ids):
        try:
            refs = paths_in(expr)
        except Problem as e:
            problems.append(f"{where}: {e}")
            return
        for parts in refs:
            ctx = parts[0]
            if ctx not in KNOWN_CONTEXTS:
                problems.append(f"{where}: `{'.'.join(parts)}` is not a context an action can read")
            elif ctx == "inputs":
                if len(parts) < 2 or parts[1] not in inputs:
                    problems.append(
                        f"{where}: `{'.'.join(parts)}` references an input that does not exist"
                        f" (inputs: {', '.join(inputs)})"
                    )
                else:
                    used_inputs.add(parts[1])
            elif ctx == "steps":
                if len(parts) < 4 or parts[2] != "outputs":
                    problems.append(f"{where}: `{'.'.join(parts)}`: read steps.ID.outputs.NAME")
                    continue
                sid, out = parts[1], parts[3]
                if sid not in earlier_ids:
                    problems.append(f"{where}: `{'.'.join(parts)}`: no step `{sid}` before this")
                    continue
                step = steps[ids.index(sid)]
                if "run" in step:
                    written = "".join(
                        (root / s).read_text() for s in step_scripts(step, root) if (root / s).is_file()
                    )
                    # Outputs are written as `echo "NAME=..."` lines into $GITHUB_OUTPUT.
                    if not re.search(r'echo "' + re.escape(out) + "=", written):
                        problems.append(
                            f"{where}: `{'.'.join(parts)}`: the scripts of step `{sid}` never write `{out}=`"
                        )
                else:
                    action = step.get("uses", "").split("@")[0]
                    known = ACTION_OUTPUTS.get(action)
                    if known is not None and out not in known:
                        problems.append(f"{where}: {action} has no output `{out}`")

    for i, step in enumerate(steps):
        where = f"step {step.get('id') or i}"
        earlier = [x for x in ids[:i] if x]
        if "if" in step:
            check_expr(if_expression(step["if"]), f"{where}.if", earlier)
        for p, s in strings({k: v for k, v in step.items() if k != "if"}):
            for m in re.finditer(r"\$\{\{(.*?)\}\}", s):
                check_expr(m.group(1), f"{where}.{p}", earlier)
        if ("run" in step) == ("uses" in step):
            problems.append(f"{where}: needs exactly one of run and uses")
        if "run" in step:
            if not step.get("shell"):
                problems.append(f"{where}: composite run steps need `shell`")
            if "${{" in step["run"]:
                problems.append(
                    f"{where}: `run` holds a ${{{{ }}}} expression; pass values through `env` (script injection)"
                )
            scripts = step_scripts(step, root)
            if not scripts:
                problems.append(f"{where}: runs no script under $GITHUB_ACTION_PATH")
            texts = []
            for s in scripts:
                f = root / s
                if not f.is_file():
                    problems.append(f"{where}: runs {s}, a script that does not exist")
                else:
                    texts.append(f.read_text())
            for var in step.get("env") or {}:
                if texts and not any(reads_env(t, var) for t in texts):
                    problems.append(f"{where}: sets {var}, which {', '.join(scripts)} never reads")
        if "uses" in step and "@" not in step["uses"]:
            problems.append(f"{where}: `uses: {step['uses']}` is not pinned to a version")
    for name, spec in (a.get("outputs") or {}).items():
        for m in re.finditer(r"\$\{\{(.*?)\}\}", str((spec or {}).get("value", ""))):
            check_expr(m.group(1), f"output {name}", [x for x in ids if x])
    for name in inputs:
        if name not in used_inputs:
            problems.append(f"input `{name}` is declared but no step uses it")
    return problems


def read_dotenv(path):
    """A dotenv report as GitLab reads it: KEY=VALUE lines only (no empty lines, no comments,
    keys of ASCII letters, digits and _), at most 5 KB."""
    data = pathlib.Path(path).read_text()
    if len(data.encode()) > 5 * 1024:
        raise Problem(f"{path}: a dotenv report over 5 KB")
    out = {}
    for line in data.splitlines():
        m = re.fullmatch(r"([A-Za-z0-9_]+)=(.*)", line)
        if not m:
            raise Problem(f"{path}: GitLab refuses the dotenv line {line!r}")
        out[m.group(1)] = m.group(2)
    return out


def read_command_file(path):
    """name=value and name<<DELIM ... DELIM entries of a GITHUB_OUTPUT/GITHUB_ENV file."""
    out = {}
    lines = pathlib.Path(path).read_text().split("\n") if os.path.exists(path) else []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            value = []
            while i < len(lines) and lines[i] != delim:
                value.append(lines[i])
                i += 1
            i += 1
            out[name] = "\n".join(value)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
        else:
            raise Problem(f"{path}: cannot read the line {line!r}")
    return out


def expand_home(p):
    return os.path.join(os.environ["HOME"], p[2:]) if p.startswith("~/") else p


def cache_entry(key):
    root = os.environ.get("CI_EMULATOR_CACHE")
    if not root:
        raise Problem("set CI_EMULATOR_CACHE to a folder to run actions/cache")
    return os.path.join(root, hashlib.sha256(key.encode()).hexdigest()), root


def emulate_uses(action, with_):
    if action == "actions/cache/restore":
        key = with_["key"]
        entry, root = cache_entry(key)
        index = os.path.join(root, "index.json")
        keys = json.load(open(index)) if os.path.exists(index) else []
        matched = key if key in keys else None
        if matched is None:
            for prefix in [p for p in text(with_.get("restore-keys")).split("\n") if p]:
                hits = [k for k in keys if k.startswith(prefix)]
                if hits:
                    matched = hits[-1]
                    break
        if matched is not None:
            dest = expand_home(with_["path"])
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(cache_entry(matched)[0], dest, symlinks=True)
            print(f"[ci_emulator] cache restored from key {matched}", file=sys.stderr)
        return {
            "cache-hit": "true" if matched == key else "false",
            "cache-primary-key": key,
            "cache-matched-key": matched or "",
        }
    if action == "actions/cache/save":
        key = with_["key"]
        if not key:
            raise Problem("actions/cache/save: the key is empty")
        entry, root = cache_entry(key)
        src = expand_home(with_["path"])
        index = os.path.join(root, "index.json")
        keys = json.load(open(index)) if os.path.exists(index) else []
        if key in keys:
            raise Problem(f"actions/cache/save: the key {key} is already saved (the runner refuses that)")
        if not os.path.isdir(src):
            print(f"[ci_emulator] warning: nothing to save at {src}", file=sys.stderr)
            return {}
        shutil.copytree(src, entry, symlinks=True)
        json.dump(keys + [key], open(index, "w"))
        print(f"[ci_emulator] cache saved with key {key}", file=sys.stderr)
        return {}
    raise Problem(f"the emulator cannot run {action}")


def hash_files(*patterns):
    ws = os.environ.get("GITHUB_WORKSPACE", os.getcwd())
    files = sorted({f for p in patterns for f in glob.glob(os.path.join(ws, p), recursive=True) if os.path.isfile(f)})
    if not files:
        return ""
    h = hashlib.sha256()
    for f in files:
        h.update(hashlib.sha256(pathlib.Path(f).read_bytes()).digest())
    return h.hexdigest()


def github_format(fmt, *args):
    return re.sub(r"\{(\d+)\}", lambda m: text(args[int(m.group(1))]), fmt)


def run_action(path, given):
    problems = check_action(path)
    if problems:
        fail(problems)
    root = pathlib.Path(path).resolve().parent
    a = load_action(path)
    declared = a.get("inputs") or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        fail([f"unexpected input(s) {', '.join(unknown)}; valid inputs are {', '.join(declared)}"])
    inputs = {}
    for name, spec in declared.items():
        if name in given:
            inputs[name] = text(given[name])
        elif (spec or {}).get("required") and "default" not in spec:
            fail([f"input required and not supplied: {name}"])
        else:
            inputs[name] = text((spec or {}).get("default", ""))
    env = dict(os.environ)
    workspace = env.get("GITHUB_WORKSPACE", os.getcwd())
    steps_ctx, report_steps, masks, annotations = {}, [], [], []
    status = {"failed": False}
    contexts = {
        "inputs": inputs,
        "steps": steps_ctx,
        "github": {"action_path": str(root), "workspace": workspace},
        "runner": {"os": env.get("RUNNER_OS"), "arch": env.get("RUNNER_ARCH"), "temp": env.get("RUNNER_TEMP")},
        "env": env,
    }
    functions = {
        "success": lambda: not status["failed"],
        "failure": lambda: status["failed"],
        "always": lambda: True,
        "cancelled": lambda: False,
        "hashFiles": hash_files,
        "format": github_format,
    }
    ev = Evaluator(contexts, functions)
    exit_code = 0
    tmp = tempfile.mkdtemp(prefix="ci-emulator-")
    for n, step in enumerate(a["runs"]["steps"]):
        sid = step.get("id") or f"__{n}"
        cond = if_expression(step.get("if", "success()"))
        if not re.search(r"\b(success|failure|always|cancelled)\(", cond):
            cond = f"success() && ({cond})"
        entry = {"id": sid, "uses": step.get("uses"), "run": step.get("run")}
        if not truthy(ev.eval(cond)):
            entry["conclusion"] = "skipped"
            steps_ctx[sid] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
            report_steps.append(entry)
            continue
        if "uses" in step:
            with_ = {k: interpolate_github(text(v), ev) for k, v in (step.get("with") or {}).items()}
            entry["with"] = with_
            outputs = emulate_uses(step["uses"].split("@")[0], with_)
            entry.update(conclusion="success", outputs=outputs)
            steps_ctx[sid] = {"outputs": outputs, "outcome": "success", "conclusion": "success"}
            report_steps.append(entry)
            continue
        files = {k: os.path.join(tmp, f"{sid}.{k}") for k in ("GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_ENV")}
        for f in files.values():
            open(f, "w").close()
        step_env = dict(env)
        step_env.update({k: interpolate_github(text(v), ev) for k, v in (step.get("env") or {}).items()})
        step_env.update(files)
        step_env["GITHUB_ACTION_PATH"] = str(root)
        script = os.path.join(tmp, f"{sid}.sh")
        pathlib.Path(script).write_text(step["run"])
        cwd = os.path.join(workspace, interpolate_github(text(step.get("working-directory", ".")), ev))
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", script],
            cwd=cwd, env=step_env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        )
        for line in proc.stdout.splitlines():
            if line.startswith("::add-mask::"):
                masks.append(line[len("::add-mask::"):])
                continue
            m = re.match(r"::(error|warning|notice)(?: [^:]*)?::(.*)", line)
            if m:
                annotations.append({"level": m.group(1), "message": m.group(2)})
            print(line, file=sys.stderr)
        sys.stderr.write(proc.stderr)
        outputs = read_command_file(files["GITHUB_OUTPUT"])
        for d in reversed(pathlib.Path(files["GITHUB_PATH"]).read_text().splitlines()):
            env["PATH"] = d + os.pathsep + env["PATH"]
        env.update(read_command_file(files["GITHUB_ENV"]))
        conclusion = "success" if proc.returncode == 0 else "failure"
        entry.update(
            conclusion=conclusion,
            exit=proc.returncode,
            outputs=outputs,
            github_output=pathlib.Path(files["GITHUB_OUTPUT"]).read_text(),
        )
        steps_ctx[sid] = {"outputs": outputs, "outcome": conclusion, "conclusion": conclusion}
        report_steps.append(entry)
        if proc.returncode != 0 and not status["failed"]:
            status["failed"] = True
            exit_code = proc.returncode
    outputs = {
        name: interpolate_github(text(spec.get("value", "")), ev) for name, spec in (a.get("outputs") or {}).items()
    }
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "exit": exit_code,
        "steps": report_steps,
        "outputs": outputs,
        "masks": masks,
        "annotations": annotations,
        "path": env["PATH"],
    }


# ---------------------------------------------------------------------------------------------
# The GitLab component.

JOB_KEYWORDS = {
    "after_script", "allow_failure", "artifacts", "before_script", "cache", "coverage", "dependencies",
    "environment", "extends", "hooks", "id_tokens", "image", "inherit", "interruptible", "needs",
    "parallel", "release", "resource_group", "retry", "rules", "script", "secrets", "services",
    "stage", "tags", "timeout", "trigger", "variables", "when",
}
INPUT_KEYS = {"description", "default", "type", "options", "regex"}
INPUT_TYPES = {"string": str, "boolean": bool, "number": (int, float), "array": list}
INTERPOLATION = re.compile(r"\$\[\[\s*inputs\.([A-Za-z0-9_-]+)\s*(?:\|[^\]]*)?\]\]")
HEREDOC = re.compile(
    r"""^cat > "\$MODELBAKE_HOME/ci/([A-Za-z0-9_.-]+)" <<'MODELBAKE_SCRIPT'\n(.*?)\nMODELBAKE_SCRIPT$""",
    re.S | re.M,
)


def load_component(path):
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    if len(docs) != 2:
        raise Problem(f"{path}: {len(docs)} YAML documents; a component is the spec header, ---, then the jobs")
    return docs


def component_job(docs):
    jobs = {k: v for k, v in (docs[1] or {}).items() if not str(k).startswith(".")}
    if len(jobs) != 1:
        raise Problem(f"the component defines {len(jobs)} jobs ({', '.join(map(str, jobs))}), not one")
    return next(iter(jobs.items()))


def check_component(path):
    root = pathlib.Path(path).resolve().parent.parent
    try:
        docs = load_component(path)
        name, job = component_job(docs)
    except Problem as e:
        return [str(e)]
    problems = []
    header = docs[0] or {}
    if set(header) != {"spec"} or set(header["spec"] or {}) - {"inputs"}:
        problems.append(f"{path}: the header must hold only spec: inputs:")
    inputs = (header.get("spec") or {}).get("inputs") or {}
    for iname, spec in inputs.items():
        spec = spec or {}
        if set(spec) - INPUT_KEYS:
            problems.append(f"input `{iname}`: unknown keys {sorted(set(spec) - INPUT_KEYS)}")
        if not spec.get("description"):
            problems.append(f"input `{iname}` has no description")
        kind = spec.get("type", "string")
        if kind not in INPUT_TYPES:
            problems.append(f"input `{iname}`: type {kind} is not one of {', '.join(INPUT_TYPES)}")
        elif "default" in spec and not isinstance(spec["default"], INPUT_TYPES[kind]):
            problems.append(f"input `{iname}`: the default {spec['default']!r} is not a {kind}")
        if "options" in spec and "default" in spec and spec["default"] not in spec["options"]:
            problems.append(f"input `{iname}`: the default is not one of the options")
    used = set()
    for where, s in strings(docs[1]):
        for m in INTERPOLATION.finditer(s):
            if m.group(1) not in inputs:
                problems.append(
                    f"{where}: `$[[ inputs.{m.group(1)} ]]` references an input that does not exist"
                    f" (inputs: {', '.join(inputs)})"
                )
            used.add(m.group(1))
        if "$[[" in INTERPOLATION.sub("", s):
            problems.append(f"{where}: a $[[ ... ]] block that is not an input reference")
    for iname in inputs:
        if iname not in used:
            problems.append(f"input `{iname}` is declared but the job never uses it")
    for key in job:
        if key not in JOB_KEYWORDS:
            problems.append(f"job {name}: `{key}` is not a GitLab job keyword")
    script = (job.get("before_script") or []) + (job.get("script") or [])
    if not job.get("script") or not all(isinstance(s, str) for s in script):
        problems.append(f"job {name}: script must be a list of commands")
        return problems
    written, texts, rest = set(), [], []
    for entry in script:
        for m in HEREDOC.finditer(entry):
            written.add(m.group(1))
            source = root / "ci" / m.group(1)
            if not source.is_file():
                problems.append(f"job {name} writes ci/{m.group(1)}, which does not exist in this project")
                continue
            texts.append(source.read_text())
            if m.group(2) + "\n" != source.read_text():
                problems.append(
                    f"job {name} carries an old copy of ci/{m.group(1)}: run scripts/gitlab-component"
                )
        rest.append(HEREDOC.sub("", entry))
    for entry in rest:
        for ref in re.findall(r"ci/([A-Za-z0-9_.-]+\.sh)", entry):
            if ref not in written:
                problems.append(
                    f"job {name} runs ci/{ref}, a script that does not exist in the job (it writes {', '.join(sorted(written)) or 'none'})"
                )
    variables = job.get("variables") or {}
    passed = set(variables) | {
        v for entry in rest for v in re.findall(r"\b(MODELBAKE_[A-Z0-9_]+)=", entry)
    }
    for var in sorted(passed):
        if var == "MODELBAKE_HOME":
            continue
        if not any(reads_env(t, var) for t in texts):
            problems.append(f"job {name}: sets {var}, which no ci/ script reads")
    for var, value in variables.items():
        if not isinstance(value, str):
            problems.append(f"job {name}: variable {var} is not a string")
        elif INTERPOLATION.fullmatch(value.strip()):
            kind = (inputs.get(INTERPOLATION.fullmatch(value.strip()).group(1)) or {}).get("type", "string")
            if kind != "string":
                problems.append(f"job {name}: variable {var} would be a {kind}, not a string")
    prefix = "$CI_PROJECT_DIR/"
    store = variables.get("MODELBAKE_STORE", "")
    paths = (job.get("cache") or {}).get("paths") or []
    if not store.startswith(prefix) or [p.rstrip("/") for p in paths] != [store[len(prefix):]]:
        problems.append(f"job {name}: cache paths {paths} are not MODELBAKE_STORE ({store}) under $CI_PROJECT_DIR")
    dotenv = ((job.get("artifacts") or {}).get("reports") or {}).get("dotenv")
    want = variables.get("MODELBAKE_DOTENV", "")
    if not want.startswith(prefix) or dotenv != want[len(prefix):]:
        problems.append(f"job {name}: the dotenv report {dotenv} is not MODELBAKE_DOTENV ({want})")
    return problems


def interpolate_gitlab(node, values):
    if isinstance(node, dict):
        return {interpolate_gitlab(k, values): interpolate_gitlab(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_gitlab(v, values) for v in node]
    if isinstance(node, str):
        whole = INTERPOLATION.fullmatch(node.strip())
        if whole:
            return values[whole.group(1)]
        return INTERPOLATION.sub(lambda m: text(values[m.group(1)]), node)
    return node


def expand_gitlab(value, env):
    return re.sub(
        r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))",
        lambda m: env.get(m.group(1) or m.group(2), ""),
        value,
    )


def run_component(path, given):
    problems = check_component(path)
    if problems:
        fail(problems)
    docs = load_component(path)
    inputs = docs[0]["spec"]["inputs"]
    unknown = sorted(set(given) - set(inputs))
    if unknown:
        fail([f"unknown input arguments: {', '.join(unknown)}"])
    values = {}
    for iname, spec in inputs.items():
        spec = spec or {}
        if iname in given:
            v = given[iname]
            kind = spec.get("type", "string")
            if not isinstance(v, INPUT_TYPES[kind]):
                fail([f"`{iname}` input: provided value is not a {kind}"])
            if "options" in spec and v not in spec["options"]:
                fail([f"`{iname}` input: `{v}` cannot be used because it is not in the list of allowed options"])
            values[iname] = v
        elif "default" in spec:
            values[iname] = spec["default"]
        else:
            fail([f"`{iname}` input: required value has not been provided"])
    name, job = component_job(docs)
    job = interpolate_gitlab(job, values)
    env = dict(os.environ)
    variables = {}
    for var, value in (job.get("variables") or {}).items():
        variables[var] = expand_gitlab(text(value), {**env, **variables})
    env.update(variables)
    project = env["CI_PROJECT_DIR"]
    script = "set -eo pipefail\n" + "\n".join((job.get("before_script") or []) + job["script"]) + "\n"
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(script)
    proc = subprocess.run(
        ["bash", "--noprofile", "--norc", f.name],
        cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
    )
    os.unlink(f.name)
    sys.stderr.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    dotenv = None
    report = ((job.get("artifacts") or {}).get("reports") or {}).get("dotenv")
    if report and os.path.exists(os.path.join(project, report)):
        dotenv = read_dotenv(os.path.join(project, report))
    return {
        "exit": proc.returncode,
        "job": name,
        "variables": variables,
        "cache": job.get("cache"),
        "image": job.get("image"),
        "stage": job.get("stage"),
        "dotenv": dotenv,
    }


def check_readme(readme, action_path, template_path):
    """Problems of the README's examples, and the versions the examples pin."""
    action_inputs = load_action(action_path).get("inputs") or {}
    component_inputs = load_component(template_path)[0]["spec"]["inputs"]
    problems, pins = [], []
    blocks = re.findall(r"^```yaml\n(.*?)^```$", pathlib.Path(readme).read_text(), re.S | re.M)
    for n, block in enumerate(blocks):
        where = f"{readme}: yaml block {n + 1}"
        if "modelbake@" not in block:
            continue
        try:
            doc = yaml.safe_load(block)
        except yaml.YAMLError as e:
            problems.append(f"{where}: not YAML: {e}")
            continue
        for job in ((doc or {}).get("jobs") or {}).values():
            for step in job.get("steps") or []:
                uses = step.get("uses", "")
                if not re.fullmatch(r"[\w.-]+/modelbake@.+", uses):
                    continue
                pins.append(uses)
                given = step.get("with") or {}
                for name in given:
                    if name not in action_inputs:
                        problems.append(f"{where}: {uses} has no input `{name}`")
                for name, spec in action_inputs.items():
                    if (spec or {}).get("required") and name not in given:
                        problems.append(f"{where}: {uses} needs the input `{name}`")
        for inc in (doc or {}).get("include") or []:
            comp = inc.get("component", "") if isinstance(inc, dict) else ""
            if not comp.split("@")[0].endswith("/modelbake"):
                continue
            pins.append(comp)
            given = inc.get("inputs") or {}
            for name in given:
                if name not in component_inputs:
                    problems.append(f"{where}: {comp} has no input `{name}`")
            for name, spec in component_inputs.items():
                if "default" not in (spec or {}) and name not in given:
                    problems.append(f"{where}: {comp} needs the input `{name}`")
    if not pins:
        problems.append(f"{readme}: no workflow uses the action or the component")
    return problems, pins


def main():
    args = sys.argv[1:]
    try:
        if len(args) == 2 and args[0] in ("check-action", "check-component"):
            problems = (check_action if args[0] == "check-action" else check_component)(args[1])
            if problems:
                fail(problems)
            print(f"{args[1]}: OK")
        elif len(args) == 4 and args[0] == "check-readme":
            problems, pins = check_readme(*args[1:])
            if problems:
                fail(problems)
            print(json.dumps(pins))
        elif len(args) == 3 and args[0] in ("run-action", "run-component"):
            given = json.loads(args[2])
            run = run_action if args[0] == "run-action" else run_component
            print(json.dumps(run(args[1], given), indent=2))
        else:
            sys.exit(__doc__)
    except Problem as e:
        fail([str(e)])


main()
