// The live feed: an EventSource on this server's /ui/events (the session cookie authorises it);
// each event is added at the top of the list. The browser reconnects by itself with
// Last-Event-ID, so nothing is missed.
"use strict";
(() => {
  const TYPES = ["interaction.received", "pattern.created", "pattern.merged", "pattern.validated",
    "pattern.contradicted", "pattern.superseded"];

  function item(list, event) {
    const data = JSON.parse(event.data);
    const payload = data.payload || {};
    const li = document.createElement("li");
    li.className = "event fresh event-" + data.type.replace(".", "-");
    li.dataset.id = String(data.id);
    const type = document.createElement("span");
    type.className = "etype";
    type.textContent = data.type;
    li.append(type, " ");
    if (data.pattern_id) {
      const a = document.createElement("a");
      a.href = list.dataset.patternBase + encodeURIComponent(data.pattern_id);
      a.textContent = payload.title || "a pattern";
      li.append(a);
    } else if (payload.interaction_id !== undefined) {
      li.append("interaction " + payload.interaction_id + " (" + String(payload.kind || "").replaceAll("_", " ") + ")");
    }
    if (payload.type) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = String(payload.type).replaceAll("_", " ");
      const colour = JSON.parse(list.dataset.colors || "{}")[payload.type];
      if (colour) badge.style.setProperty("--c", colour);
      li.append(" ", badge);
    }
    const time = document.createElement("time");
    time.dateTime = data.created_at;
    time.textContent = new Date(data.created_at).toISOString().slice(0, 16).replace("T", " ") + " UTC";
    li.append(" ", time);
    return li;
  }

  document.addEventListener("DOMContentLoaded", () => {
    const list = document.getElementById("feed");
    const state = document.getElementById("feed-state");
    if (!list || !window.EventSource) {
      if (state) { state.textContent = "Live updates need a browser with EventSource."; }
      return;
    }
    const setState = (name, text) => { state.dataset.state = name; state.textContent = text; };
    const source = new EventSource(list.dataset.src);
    source.addEventListener("open", () => setState("live", "Live"));
    source.addEventListener("error", () => setState("lost", "Reconnecting…"));
    for (const type of TYPES) {
      source.addEventListener(type, (event) => {
        const seen = list.querySelector('[data-id="' + CSS.escape(event.lastEventId) + '"]');
        if (seen) return;
        list.prepend(item(list, event));
        const empty = document.getElementById("feed-empty");
        if (empty) empty.remove();
      });
    }
  });
})();
