"""Docker Hub, Jenkins and Phabricator renderers (docs/reference.rst §3.2–3.4, §4.2, §4.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.analyzers import AnalyzerConfig
from notifications.renderers import (
    UnreadablePayload,
    dig,
    dockerhub,
    jenkins,
    need,
    phabricator,
    text_at,
    text_of,
)
from tests.payloads import (
    dockerhub_build_failure,
    dockerhub_failure_mail,
    dockerhub_push,
    phabricator_form,
    phabricator_story,
)
from tests.payloads import (
    jenkins as jenkins_payload,
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


# Safe accessors -------------------------------------------------------------

DOC = {"a": {"b": [{"c": "deep"}, None, 3]}, "n": None, "s": "text", "t": True}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("a", "b", 0, "c"), "deep"),
        (("a", "b", -1), 3),
        (("a", "b", 1), "default"),  # null on the way
        (("a", "b", 3), "default"),  # index out of range
        (("a", "b", "0"), "default"),  # key on a list
        (("a", 0), "default"),  # index on a dict
        (("s", "x"), "default"),  # walking into a string
        (("n",), "default"),
        (("missing", "x"), "default"),
        ((), DOC),
    ],
)
def test_dig(path, expected):
    assert dig(DOC, *path, default="default") == expected


def test_dig_default_is_empty_text():
    assert dig(None, "a") == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [("x", "x"), (12, "12"), (1.5, "1.5"), (True, "true"), (None, ""), ({}, ""), ([], "")],
)
def test_text_of(value, expected):
    assert text_of(value) == expected


def test_text_at_and_need():
    assert text_at(DOC, "a", "b", 2) == "3"
    assert text_at(DOC, "a") == ""
    assert need(DOC, "s") == "text"
    for path in (("n",), ("a",), ("t",), ("missing",)):
        with pytest.raises(UnreadablePayload):
            need(DOC, *path)


@given(payload=JSON, path=st.lists(st.text(max_size=3) | st.integers(-3, 3), max_size=4))
def test_dig_never_raises(payload, path):
    dig(payload, *path)
    assert isinstance(text_at(payload, *path), str)


# Docker Hub -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (dockerhub_push(), "push"),
        (dockerhub_build_failure(), "buildFailure"),
        ({"repository": {"repo_url": None}}, "buildFailure"),
        ({"repository": "acme/widgets"}, "buildFailure"),
        (None, "buildFailure"),
        ([], "buildFailure"),
    ],
)
def test_dockerhub_event_of(payload, expected):
    assert dockerhub.event_of(payload) == expected


def test_dockerhub_render_push():
    assert dockerhub.render_push(dockerhub_push("acme/widgets", "alice")) == (
        "New image pushed to Docker Hub registry for acme/widgets by alice",
        "https://registry.hub.docker.com/u/acme/widgets/",
    )


@pytest.mark.parametrize("payload", [None, [], {}, {"repository": [], "push_data": 3}])
def test_dockerhub_render_push_odd_payload(payload):
    text, link = dockerhub.render_push(payload)
    assert text == "New image pushed to Docker Hub registry for  by "
    assert link == ""


def test_dockerhub_render_build_failure():
    assert dockerhub.render_build_failure(
        "acme/widgets", "https://hub.docker.com/r/acme/widgets/builds/b5/"
    ) == (
        "Image build by Docker Hub registry failure for acme/widgets",
        "https://hub.docker.com/r/acme/widgets/builds/b5/",
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            dockerhub_failure_mail(),
            ("acme/widgets", "https://hub.docker.com/r/acme/widgets/builds/b5e7c1d2/"),
            id="failure-mail",
        ),
        pytest.param(
            'The "nightly" build of "acme/gadgets" failed, see '
            "https://hub.docker.com/r/acme/gadgets for details",
            ("acme/gadgets", "https://hub.docker.com/r/acme/gadgets"),
            id="quoted-without-slash-skipped-link-up-to-space",
        ),
        pytest.param(
            'Build "acme/a" and "acme/b"\nhttps://hub.docker.com/r/acme/a/\r\nhttps://hub.docker.com/r/acme/b/',
            ("acme/a", "https://hub.docker.com/r/acme/a/"),
            id="first-of-each",
        ),
        pytest.param(
            "see https://hub.docker.com/u/acme and https://hub.docker.com/repository/x",
            ("", "https://hub.docker.com/repository/x"),
            id="r-prefix-only",
        ),
        pytest.param("Nothing to see here.", ("", ""), id="neither"),
        pytest.param("", ("", ""), id="empty"),
        pytest.param('Unclosed "acme/widgets', ("", ""), id="unclosed-quote"),
    ],
)
def test_dockerhub_parse_failure_mail(body, expected):
    assert dockerhub.parse_failure_mail(body) == expected


@given(body=st.text())
def test_dockerhub_parse_failure_mail_never_raises(body):
    repository, link = dockerhub.parse_failure_mail(body)
    assert isinstance(repository, str) and isinstance(link, str)


def test_dockerhub_parse_failure_mail_not_text():
    assert dockerhub.parse_failure_mail(None) == ("", "")


# Jenkins --------------------------------------------------------------------

JOB_URL = "https://ci.acme.test/job/widgets-build/7/"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(
            jenkins_payload("widgets-build", "COMPLETED", "SUCCESS"),
            (
                "completed.success",
                "Jenkins job widgets-build has been completed: success",
                JOB_URL,
                "widgets-build",
            ),
            id="completed-success",
        ),
        pytest.param(
            jenkins_payload("widgets-build", "STARTED", None),
            ("started", "Jenkins job widgets-build has been started", JOB_URL, "widgets-build"),
            id="started-no-status",
        ),
        pytest.param(
            jenkins_payload("widgets-build", "FINALIZED", "FAILURE"),
            (
                "finalized.failure",
                "Jenkins job widgets-build has been finalized: failure",
                JOB_URL,
                "widgets-build",
            ),
            id="finalized-failure",
        ),
        pytest.param(
            jenkins_payload("widgets-build", "COMPLETED", ""),
            ("completed", "Jenkins job widgets-build has been completed", JOB_URL, "widgets-build"),
            id="empty-status-is-no-status",
        ),
        pytest.param(
            {"name": "deploy", "build": {"phase": "QUEUED", "status": None}},
            ("queued", "Jenkins job deploy has been queued", "", "deploy"),
            id="null-status-no-url",
        ),
    ],
)
def test_jenkins_render(payload, expected):
    assert jenkins.render(payload) == expected


@pytest.mark.parametrize(
    ("payload", "valid"),
    [
        (jenkins_payload(), True),
        (jenkins_payload(status=None), True),
        ({"name": "x", "build": {"phase": "STARTED"}}, True),
        ({"name": "x", "build": {"phase": 3}}, False),
        ({"name": "x", "build": {}}, False),
        ({"name": "x", "build": "STARTED"}, False),
        ({"name": "x"}, False),
        ({"name": 3, "build": {"phase": "STARTED"}}, False),
        ({"build": {"phase": "STARTED"}}, False),
        ([], False),
        (None, False),
        ("name", False),
    ],
)
def test_jenkins_is_valid(payload, valid):
    assert jenkins.is_valid(payload) is valid


QUIET = AnalyzerConfig(notify_only_on_failure=("test-prod-env",))


@pytest.mark.parametrize(
    ("job", "status", "expected"),
    [
        ("test-prod-env", "SUCCESS", False),
        ("test-prod-env", "FAILURE", True),
        ("test-prod-env", "ABORTED", True),
        ("test-prod-env", "UNSTABLE", True),
        ("test-prod-env", "NOT_BUILT", False),
        ("test-prod-env", None, False),
        ("test-prod-env", "", False),
        ("widgets-build", "SUCCESS", True),
        ("widgets-build", None, True),
        ("test-prod-env-2", "SUCCESS", True),
    ],
)
def test_jenkins_should_notify(job, status, expected):
    assert jenkins.should_notify(job, status, QUIET) is expected


def test_jenkins_should_notify_without_list():
    assert jenkins.should_notify("test-prod-env", "SUCCESS", AnalyzerConfig())


@settings(max_examples=200)
@given(payload=JSON | st.fixed_dictionaries({"name": JSON, "build": JSON}))
def test_jenkins_render_never_raises(payload):
    result = jenkins.render(payload)
    assert len(result) == 4 and all(isinstance(part, str) for part in result)
    assert isinstance(jenkins.is_valid(payload), bool)


# Phabricator ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        pytest.param([("storyID", "1")], {"storyID": "1"}, id="flat"),
        pytest.param(
            [
                ("storyData[objectPHID]", "PHID-TASK-1"),
                ("storyData[transactionPHIDs][PHID-XACT-TASK-a]", "PHID-XACT-TASK-a"),
                ("storyData[transactionPHIDs][PHID-XACT-TASK-b]", "PHID-XACT-TASK-b"),
            ],
            {
                "storyData": {
                    "objectPHID": "PHID-TASK-1",
                    "transactionPHIDs": {
                        "PHID-XACT-TASK-a": "PHID-XACT-TASK-a",
                        "PHID-XACT-TASK-b": "PHID-XACT-TASK-b",
                    },
                }
            },
            id="nested",
        ),
        pytest.param([("a[]", "x"), ("a[]", "y")], {"a": ["x", "y"]}, id="append"),
        pytest.param(
            [("a[][b]", "1"), ("a[][b]", "2")], {"a": [{"b": "1"}, {"b": "2"}]}, id="list-of-dicts"
        ),
        pytest.param([("a", "1"), ("a[b]", "2")], {"a": {"b": "2"}}, id="dict-after-scalar"),
        pytest.param([("a[b]", "2"), ("a", "1")], {"a": "1"}, id="scalar-after-dict"),
        pytest.param([("a[]", "x"), ("a", "1")], {"a": "1"}, id="scalar-after-list"),
        pytest.param([("a[b]", "1"), ("a[b][c]", "2")], {"a": {"b": {"c": "2"}}}, id="deeper"),
        pytest.param(
            [("a[]", "x"), ("a[k]", "y")], {"a": {"0": "x", "k": "y"}}, id="named-key-on-list"
        ),
        pytest.param(
            [("a[k]", "y"), ("a[]", "x")], {"a": {"k": "y", "0": "x"}}, id="append-on-dict"
        ),
        pytest.param(
            [("a[5]", "y"), ("a[]", "x")], {"a": {"5": "y", "6": "x"}}, id="append-after-index"
        ),
        pytest.param([("a", "1"), ("a", "2")], {"a": "2"}, id="later-wins"),
        pytest.param(
            [("a[b", "1"), ("[c]", "2"), ("", "3")], {"a[b": "1", "[c]": "2"}, id="odd-keys"
        ),
        pytest.param([("a" + "[b]" * 100, "1")], {}, id="too-deep-dropped"),
        pytest.param([], {}, id="empty"),
    ],
)
def test_parse_form(pairs, expected):
    assert phabricator.parse_form(pairs) == expected


def test_parse_form_of_a_story_form_gives_the_story():
    assert phabricator.parse_form(phabricator_form()) == phabricator_story()


KEY_PARTS = ["a", "b", "[", "]", "[]", "[a]", "[0]", "x"]


@settings(max_examples=300)
@given(
    pairs=st.lists(
        st.tuples(
            st.lists(st.sampled_from(KEY_PARTS), max_size=6).map("".join) | st.text(max_size=10),
            st.text(max_size=5),
        ),
        max_size=10,
    )
)
def test_parse_form_never_raises(pairs):
    assert isinstance(phabricator.parse_form(pairs), dict)


def test_story_from():
    assert phabricator.story_from(phabricator_story("PHID-TASK-1", "alice closed T1.")) == {
        "id": "4242",
        "type": "PhabricatorApplicationTransactionFeedStory",
        "data": {
            "objectPHID": "PHID-TASK-1",
            "transactionPHIDs": {
                "PHID-XACT-TASK-aaaa1111": "PHID-XACT-TASK-aaaa1111",
                "PHID-XACT-TASK-bbbb2222": "PHID-XACT-TASK-bbbb2222",
            },
        },
        "authorPHID": "PHID-USER-alice0000000000",
        "text": "alice closed T1.",
        "epoch": "1714816800",
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"storyText": "t"}, {"text": "t"}),
        ({"storyID": "1"}, {"id": "1"}),
        ({"storyAuthorPHID": "P"}, {"authorPHID": "P"}),
        ({"story": "s", "epoch": "1", "other": 2}, {"story": "s", "epoch": "1", "other": 2}),
        (None, {}),
        (["storyText"], {}),
    ],
)
def test_story_from_keys(data, expected):
    assert phabricator.story_from(data) == expected


@pytest.mark.parametrize(
    ("story", "expected"),
    [
        ({"data": {"objectPHID": "PHID-TASK-abc"}}, "TASK"),
        ({"data": {"objectPHID": "PHID-DREV-abc"}}, "DREV"),
        ({"data": {"objectPHID": "PHID-CMIT-abc"}}, "CMIT"),
        ({"data": {"objectPHID": "PHID-PSTE-abc"}}, "PSTE"),
        ({"data": {"objectPHID": "PHID-ABC"}}, "VOID"),
        ({"data": {"objectPHID": "TASK-abcdef"}}, "VOID"),
        ({"data": {"objectPHID": None}}, "VOID"),
        ({"data": {"objectPHID": 12}}, "VOID"),
        ({"data": {}}, "VOID"),
        ({"data": "PHID-TASK-abc"}, "VOID"),
        ({}, "VOID"),
        (None, "VOID"),
    ],
)
def test_object_type(story, expected):
    assert phabricator.object_type(story) == expected


def test_render_story():
    form = phabricator_form("PHID-DREV-widgets", "alice created D7: Spin forwards.")
    story = phabricator.story_from(phabricator.parse_form(form))
    assert phabricator.render(story) == ("DREV", "alice created D7: Spin forwards.", "")


def test_render_story_without_object():
    story = phabricator.story_from(phabricator_story(None, "alice did something."))
    assert phabricator.render(story) == ("VOID", "alice did something.", "")


@given(data=JSON)
def test_phabricator_never_raises(data):
    story = phabricator.story_from(data)
    type_, text, link = phabricator.render(story)
    assert len(type_) == 4 and isinstance(text, str) and link == ""
