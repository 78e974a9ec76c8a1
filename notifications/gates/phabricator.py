"""The Phabricator gate: feed stories from ``feed.http-hooks`` (SPEC §3.4)."""

from __future__ import annotations

from ..notification import Notification
from ..renderers import phabricator
from .base import Gate, GateCall, GateError, Outcome, Publication, bad_request, parse_form
from .base import parse_json_object as parse_json

UNKNOWN_INSTANCE = "Unknown Phabricator instance."


class PhabricatorGate(Gate):
    """``POST /gate/Phabricator/<door>``, the door being a declared instance."""

    name = "Phabricator"
    takes_form = True

    def __init__(self, config, projects=None):
        super().__init__(config)
        #: Finds the projects of a story's object through Conduit; None: no projects.
        self.projects = projects

    def story(self, call: GateCall) -> tuple[dict, dict]:
        """The payload as received (parsed) and the story made of it."""
        if call.content_type == "application/json":
            data = parse_json(call.body)
        else:
            data = phabricator.parse_form(parse_form(call.body))
        story = phabricator.story_from(data)
        if not isinstance(story.get("text"), str):
            raise bad_request("expected a feed story with a storyText")
        return data, story

    def notification(self, door: str, data: dict, story: dict, projects: list[str]) -> Notification:
        type_, text, link = phabricator.render(story)
        analyzer = self.config.analyzers.for_door(self.name, door)
        return Notification(
            service=self.name,
            project=door,
            group=analyzer.group_for_story(projects, text, door),
            rawContent=data,
            type=type_,
            text=text,
            link=link,
        )

    def process(self, call: GateCall):
        service = self.config.service(self.name, call.door)
        if service is None:
            raise GateError(404, UNKNOWN_INSTANCE, "no such Phabricator door")
        data, story = self.story(call)
        outcome = Outcome(gate=self.name, event=phabricator.object_type(story))
        analyzer = self.config.analyzers.for_door(self.name, call.door)
        # Projects only matter to mappings with items: without any (or without
        # an API token to ask Conduit with), no Conduit call.
        needs_projects = service.secret and any(mapping.items for mapping in analyzer.mappings)
        if self.projects is None or not needs_projects:
            outcome.publications.append(Publication(self.notification(call.door, data, story, [])))
            return outcome
        d = self.projects.of_story(service, story)

        def publish(projects: list[str]) -> Outcome:
            outcome.publications.append(
                Publication(self.notification(call.door, data, story, projects))
            )
            return outcome

        return d.addCallback(publish)
