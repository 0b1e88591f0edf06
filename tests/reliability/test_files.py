"""Files and security (issue 17.6): damaged run folders, files that must never be loaded,
followed or run, and hostile names in every output.

- truncated, corrupted, emptied, missing files and changed numbers in the commit log: ``load``
  gives whole steps or raises ``RunFormatError``;
- wrong-version and not-a-run folders: ``RunFormatError`` that says what to do;
- a pickle (as a run file or beside them), code files, a symlink pointing out of the folder:
  never unpickled, never run, never followed (by ``load``, ``analyze``, ``report`` or an
  appending writer);
- names holding HTML, path separators, control characters and mathtext, used as the model
  name, a module name, a ``track`` label and a ``weights`` label: they round-trip through the
  run folder and JSON, and are shown escaped in the HTML, the PNG titles and JUnit.
"""

import html
import json
import os
import pickle
import re
import warnings
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
import torch

import gradscope
from gradscope.store import RunFormatError, RunWriter, load
from gradscope.store import format as fmt
from tests.reliability.run_folders import (
    STEPS, assert_whole_steps_or_format_error, damaged_folder, time_limit, write_pristine)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    return write_pristine(tmp_path_factory.mktemp("pristine") / "run")


# -- truncated, corrupted, empty and missing files ---------------------------------------------

def _garbage(data):
    """Same length, every byte changed (a sector overwritten)."""
    return bytes((b + 97) % 256 for b in data)


