// The status page: polls /status.json every two seconds and draws it.
//
// The DOM is built with createElement and textContent only: a notification's
// text, project or link is data, never markup.
"use strict";

(function () {
  const POLL_MS = 2000;
  const TIMEOUT_MS = 5000;
  const byId = (id) => document.getElementById(id);

  let lastUpdate = null; // Date of the last good answer
  let failingSince = null; // Date of the first failure in a row
  let seen = null; // message ids already drawn (null before the first answer)

  function pad(number) {
    return String(number).padStart(2, "0");
  }

  // Local time, HH:MM:SS, of a Unix time in seconds.
  function clock(seconds) {
    const date = new Date(seconds * 1000);
    return pad(date.getHours()) + ":" + pad(date.getMinutes()) + ":" + pad(date.getSeconds());
  }

  function fullDate(seconds) {
    return new Date(seconds * 1000).toLocaleString();
  }

  function duration(seconds) {
    const s = Math.max(0, seconds);
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 60) return Math.round(s) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + pad(Math.floor(s % 60)) + " s";
    if (s < 86400) return Math.floor(s / 3600) + " h " + pad(Math.floor((s % 3600) / 60)) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function setText(id, text) {
    byId(id).textContent = text === undefined || text === null ? "–" : String(text);
  }

  // Text with a line-break opportunity after each of the given characters
  // (routing keys and URLs have no spaces to wrap at).
  function breakable(tag, className, text, after) {
    const node = element(tag, className);
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      if (after.includes(text[i]) && i + 1 < text.length) {
        node.appendChild(document.createTextNode(text.slice(start, i + 1)));
        node.appendChild(document.createElement("wbr"));
        start = i + 1;
      }
    }
    node.appendChild(document.createTextNode(text.slice(start)));
    return node;
  }

  function isWebLink(link) {
    return typeof link === "string" && /^https?:\/\//i.test(link);
  }

  function drawBroker(broker, now) {
    const badge = byId("broker-badge");
    badge.textContent = broker.connected ? "connected" : "disconnected";
    badge.className = "badge " + (broker.connected ? "ok" : "bad");
    let since = "";
    if (broker.since) {
      since = (broker.connected ? "since " : "down since ") + clock(broker.since) +
        " (" + duration(now - broker.since) + " ago)";
    } else if (!broker.connected) {
      since = "never connected yet";
    }
    setText("broker-since", since);
    setText("broker-reconnects", broker.reconnects);
    setText("broker-unconfirmed", broker.unconfirmed);
    setText("broker-unroutable", broker.unroutable);
    byId("broker-unroutable").classList.toggle("warn", broker.unroutable > 0);
  }

  function drawOutbox(outbox, connected) {
    setText("outbox-depth", outbox.depth);
    let oldest = outbox.oldest_age === null ? "nothing waiting" :
      "oldest waiting for " + duration(outbox.oldest_age);
    if (outbox.error) oldest = outbox.error;
    setText("outbox-oldest", oldest);
    byId("outbox-depth").classList.toggle("warn", outbox.depth > 0 && (!connected ||
      (outbox.oldest_age !== null && outbox.oldest_age > 10)));
    setText("outbox-published", outbox.published);
    setText("outbox-nacked", outbox.nacked);
    setText("outbox-in-flight", outbox.in_flight);
  }

  function drawGates(gates) {
    const items = [];
    if (gates.enabled) {
      for (const name of gates.names) {
        const code = element("code", null, "POST /gate/" + name + "/");
        code.appendChild(element("var", null, "<door>"));
        const item = element("li");
        item.appendChild(code);
        items.push(item);
      }
    } else {
      items.push(element("li", "muted", "Gates are off ([features] Gate = false)."));
    }
    byId("gates").replaceChildren(...items);
  }

  function cell(row, label, className) {
    const td = element("td", className);
    td.dataset.label = label;
    row.appendChild(td);
    return td;
  }

  function drawRecent(recent) {
    const rows = [];
    const ids = new Set();
    for (const notification of recent) {
      const row = element("tr");
      row.dataset.messageId = notification.messageId;
      ids.add(notification.messageId);
      if (seen !== null && !seen.has(notification.messageId)) row.className = "fresh";

      const time = cell(row, "Time", "time");
      time.textContent = clock(notification.time);
      time.title = fullDate(notification.time);

      const where = element("span");
      where.appendChild(element("span", "project", notification.project));
      where.appendChild(element("span", "sep", " / "));
      where.appendChild(element("span", "group", notification.group));
      cell(row, "Project / group", "where").appendChild(where);

      const what = element("div");
      what.appendChild(element("div", "text", notification.text || "(no text)"));
      what.appendChild(element("div", "meta", notification.service + " · " + notification.type));
      cell(row, "Notification", "what").appendChild(what);

      cell(row, "Routing key", "key").appendChild(breakable("code", null, notification.routingKey, "."));

      const link = cell(row, "Link", "link");
      if (isWebLink(notification.link)) {
        const shown = notification.link.replace(/^https?:\/\//i, "");
        const anchor = breakable("a", null, shown, "/.?&");
        anchor.href = notification.link;
        anchor.rel = "noopener noreferrer";
        anchor.target = "_blank";
        anchor.title = notification.link;
        link.appendChild(anchor);
      } else if (notification.link) {
        const text = breakable("span", "not-a-link", notification.link, "/.?&:");
        text.title = "not an http(s) link";
        link.appendChild(text);
      } else {
        link.appendChild(element("span", "muted", "—"));
      }
      rows.push(row);
    }
    byId("recent-rows").replaceChildren(...rows);
    byId("recent").hidden = rows.length === 0;
    byId("recent-empty").hidden = rows.length > 0;
    seen = ids;
  }

  // A refusal reason's code as words: "signature_mismatch" is "signature mismatch".
  function reasonWords(code) {
    return code.replace(/_/g, " ");
  }

  function doorRow(door, declared) {
    const row = element("tr");
    row.dataset.gate = door.gate;
    row.dataset.door = door.door === null ? "" : door.door;

    const name = element("div");
    name.appendChild(element("span", "project", door.gate));
    name.appendChild(element("span", "sep", " / "));
    name.appendChild(element("span", door.door === null ? "muted" : null,
      door.door === null ? "other doors" : door.door));
    if (!declared) name.appendChild(element("div", "undeclared", "not in the credentials file"));
    cell(row, "Door", "door").appendChild(name);

    const last = cell(row, "Last call", "last");
    if (door.lastCall) {
      const time = element("span", "time", clock(door.lastCall.time));
      time.title = fullDate(door.lastCall.time);
      last.appendChild(time);
      last.appendChild(document.createTextNode(" "));
      const ok = door.lastCall.status >= 200 && door.lastCall.status < 300;
      last.appendChild(element("span", "status " + (ok ? "ok" : "bad"), door.lastCall.status));
      if (door.lastCall.event) {
        last.appendChild(document.createTextNode(" "));
        last.appendChild(element("code", null, door.lastCall.event));
      }
    } else {
      last.appendChild(element("span", "muted", "no call since the start"));
    }

    const refused = cell(row, "Refused in the last hour", "refusals");
    const reasons = Object.entries(door.refusals);
    if (reasons.length === 0) {
      refused.appendChild(element("span", "muted", "none"));
    } else {
      const list = element("ul", "reasons");
      for (const [code, count] of reasons) {
        const item = element("li");
        item.dataset.reason = code;
        item.appendChild(element("span", "count", count));
        item.appendChild(document.createTextNode(" × " + reasonWords(code)));
        list.appendChild(item);
      }
      refused.appendChild(list);
    }
    return row;
  }

  function drawDoors(doors, undeclared) {
    const rows = doors.map((door) => doorRow(door, true))
      .concat(undeclared.map((door) => doorRow(door, false)));
    byId("door-rows").replaceChildren(...rows);
    byId("doors").hidden = rows.length === 0;
    byId("doors-empty").hidden = rows.length > 0;
  }

  function drawEvents(events) {
    if (!events) {
      setText("events-open", "–");
      setText("events-state", "not served by this process");
      for (const id of ["events-sent", "events-opened", "events-too-slow"]) setText(id, null);
      return;
    }
    setText("events-open", events.open);
    setText("events-state", events.enabled ? "GET /events, at most " + events.maxStreams :
      "off: the archive is off");
    setText("events-sent", events.sent);
    setText("events-opened", events.opened);
    setText("events-too-slow", events.tooSlow);
  }

  function count(value) {
    return value === null || value === undefined ? "?" : String(value);
  }

  function drawWebhooks(subscriptions) {
    const rows = [];
    for (const subscription of subscriptions) {
      const row = element("tr");
      row.dataset.subscription = subscription.name;
      cell(row, "Subscription", "name").textContent = subscription.name;
      cell(row, "Receiver", "receiver").appendChild(
        breakable("code", null, subscription.receiver, "/.:"));
      cell(row, "Waiting", "count waiting").textContent = count(subscription.waiting);
      cell(row, "Delivered", "count delivered").textContent = count(subscription.delivered);
      cell(row, "Retried", "count retried").textContent = count(subscription.retried);
      const dead = cell(row, "Dead", "count dead");
      dead.textContent = count(subscription.dead);
      dead.classList.toggle("warn", subscription.dead > 0);
      const error = cell(row, "Last error", "error");
      if (subscription.lastError) {
        error.appendChild(element("span", "time", clock(subscription.lastErrorTime) + " "));
        error.appendChild(element("span", null, subscription.lastError));
      } else {
        error.appendChild(element("span", "muted", "—"));
      }
      rows.push(row);
    }
    byId("webhook-rows").replaceChildren(...rows);
    byId("webhooks-section").hidden = rows.length === 0;
  }

  function draw(status) {
    setText("version", "v" + status.version);
    setText("exchange", status.exchange);
    byId("config-link").hidden = !status.config;
    drawBroker(status.broker, status.now);
    drawOutbox(status.outbox, status.broker.connected);
    drawGates(status.gates);
    drawDoors(status.doors, status.undeclaredDoors);
    drawRecent(status.recent);
    drawEvents(status.events);
    drawWebhooks(status.subscriptions || []);
    document.title = (status.broker.connected ? "" : "⚠ ") + "Notifications center";
  }

  function failed(reason) {
    if (failingSince === null) failingSince = new Date();
    const error = byId("error");
    error.textContent = "The daemon does not answer (" + reason + ") since " +
      clock(failingSince / 1000) + "; retrying every " + POLL_MS / 1000 + " s.";
    error.hidden = false;
    document.body.classList.add("stale");
    document.title = "✖ Notifications center";
    setText("updated", lastUpdate ? "Last updated " + clock(lastUpdate / 1000) : "Never updated");
    byId("updated").classList.add("bad");
  }

  async function poll() {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
    try {
      const response = await fetch("/status.json", {
        cache: "no-store",
        headers: { Accept: "application/json" },
        signal: controller.signal,
      });
      if (!response.ok) throw new Error("HTTP " + response.status);
      draw(await response.json());
      lastUpdate = new Date();
      failingSince = null;
      byId("error").hidden = true;
      document.body.classList.remove("stale");
      setText("updated", "Last updated " + clock(lastUpdate / 1000));
      byId("updated").classList.remove("bad");
    } catch (error) {
      if (error.name === "AbortError") failed("no answer within " + TIMEOUT_MS / 1000 + " s");
      else if (error instanceof TypeError) failed("connection failed");
      else failed(error.message);
    } finally {
      clearTimeout(timer);
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