FILE_DAMAGES = {
    "empty": lambda data: b"",
    "truncated_to_half": lambda data: data[:len(data) // 2],
    "truncated_by_one_byte": lambda data: data[:-1],
    "overwritten_with_garbage": _garbage,
    "middle_third_zeroed": lambda data: data[:len(data) // 3] + bytes(len(data) // 3) + data[2 * (len(data) // 3):],
    "doubled": lambda data: data + data,
}


@pytest.mark.parametrize("damage", sorted(FILE_DAMAGES))
@pytest.mark.parametrize("name", fmt.ALL_FILES)
def test_damaged_file_loads_whole_steps_or_raises_format_error(tmp_path, pristine, name, damage):
    assert_whole_steps_or_format_error(damaged_folder(tmp_path, pristine, name, FILE_DAMAGES[damage]))


@pytest.mark.parametrize("name", fmt.ALL_FILES)
def test_missing_file_loads_whole_steps_or_raises_format_error(tmp_path, pristine, name):
    path = damaged_folder(tmp_path, pristine, None, None)
    (path / name).unlink()
    assert_whole_steps_or_format_error(path)


def _commit_fields():
    """Every number of a commit line, as a path into its JSON record."""
    fields = [("step",)]
    fields += [("rows", table) for table in ("timesteps", "spectra", "jacobians", "lyapunov", "gates", "values")]
    fields += [("files", name, i) for name in fmt.DATA_FILES for i in range(3)]
    return fields


def _changed(line, field, delta):
    record = json.loads(line)
    holder = record
    for key in field[:-1]:
        holder = holder[key]
    holder[field[-1]] += delta
    return (json.dumps(record, ensure_ascii=True)).encode("ascii")


@pytest.mark.parametrize("delta", [1, -1])
@pytest.mark.parametrize("line", [0, len(STEPS) - 1], ids=["first_commit", "last_commit"])
@pytest.mark.parametrize("field", _commit_fields(), ids=lambda field: ".".join(map(str, field)))
def test_changed_number_in_commit_log_loads_whole_steps_or_raises_format_error(tmp_path, pristine, field, line,
                                                                                delta):
    """A damaged digit in steps.jsonl (the one file without a checksum of its rows) must not
    make a step load under another number, or make row_count disagree with the rows."""
    def damage(data):
        lines = data.split(b"\n")
        lines[line] = _changed(lines[line], field, delta)
        return b"\n".join(lines)

    assert_whole_steps_or_format_error(damaged_folder(tmp_path, pristine, fmt.COMMIT_FILE, damage))


@pytest.mark.parametrize("lines_without", ["every_line", "last_line"])
def test_commit_lines_without_their_own_checksum_still_load(tmp_path, pristine, lines_without):
    """Runs written before commit lines carried "crc" load as before, silently."""
    def strip(data):
        lines = data.decode("ascii").splitlines()
        chosen = range(len(lines)) if lines_without == "every_line" else [len(lines) - 1]
        for i in chosen:
            record = json.loads(lines[i])
            del record["crc"]
            lines[i] = json.dumps(record)
        return ("\n".join(lines) + "\n").encode("ascii")

    path = damaged_folder(tmp_path, pristine, fmt.COMMIT_FILE, strip)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(path).steps() == list(STEPS)
    assert_whole_steps_or_format_error(path)


# -- wrong version, not a run -----------------------------------------------------------------

SCHEMAS = {"zero": 0, "next": 2, "far_future": 999, "text": "1", "null": None, "float": 1.5, "list": [1],
           "missing": "leave out"}


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_wrong_schema_version_raises_format_error_naming_it(tmp_path, pristine, schema):
    def with_schema(data):
        meta = json.loads(data)
        if SCHEMAS[schema] == "leave out":
            del meta["schema"]
        else:
            meta["schema"] = SCHEMAS[schema]
        return json.dumps(meta).encode("utf-8")

    path = damaged_folder(tmp_path, pristine, fmt.META_FILE, with_schema)
    with pytest.raises(RunFormatError, match="schema") as caught:
        load(path)
    if schema != "missing":
        assert repr(SCHEMAS[schema]) in str(caught.value) and "schema 1" in str(caught.value)
    with pytest.raises(RunFormatError):  # every reader of a folder says the same
        gradscope.analyze(path)
    with pytest.raises(RunFormatError):
        gradscope.report(path, tmp_path / "report")
    assert not (tmp_path / "report" / "index.html").exists()


NOT_RUNS = {
    "empty_folder": {},
    "empty_meta": {"meta.json": b""},
    "meta_is_a_list": {"meta.json": b"[1, 2]"},
    "meta_is_a_string": {"meta.json": b'"schema"'},
    "meta_is_null": {"meta.json": b"null"},
    "meta_not_utf8": {"meta.json": b'{"schema": 1, "name": "\xff\xfe"}'},
    "meta_is_a_folder": {"meta.json/": None},
    "only_data_files": {"timesteps.csv": b"step\n", "steps.jsonl": b""},
}


@pytest.mark.parametrize("case", sorted(NOT_RUNS))
def test_folder_that_is_not_a_run_raises_format_error(tmp_path, case):
    path = tmp_path / "run"
    path.mkdir()
    for name, data in NOT_RUNS[case].items():
        if name.endswith("/"):
            (path / name).mkdir()
        else:
            (path / name).write_bytes(data)
    with pytest.raises(RunFormatError, match=str(path)):
        load(path)


# -- never loaded, never run, never followed ---------------------------------------------------

class Payload:
    """Unpickling this creates ``marker``: proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _read_everything(path, out=None):
    """Everything a user does with a run folder someone sent: load and read every table,
    analyze, and (given ``out``: a report costs seconds) render a report."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            run = load(path)
            for table in ("timesteps", "spectra", "jacobians", "lyapunov", "gates"):
                run.table(table)
            gradscope.analyze(path)
            if out is not None:
                gradscope.report(path, out)
        except RunFormatError:
            pass


def test_payload_would_run_if_unpickled(tmp_path):
    """The marker checks below can fail: unpickling the payload does create it."""
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()


PICKLE_PLACES = fmt.ALL_FILES + ("run.pkl", "scope.pt", "timesteps.pickle", "meta.json.pkl")


@pytest.mark.parametrize("place", PICKLE_PLACES)
def test_pickle_in_run_folder_is_never_unpickled(tmp_path, pristine, place):
    marker = tmp_path / "unpickled"
    path = damaged_folder(tmp_path, pristine, None, None)
    (path / place).write_bytes(pickle.dumps(Payload(marker)))
    assert_whole_steps_or_format_error(path)
    _read_everything(path)
    assert not marker.exists()


CODE_FILES = ("__init__.py", "conftest.py", "sitecustomize.py", "gradscope.py", "pandas.py", "meta.py",
              "evil.pth")


@pytest.mark.parametrize("place", CODE_FILES)
def test_code_in_run_folder_is_never_run(tmp_path, pristine, place):
    marker = tmp_path / "ran"
    path = damaged_folder(tmp_path, pristine, None, None)
    code = f"open({str(marker)!r}, 'w').close()\n"
    (path / place).write_text(f"import os; {code}" if place.endswith(".pth") else code)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an unexpected file is no reason to warn
        assert load(path).steps() == list(STEPS)
    _read_everything(path)
    assert not marker.exists()


def test_report_of_a_folder_holding_every_foreign_file_runs_and_follows_nothing(tmp_path, pristine):
    """One report (seconds each) over a run beside all the pickles, code and links above."""
    marker, outside = tmp_path / "ran", tmp_path / "secret.txt"
    outside.write_text("secret")
    path = damaged_folder(tmp_path, pristine, None, None)
    for place in PICKLE_PLACES[len(fmt.ALL_FILES):]:
        (path / place).write_bytes(pickle.dumps(Payload(marker)))
    for place in CODE_FILES:
        (path / place).write_text(f"open({str(marker)!r}, 'w').close()\n")
    for case in UNEXPECTED.values():
        case(path, outside)
    _read_everything(path, tmp_path / "report")
    assert (tmp_path / "report" / "index.html").exists()
    assert not marker.exists() and outside.read_text() == "secret"


@pytest.mark.parametrize("name", fmt.ALL_FILES)
def test_run_file_that_is_a_symlink_out_of_the_folder_is_not_followed(tmp_path, pristine, name):
    """A link in place of a run file could point anywhere (a secret, a device, another run):
    ``load`` refuses the folder, an appending writer writes nothing through it."""
    path = damaged_folder(tmp_path, pristine, None, None)
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    outside.write_bytes(pristine[name])  # following the link would even "work"
    (path / name).unlink()
    (path / name).symlink_to(outside)
    with pytest.raises(RunFormatError, match="link"):
        load(path)
    with pytest.raises(RunFormatError, match="link"):
        with RunWriter(path, json.loads(pristine[fmt.META_FILE]), append=True) as writer:
            writer.write_step(STEPS[-1] + 1, {})
    assert outside.read_bytes() == pristine[name]


NOT_REGULAR = {"folder": lambda target: target.mkdir(), "fifo": lambda target: os.mkfifo(target)}


@pytest.mark.parametrize("kind", sorted(NOT_REGULAR))
@pytest.mark.parametrize("name", fmt.ALL_FILES)
def test_run_file_that_is_not_a_regular_file_raises_format_error(tmp_path, pristine, name, kind):
    """A FIFO in place of a run file would block a reader forever; a folder is no file."""
    path = damaged_folder(tmp_path, pristine, None, None)
    (path / name).unlink()
    NOT_REGULAR[kind](path / name)
    with time_limit(5), pytest.raises(RunFormatError, match=re.escape(name)):
        load(path)
    with time_limit(5), pytest.raises(RunFormatError):
        RunWriter(path, json.loads(pristine[fmt.META_FILE]), append=True).close()


def test_symlinked_report_folder_in_run_folder_is_not_written_through(tmp_path, pristine):
    """``gradscope report RUN_DIR`` writes to RUN_DIR/report by default: a link there, sent with
    the run, must not make it write (or clear old figures) elsewhere."""
    from gradscope.cli import main

    path = damaged_folder(tmp_path, pristine, None, None)
    outside = tmp_path / "elsewhere"
    (outside / "figures").mkdir(parents=True)
    (outside / "figures" / "01-keep-me.png").write_bytes(b"not ours")
    (path / "report").symlink_to(outside, target_is_directory=True)
    assert main(["report", str(path)]) == 2
    assert sorted(p.name for p in outside.rglob("*")) == ["01-keep-me.png", "figures"]


UNEXPECTED = {
    "notes_file": lambda path, outside: (path / "notes.txt").write_text("mine"),
    "link_out": lambda path, outside: (path / "secret").symlink_to(outside),
    "dangling_link": lambda path, outside: (path / "gone.csv").symlink_to(outside.parent / "missing"),
    "subfolder": lambda path, outside: (path / "old_run").mkdir(),
    "hidden_file": lambda path, outside: (path / ".DS_Store").write_bytes(b"\0\1\2"),
    "tmp_meta": lambda path, outside: (path / "meta.json.tmp").write_bytes(b"{half"),
}


@pytest.mark.parametrize("case", sorted(UNEXPECTED))
def test_unexpected_file_is_left_alone(tmp_path, pristine, case):
    path = damaged_folder(tmp_path, pristine, None, None)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    UNEXPECTED[case](path, outside)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(path).steps() == list(STEPS)
    assert_whole_steps_or_format_error(path)
    _read_everything(path)
    assert outside.read_text() == "secret"


# -- hostile names in models, modules and labels ----------------------------------------------

HOSTILE = {
    "html": '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;',
    "path_separators": "/etc/passwd/..\\..\\x/",
    "control_characters": "ctl\x00\x01\x07\x1b[31m\x7f\x85",
    "line_breaks": "two\nlines\r\n\ttab",
    "mathtext": "$\\alpha_{1}$ ^ $ \\",
    "quotes": "q\"'`,;|*?",
}
PLACES = ("model", "module", "track", "weights")
# what each output shows: the run folder and JSON keep every name as it is; the pages,
# figures and JUnit show the names of the parts they judge or draw
SHOWN = {
    "run_folder": PLACES, "json": ("model", "module", "track"), "junit": ("model", "module", "track"),
    "html": PLACES, "png": ("model", "module", "track", "weights"),
}
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def placed(kind, place):
    """The hostile name as used in ``place`` (module names cannot hold ".": torch refuses it)."""
    name = f"{place}:{HOSTILE[kind]}"
    return name.replace(".", "") if place == "module" else name


def visible(name):
    """How a name must look to a person: each control character as its escape."""
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return CONTROL.sub(lambda m: named.get(m.group(), f"\\x{ord(m.group()):02x}"), name)


class Recorded:
    """Within it, every figure saved has its texts and its drawing warnings recorded, and
    every warning is recorded instead of raised."""

    def __enter__(self):
        import matplotlib.figure
        from matplotlib.text import Text

        self.figure_texts, self.figure_warnings = [], []
        original = matplotlib.figure.Figure.savefig

        def recording_savefig(figure, *args, **kwargs):
            self.figure_texts.append([t.get_text() for t in figure.findobj(Text) if t.get_text()])
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                original(figure, *args, **kwargs)
            self.figure_warnings += [str(w.message) for w in caught]

        self._patch = pytest.MonkeyPatch()
        self._patch.setattr(matplotlib.figure.Figure, "savefig", recording_savefig)
        self._warnings = warnings.catch_warnings(record=True)
        self._caught = self._warnings.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc_info):
        self._warnings.__exit__(*exc_info)
        self._patch.undo()
        self.warnings = [str(w.message) for w in self._caught]
        return False


class Rendered:
    """Every output of one watched step whose model, module, track and weights names are
    hostile; the figures' texts are recorded as they are saved."""

    def __init__(self, kind, folder):
        from gradscope.gate.output import write_junit

        names = {place: placed(kind, place) for place in PLACES}
        model = torch.nn.Module()
        model.add_module(names["module"], torch.nn.GRU(2, 3))
        weight = torch.nn.Parameter(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)) * 0.5)
        self.run_dir = folder / "run"
        with gradscope.watch(model, name=names["model"], weights={names["weights"]: weight},
                             run_dir=self.run_dir) as scope:
            out, h = getattr(model, names["module"])(torch.randn(5, 2, 2, generator=torch.Generator().manual_seed(1)))
            state = h[0]
            for _ in range(4):
                state = scope.track(torch.tanh(state @ weight.T), names["track"])
            (out.sum() + state.sum()).backward()
        diagnosis = gradscope.analyze(scope)
        self.json = json.dumps(diagnosis.to_dict(), allow_nan=False)
        write_junit(diagnosis, folder / "junit.xml", target=names["model"])
        self.junit = (folder / "junit.xml").read_bytes()
        with Recorded() as recorded:
            self.page_path = gradscope.report(scope, folder / "report")
        self.figure_texts, self.figure_warnings = recorded.figure_texts, recorded.figure_warnings
        self.report_warnings = recorded.warnings
        self.html = self.page_path.read_text(encoding="utf-8")
        self.figures = sorted((folder / "report" / "figures").iterdir())


_RENDERED = {}


@pytest.fixture
def rendered(tmp_path_factory, kind):
    if kind not in _RENDERED:  # one watched step and one report per name, shared by its cases
        _RENDERED[kind] = Rendered(kind, tmp_path_factory.mktemp(f"hostile-{kind}"))
    return _RENDERED[kind]


class Tags(HTMLParser):
    """The element and attribute names of a page (what a browser would act on)."""

    def __init__(self):
        super().__init__()
        self.names, self.attributes, self.sources = set(), set(), []

    def handle_starttag(self, tag, attrs):
        self.names.add(tag)
        self.attributes.update(name for name, _ in attrs)
        self.sources += [value for name, value in attrs if name == "src"]


def _strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


CASES = [(kind, place, output) for kind in HOSTILE for output, places in SHOWN.items() for place in places]


@pytest.mark.parametrize("kind,place,output", CASES, ids=["-".join(case) for case in CASES])
def test_hostile_name_is_kept_exactly_or_shown_escaped(rendered, kind, place, output):
    name = placed(kind, place)
    if output == "run_folder":
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run = load(rendered.run_dir)
        found = {"model": {run.name}, "module": set(run.timesteps()["module"]),
                 "track": set(run.timesteps()["module"]), "weights": set(run.spectra()["gate"])}
        assert name in found[place]
    elif output == "json":
        assert name in set(_strings(json.loads(rendered.json)))  # JSON escapes what it must
    elif output == "junit":
        root = ET.fromstring(rendered.junit)  # well-formed XML 1.0, whatever the names hold
        shown = {root.find("testsuite").get("name")} | {c.get(a) for c in root.iter("testcase")
                                                        for a in ("name", "classname")}
        assert any(visible(name) in text for text in shown), (visible(name), shown)
    elif output == "html":
        page = rendered.html
        assert html.escape(visible(name), quote=True) in page
        tags = Tags()
        tags.feed(page)
        assert "script" not in tags.names, tags.names
        assert not [a for a in tags.attributes if a.startswith("on")], tags.attributes
        assert all(re.fullmatch(r"figures/\d{2,3}-[a-z0-9_-]+\.png", src) for src in tags.sources), tags.sources
        assert not CONTROL.search(page.replace("\n", "")), "raw control characters in the page"
        assert not rendered.report_warnings, rendered.report_warnings
    else:  # png: titles and labels drawn verbatim, files named safely inside figures/
        texts = [text for figure in rendered.figure_texts for text in figure]
        assert any(visible(name).replace("$", r"\$") in text for text in texts), (name, texts)
        for text in texts:
            assert not CONTROL.search(text.replace("\n", "")), text
            assert not re.search(r"(?<!\\)\$", text), f"unescaped $ starts mathtext: {text!r}"
        assert not rendered.figure_warnings, rendered.figure_warnings[:3]
        for figure in rendered.figures:
            assert re.fullmatch(r"\d{2,3}-[a-z0-9_-]+\.png", figure.name), figure.name
            assert figure.parent == rendered.page_path.parent / "figures"


NUMBER_LIKE = ("0", "00", "007", "-0", "1e3", "1.50", "0x1f", " 1", "true", "False", "nan", "inf", "NA", "")


@pytest.mark.parametrize("name", NUMBER_LIKE, ids=repr)
def test_number_like_module_name_round_trips_through_run_folder(tmp_path, name):
    """pandas reads a column whose every value looks like a number as numbers: "00" must not
    come back as "0", nor "1e3" as "1000.0"."""
    from gradscope.store.synthetic import synthetic_meta, synthetic_step

    tables, values = synthetic_step(0, modules=(name,), layers=1, T=3, batch=2, hidden=2)
    with RunWriter(tmp_path / "run", synthetic_meta("numbers", (name,), layers=1, hidden=2)) as writer:
        writer.write_step(0, tables, values)
    run = load(tmp_path / "run")
    for table in ("timesteps", "spectra", "jacobians", "lyapunov", "gates"):
        assert set(run.table(table)["module"]) == {name}, table
        assert set(run.table(table, columns=["module"])["module"]) == {name}, table
    chunks = list(run.iter_table("timesteps", columns=["step", "module"]))
    assert chunks[0]["module"].tolist() == [name] * len(tables["timesteps"])


def test_compare_with_hostile_run_names_shows_them_escaped(tmp_path, pristine):
    """compare() labels runs with names the user gives: one page with every hostile name."""
    source = damaged_folder(tmp_path, pristine, None, None)
    names = {kind: f"run:{name}" for kind, name in HOSTILE.items()}
    with Recorded() as recorded:
        page = gradscope.compare({name: source for name in names.values()}, tmp_path / "compare")
    text = page.read_text(encoding="utf-8")
    tags = Tags()
    tags.feed(text)
    assert "script" not in tags.names and not [a for a in tags.attributes if a.startswith("on")]
    assert not CONTROL.search(text.replace("\n", "")), "raw control characters in the page"
    for name in names.values():
        assert html.escape(visible(name), quote=True) in text, name
    texts = [t for figure in recorded.figure_texts for t in figure]
    for t in texts:
        assert not CONTROL.search(t.replace("\n", "")) and not re.search(r"(?<!\\)\$", t), t
    assert not recorded.warnings and not recorded.figure_warnings, (recorded.warnings, recorded.figure_warnings)
